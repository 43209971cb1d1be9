"""Query x gallery distance matrices for retrieval: global, aligned local, and their sum.

NumPy in, NumPy out (float32). Queries are processed `block` at a time, so beyond the [Q, G]
result only O(block x G) working memory exists at once.

AlignedReID (Zhang et al. 2017, "AlignedReID: Surpassing Human-Level Performance in Person
Re-Identification", arXiv:1711.08184) retrieves with the global distance alone or with the
global distance plus the aligned local distance (Sec. 4, "global + local": the two are added).
The public reproductions L2-normalise each local stripe at test time before the shortest-path
distance (michuanhaohao/AlignedReID normalises `lf` over channels in the model's eval branch;
huanghoujing/AlignedReID-Re-Production-Pytorch `normalize(local_feats, axis=-1)` under its
`normalize_feature` option), so `local_distances` does that by default; the global features are
left as they are unless asked (`normalize`), since there the reproductions differ.

`DISTANCES` maps each retrieval distance's name ("global", "global+local") to its function of two
`SplitFeatures`; `distances` computes the named ones for a query and a gallery, each also
k-reciprocal re-ranked (Zhong et al., CVPR 2017) if asked, under the names of `VARIANTS`.
`tf_reid.evaluate`, `tools.visualize_ranks` and the evaluation during training all go through it.
"""

from __future__ import annotations

import concurrent.futures
from typing import Callable, Sequence

import numpy as np

from tf_reid.evaluation import reranking
from tf_reid.evaluation.features_file import SplitFeatures
from tf_reid.index.exact import euclidean_distances

__all__ = [
    "DISTANCES",
    "RERANK",
    "VARIANTS",
    "combined_distances",
    "distances",
    "global_distances",
    "l2_normalize",
    "local_distances",
]

_EPS = 1e-12  # as torch's F.normalize / clamp(min=1e-12) in the reproductions


_SHAPES = {2: "[Q, D] and [G, D] features", 3: "[Q, H, C] and [G, L, C] stripes"}


