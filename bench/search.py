"""nice -n 5 .venv/bin/python -m bench.search [--gallery 1000000] [--hnsw_gallery 100000]

Gallery search at a million crops (`tf_reid.index`): build time, memory, query latency and
recall@10 of the approximate kinds against exact search, on two synthetic galleries of 512-d
L2-normalised embeddings:

  random  isotropic Gaussian vectors, normalised: the issue's literal gallery. It has no
          neighbourhood structure (every point is nearly equidistant from a query), so it is
          the worst case for any approximate index.
  reid    ReID-like: N / 10 identities x 10 crops, crop = unit(centre + 0.8 * N(0, I / 512))
          with unit random centres; queries are fresh crops of gallery identities (held out),
          so a query's nearest items are its identity's crops (~0.88 away, others ~1.41).

Queries: 1,000, drawn the same way as their gallery. The baseline and ground truth is exact
search by blocked BLAS matmul + argpartition (`tf_reid.index.exact.exact_topk`). Every variant
runs in its own subprocess, so its peak RSS (ru_maxrss, which includes the 2 GB gallery array it
loads) is its own; "data RSS" is the resident size right after loading the gallery. Latency:
single = median over 100 queries searched one at a time (batch 1); batched = 1,000 queries in
one call, per query. Children run with OMP_WAIT_POLICY=PASSIVE (see `run_child`). exact_bf16's
build time includes its first search (which makes the bfloat16 copy). Plain HNSW
is built on the first --hnsw_gallery items only (its 1M x 512 build takes too long on 2 cores;
the ground truth is then exact search of that subset); HNSW on PCA-128 vectors is built on all.
--data and --variants (indices into VARIANTS; default 0-3 and 6) pick a part of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

DIM, NUM_QUERIES, K, PER_ID, NOISE = 512, 1000, 10, 10, 0.8
SINGLE_QUERIES = 100
CHUNK = 100_000
# (name, kind, params, pca_dim, query-time parameter, its values, built on the --hnsw_gallery
# prefix only).
HNSW = {"m": 16, "ef_construction": 40}
EF_SEARCH = (16, 32, 64, 128, 256)
VARIANTS = (
    ("ivf", "ivf", {"nlist": 1024}, None, "nprobe", (1, 4, 16, 64, 256), False),
    ("ivf + PCA 128", "ivf", {"nlist": 1024}, 128, "nprobe", (1, 4, 16, 64), False),
    ("ivfpq (64 x 8 bit)", "ivfpq", {"nlist": 1024, "pq_m": 64, "pq_bits": 8}, None, "nprobe",
     (1, 4, 16, 64, 256), False),
    ("hnsw (M 16, efC 40)", "hnsw", HNSW, None, "ef_search", EF_SEARCH, True),
    ("hnsw (M 16, efC 40) + PCA 128", "hnsw", HNSW, 128, "ef_search", EF_SEARCH, False),
    ("hnsw (M 32, efC 64) + PCA 128", "hnsw", {"m": 32, "ef_construction": 64}, 128,
     "ef_search", (64, 256, 512, 576, 640, 768, 1024), False),
    ("exact_bf16 (group 40)", "exact_bf16", {}, None, "groups", (10, 16, 32), False),
)
TRAIN_SIZE = 65_536  # 64 points per IVF cell


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_data(data: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(gallery [n, 512], queries [1000, 512]) float32, L2-normalised, generated in chunks.

    reid: query i is a fresh crop of identity i (identities are i.i.d., so the first 1,000 are
    as good as any; this keeps every query's identity inside a prefix of the gallery).
    """
    rng = np.random.default_rng(seed)
    gallery = np.empty((n, DIM), np.float32)
    if data == "random":
        for start in range(0, n, CHUNK):
            rows = min(CHUNK, n - start)
            gallery[start:start + rows] = unit(rng.standard_normal((rows, DIM), np.float32))
        return gallery, unit(rng.standard_normal((NUM_QUERIES, DIM), np.float32))
    centres = unit(rng.standard_normal((n // PER_ID, DIM), np.float32))
    scale = np.float32(NOISE / np.sqrt(DIM))
    for start in range(0, n, CHUNK):
        rows = min(CHUNK, n - start)
        noise = rng.standard_normal((rows, DIM), np.float32) * scale
        gallery[start:start + rows] = unit(centres[np.arange(start, start + rows) // PER_ID]
                                           + noise)
    noise = rng.standard_normal((NUM_QUERIES, DIM), np.float32) * scale
    return gallery, unit(centres[:NUM_QUERIES] + noise)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def prepare(workdir: str, data: str, n: int) -> dict[str, Any]:
    """Generates and stores one gallery, and measures the exact baseline (the ground truth)."""
    from tf_reid.index import exact

    (gallery, queries), generate_s = timed(make_data, data, n)
    np.save(os.path.join(workdir, f"{data}_gallery.npy"), gallery)
    np.save(os.path.join(workdir, f"{data}_queries.npy"), queries)
    data_rss = rss_mb()
    (_, truth), batched_s = timed(exact.exact_topk, queries, gallery, K)
    np.save(os.path.join(workdir, f"{data}_truth.npy"), truth)
    single = [timed(exact.exact_topk, queries[i:i + 1], gallery, K)[1] for i in range(10)]
    return {"variant": "exact (NumPy BLAS + argpartition)", "setting": "-", "n": n,
            "generate_s": generate_s, "build_s": 0.0, "index_mb": gallery.nbytes / 2 ** 20,
            "data_rss_mb": data_rss, "peak_rss_mb": peak_rss_mb(), "recall": 1.0,
            "single_ms": 1e3 * float(np.median(single)),
            "batched_ms": 1e3 * batched_s / NUM_QUERIES}


def measure(workdir: str, data: str, variant: int, hnsw_n: int) -> list[dict[str, Any]]:
    """Builds one variant on the stored gallery and sweeps its query-time parameter."""
    import faiss

    from tf_reid.index import exact, gallery as lib

    name, kind, params, pca_dim, knob, values, subset = VARIANTS[variant]
    items = np.load(os.path.join(workdir, f"{data}_gallery.npy"))
    queries = np.load(os.path.join(workdir, f"{data}_queries.npy"))
    truth = np.load(os.path.join(workdir, f"{data}_truth.npy"))
    if subset and hnsw_n < len(items):
        items = items[:hnsw_n].copy()
        truth = exact.exact_topk(queries, items, K)[1]
    data_rss = rss_mb()
    index, build_s = timed(lib.build, items, kind=kind, params=params, pca_dim=pca_dim,
                           train_size=TRAIN_SIZE, progress=False)
    # The first search is part of the build: it makes exact_bf16's bfloat16 copy.
    build_s += timed(lib.search, index, queries[:1], K)[1]
    rows = []
    for value in values:
        setting = {knob: value}
        lib.search(index, queries[:1], K, search_params=setting)  # warm-up
        single = [timed(lib.search, index, queries[i:i + 1], K, search_params=setting)[1]
                  for i in range(SINGLE_QUERIES)]
        (_, found), batched_s = timed(lib.search, index, queries, K, batch=NUM_QUERIES,
                                      search_params=setting)
        rows.append({"variant": name, "setting": f"{knob} {value}", "n": len(items),
                     "build_s": build_s, "data_rss_mb": data_rss,
                     "recall": exact.recall_at_k(found, truth),
                     "single_ms": 1e3 * float(np.median(single)),
                     "batched_ms": 1e3 * batched_s / NUM_QUERIES})
    peak = peak_rss_mb()
    path = os.path.join(workdir, "index.faiss")
    faiss.write_index(index.index, path)
    size = os.path.getsize(path) / 2 ** 20
    os.remove(path)
    for row in rows:
        row.update(peak_rss_mb=peak, index_mb=size)
    return rows


def child(argv: list[str]) -> None:
    task = json.loads(argv[0])
    if task["step"] == "prepare":
        rows = [prepare(task["workdir"], task["data"], task["n"])]
    else:
        rows = measure(task["workdir"], task["data"], task["variant"], task["hnsw_n"])
    print(json.dumps(rows))


def run_child(task: dict[str, Any]) -> list[dict[str, Any]]:
    start = time.perf_counter()
    # OpenMP threads that spin while waiting thrash when the cores are shared (faiss's IVF-PQ
    # build ran 4.5x slower than with OMP_WAIT_POLICY=PASSIVE at a load average of 9 here).
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run([sys.executable, "-m", "bench.search", "--child", json.dumps(task)],
                            capture_output=True, text=True, check=False, env=env)
    if result.returncode:
        raise RuntimeError(f"{task}: exit {result.returncode}\n{result.stderr[-3000:]}")
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"  [{task['data']} {task.get('variant', 'exact')}: {time.perf_counter() - start:.0f} s "
          f"wall]", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| index | setting | items | build s | index MB | peak RSS MB (data) | recall@10 | "
             "single ms | batched ms/query |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['setting']} | {r['n']:,} | {r['build_s']:.1f} | "
                     f"{r['index_mb']:,.0f} | {r['peak_rss_mb']:,.0f} ({r['data_rss_mb']:,.0f}) | "
                     f"{r['recall']:.4f} | {r['single_ms']:.2f} | {r['batched_ms']:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=1_000_000)
    parser.add_argument("--hnsw_gallery", type=int, default=100_000)
    parser.add_argument("--data", nargs="+", default=["random", "reid"])
    # HNSW on all 1M items (variants 4, 5) takes 6-8 min each here: asked for by name.
    parser.add_argument("--variants", type=int, nargs="+", default=[0, 1, 2, 3, 6])
    parser.add_argument("--child", nargs=1)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    import faiss

    print(f"{args.gallery:,} x {DIM} gallery, {NUM_QUERIES} queries, k = {K}, "
          f"{os.cpu_count()} cores (faiss {faiss.__version__}, {faiss.omp_get_max_threads()} "
          f"threads), load average at start {os.getloadavg()[0]:.1f}", flush=True)
    start = time.perf_counter()
    goal = "goal recall@10 >= 0.95 at < 5 ms per query"
    with tempfile.TemporaryDirectory(prefix="bench_search_") as workdir:
        for data in args.data:
            rows = run_child({"step": "prepare", "workdir": workdir, "data": data,
                              "n": args.gallery})
            for variant in args.variants:
                rows += run_child({"step": "measure", "workdir": workdir, "data": data,
                                   "variant": variant, "hnsw_n": args.hnsw_gallery})
            met = {mode: [f"{r['variant']} {r['setting']}" for r in rows
                          if r["recall"] >= 0.95 and r[f"{mode}_ms"] < 5
                          and r["n"] == args.gallery] for mode in ("single", "batched")}
            print(f"\n{data} gallery at {args.gallery:,} items, {goal}: "
                  + "; ".join(f"{mode} {'met by ' + ', '.join(names) if names else 'NOT met'}"
                              for mode, names in met.items()))
            print("\n".join(table(rows)), flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}, "
          f"{(time.perf_counter() - start) / 60:.1f} min in all")


if __name__ == "__main__":
    main()
