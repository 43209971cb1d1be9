"""AlignedReID's aligned local distance between pairs of images, with its gradient (training).

Zhang et al. 2017, "AlignedReID: Surpassing Human-Level Performance in Person
Re-Identification" (arXiv:1711.08184), Sec. 3.1. Each image is described by H horizontal
stripes f_1..f_H (C channels each). For two images the element distances are
d_ij = (e^||f_i - g_j|| - 1) / (e^||f_i - g_j|| + 1) = tanh(||f_i - g_j|| / 2), and the aligned
distance is the length of the shortest right/down path from (0, 0) to (H-1, H-1) through the
H x H matrix (`tf_reid.losses.wavefront`). The two images may also be cut into different numbers
of stripes, M and L: the matrix is then M x L and the path visits M+L-1 cells.

`aligned_distance` is what `tf_reid.losses.triplet.local_trihard` scores its 2B mined pairs
with. Its forward pass (element distances and wavefront) is one XLA call; its gradient is a
`tf.custom_gradient` (the tape cannot cross the wavefront's XLA while_loop) that chains the
optimal path's 0/1 indicator through tanh(||x_i - y_j|| / 2) by hand. The query x gallery
matrix for retrieval is `tf_reid.losses.aligned_matrix`.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from tf_reid.losses.wavefront import path_cells, wavefront


def _distances_and_slopes(squared: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Element distances tanh(e / 2) and their slopes (1 - tanh^2(e / 2)) / (2 e), any shape.

    e = sqrt(squared), the expansion's squared distance clipped at 0; both are 0 where it is at
    most 1e-12 (as in `safe_sqrt`), so identical stripes never give NaN.
    d tanh(e / 2) / d x_i = slope * (x_i - y_j).
    """
    squared = tf.maximum(squared, 0.0)
    nonzero = squared > 1e-12
    norm = tf.sqrt(tf.where(nonzero, squared, tf.ones_like(squared)))
    d = tf.where(nonzero, tf.tanh(norm / 2), 0.0)
    return d, tf.where(nonzero, (1 - tf.square(d)) / (2 * norm), 0.0)


