"""python -m tools.build_index --features=runs/smoke/features.npz --output=runs/smoke/index --kind=hnsw --params=m=32,ef_construction=64,ef_search=64

Builds a gallery search index (`tf_reid.index`) from the gallery part of a features file
(`tf_reid.evaluate --save_features`; global features, L2-normalised) or an .npy of [N, D]
embeddings, and writes it as a folder (index.faiss, metadata.npz, index.json), atomically.
--params are the kind's parameters as name=value (`tf_reid.index.kinds`):

  exact  (none)
  hnsw   m, ef_construction, ef_search
  ivf    nlist (default ~4 sqrt(N)), nprobe
  ivfpq  nlist, nprobe, pq_m (default D / 8), pq_bits

Query it with `python -m tools.search`.
"""

from __future__ import annotations

import time
from absl import app, flags

from tf_reid.index import gallery, inputs
from tf_reid.index.kinds import KINDS, IndexInputError, parse_params
from tools.cli import parse_flags, run_reporting

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags, defined only when it runs, so tests can import both index
    commands (they share flag names) into one process."""
    flags.DEFINE_string("features", None, "Features .npz (its gallery split) or [N, D] .npy.")
    flags.DEFINE_string("output", None, "Index folder to create.")
    flags.DEFINE_enum("kind", "exact", sorted(KINDS), "Index kind.")
    flags.DEFINE_list("params", [],
                      "The kind's parameters, name=value, e.g. nlist=1024,nprobe=16.")
    flags.DEFINE_integer("pca_dim", None, "Reduce to this many dimensions with a PCA learned on the "
                         "gallery (queries are reduced the same way).", lower_bound=1)
    flags.DEFINE_integer("train_size", 100_000, "Gallery items sampled to train PCA / IVF / PQ.",
                         lower_bound=1)
    flags.DEFINE_integer("chunk", 65_536, "Items added per step.", lower_bound=1)
    flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")


def build_index(features: str, output: str, kind: str, params: dict[str, int],
                pca_dim: int | None, train_size: int, chunk: int, overwrite: bool,
                progress: bool) -> list[str]:
    """Reads, builds and writes; returns the report lines."""
    with gallery.atomic_folder(output, overwrite, [features]) as partial:
        embeddings, metadata = inputs.read_embeddings(features, "gallery")
        start = time.perf_counter()
        index = gallery.build(embeddings, metadata, kind, params, pca_dim, train_size, chunk,
                              progress=progress)
        seconds = time.perf_counter() - start
        gallery.write_files(index, partial)
    reduced = f" -> PCA {pca_dim}" if pca_dim else ""
    settings = ", ".join(f"{k}={v}" for k, v in sorted(index.params.items()))
    return [f"wrote {output}: {kind} index of {len(index)} items, {index.dim}-d{reduced}"
            f"{f' ({settings})' if settings else ''}, built in {seconds:.1f} s"]


def main(argv: list[str]) -> int:
    del argv
    return run_reporting(lambda: build_index(
        FLAGS.features, FLAGS.output, FLAGS.kind, parse_params(FLAGS.params), FLAGS.pca_dim,
        FLAGS.train_size, FLAGS.chunk, FLAGS.overwrite, FLAGS.progress),
        errors=(IndexInputError,))


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["features", "output"])
    app.run(main, flags_parser=parse_flags)
