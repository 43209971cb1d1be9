"""python -m tools.search --index=runs/smoke/index --queries=runs/smoke/features.npz --k=10 --output=runs/smoke/search.json

Queries a gallery index built by `python -m tools.build_index` with the query part of a features
file (`tf_reid.evaluate --save_features`; global features, L2-normalised) or an .npy of [Q, D]
embeddings, and writes each query's top-k as JSON (to --output, or stdout without it):

  {"index": ..., "kind": ..., "metric": "euclidean", "k": ..., "short_queries": n,
   "results": [{"query": i, "path", "pid", "camid", "found": h,
                "hits": [{"rank": 1, "index": j, "distance": d, "path", "pid", "camid"}, ...]}]}

An approximate index may find fewer than k items for a query (IVF with a small nprobe):
"found" < k for that query, "short_queries" counts them, and the command says so (on stderr when
the JSON goes to stdout); raise nprobe / ef_search with --params.

Distances are Euclidean between L2-normalised embeddings (smaller is nearer), as in
`tf_reid.evaluation`. --params overrides query-time parameters (ef_search, nprobe).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np
from absl import app, flags

from tf_reid.index import gallery, inputs
from tf_reid.index.kinds import IndexInputError, parse_params
from tfrecords_builder import atomic
from tools.cli import parse_flags, run_reporting

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags, defined only when it runs, so tests can import both index
    commands (they share flag names) into one process."""
    flags.DEFINE_string("index", None, "Index folder written by tools.build_index.")
    flags.DEFINE_string("queries", None, "Features .npz (its query split) or [Q, D] .npy.")
    flags.DEFINE_integer("k", 10, "Hits per query.", lower_bound=1)
    flags.DEFINE_integer("batch", 1024, "Queries per search call.", lower_bound=1)
    flags.DEFINE_list("params", [], "Query-time parameters, name=value, e.g. nprobe=32.")
    flags.DEFINE_string("output", None, "JSON file to write (default: print the JSON).")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")


def results_json(index: gallery.GalleryIndex, index_dir: str, query_meta: gallery.Metadata,
                 distances: np.ndarray, indices: np.ndarray) -> dict[str, Any]:
    """The JSON document of a search: per query its metadata and ranked hits.

    Args:
      distances, indices: [Q, k] as `gallery.search` returns them.
    """
    found = gallery.hits(index, indices)
    results = []
    for q in range(indices.shape[0]):
        ranked = [{"rank": r + 1, "index": int(indices[q, r]), "distance": float(distances[q, r]),
                   "path": str(found.paths[q, r]), "pid": int(found.pids[q, r]),
                   "camid": int(found.camids[q, r])}
                  for r in range(indices.shape[1]) if indices[q, r] >= 0]
        results.append({"query": q, "path": str(query_meta.paths[q]),
                        "pid": int(query_meta.pids[q]), "camid": int(query_meta.camids[q]),
                        "found": len(ranked), "hits": ranked})
    return {"index": index_dir, "kind": index.kind, "metric": gallery.METRIC,
            "k": int(indices.shape[1]), "short_queries": short_queries(indices),
            "results": results}


def short_queries(indices: np.ndarray) -> int:
    """Queries of [Q, k] `indices` with fewer than k hits (faiss pads with -1)."""
    return int((indices < 0).any(axis=1).sum())


def search_index(index_dir: str, queries: str, k: int, batch: int, params: dict[str, int],
                 output: str | None, progress: bool) -> list[str]:
    """Loads, searches and writes; returns the lines to print."""
    if output is not None:  # a results file is replaced, but never one of the inputs
        atomic.check_target(output, True, [index_dir, queries])
    if not os.path.isdir(index_dir):
        raise IndexInputError(f"{index_dir}: no such index folder")
    index = gallery.load(index_dir)
    embeddings, query_meta = inputs.read_embeddings(queries, "query")
    if embeddings.shape[1] != index.dim:
        raise IndexInputError(f"{queries}: queries are {embeddings.shape[1]}-d but the index "
                              f"{index_dir} is {index.dim}-d")
    if not 1 <= k <= len(index):
        raise IndexInputError(f"--k={k}: must be in 1..{len(index)}, the items in the index "
                              f"{index_dir}")
    start = time.perf_counter()
    distances, indices = gallery.search(index, embeddings, k, batch, params, progress)
    seconds = time.perf_counter() - start
    document = results_json(index, index_dir, query_meta, distances, indices)
    short = document["short_queries"]
    warning = (f"warning: {short} of {len(embeddings)} queries have fewer than {k} hits "
               f"(the {index.kind} index found fewer; raise nprobe / ef_search with --params)")
    if output is None:
        if short:
            print(warning, file=sys.stderr)
        return [json.dumps(document, indent=1)]
    with atomic.file(output) as partial, open(partial, "w") as f:
        json.dump(document, f, indent=1)
    return [f"wrote {output}: top-{k} of {len(embeddings)} queries in {index_dir} "
            f"({index.kind}, {len(index)} items), {1000 * seconds / len(embeddings):.3f} ms "
            f"per query", *([warning] if short else [])]


def main(argv: list[str]) -> int:
    del argv
    return run_reporting(lambda: search_index(
        FLAGS.index, FLAGS.queries, FLAGS.k, FLAGS.batch, parse_params(FLAGS.params),
        FLAGS.output, FLAGS.progress), errors=(IndexInputError,))


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["index", "queries"])
    app.run(main, flags_parser=parse_flags)