def _fused_forward(x: tf.Tensor, y: tf.Tensor, x_sq: tf.Tensor, y_sq: tf.Tensor
                   ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Aligned distances [N], the wavefront's choices and the element distances' slopes.

    ||x_i - y_j||^2 is expanded as ||x_i||^2 + ||y_j||^2 - 2 x_i.y_j: one batched matmul and
    [N, M, L] intermediates, where the difference form needs [N, M, L, C]. The expansion
    cancels for nearly equal stripes: equal stripes come out about sqrt(machine epsilon) *
    ||x_i|| apart instead of 0.

    Args:
        x: [N, M, C], y: [N, L, C] stripes; x_sq: [N, M], y_sq: [N, L] their squared norms.

    Returns:
        lengths: [N].
        from_above: [M+L-1, M, N] bool, as from `wavefront`.
        slope: [N, M, L], (1 - d_ij^2) / (2 ||x_i - y_j||), the chain rule's factor from
            tanh(e / 2) through e = ||x_i - y_j||; 0 where the squared distance is at most 1e-12
            (as in `safe_sqrt`).
    """
    d, slope = _distances_and_slopes(x_sq[:, :, tf.newaxis] + y_sq[:, tf.newaxis, :]
                                     - 2.0 * tf.matmul(x, y, transpose_b=True))
    lengths, from_above = wavefront(d)
    return lengths, from_above, slope


def _path_weights(from_above: tf.Tensor, slope: tf.Tensor, upstream: tf.Tensor
                  ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """w = upstream * slope on the path's cells, 0 elsewhere: w [N, M, L], w^T, row and column sums."""
    path = path_cells(from_above, slope.shape[2])
    w = tf.where(path, slope, tf.zeros_like(slope)) * upstream[:, tf.newaxis, tf.newaxis]
    return w, tf.transpose(w, [0, 2, 1]), tf.reduce_sum(w, axis=2), tf.reduce_sum(w, axis=1)


def _chain(a: tf.Tensor, b: tf.Tensor, w: tf.Tensor, row_sums: tf.Tensor) -> tf.Tensor:
    """sum_j w_ij (a_i - b_j) = a_i rowsum(w)_i - (w b)_i: [N, M, C] from a [N, M, C], b [N, L, C]."""
    return a * row_sums[:, :, tf.newaxis] - tf.matmul(w, b)


# One XLA function per (M, L, dtype) with N and C left dynamic in the signature: a plain
# tf.function would retrace for every new N, and `reduce_retracing` could relax M and L, which
# must stay static.
@functools.lru_cache(maxsize=None)
def _compiled_fused(rows: int, cols: int, dtype: tf.DType):
    forward = tf.function(_fused_forward, jit_compile=True, input_signature=[
        tf.TensorSpec([None, rows, None], dtype), tf.TensorSpec([None, cols, None], dtype),
        tf.TensorSpec([None, rows], dtype), tf.TensorSpec([None, cols], dtype)])
    weights = tf.function(_path_weights, jit_compile=True, input_signature=[
        tf.TensorSpec([rows + cols - 1, rows, None], tf.bool),
        tf.TensorSpec([None, rows, cols], dtype), tf.TensorSpec([None], dtype)])
    return forward, weights


@functools.lru_cache(maxsize=None)
def _compiled_chain(rows: int, cols: int, dtype: tf.DType):
    return tf.function(_chain, jit_compile=True, input_signature=[
        tf.TensorSpec([None, rows, None], dtype), tf.TensorSpec([None, cols, None], dtype),
        tf.TensorSpec([None, rows, cols], dtype), tf.TensorSpec([None, rows], dtype)])


@tf.custom_gradient
def _fused_aligned_distance(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """`aligned_distance` of checked [N, M, C] and [N, L, C] stripes, with its custom gradient."""
    rows, cols = x.shape[1], y.shape[1]
    forward, weights = _compiled_fused(rows, cols, x.dtype)
    # The tape must not record the XLA calls (it cannot cross an XLA while_loop); `grad` below
    # stands in for them. The squared norms stay outside XLA, where TF's einsum spreads the
    # reduction over every intra-op thread; XLA's CPU reduction runs on one.
    x, y = tf.stop_gradient(x), tf.stop_gradient(y)
    lengths, from_above, slope = forward(x, y, tf.einsum("nic,nic->ni", x, x),
                                         tf.einsum("njc,njc->nj", y, y))

    def grad(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # One XLA call per input: each is a GEMM plus an elementwise fusion, and XLA's CPU
        # backend runs two such programs faster than one holding both GEMMs.
        w, w_t, row_sums, col_sums = weights(from_above, slope, upstream)
        return (_compiled_chain(rows, cols, x.dtype)(x, y, w, row_sums),
                _compiled_chain(cols, rows, x.dtype)(y, x, w_t, col_sums))

    return lengths, grad


def aligned_distance(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """AlignedReID's local distance between N pairs of images' stripe features.

    The shortest path through the pair's element distances tanh(||x_i - y_j|| / 2), fused: the
    forward pass (element distances and wavefront) is one XLA call after the squared norms, and
    the backward pass chains the path indicator through tanh(||x_i - y_j|| / 2) by hand
    (`_path_weights`, `_chain`) instead of taping through the expansion, whose gradient makes
    several [N, M, C] temporaries. bench/local_distance.py times it.

    Args:
        x: [N, M, C] stripes of the first image of each pair.
        y: [N, L, C] stripes of the second image, same dtype; L may differ from M. M and L must
            be static; N and C may be unknown.

    Returns:
        [N] aligned distances in [0, M+L-1]; symmetric in x and y. The gradient with respect to
        the stripes is finite everywhere, identical stripes included.

    Reference: arXiv:1711.08184, Sec. 3.1.
    """
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y, dtype=x.dtype)
    if x.shape.rank != 3 or y.shape.rank != 3 or x.shape[1] is None or y.shape[1] is None:
        raise ValueError(f"aligned_distance needs [N, M, C] and [N, L, C] with static M and L, "
                         f"got {x.shape} and {y.shape}")
    return _fused_aligned_distance(x, y)
