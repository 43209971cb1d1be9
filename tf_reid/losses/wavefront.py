"""The aligned distance's dynamic programme: an anti-diagonal wavefront and its trace-back.

Zhang et al. 2017, "AlignedReID" (arXiv:1711.08184), Sec. 3.1: the aligned distance of two
images is the length of the shortest path from (0, 0) to (M-1, L-1) through their M x L matrix
of element distances d, moving only right or down:

    S(i, j) = d_ij + min(S(i-1, j), S(i, j-1)),   S(0, 0) = d_00,

with the first row and column as cumulative sums; every such path visits M+L-1 cells.

S(i, j) depends only on anti-diagonal i + j - 1, so M+L-1 vectorised steps, each updating one
whole anti-diagonal for all N pairs, replace M*L scalar steps (`wavefront`). A gradient tape
cannot see through an XLA while_loop ("Support for TensorList crossing the XLA/TF boundary is not
implemented"), so callers supply the gradient themselves: the derivative of the path length with
respect to d is the 0/1 indicator of the optimal path's cells (a subgradient where two paths tie;
ties prefer coming from above), which `path_cells` traces back from the argmin choices the
wavefront keeps. Both are meant to run inside an XLA-compiled function with static M and L.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _skew_indices(rows: int, cols: int) -> np.ndarray:
    """[M+L-1, M] flat indices i*L + j of the cell in row i of anti-diagonal k = i + j.

    Cells off the M x L matrix (j < 0 or j >= L) point at index M*L, one past the end, where the
    caller puts +inf.
    """
    k = np.arange(rows + cols - 1)[:, None]
    i = np.arange(rows)[None, :]
    j = k - i
    return np.where((j >= 0) & (j < cols), i * cols + j, rows * cols)


def _unskew_indices(rows: int, cols: int) -> np.ndarray:
    """[M*L] flat indices (i+j)*M + i into a [M+L-1, M] skewed layout, for cell (i, j) in order."""
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return ((i + j) * rows + i).reshape(-1)


def wavefront(d: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Shortest path lengths and, per cell, whether its best predecessor is the cell above.

    Pairs are the minor axis throughout (cells laid out [M*L, N]), so each step's update is
    contiguous over the N pairs.

    Args:
        d: [N, M, L] cell costs (any real values); M and L must be static.

    Returns:
        lengths: [N], S(M-1, L-1).
        from_above: [M+L-1, M, N] bool in the skewed layout (anti-diagonal k, row i): True where
            S(i-1, j) <= S(i, j-1), so ties go to the cell above.

    Reference: arXiv:1711.08184, Sec. 3.1.
    """
    rows, cols = d.shape[-2], d.shape[-1]
    n = tf.shape(d)[0]
    diagonals = rows + cols - 1
    inf = tf.constant(np.inf, d.dtype)
    # [M*L + 1, N]: cell i*L + j of pair n in row i*L + j, and a row of +inf for cells off the
    # matrix.
    cells = tf.concat([tf.transpose(tf.reshape(d, [n, rows * cols])), tf.fill([1, n], inf)],
                      axis=0)
    skew = tf.constant(_skew_indices(rows, cols), tf.int32)

    def diagonal(k):
        return tf.gather(cells, tf.gather(skew, k))  # [M, N]

    choices = tf.TensorArray(tf.bool, size=diagonals, element_shape=[rows, None])
    choices = choices.write(0, tf.zeros([rows, n], tf.bool))

    def step(k, previous, choices):
        # Row i of anti-diagonal k: the cell above is row i-1 of anti-diagonal k-1, the cell to
        # the left row i. Off-matrix cells hold +inf, which keeps the edges' single predecessor.
        above = tf.concat([tf.fill([1, n], inf), previous[:-1]], axis=0)
        from_above = above <= previous
        current = diagonal(k) + tf.minimum(above, previous)
        return k + 1, current, choices.write(k, from_above)

    _, last, choices = tf.while_loop(lambda k, *_: k < diagonals, step,
                                     (tf.constant(1), diagonal(tf.constant(0)), choices))
    return last[rows - 1], choices.stack()


def path_cells(from_above: tf.Tensor, cols: int) -> tf.Tensor:
    """0/1 indicator [N, M, L] (bool) of the optimal path, traced back from `wavefront`'s choices.

    Args:
        from_above: [M+L-1, M, N] bool from `wavefront`; M static.
        cols: L.

    Returns:
        [N, M, L] bool, True on the M+L-1 cells of each pair's optimal path.
    """
    diagonals, rows, n = from_above.shape[0], from_above.shape[1], tf.shape(from_above)[2]
    cells = tf.TensorArray(tf.bool, size=diagonals, element_shape=[rows, None])

    def step(k, row, cells):
        here = tf.one_hot(row, rows, on_value=True, off_value=False, axis=0)  # [M, N]
        up = tf.reduce_any(from_above[k] & here, axis=0)
        return k - 1, row - tf.cast(up, tf.int32), cells.write(k, here)

    # Anti-diagonal 0's choices are all False, so the trace ends in row 0 there.
    _, _, cells = tf.while_loop(lambda k, *_: k >= 0, step,
                                (tf.constant(diagonals - 1), tf.fill([n], rows - 1), cells))
    skewed = tf.reshape(cells.stack(), [diagonals * rows, n])
    on_path = tf.gather(skewed, _unskew_indices(rows, cols))  # [M*L, N]
    return tf.reshape(tf.transpose(on_path), [n, rows, cols])