def _checked(query, gallery, block: int, normalize: bool,
             ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """`query` and `gallery` as arrays of rank `ndim` (2: global, 3: local) sharing the last
    axis, L2-normalised along it if `normalize`; a ValueError names a bad `block` or shape."""
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be a positive integer, got {block!r}")
    query, gallery = np.asarray(query), np.asarray(gallery)
    if query.ndim != ndim or gallery.ndim != ndim or query.shape[-1] != gallery.shape[-1]:
        raise ValueError(f"expected {_SHAPES[ndim]}, got {query.shape} and {gallery.shape}")
    if normalize:
        query, gallery = l2_normalize(query), l2_normalize(gallery)
    return query, gallery


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """x / max(||x||_2, 1e-12) along `axis`; all-zero vectors stay zero.

    Args:
        x: any shape, e.g. [N, D] global features or [N, H, C] stripes (axis=-1: per stripe).
        axis: the axis normalised.

    Returns:
        Same shape and dtype as x; a vector with an infinite entry becomes NaN, without a
        warning (`tf_reid.index.gallery.build` names such rows).
    """
    x = np.asarray(x)
    norm = np.sqrt(np.sum(x * x, axis=axis, keepdims=True))
    with np.errstate(invalid="ignore"):
        return x / np.maximum(norm, _EPS).astype(x.dtype)


def global_distances(
    q_global: np.ndarray, g_global: np.ndarray, normalize: bool, block: int = 1024
) -> np.ndarray:
    """Euclidean distances between query and gallery global features.

    Computed as sqrt(max(||q||^2 + ||g||^2 - 2 q.g, 0)) in the features' dtype, `block` queries
    at a time (one GEMM each).

    Args:
        q_global: [Q, D] query features.
        g_global: [G, D] gallery features.
        normalize: L2-normalise every feature first (distances then lie in [0, 2] and equal
            sqrt(2 - 2 cos)).
        block: queries per GEMM.

    Returns:
        [Q, G] float32 distances.
    """
    q_global, g_global = _checked(q_global, g_global, block, normalize, ndim=2)
    g_sq = np.sum(g_global * g_global, axis=1)
    out = np.empty((q_global.shape[0], g_global.shape[0]), dtype=np.float32)
    for start in range(0, q_global.shape[0], block):
        out[start : start + block] = euclidean_distances(q_global[start : start + block],
                                                         g_global, g_sq)
    return out


def local_distances(
    q_local: np.ndarray,
    g_local: np.ndarray,
    block: int = 2048,
    normalize: bool = True,
    tile: tuple[int, int] = (64, 256),
    concurrency: int = 2,
) -> np.ndarray:
    """AlignedReID aligned local distances between every query and every gallery image.

    `tf_reid.losses.aligned_matrix.aligned_distance_matrix_forward` (forward only: per tile
    one GEMM, tanh(||f_i - g_j|| / 2) and the shortest path through the H x L stripe
    distances, in one XLA program), called on `block` queries at a time.

    Args:
        q_local: [Q, H, C] query stripes.
        g_local: [G, L, C] gallery stripes (L may differ from H).
        block: most queries per call; memory beyond the result and the float32 stripes is one
            [block, G] matrix plus one tile's element distances. The queries are split into
            calls of equal size (the last call overlaps the one before), so there is one XLA
            compile.
        normalize: L2-normalise each stripe over its C channels first, as the AlignedReID
            reproductions do at test time (default). Element distances then lie in
            [0, tanh(1)].
        tile: most (query, gallery) images per tile inside a call.
        concurrency: calls run at once (threads). With the default block a Market-1501-size
            query set is two calls of half the queries, run together, which is faster than one
            call of all queries or more, smaller calls (BUILD.md has the figures).

    Returns:
        [Q, G] float32 distances.

    Reference: arXiv:1711.08184, Sec. 3.1.
    """
    q_local, g_local = _checked(q_local, g_local, block, normalize, ndim=3)
    # TensorFlow is needed only here; importing it lazily keeps the global path NumPy-only.
    import tensorflow as tf

    from tf_reid.losses.aligned_matrix import aligned_distance_matrix_forward

    num_q, num_g = q_local.shape[0], g_local.shape[0]
    out = np.empty((num_q, num_g), dtype=np.float32)
    if num_q == 0 or num_g == 0:
        return out
    gallery = tf.constant(g_local, dtype=tf.float32)
    calls = -(-num_q // block)
    rows = -(-num_q // calls)

    def run(call: int) -> None:
        start = min(call * rows, num_q - rows)
        query = tf.constant(q_local[start : start + rows], dtype=tf.float32)
        out[start : start + rows] = aligned_distance_matrix_forward(query, gallery, *tile)

    # Calls overlap in time: one call's DP fusions run on the thread that launched it, so
    # a second call keeps the other core busy (the overlapping last call rewrites equal values).
    with concurrent.futures.ThreadPoolExecutor(max(1, min(concurrency, calls))) as pool:
        list(pool.map(run, range(calls)))  # list(): re-raises a call's exception here
    return out


def combined_distances(
    global_dist: np.ndarray, local_dist: np.ndarray, local_weight: float = 1.0
) -> np.ndarray:
    """global + local_weight * local, AlignedReID's "global + local" retrieval distance.

    Args:
        global_dist: [Q, G].
        local_dist: [Q, G].
        local_weight: weight of the local distance (the paper adds the two: 1.0).

    Returns:
        [Q, G] float32.

    Reference: arXiv:1711.08184, Sec. 4.
    """
    global_dist, local_dist = np.asarray(global_dist), np.asarray(local_dist)
    if global_dist.shape != local_dist.shape or global_dist.ndim != 2:
        raise ValueError(
            f"expected two [Q, G] matrices of one shape, got {global_dist.shape} and "
            f"{local_dist.shape}"
        )
    out = local_dist.astype(np.float32, copy=True)
    out *= np.float32(local_weight)
    out += global_dist
    return out


def _global(a: SplitFeatures, b: SplitFeatures, normalize: bool,
            local_weight: float) -> np.ndarray:
    del local_weight
    return global_distances(a.global_, b.global_, normalize)


def _global_plus_local(a: SplitFeatures, b: SplitFeatures, normalize: bool,
                       local_weight: float) -> np.ndarray:
    if a.local is None or b.local is None:
        raise ValueError("global+local needs local features; extract them with with_local=True")
    return combined_distances(global_distances(a.global_, b.global_, normalize),
                              local_distances(a.local, b.local), local_weight)


# name -> fn(a, b, normalize, local_weight) -> [A, B] float32 distances between the images of
# two feature sets. normalize L2-normalises the global features (the inference descriptor of
# the exported model); stripes are always normalised, as the reproductions do at test time.
# local_weight weighs the aligned local distance in "global+local" (the paper adds: 1.0).
DISTANCES: dict[str, Callable[[SplitFeatures, SplitFeatures, bool, float], np.ndarray]] = {
    "global": _global,
    "global+local": _global_plus_local,
}
RERANK = "+rerank"  # suffix of a re-ranked distance's name
# Every name `distances` may return, in report order.
VARIANTS = tuple(v for name in DISTANCES for v in (name, name + RERANK))


def _reranked(name: str, query: SplitFeatures, gallery: SplitFeatures, q_g: np.ndarray,
              normalize: bool, local_weight: float, k1: int, k2: int,
              lambda_value: float) -> np.ndarray:
    """k-reciprocal re-ranking of distance `name`, whose query x gallery matrix is `q_g`."""
    if name == "global":
        # Euclidean distances can be recomputed from the features wherever re-ranking needs
        # them, so no G x G matrix is ever held.
        q, g = query.global_, gallery.global_
        if normalize:
            q, g = l2_normalize(q), l2_normalize(g)
        return reranking.re_ranking_features(q, g, k1, k2, lambda_value)
    pairwise = DISTANCES[name]
    # The Q x Q and G x G matrices (for global+local: G^2 aligned distances, slow and G^2 x 4
    # bytes on a large gallery).
    return reranking.re_ranking(q_g, pairwise(query, query, normalize, local_weight),
                                pairwise(gallery, gallery, normalize, local_weight),
                                k1, k2, lambda_value)


def distances(query: SplitFeatures, gallery: SplitFeatures, names: Sequence[str],
              rerank: bool = False, normalize: bool = True, local_weight: float = 1.0,
              k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> dict[str, np.ndarray]:
    """Query x gallery distances [Q, G] of each named distance, and re-ranked if asked.

    Args:
        query, gallery: features of the two splits.
        names: keys of `DISTANCES`.
        rerank: add each one k-reciprocal re-ranked, as "<name>+rerank" (Zhong et al. 2017).
        normalize: L2-normalise the global features first.
        local_weight: weight of the local distance in "global+local".
        k1, k2, lambda_value: re-ranking parameters.

    Returns:
        {name: [Q, G] float32}, in `VARIANTS` order.

    Raises:
        ValueError: an unknown name, or "global+local" without local features.
    """
    unknown = [name for name in names if name not in DISTANCES]
    if unknown:
        raise ValueError(f"unknown distance(s) {unknown}; known: {sorted(DISTANCES)}")
    out = {}
    for name in DISTANCES:
        if name not in names:
            continue
        out[name] = DISTANCES[name](query, gallery, normalize, local_weight)
        if rerank:
            out[name + RERANK] = _reranked(name, query, gallery, out[name], normalize,
                                           local_weight, k1, k2, lambda_value)
    return out
