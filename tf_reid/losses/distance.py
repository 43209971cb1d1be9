"""Euclidean distance matrices whose gradient stays finite where two features coincide."""

from __future__ import annotations

import tensorflow as tf

# Squared distances at or below this are treated as exactly zero distance. It only has to catch
# the zeros (sqrt's derivative 1/(2 sqrt(s)) is infinite there); a squared distance of 1e-12 is a
# distance of 1e-6, far below anything a ReID embedding distinguishes.
_ZERO_SQUARED = 1e-12


def safe_sqrt(squared: tf.Tensor) -> tf.Tensor:
    """sqrt of squared distances (any shape), clipped at 0, with a zero gradient at zero distance.

    Squared distances at or below 1e-12 give exactly 0, where a plain sqrt's derivative
    1/(2 sqrt(s)) is infinite and would turn into NaN after the chain rule.
    """
    squared = tf.maximum(squared, 0.0)  # rounding in the expanded form can go slightly negative
    nonzero = squared > tf.cast(_ZERO_SQUARED, squared.dtype)
    # The inner where keeps sqrt's argument away from 0 so the unselected branch's gradient is
    # finite; the outer where then passes it a zero upstream gradient (0 * finite, never 0 * inf).
    safe = tf.where(nonzero, squared, tf.ones_like(squared))
    return tf.where(nonzero, tf.sqrt(safe), tf.zeros_like(squared))


def pairwise_distance(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Euclidean distance between every row of `x` and every row of `y`.

    Computed as ||x||^2 + ||y||^2 - 2 x y^T (one matmul, no [M, N, D] intermediate), clipped at 0
    because rounding can make it slightly negative. Entries whose squared distance is at most 1e-12
    (x_i == y_j, e.g. the diagonal of `pairwise_distance(x, x)`) are exactly 0 with a zero
    gradient, where a plain sqrt would give an infinite one and NaN after the chain rule. The
    expansion cancels catastrophically for nearly equal rows: in float32 a "zero" distance can
    come out around 1e-3 * ||x_i||, which is harmless for mining and losses but not a test of
    identity.

    Args:
        x: [M, D] features.
        y: [N, D] features of the same dtype.

    Returns:
        [M, N] distances, dist[i, j] = ||x_i - y_j||_2.

    Reference: the batch distance of Hermans et al. 2017, "In Defense of the Triplet Loss for
    Person Re-Identification" (arXiv:1703.07737).
    """
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y, dtype=x.dtype)
    x_sq = tf.reduce_sum(tf.square(x), axis=1, keepdims=True)  # [M, 1]
    y_sq = tf.reduce_sum(tf.square(y), axis=1)[tf.newaxis, :]  # [1, N]
    return safe_sqrt(x_sq + y_sq - 2.0 * tf.matmul(x, y, transpose_b=True))
