"""Retrieval metrics of every requested distance, as JSON-ready numbers and a printable table.

`evaluate_features` ranks the gallery for every query with the global distance and, optionally,
AlignedReID's global + local distance (Zhang et al. 2017, arXiv:1711.08184, Sec. 4), each
optionally k-reciprocal re-ranked (`matching.distances`), and scores each under the dataset's
protocol (`protocols.score`: multi-shot, or CUHK03 classic's single-gallery-shot).
`score_distances` does the scoring alone, for a caller that computed the distances itself.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from tf_reid.evaluation import matching, protocols
from tf_reid.evaluation.features_file import SplitFeatures

_RANKS = (1, 5, 10)
_COUNTS = ("num_query", "skipped_queries")  # summed, not averaged, over datasets
_COLUMNS = (("rank-1", "rank1"), ("rank-5", "rank5"), ("rank-10", "rank10"), ("mAP", "mAP"),
            ("mINP", "mINP"))


def _rank_metrics(distmat: np.ndarray, query: SplitFeatures, gallery: SplitFeatures,
                 max_rank: int = 50, single_gallery_shot: Mapping[str, int] | None = None
                 ) -> dict[str, float | int]:
    """Rank-1/5/10, mAP and mINP (fractions in [0, 1]) of one [Q, G] distance matrix.

    Same-pid same-camera gallery items are junk for a query; queries with no match left are
    skipped and counted in "skipped_queries". `single_gallery_shot` (settings of
    `protocols.single_gallery_shot`) scores under CUHK03 classic's protocol instead of
    multi-shot.

    Returns:
      {"rank1", "rank5", "rank10", "mAP", "mINP" (fractions), "num_query",
      "skipped_queries" (ints)}, plain Python numbers.
    """
    if max_rank < max(_RANKS):
        raise ValueError(f"max_rank must be >= {max(_RANKS)}, got {max_rank}")
    details = protocols.score(distmat, query, gallery, max_rank, single_gallery_shot)
    result: dict[str, float | int] = {f"rank{k}": float(details["cmc"][k - 1]) for k in _RANKS}
    result.update(mAP=float(details["mAP"]), mINP=float(details["mINP"]),
                  num_query=int(distmat.shape[0]), skipped_queries=int(details["num_skipped"]))
    return result


def evaluate_features(query: SplitFeatures, gallery: SplitFeatures, local: bool = False,
                      rerank: bool = False, max_rank: int = 50, normalize: bool = True,
                      local_weight: float = 1.0, k1: int = 20, k2: int = 6,
                      lambda_value: float = 0.3,
                      single_gallery_shot: Mapping[str, int] | None = None
                      ) -> dict[str, dict[str, float | int]]:
    """Retrieval metrics of query against gallery for every requested distance.

    Re-ranking uses the whole query and gallery sets; under single-gallery-shot the re-ranked
    matrix is then scored like any other, on the same gallery samples.

    Args:
      query, gallery: features of the two splits.
      local: also the "global+local" distance (needs local features).
      rerank, normalize, local_weight, k1, k2, lambda_value: as `matching.distances`.
      max_rank, single_gallery_shot: as `_rank_metrics`.

    Returns:
      {variant: `_rank_metrics` dict} for "global", and "global+local" with `local`, each also
      re-ranked ("global+rerank", "global+local+rerank") with `rerank`, in `matching.VARIANTS`
      order.
    """
    names = ("global", "global+local") if local else ("global",)
    distances = matching.distances(query, gallery, names, rerank, normalize, local_weight, k1,
                                   k2, lambda_value)
    return score_distances(distances, query, gallery, max_rank, single_gallery_shot)


def score_distances(distances: Mapping[str, np.ndarray], query: SplitFeatures,
                    gallery: SplitFeatures, max_rank: int = 50,
                    single_gallery_shot: Mapping[str, int] | None = None
                    ) -> dict[str, dict[str, float | int]]:
    """Retrieval metrics of distance matrices already computed (for a caller that also uses
    them otherwise, as `tf_reid.evaluate --verification` does).

    Args:
      distances: {variant: [Q, G] distances}, as `matching.distances` returns them.
      query, gallery: the features they were computed from (pids and camids are used).
      max_rank, single_gallery_shot: as `_rank_metrics`.

    Returns:
      {variant: `_rank_metrics` dict}, in the order of `distances`.
    """
    return {name: _rank_metrics(d, query, gallery, max_rank, single_gallery_shot)
            for name, d in distances.items()}


def metrics_table(results: Mapping[str, Mapping[str, float | int]]) -> list[str]:
    """`evaluate_features`' result as printable lines, metrics in %."""
    width = max(len("distance"), *(len(name) for name in results))
    lines = [f"{'distance':{width}}" + "".join(f" {title:>8}" for title, _ in _COLUMNS)]
    for name, row in results.items():
        lines.append(f"{name:{width}}" + "".join(f" {100 * row[key]:8.2f}" for _, key in _COLUMNS))
    # Junk and matches depend on pids and cameras only, so every row skips the same queries.
    first = next(iter(results.values()))
    lines.append(f"queries: {first['num_query']}, skipped (no cross-camera match): "
                 f"{first['skipped_queries']}")
    return lines


def mean_metrics(results: Iterable[Mapping[str, Mapping[str, float | int]]]
                 ) -> dict[str, dict[str, float | int]]:
    """The mean over datasets of `evaluate_features` results (joint training's summary row).

    Each fraction (rank-k, mAP, mINP) is the unweighted mean over the datasets, as papers
    average per-dataset results; "num_query" and "skipped_queries" are sums. Only the variants
    every dataset has are kept.
    """
    results = list(results)
    variants = [name for name in results[0] if all(name in r for r in results)]
    mean = {}
    for name in variants:
        rows = [r[name] for r in results]
        mean[name] = {key: (sum(int(row[key]) for row in rows) if key in _COUNTS
                            else float(np.mean([row[key] for row in rows])))
                      for key in rows[0]}
    return mean


def dataset_names(data_dirs: Sequence[str]) -> list[str]:
    """Names of datasets for tables and JSON: each folder's base name, or its absolute path where
    two base names agree."""
    bases = [os.path.basename(os.path.normpath(d)) for d in data_dirs]
    return [base if bases.count(base) == 1 else os.path.abspath(d)
            for base, d in zip(bases, data_dirs)]
