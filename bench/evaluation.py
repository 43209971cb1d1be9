"""python -m bench.evaluation [--sizes market,msmt17] [--rounds 2] [--dense_rounds 1] [--only_evaluate_rank]

Speed and peak memory of retrieval evaluation on random 2048-d features (seeded), at the sizes
of Market-1501 (3,368 query x 15,913 gallery, 750 ids, 6 cameras) and MSMT17 (11,659 x 82,161,
3,060 ids, 15 cameras). Features are identity centres plus noise, so every query has matches.

Market-1501 size, each against a baseline measured in the same run:
  * `evaluate_rank` (vectorised, query blocks, mINP included) against the per-query Python
    loop the tests check it with (`tests.tf_reid.evaluation.references.reference_evaluate`);
    both must give the same CMC, mAP and mINP.
  * `re_ranking` (low-memory, from the three distance matrices) against `re_ranking_dense`
    (the authors' release), plus `re_ranking_features` (distances computed inside); outputs are
    compared after timing.
  * `local_distances` (AlignedReID aligned local distance, 8 stripes x 128, XLA) for the whole
    query x gallery matrix against NumPy vectorised over pairs (stripe distances by GEMM, the DP
    over the 8 x 8 grid on [queries, gallery] arrays, the AlignedReID reproductions' method),
    timed on a 500 x 2,000 subset and extrapolated per pair; both agree on that subset.
MSMT17 size: global distances + `evaluate_rank`, and `re_ranking_features`, one run each.
`--only_evaluate_rank` runs just the `evaluate_rank` rows (and, at Market size, its baseline).

Every timed variant runs in its own child process (`--child`), which builds its inputs, resets
its peak-RSS mark (/proc/self/clear_refs), runs the variant once and reports wall time, the RSS
of its inputs and its peak RSS (VmHWM): one variant's memory never pollutes another's. Rounds
alternate the variants and keep the best time (the machine is shared). Use `nice -n 10`.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from tests.tf_reid.evaluation.references import re_ranking_dense, reference_evaluate  # noqa: E402
from tf_reid.evaluation.matching import global_distances, l2_normalize, local_distances  # noqa: E402
from tf_reid.evaluation.metrics import evaluate_rank  # noqa: E402
from tf_reid.evaluation.reranking import re_ranking, re_ranking_features  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["market"], "Which sizes to run: market, msmt17 (tiny: smoke test).")
flags.DEFINE_integer("rounds", 2, "Alternating rounds at Market size; the best time is kept.")
flags.DEFINE_integer("dense_rounds", 1, "Rounds that also run re_ranking_dense (~70 s, ~8.5 GB).")
flags.DEFINE_bool("only_evaluate_rank", False, "Time only evaluate_rank (and its loop baseline).")
flags.DEFINE_integer("dim", 2048, "Global feature dimension.")
flags.DEFINE_integer("stripes", 8, "Local stripes H.")
flags.DEFINE_integer("channels", 128, "Channels per local stripe.")
flags.DEFINE_integer("local_subset_query", 500, "Queries of the NumPy local-distance subset.")
flags.DEFINE_integer("local_subset_gallery", 2000, "Gallery of the NumPy local-distance subset.")
flags.DEFINE_string("child", None, "Internal: run one variant in this process and print JSON.")
flags.DEFINE_string("size", "market", "Internal: the child's size.")
flags.DEFINE_string("out", None, "Internal: where the child saves its [Q, G] output (.npy).")


@dataclasses.dataclass(frozen=True)
class Size:
    num_query: int
    num_gallery: int
    num_ids: int
    num_cams: int


SIZES = {
    "market": Size(num_query=3368, num_gallery=15913, num_ids=750, num_cams=6),
    "msmt17": Size(num_query=11659, num_gallery=82161, num_ids=3060, num_cams=15),
    "tiny": Size(num_query=300, num_gallery=1500, num_ids=100, num_cams=6),  # smoke test
}


# --- data -----------------------------------------------------------------------------------


def labels(size: Size, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(q_pids, g_pids, q_camids, g_camids): every id in query and gallery, random cameras."""
    rng = np.random.default_rng(seed)
    q_pids = rng.permutation(np.resize(np.arange(size.num_ids), size.num_query))
    g_pids = rng.permutation(np.resize(np.arange(size.num_ids), size.num_gallery))
    return (q_pids, g_pids, rng.integers(0, size.num_cams, size.num_query),
            rng.integers(0, size.num_cams, size.num_gallery))


