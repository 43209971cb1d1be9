"""Exact top-k by blocked BLAS matmul + argpartition, and recall of an approximate top-k.

NumPy in, NumPy out. `exact_topk` is the baseline (and ground truth) that the approximate kinds
of `tf_reid.index.kinds` are measured against; it needs no faiss.
"""

from __future__ import annotations

import numpy as np

# Elements of one [block, N] distance block: 2^26 float32 = 256 MiB.
_BLOCK_ELEMENTS = 1 << 26
# Rows per step of the row-wise sums, which bounds their temporaries to [_ROWS, N or D].
_ROWS = 256


def squared_norms(x: np.ndarray) -> np.ndarray:
    """||x_n||^2 of each row, summed as `(x * x).sum(axis=1)` sums them.

    Args:
      x: [N, D].

    Returns:
      [N], x's dtype; computed `_ROWS` rows at a time, so no [N, D] temporary is made.
    """
    out = np.empty(x.shape[0], dtype=np.result_type(x, x))
    for start in range(0, x.shape[0], _ROWS):
        rows = x[start:start + _ROWS]
        out[start:start + _ROWS] = (rows * rows).sum(axis=1)
    return out


def squared_distances(queries: np.ndarray, gallery: np.ndarray,
                      gallery_sq: np.ndarray | None = None) -> np.ndarray:
    """Squared Euclidean distances (||q||^2 + ||g||^2) - 2 q.g, clipped at 0 (one GEMM).

    The [Q, N] result is the only array of that size: after the GEMM every step is in place,
    the norms' sums `_ROWS` rows at a time.

    Args:
      queries: [Q, D] float32 (or float64).
      gallery: [N, D], same dtype.
      gallery_sq: [N] `squared_norms(gallery)`, when already computed (a gallery reused block
        after block).

    Returns:
      [Q, N], the inputs' dtype.
    """
    if gallery_sq is None:
        gallery_sq = squared_norms(gallery)
    queries_sq = squared_norms(queries)
    out = queries @ gallery.T
    out *= -2
    for start in range(0, out.shape[0], _ROWS):
        out[start:start + _ROWS] += queries_sq[start:start + _ROWS, None] + gallery_sq[None, :]
    return np.maximum(out, 0, out=out)


def euclidean_distances(queries: np.ndarray, gallery: np.ndarray,
                        gallery_sq: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances [Q, N]: the square roots of `squared_distances`, in place."""
    out = squared_distances(queries, gallery, gallery_sq)
    return np.sqrt(out, out=out)


def smallest_k(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest entries of each row, ascending (ties by column index).

    Args:
      values: [Q, N].
      k: 1 <= k <= N.

    Returns:
      ([Q, k] values, [Q, k] int64 columns).
    """
    n = values.shape[1]
    part = np.argpartition(values, k - 1, axis=1)[:, :k] if k < n else \
        np.broadcast_to(np.arange(n), values.shape).copy()
    picked = np.take_along_axis(values, part, axis=1)
    # Sort by (value, column): lexsort's last key is the primary one.
    order = np.lexsort((part, picked), axis=1)
    columns = np.take_along_axis(part, order, axis=1).astype(np.int64)
    return np.take_along_axis(picked, order, axis=1), columns


def exact_topk(queries: np.ndarray, gallery: np.ndarray, k: int,
               block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k nearest gallery items by Euclidean distance, `block` queries per GEMM.

    Args:
      queries: [Q, D] float32.
      gallery: [N, D] float32.
      k: 1 <= k <= N.
      block: queries per GEMM (default: as many as keep one [block, N] block under 256 MiB).

    Returns:
      ([Q, k] float32 Euclidean distances ascending, [Q, k] int64 gallery indices).
    """
    queries = np.asarray(queries, dtype=np.float32)
    gallery = np.asarray(gallery, dtype=np.float32)
    if queries.ndim != 2 or gallery.ndim != 2 or queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"expected [Q, D] queries and [N, D] gallery, got {queries.shape} and "
                         f"{gallery.shape}")
    if not 1 <= k <= gallery.shape[0]:
        raise ValueError(f"k must be in 1..{gallery.shape[0]}, got {k}")
    if block is None:
        block = max(1, _BLOCK_ELEMENTS // gallery.shape[0])
    gallery_sq = squared_norms(gallery)
    distances = np.empty((queries.shape[0], k), np.float32)
    indices = np.empty((queries.shape[0], k), np.int64)
    for start in range(0, queries.shape[0], block):
        sq = squared_distances(queries[start:start + block], gallery, gallery_sq)
        d, i = smallest_k(sq, k)
        distances[start:start + block], indices[start:start + block] = np.sqrt(d), i
    return distances, indices


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true top-k that the found top-k contains.

    Args:
      found: [Q, k] indices returned by an approximate search (-1 = nothing).
      truth: [Q, k] indices of the exact search.

    Returns:
      Recall@k in [0, 1].
    """
    if found.shape != truth.shape:
        raise ValueError(f"found {found.shape} and truth {truth.shape} must match")
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=1)
    return float(hits.mean())
