"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), NumPy in, NumPy out.

"Re-ranking Person Re-identification with k-reciprocal Encoding". The input convention and
every numerical step follow the authors' Python release (`re_ranking(q_g_dist, q_q_dist,
g_g_dist, k1=20, k2=6, lambda_value=0.3)`): plain Euclidean distances go in, the
(Q+G)x(Q+G) matrix ``[[q_q, q_g], [q_g^T, g_g]]`` is squared, cast to float32, each column is
divided by its maximum and the result transposed; k-reciprocal sets, their expansion,
Gaussian-weighted encodings V, local query expansion over the k2 nearest neighbours and the
Jaccard distance follow; the result is ``(1 - lambda) * jaccard + lambda * original``
restricted to query rows and gallery columns.

Two entry points (the release's dense twin, `re_ranking_dense`, is the tests' reference in
tests/tf_reid/evaluation/references.py):

* `re_ranking` -- same numbers (to float32 rounding of sums) without ever holding an
  (N x N) matrix, N = Q + G: distance rows are produced ``block`` rows at a time, only the
  top-(k1+1) neighbour lists (N x (k1+1) ints) are kept, V is a scipy CSR matrix, and the
  Jaccard part is computed for query rows against gallery columns only. The [Q, G] output
  is the only dense matrix of quadratic size.
* `re_ranking_features` -- as `re_ranking`, but computes Euclidean distances from features
  block by block; no G x G matrix exists at any time.

Memory of `re_ranking`: O(block * N + N * k1 + nnz(V) + Q * G); the [Q, G] result is written
over the normalised distances row by row, so it is the only [Q, G] matrix. Time: the first
pass produces every distance row once and keeps its k1 + 1 nearest neighbours by a partial
sort (argpartition, then a sort of those few); a row with tied values among them is sorted in
full, so neighbour lists, ties included, are exactly the dense reference's full argsort. The
first pass runs on a few threads (NumPy's partial sorts and ufuncs release the GIL). The
second pass (encodings) reads only the few (< 1 + k1 + k1 * (k1/2 + 1)) distances each probe
needs: `re_ranking` picks them out of its input matrices, `re_ranking_features` computes them,
instead of a second full N x N pass.
"""

from __future__ import annotations

import concurrent.futures
from typing import Callable

import numpy as np
import scipy.sparse as sp

from tf_reid.index.exact import euclidean_distances

__all__ = ["re_ranking", "re_ranking_features"]


def _check(k1: int, k2: int, lambda_value: float, block: int | None = None,
           workers: int = 1) -> None:
    if k1 < 1 or k2 < 1:
        raise ValueError(f"k1 and k2 must be >= 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    if block is not None and block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")


def _check_blocks(q_g_dist, q_q_dist, g_g_dist) -> tuple[int, int]:
    num_q, num_g = q_g_dist.shape
    if q_q_dist.shape != (num_q, num_q) or g_g_dist.shape != (num_g, num_g):
        raise ValueError(
            f"expected q_g [Q, G], q_q [Q, Q], g_g [G, G]; got {q_g_dist.shape}, "
            f"{q_q_dist.shape}, {g_g_dist.shape}"
        )
    return num_q, num_g


RowFn = Callable[[int, int], np.ndarray]


def _squared(dist: np.ndarray) -> np.ndarray:
    """The release's squared distances: np.square in dist's dtype, then float32, as its
    np.power(dist, 2).astype(np.float32); one new array (none more when dist is float32)."""
    return np.square(np.asarray(dist)).astype(np.float32, copy=False)


_TOP_ROWS = 256  # rows per argpartition call: 20 MB of int64 indices at Market-1501 width


def _top_neighbours(dist: np.ndarray, num_keep: int) -> np.ndarray:
    """``np.argsort(dist, axis=1)[:, :num_keep]`` exactly, by a partial sort.

    Each row's num_keep + 1 smallest entries are found by argpartition and sorted. When their
    values are all distinct, the first num_keep of them and their order are unique, so any full
    sort returns them in the same order. A row with a tie among them, where which index a full
    sort puts first would matter, is sorted in full instead, as the dense reference sorts it.

    Args:
        dist: [b, n] distances.
        num_keep: neighbours kept per row, 1 <= num_keep <= n.

    Returns:
        [b, num_keep] int32 column indices.
    """
    if num_keep >= dist.shape[1]:
        return np.argsort(dist, axis=1)[:, :num_keep].astype(np.int32)
    if len(dist) > _TOP_ROWS:  # argpartition's int64 [rows, n] indices: a few rows at a time
        return np.concatenate([_top_neighbours(dist[start : start + _TOP_ROWS], num_keep)
                               for start in range(0, len(dist), _TOP_ROWS)])
    part = np.argpartition(dist, num_keep, axis=1)[:, : num_keep + 1]
    values = np.take_along_axis(dist, part, axis=1)
    order = np.argsort(values, axis=1)
    top = np.take_along_axis(part, order, axis=1)
    tied = (np.diff(np.take_along_axis(values, order, axis=1), axis=1) == 0).any(axis=1)
    if tied.any():
        top[tied] = np.argsort(dist[tied], axis=1)[:, : num_keep + 1]
    return top[:, :num_keep].astype(np.int32)


def _reciprocal(ranks: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = ranks[i, : k + 1]
    backward = ranks[forward, : k + 1]
    return forward[(backward == i).any(axis=1)]


PairFn = Callable[[int, np.ndarray], np.ndarray]


def _rerank_rows(
    rows: RowFn,
    num_q: int,
    num_all: int,
    k1: int,
    k2: int,
    lambda_value: float,
    block: int,
    pairs: PairFn,
    workers: int = 2,
) -> np.ndarray:
    """Re-ranking from functions giving raw distances of the full (N x N) matrix.

    `rows(start, stop)` gives rows [stop - start, N], each produced once (pass 1, the neighbour
    lists); `pairs(i, cols)` the distances from probe i to the sorted columns `cols`, the few
    that its encoding needs (pass 2).
    """
    num_keep = min(max(k1 + 1, k2), num_all)
    ranks = np.empty((num_all, num_keep), dtype=np.int32)
    row_max = np.empty(num_all, dtype=np.float32)
    original_qg = np.empty((num_q, num_all - num_q), dtype=np.float32)

    # Pass 1: neighbour lists, row maxima (the release's column maxima, by symmetry) and the
    # query-gallery part of the normalised distance, for blocks of rows on `workers` threads
    # (NumPy's sorts and ufuncs release the GIL), `block` rows in all at once.
    def first_pass(start: int) -> None:
        stop = min(start + step, num_all)
        dist = _squared(rows(start, stop))  # rows [start, stop), squared
        row_max[start:stop] = np.max(dist, axis=1)
        # In place, the release's 1. * squared / max: the same float32 division.
        np.divide(dist, row_max[start:stop, None], out=dist)
        ranks[start:stop] = _top_neighbours(dist, num_keep)
        if start < num_q:
            q_stop = min(stop, num_q)
            original_qg[start:q_stop] = dist[: q_stop - start, num_q:]

    step = max(1, -(-block // workers))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(first_pass, range(0, num_all, step)))  # list(): re-raises here

    # Pass 2: k-reciprocal encodings V, one CSR row per probe. Each probe's k1/2-reciprocal set
    # is needed by every probe that has it as a candidate, so all are computed once up front.
    half = int(np.around(k1 / 2.0))
    half_sets = [_reciprocal(ranks, j, half) for j in range(num_all)]
    in_set = np.zeros(num_all, dtype=bool)  # membership mask of the current k_reciprocal
    indptr = [0]
    indices: list[np.ndarray] = []
    data: list[np.ndarray] = []
    for i in range(num_all):
        k_reciprocal = _reciprocal(ranks, i, k1)
        in_set[k_reciprocal] = True
        parts = [k_reciprocal]
        for candidate in k_reciprocal:
            cand = half_sets[candidate]
            # Both sets hold distinct indices, so this counts their intersection.
            if np.count_nonzero(in_set[cand]) > 2.0 / 3 * len(cand):
                parts.append(cand)
        in_set[k_reciprocal] = False
        expansion = np.unique(np.concatenate(parts))
        # The same float32 steps as pass 1 (square, cast, divide by the row maximum).
        weight = np.exp(-(_squared(pairs(i, expansion)) / row_max[i]))
        indices.append(expansion)
        data.append(weight / np.sum(weight))
        indptr.append(indptr[-1] + len(expansion))
    v = sp.csr_matrix(
        (np.concatenate(data), np.concatenate(indices), np.asarray(indptr)),
        shape=(num_all, num_all),
        dtype=np.float32,
    )

    # Local query expansion: V_qe[i] = mean of V over i's k2 nearest neighbours (sparse).
    if k2 != 1:
        neighbours = ranks[:, :k2]
        expand = sp.csr_matrix(
            (
                np.full(neighbours.size, 1.0 / k2, dtype=np.float32),
                neighbours.ravel(),
                np.arange(0, neighbours.size + 1, k2),
            ),
            shape=(num_all, num_all),
        )
        v = (expand @ v).tocsr()
    v.eliminate_zeros()

    # Jaccard, query rows x gallery columns: sum over common support of min(V_q, V_g). Each
    # final row overwrites its row of original_qg (same float32 arithmetic as combining whole
    # matrices), so no second, third or fourth [Q, G] matrix is ever allocated: at MSMT17 size
    # (11,659 x 82,161) each is 3.8 GB.
    v_gallery = v[num_q:].tocsc()
    num_g = num_all - num_q
    for i in range(num_q):
        cols = v.indices[v.indptr[i] : v.indptr[i + 1]]
        vals = v.data[v.indptr[i] : v.indptr[i + 1]]
        sub = v_gallery[:, cols]
        owner = np.repeat(np.arange(len(cols)), np.diff(sub.indptr))
        mins = np.minimum(sub.data, vals[owner])
        temp_min = np.bincount(sub.indices, weights=mins, minlength=num_g).astype(np.float32)
        jaccard = 1 - temp_min / (2.0 - temp_min)
        original_qg[i] = jaccard * (1 - lambda_value) + original_qg[i] * lambda_value

    return original_qg


def re_ranking(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    block: int = 1024,
    workers: int = 2,
) -> np.ndarray:
    """Re-ranked distances [Q, G] (float32), equal to `re_ranking_dense` without N x N memory.

    Args:
      q_g_dist: [Q, G] Euclidean query-gallery distances.
      q_q_dist: [Q, Q] Euclidean query-query distances (symmetric).
      g_g_dist: [G, G] Euclidean gallery-gallery distances (symmetric). Read once in blocks
        of rows (``g_g_dist[start:stop]``, ``block`` rows at a time at most) and then a few
        entries of one row per gallery probe, so it may be a row-major ``np.memmap`` on disk
        larger than memory; the caller may pass it as such.
      k1, k2, lambda_value: as in the paper / release.
      block: rows of the (Q+G)-wide distance matrix materialised at once (over all workers).
      workers: threads of the first pass, each on block / workers rows at a time. The
        result does not depend on it.

    Distance matrices are assumed symmetric (as Euclidean distances are): the release's
    column maxima are then row maxima, which lets each row block be normalised on its own.
    """
    _check(k1, k2, lambda_value, block, workers)
    num_q, num_g = _check_blocks(q_g_dist, q_q_dist, g_g_dist)

    def rows(start: int, stop: int) -> np.ndarray:
        parts = []
        if start < num_q:
            q_stop = min(stop, num_q)
            parts.append(np.concatenate([q_q_dist[start:q_stop], q_g_dist[start:q_stop]], axis=1))
        if stop > num_q:
            g_start, g_stop = max(start, num_q) - num_q, stop - num_q
            parts.append(
                np.concatenate(
                    [np.asarray(q_g_dist[:, g_start:g_stop]).T, g_g_dist[g_start:g_stop]], axis=1
                )
            )
        return np.concatenate(parts, axis=0)

    def pairs(i: int, cols: np.ndarray) -> np.ndarray:
        split = np.searchsorted(cols, num_q)  # query columns, then gallery columns
        query_cols, gallery_cols = cols[:split], cols[split:] - num_q
        if i < num_q:
            return np.concatenate([q_q_dist[i, query_cols], q_g_dist[i, gallery_cols]])
        return np.concatenate([q_g_dist[query_cols, i - num_q],
                               g_g_dist[i - num_q, gallery_cols]])

    return _rerank_rows(rows, num_q, num_q + num_g, k1, k2, lambda_value, block, pairs,
                        workers)


def re_ranking_features(
    query_features: np.ndarray,
    gallery_features: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    block: int = 1024,
    workers: int = 2,
) -> np.ndarray:
    """Re-ranked distances [Q, G] from features [Q, D] and [G, D]; never forms G x G.

    Euclidean distances are computed ``block`` rows at a time with `euclidean_distances` for
    the neighbour lists, and per probe for the few distances its encoding needs, so the result
    equals `re_ranking` on distances computed by that function (up to matrix-product rounding,
    which is not guaranteed bitwise identical across block shapes). `block` and `workers` are
    `re_ranking`'s.
    """
    _check(k1, k2, lambda_value, block, workers)
    if query_features.ndim != 2 or gallery_features.ndim != 2:
        raise ValueError("features must be 2-D [num, dim]")
    if query_features.shape[1] != gallery_features.shape[1]:
        raise ValueError(
            f"feature dims differ: {query_features.shape[1]} vs {gallery_features.shape[1]}"
        )
    features = np.concatenate([query_features, gallery_features], axis=0)
    num_q = query_features.shape[0]

    def rows(start: int, stop: int) -> np.ndarray:
        return euclidean_distances(features[start:stop], features)

    def pairs(i: int, cols: np.ndarray) -> np.ndarray:
        return euclidean_distances(features[i : i + 1], features[cols])[0]

    return _rerank_rows(rows, num_q, features.shape[0], k1, k2, lambda_value, block, pairs,
                        workers)