def features(pids: np.ndarray, num_ids: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """[N, *shape] float32: a random centre per identity (seed 1) plus unit noise (`seed`).

    Centres have standard deviation 0.3 against the noise's 1, so same-id pairs are only
    somewhat closer than others and rankings are far from perfect (as with real features).
    """
    centres = 0.3 * np.random.default_rng(1).standard_normal((num_ids, *shape), dtype=np.float32)
    out = np.random.default_rng(seed).standard_normal((len(pids), *shape), dtype=np.float32)
    out += centres[pids]
    return out


def global_features(size: Size) -> tuple[np.ndarray, np.ndarray]:
    q_pids, g_pids, _, _ = labels(size)
    return (features(q_pids, size.num_ids, (FLAGS.dim,), seed=2),
            features(g_pids, size.num_ids, (FLAGS.dim,), seed=3))


def rerank_blocks(size: Size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q_g, q_q, g_g) Euclidean distances, symmetric with a zero diagonal as true ones are."""
    query, gallery = global_features(size)
    q_g = global_distances(query, gallery, normalize=False)
    q_q, g_g = (global_distances(x, x, normalize=False) for x in (query, gallery))
    del query, gallery
    for square in (q_q, g_g):
        square += square.T  # numpy buffers the overlapping transpose
        square /= 2
        np.fill_diagonal(square, 0)
    return q_g, q_q, g_g


# --- baselines ------------------------------------------------------------------------------


def numpy_local_distances(query: np.ndarray, gallery: np.ndarray, chunk: int = 100) -> np.ndarray:
    """[Q, G] aligned distances in NumPy, vectorised over pairs, `chunk` queries at a time.

    As the AlignedReID reproductions (`local_dist` + `shortest_dist`): stripe distances of a
    chunk by one GEMM, (e^d - 1) / (e^d + 1), laid out [H, L, chunk, G] so every DP cell is one
    contiguous [chunk, G] array, then the H x L grid cell by cell. Stripes are normalised first,
    as `local_distances` does by default.
    """
    query, gallery = l2_normalize(query), l2_normalize(gallery)
    num_g, rows, channels = gallery.shape
    y = gallery.reshape(-1, channels)
    y_sq = np.sum(y * y, axis=1)
    out = np.empty((len(query), num_g), np.float32)
    for start in range(0, len(query), chunk):
        x = query[start : start + chunk].reshape(-1, channels)
        sq = np.sum(x * x, axis=1)[:, None] + y_sq[None, :] - 2 * (x @ y.T)
        e = np.exp(np.sqrt(np.maximum(sq, 0)))
        d = ((e - 1) / (e + 1)).reshape(-1, rows, num_g, rows).transpose(1, 3, 0, 2)
        s = [[None] * rows for _ in range(rows)]
        for i in range(rows):
            for j in range(rows):
                if i == 0 and j == 0:
                    s[i][j] = d[0, 0]
                elif i == 0:
                    s[i][j] = s[i][j - 1] + d[i, j]
                elif j == 0:
                    s[i][j] = s[i - 1][j] + d[i, j]
                else:
                    s[i][j] = np.minimum(s[i - 1][j], s[i][j - 1]) + d[i, j]
        out[start : start + chunk] = s[-1][-1]
    return out


# --- children: one variant each, own process ------------------------------------------------


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _measure(fn: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """Runs fn once: its result, wall seconds, RSS before (inputs) and peak RSS during, in MB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    inputs_mb = _status_kb("VmRSS") / 1024
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return result, {"seconds": seconds, "inputs_mb": inputs_mb,
                    "peak_mb": _status_kb("VmHWM") / 1024}


def run_child(name: str, size: Size, out: str | None) -> dict[str, Any]:
    q_pids, g_pids, q_camids, g_camids = labels(size)
    if name in ("eval_ours", "eval_loop"):
        query, gallery = global_features(size)
        distmat = global_distances(query, gallery, normalize=False)
        del query, gallery
        if name == "eval_ours":
            details, stats = _measure(lambda: evaluate_rank(
                distmat, q_pids, g_pids, q_camids, g_camids, return_details=True))
            cmc, mean_ap, minp = details["cmc"], details["mAP"], details["mINP"]
        else:
            (cmc, mean_ap, minp, _, _), stats = _measure(lambda: reference_evaluate(
                distmat, q_pids, g_pids, q_camids, g_camids, 50, "standard"))
        return {**stats, "cmc": [float(c) for c in cmc], "mAP": mean_ap, "mINP": minp}
    if name == "eval_full":  # distances from features, then evaluation (MSMT17)
        query, gallery = global_features(size)
        distmat, stats = _measure(lambda: global_distances(query, gallery, normalize=False))
        del query, gallery
        details, eval_stats = _measure(lambda: evaluate_rank(
            distmat, q_pids, g_pids, q_camids, g_camids, return_details=True))
        return {**eval_stats, "distance_seconds": stats["seconds"],
                "distance_peak_mb": stats["peak_mb"], "mAP": details["mAP"],
                "rank1": float(details["cmc"][0]), "mINP": details["mINP"]}
    if name in ("rerank_dense", "rerank_low"):
        q_g, q_q, g_g = rerank_blocks(size)
        fn = re_ranking_dense if name == "rerank_dense" else re_ranking
        result, stats = _measure(lambda: fn(q_g, q_q, g_g))
    elif name == "rerank_features":
        query, gallery = global_features(size)
        result, stats = _measure(lambda: re_ranking_features(query, gallery))
    elif name == "local":
        return local_child(size)
    else:
        raise ValueError(f"unknown child {name!r}")
    if out:
        np.save(out, result)
    return stats


def local_child(size: Size) -> dict[str, Any]:
    q_pids, g_pids, _, _ = labels(size)
    shape = (FLAGS.stripes, FLAGS.channels)
    query = features(q_pids, size.num_ids, shape, seed=4)
    gallery = features(g_pids, size.num_ids, shape, seed=5)
    sub_q, sub_g = query[: FLAGS.local_subset_query], gallery[: FLAGS.local_subset_gallery]
    local_distances(sub_q[:8], sub_g)  # compiles the XLA functions
    ours_sub = local_distances(sub_q, sub_g)
    max_diff = float(np.abs(ours_sub - numpy_local_distances(sub_q, sub_g)).max())
    best_ours, best_numpy, best_ours_sub = np.inf, np.inf, np.inf
    for _ in range(FLAGS.rounds):
        start = time.perf_counter()
        numpy_local_distances(sub_q, sub_g)
        best_numpy = min(best_numpy, time.perf_counter() - start)
        start = time.perf_counter()
        local_distances(sub_q, sub_g)
        best_ours_sub = min(best_ours_sub, time.perf_counter() - start)
        start = time.perf_counter()
        local_distances(query, gallery)
        best_ours = min(best_ours, time.perf_counter() - start)
    return {"ours_seconds": best_ours, "ours_subset_seconds": best_ours_sub,
            "numpy_subset_seconds": best_numpy, "subset_pairs": sub_q.shape[0] * sub_g.shape[0],
            "pairs": query.shape[0] * gallery.shape[0], "max_abs_diff": max_diff}


# --- parent ---------------------------------------------------------------------------------


def spawn(name: str, size: str, out: str | None = None) -> dict[str, Any]:
    """Runs one child variant under this interpreter; its last stdout line is its JSON."""
    command = [sys.executable, "-m", "bench.evaluation", f"--child={name}", f"--size={size}",
               f"--dim={FLAGS.dim}", f"--stripes={FLAGS.stripes}",
               f"--channels={FLAGS.channels}", f"--rounds={FLAGS.rounds}",
               f"--local_subset_query={FLAGS.local_subset_query}",
               f"--local_subset_gallery={FLAGS.local_subset_gallery}"]
    if out:
        command.append(f"--out={out}")
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if done.returncode != 0:
        raise RuntimeError(f"child {name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  [{time.strftime('%H:%M:%S')}] {name} ({size}) done in "
          f"{time.perf_counter() - start:.0f} s: {result}", flush=True)
    return result


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    best = dict(min(runs, key=lambda r: r["seconds"]))
    best["peak_mb"] = max(r["peak_mb"] for r in runs)
    return best


def _row(name: str, seconds: float, peak_mb: float | None, inputs_mb: float | None,
         ratio: str, goal: str) -> str:
    peak = "" if peak_mb is None else f"{peak_mb:,.0f}"
    inputs = "" if inputs_mb is None else f"{inputs_mb:,.0f}"
    return f"| {name} | {seconds:,.2f} | {peak} | {inputs} | {ratio} | {goal} |"


def market(tmp: str, size: str) -> list[str]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in range(FLAGS.rounds):
        print(f"round {r + 1} of {FLAGS.rounds} ({size} size)", flush=True)
        names = ["eval_ours", "eval_loop"]
        if not FLAGS.only_evaluate_rank:
            names += ["rerank_dense"] if r < FLAGS.dense_rounds else []
            names += ["rerank_low", "rerank_features"]
        for name in names:
            out = os.path.join(tmp, f"{name}.npy") if name.startswith("rerank") else None
            runs.setdefault(name, []).append(spawn(name, size, out))

    ours, loop = _best(runs["eval_ours"]), _best(runs["eval_loop"])
    for key in ("mAP", "mINP"):
        assert abs(ours[key] - loop[key]) < 1e-6, (key, ours[key], loop[key])
    np.testing.assert_allclose(ours["cmc"], loop["cmc"], atol=1e-6)
    eval_ratio = loop["seconds"] / ours["seconds"]
    yes = {True: "met", False: "**not met**"}
    eval_rows = [
        _row("per-query Python loop (the tests' reference, baseline)", loop["seconds"],
             loop["peak_mb"], loop["inputs_mb"], "1.0", ""),
        _row("`evaluate_rank` (CMC, mAP, mINP)", ours["seconds"], ours["peak_mb"],
             ours["inputs_mb"], f"{eval_ratio:.1f}x faster",
             f"< 2 s: {yes[ours['seconds'] < 2]}"),
    ]
    header = [
        f"{size} size: {SIZES[size].num_query:,} query x {SIZES[size].num_gallery:,} "
        f"gallery, {FLAGS.dim}-d; best of {FLAGS.rounds} alternating rounds"
        + ("" if FLAGS.only_evaluate_rank else f" (re_ranking_dense: {FLAGS.dense_rounds})")
        + "; peak = child's VmHWM while the variant runs, inputs = its RSS before (MB)",
    ]
    table = ["| variant | s | peak MB | inputs MB | vs baseline | goal |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    if FLAGS.only_evaluate_rank:
        return header + [
            f"evaluate_rank == loop: mAP {ours['mAP']:.6f}, rank-1 {ours['cmc'][0]:.6f}, "
            f"mINP {ours['mINP']:.6f}", ""] + table + eval_rows
    local = spawn("local", size)

    dense_out = np.load(os.path.join(tmp, "rerank_dense.npy"))
    low_diff = float(np.abs(np.load(os.path.join(tmp, "rerank_low.npy")) - dense_out).max())
    feat_diff = float(np.abs(np.load(os.path.join(tmp, "rerank_features.npy")) - dense_out).max())
    dense, low = _best(runs["rerank_dense"]), _best(runs["rerank_low"])
    feats = _best(runs["rerank_features"])

    rerank_ratio = dense["seconds"] / low["seconds"]
    numpy_extrapolated = local["numpy_subset_seconds"] / local["subset_pairs"] * local["pairs"]
    local_ratio = numpy_extrapolated / local["ours_seconds"]
    sub_ratio = local["numpy_subset_seconds"] / local["ours_subset_seconds"]
    lines = header + [
        f"evaluate_rank == loop: mAP {ours['mAP']:.6f}, rank-1 {ours['cmc'][0]:.6f}, "
        f"mINP {ours['mINP']:.6f}; re-ranking max |low - dense| {low_diff:.2e}, "
        f"|features - dense| {feat_diff:.2e}; local max |ours - NumPy| "
        f"{local['max_abs_diff']:.2e} on the subset",
        "",
    ] + table + eval_rows + [
        _row("`re_ranking_dense` (baseline)", dense["seconds"], dense["peak_mb"],
             dense["inputs_mb"], "1.0", ""),
        _row("`re_ranking` (low-memory, from q_g, q_q, g_g)", low["seconds"], low["peak_mb"],
             low["inputs_mb"], f"{rerank_ratio:.1f}x faster",
             f">= 10x: {yes[rerank_ratio >= 10]}; < 2 GB peak: {yes[low['peak_mb'] < 2048]}"),
        _row("`re_ranking_features` (distances inside)", feats["seconds"], feats["peak_mb"],
             feats["inputs_mb"], f"{dense['seconds'] / feats['seconds']:.1f}x faster",
             f"< 2 GB peak: {yes[feats['peak_mb'] < 2048]}"),
        _row(f"NumPy local distance, vectorised over pairs (baseline; "
             f"{FLAGS.local_subset_query} x {FLAGS.local_subset_gallery} timed, extrapolated)",
             numpy_extrapolated, None, None, "1.0", ""),
        _row(f"`local_distances` ({FLAGS.stripes} x {FLAGS.channels} stripes, whole matrix)",
             local["ours_seconds"], None, None, f"{local_ratio:.1f}x faster",
             f">= 5x: {yes[local_ratio >= 5]}"),
        f"(local distance on the subset itself: NumPy {local['numpy_subset_seconds']:.2f} s, "
        f"ours {local['ours_subset_seconds']:.2f} s, {sub_ratio:.1f}x)",
    ]
    return lines


def msmt17() -> list[str]:
    size = "msmt17"
    print("MSMT17 size (one run each)", flush=True)
    ev = spawn("eval_full", size)
    rr = None if FLAGS.only_evaluate_rank else spawn("rerank_features", size)
    lines = [
        f"MSMT17 size: {SIZES[size].num_query:,} query x {SIZES[size].num_gallery:,} gallery, "
        f"{FLAGS.dim}-d, one run each (mAP {ev['mAP']:.4f}, rank-1 {ev['rank1']:.4f})",
        "",
        "| step | s | peak MB | inputs MB |",
        "| --- | ---: | ---: | ---: |",
        f"| `global_distances` [Q, G] | {ev['distance_seconds']:,.1f} | "
        f"{ev['distance_peak_mb']:,.0f} | |",
        f"| `evaluate_rank` on it | {ev['seconds']:,.1f} | {ev['peak_mb']:,.0f} | "
        f"{ev['inputs_mb']:,.0f} |",
    ]
    if rr is not None:
        lines.append(f"| `re_ranking_features` | {rr['seconds']:,.1f} | {rr['peak_mb']:,.0f} | "
                     f"{rr['inputs_mb']:,.0f} |")
    return lines


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.child:
        print(json.dumps(run_child(FLAGS.child, SIZES[FLAGS.size], FLAGS.out)))
        return
    unknown = set(FLAGS.sizes) - set(SIZES)
    if unknown:
        raise app.UsageError(f"unknown sizes {sorted(unknown)}; choose from {sorted(SIZES)}")
    if not 1 <= FLAGS.dense_rounds <= FLAGS.rounds:
        raise app.UsageError("--dense_rounds must be between 1 and --rounds")
    print(f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in ("tiny", "market"):
            if size in FLAGS.sizes:
                lines += market(tmp, size) + [""]
        if "msmt17" in FLAGS.sizes:
            lines += msmt17()
    lines.append(f"load average at the end: {os.getloadavg()[0]:.1f} "
                 f"(other processes share the {os.cpu_count()} cores)")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
