"""The "exact_bf16" kind's search: every gallery item scored by a bfloat16 GEMM, the best groups
kept, their items re-ranked in float32.

Storage is a plain faiss IndexFlatL2 (so build, save and load are the exact kind's); only the
search differs. Per query batch and per block of `block` gallery items:

  score[q, n] = q . g_n - (||g_n||^2 - c) / 2      bfloat16 GEMM (oneDNN: ~1.8x float32 here)
  group max   = max of the scores of `group` consecutive items
  groups kept = the max(groups, k) groups with the highest maxima     (tf.math.top_k)
  re-ranking  = exact float32 squared distances to the kept groups' items, k smallest

Maximising the score is minimising ||q - g||^2 = ||q||^2 + ||g||^2 - 2 q.g (c, the median of
||g||^2, only keeps the bias near 0 where bfloat16 is precise: on L2-normalised embeddings it is
~0). Why groups: a group holds one of the k best items exactly when its maximum is >= the k-th
best score, so the k groups with the highest maxima contain the k best items by bfloat16 score
(ties aside); a one-pass max is much cheaper than a per-block top-k. The only approximation is
bfloat16's rounding (8 significant bits) of the scores, which can swap items whose distances
are within about 1e-3; `groups` above k leaves margin for that. Returned distances are float32
and exact for the items returned.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import faiss
import numpy as np
import tensorflow as tf

@dataclasses.dataclass(frozen=True, eq=False)
class Prepared:
    """A gallery laid out for the bfloat16 search.

    Attributes:
      flat: the faiss IndexFlat holding the N float32 items (for the re-ranking).
      transforms: the pre-transforms (PCA) that queries go through first.
      items: [P, d] bfloat16 tensor, P = N rounded up to a multiple of `group`.
      bias: [P] bfloat16 tensor, -(||g||^2 - c) / 2, -1e30 for the padding rows.
      group: items per group.
    """

    flat: faiss.IndexFlat
    transforms: list[faiss.VectorTransform]
    items: tf.Tensor
    bias: tf.Tensor
    group: int


def prepare(index: faiss.Index, group: int) -> Prepared:
    """A flat faiss index (optionally behind pre-transforms) padded to whole groups and cast
    to bfloat16. The float32 items stay in faiss."""
    transforms = []
    if isinstance(index, faiss.IndexPreTransform):
        transforms = [faiss.downcast_VectorTransform(index.chain.at(i))
                      for i in range(index.chain.size())]
        index = faiss.downcast_index(index.index)
    if not isinstance(index, faiss.IndexFlat):
        raise TypeError(f"the bfloat16 search needs a flat index, got {type(index).__name__}")
    n, dim = index.ntotal, index.d
    vectors = faiss.rev_swig_ptr(index.get_xb(), n * dim).reshape(n, dim)  # a view
    squared = np.einsum("nd,nd->n", vectors, vectors)
    padded = -(-n // group) * group
    bias = np.full(padded, -1e30, np.float32)
    bias[:n] = -(squared - np.median(squared)) / 2
    # Cast in chunks: no float32 copy of the gallery is made.
    items = tf.concat([tf.cast(vectors[start:start + 65_536], tf.bfloat16)
                       for start in range(0, n, 65_536)]
                      + [tf.zeros([padded - n, dim], tf.bfloat16)], axis=0)
    return Prepared(index, transforms, items, tf.constant(bias, tf.bfloat16), group)


def best_groups(queries: tf.Tensor, items: tf.Tensor, bias: tf.Tensor, group: int, keep: int,
                block: int) -> tf.Tensor:
    """The `keep` groups of each query with the highest bfloat16 score maxima.

    Args:
      queries: [Q, d] float32.
      items: [P, d] bfloat16, P a multiple of `group`.
      bias: [P] bfloat16.
      group, keep: items per group, groups kept (<= P / group).
      block: gallery items per GEMM, a multiple of `group`.

    Returns:
      [Q, keep] int32 group numbers (group j = items j*group ... j*group + group - 1).
    """
    q16 = tf.cast(queries, tf.bfloat16)
    maxima = []
    for start in range(0, items.shape[0], block):
        scores = tf.matmul(q16, items[start:start + block], transpose_b=True)
        scores += bias[start:start + block]
        maxima.append(tf.reduce_max(tf.reshape(scores, [tf.shape(q16)[0], -1, group]), axis=2))
    return tf.math.top_k(tf.concat(maxima, axis=1), keep, sorted=False).indices


@functools.lru_cache(maxsize=None)
def _compiled_best_groups(padded: int, dim: int, group: int, keep: int, block: int):
    """`best_groups` as one graph per gallery shape and parameters, any number of queries."""
    return tf.function(functools.partial(best_groups, group=group, keep=keep, block=block),
                       input_signature=[tf.TensorSpec([None, dim], tf.float32),
                                        tf.TensorSpec([padded, dim], tf.bfloat16),
                                        tf.TensorSpec([padded], tf.bfloat16)])


def search(prepared: Prepared, queries: np.ndarray, k: int, groups: int,
           block: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest items of each query (see the module docstring).

    Args:
      prepared: `prepare`'s gallery.
      queries: [Q, D] float32.
      k: 1 <= k <= N.
      groups: groups kept per query (at least k are).
      block: gallery items per GEMM (rounded down to whole groups).

    Returns:
      As faiss's `index.search`: ([Q, k] float32 squared Euclidean distances ascending,
      [Q, k] int64 indices).
    """
    from tf_reid.index.exact import smallest_k

    for transform in prepared.transforms:
        queries = transform.apply(queries)
    queries = np.ascontiguousarray(queries, np.float32)
    group, n = prepared.group, prepared.flat.ntotal
    keep = min(max(groups, k), prepared.items.shape[0] // group)
    block = max(group, block // group * group)
    padded, dim = prepared.items.shape
    kept = _compiled_best_groups(padded, dim, group, keep, block)(
        tf.constant(queries), prepared.items, prepared.bias).numpy()
    # Items in gallery order (ties then resolve by index, as in exact search); padding >= N.
    candidates = np.sort((kept[:, :, None] * group + np.arange(group)).reshape(len(kept), -1),
                         axis=1)
    real = candidates < n
    safe = np.where(real, candidates, 0)
    squared = np.empty(safe.shape, np.float32)
    prepared.flat.compute_distance_subset(len(queries), faiss.swig_ptr(queries), safe.shape[1],
                                          faiss.swig_ptr(squared), faiss.swig_ptr(safe))
    distances, columns = smallest_k(np.where(real, squared, np.inf), k)
    return distances, np.take_along_axis(candidates, columns, axis=1).astype(np.int64)


def search_index(index: faiss.Index, cache: dict[str, Any], queries: np.ndarray, k: int,
                 params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """`search` with the kind's parameters, preparing `index` once per `cache` and group."""
    group = int(params["group"])
    if cache.get("bf16_group") != group:
        cache.update(bf16_group=group, bf16=prepare(index, group))
    return search(cache["bf16"], queries, k, int(params["groups"]), int(params["block"]))
