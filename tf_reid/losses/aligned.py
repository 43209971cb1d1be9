"""AlignedReID's aligned local distance: the shortest path through the stripe distance matrix.

Zhang et al. 2017, "AlignedReID: Surpassing Human-Level Performance in Person
Re-Identification" (arXiv:1711.08184), Sec. 3.1. Each image is described by H horizontal
stripes f_1..f_H (C channels each). For two images the element distances are
d_ij = (e^||f_i - g_j|| - 1) / (e^||f_i - g_j|| + 1) = tanh(||f_i - g_j|| / 2), and the aligned
distance is the length of the shortest path from (0, 0) to (H-1, H-1) through the H x H matrix
moving only right or down:

    S(i, j) = d_ij + min(S(i-1, j), S(i, j-1)),   S(0, 0) = d_00,

with the first row and column as cumulative sums. Every such path visits 2H-1 cells.

The dynamic programme runs as an anti-diagonal wavefront: S(i, j) depends only on the previous
anti-diagonal i + j - 1, so 2H-1 vectorised steps, each updating one whole anti-diagonal for all
N pairs, replace H^2 scalar steps. It is an XLA-compiled `tf.while_loop`. A gradient tape cannot
see through an XLA while_loop ("Support for TensorList crossing the XLA/TF boundary is not
implemented"), so the gradient is supplied by `tf.custom_gradient`: the derivative of the path
length with respect to d is the 0/1 indicator of the cells on the optimal path (a subgradient
where two paths tie; ties prefer coming from above), found by tracing back the argmin choices
that the forward pass keeps, again in XLA.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from tf_reid.losses.distance import safe_sqrt


def _tanh_half_norm(squared: tf.Tensor) -> tf.Tensor:
    """tanh(sqrt(squared) / 2), elementwise, with a finite (zero) gradient at zero distance."""
    return tf.tanh(safe_sqrt(squared) / 2)


def element_distances(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Stripe-to-stripe distances tanh(||x_i - y_j|| / 2) for each of N pairs of images.

    ||x_i - y_j||^2 is expanded as ||x_i||^2 + ||y_j||^2 - 2 x_i.y_j: one batched matmul and
    [N, H, H] intermediates, where the difference form needs [N, H, H, C] (C times the memory and,
    measured with C = 128 on this host, 3x the time; see bench/local_distance.py). The expansion
    cancels for nearly equal stripes: in float32 equal random stripes come out up to about
    1e-3 * ||x_i|| apart instead of 0 (float64: 4e-8 * ||x_i||; measured). Squared distances up
    to 1e-12 are exactly 0 with a zero gradient, so x == y never gives NaN.

    Args:
        x: [N, H, C] stripe features of the first image of each pair.
        y: [N, H, C] stripe features of the second image, same dtype.

    Returns:
        [N, H, H] distances, out[n, i, j] = tanh(||x[n, i] - y[n, j]||_2 / 2), in [0, 1].

    Reference: arXiv:1711.08184, Sec. 3.1 (the normalised distance (e^d - 1) / (e^d + 1)).
    """
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y, dtype=x.dtype)
    x_sq = tf.reduce_sum(tf.square(x), axis=-1)[:, :, tf.newaxis]  # [N, H, 1]
    y_sq = tf.reduce_sum(tf.square(y), axis=-1)[:, tf.newaxis, :]  # [N, 1, H]
    return _tanh_half_norm(x_sq + y_sq - 2.0 * tf.matmul(x, y, transpose_b=True))


def _cross_element_distances(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """[M, N, H, H] `element_distances` of every x image against every y image, by one GEMM.

    Args:
        x: [M, H, C] stripes.
        y: [N, H, C] stripes, same dtype.
    """
    m, n = tf.shape(x)[0], tf.shape(y)[0]
    stripes, channels = x.shape[1], tf.shape(x)[2]
    gram = tf.matmul(tf.reshape(x, [m * stripes, channels]), tf.reshape(y, [n * stripes, channels]),
                     transpose_b=True)  # [M*H, N*H]
    gram = tf.transpose(tf.reshape(gram, [m, stripes, n, stripes]), [0, 2, 1, 3])
    x_sq = tf.reduce_sum(tf.square(x), axis=-1)[:, tf.newaxis, :, tf.newaxis]  # [M, 1, H, 1]
    y_sq = tf.reduce_sum(tf.square(y), axis=-1)[tf.newaxis, :, tf.newaxis, :]  # [1, N, 1, H]
    return _tanh_half_norm(x_sq + y_sq - 2.0 * gram)


def _skew_indices(stripes: int) -> np.ndarray:
    """[2H-1, H] flat indices i*H + j of the cell in row i of anti-diagonal k = i + j.

    Cells off the matrix (j < 0 or j >= H) point at index H*H, one past the end, where the
    caller puts +inf.
    """
    k = np.arange(2 * stripes - 1)[:, None]
    i = np.arange(stripes)[None, :]
    j = k - i
    return np.where((j >= 0) & (j < stripes), i * stripes + j, stripes * stripes)


def _unskew_indices(stripes: int) -> np.ndarray:
    """[H*H] flat indices (i+j)*H + i into a [2H-1, H] skewed layout, for cell (i, j) in order."""
    i, j = np.meshgrid(np.arange(stripes), np.arange(stripes), indexing="ij")
    return ((i + j) * stripes + i).reshape(-1)


def _wavefront(d: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Shortest path lengths and, per cell, whether its best predecessor is the cell above.

    Pairs are the minor axis throughout ([..., N]): each step's update is then contiguous over N
    (measured 1.4x faster than N-major on this host's CPU).

    Args:
        d: [N, H, H] cell costs; H must be static.

    Returns:
        lengths: [N], S(H-1, H-1).
        from_above: [2H-1, H, N] bool in the skewed layout (anti-diagonal k, row i): True where
            S(i-1, j) <= S(i, j-1), so ties go to the cell above.
    """
    stripes = d.shape[-1]
    n = tf.shape(d)[0]
    inf = tf.constant(np.inf, d.dtype)
    # [H*H + 1, N]: cell i*H + j in row i*H + j, and a row of +inf for cells off the matrix.
    cells = tf.concat([tf.transpose(tf.reshape(d, [n, stripes * stripes])), tf.fill([1, n], inf)],
                      axis=0)
    skew = tf.constant(_skew_indices(stripes), tf.int32)
    choices = tf.TensorArray(tf.bool, size=2 * stripes - 1, element_shape=[stripes, None])
    choices = choices.write(0, tf.zeros([stripes, n], tf.bool))

    def step(k, previous, choices):
        # Row i of anti-diagonal k: the cell above is row i-1 of anti-diagonal k-1, the cell to
        # the left row i. Off-matrix cells hold +inf, which keeps the edges' single predecessor.
        above = tf.concat([tf.fill([1, n], inf), previous[:-1]], axis=0)
        from_above = above <= previous
        current = tf.gather(cells, tf.gather(skew, k)) + tf.minimum(above, previous)
        return k + 1, current, choices.write(k, from_above)

    _, last, choices = tf.while_loop(lambda k, *_: k < 2 * stripes - 1, step,
                                     (tf.constant(1), tf.gather(cells, skew[0]), choices))
    return last[stripes - 1], choices.stack()


def _path_cells(from_above: tf.Tensor) -> tf.Tensor:
    """0/1 indicator [N, H, H] of the optimal path, traced back from the wavefront's choices.

    Args:
        from_above: [2H-1, H, N] bool from `_wavefront`.
    """
    diagonals, stripes, n = from_above.shape[0], from_above.shape[1], tf.shape(from_above)[2]
    cells = tf.TensorArray(tf.bool, size=diagonals, element_shape=[stripes, None])

    def step(k, row, cells):
        here = tf.one_hot(row, stripes, on_value=True, off_value=False, axis=0)  # [H, N]
        up = tf.reduce_any(from_above[k] & here, axis=0)
        return k - 1, row - tf.cast(up, tf.int32), cells.write(k, here)

    # Anti-diagonal 0's choices are all False, so the trace ends in row 0 there.
    _, _, cells = tf.while_loop(lambda k, *_: k >= 0, step,
                                (tf.constant(diagonals - 1), tf.fill([n], stripes - 1), cells))
    skewed = tf.reshape(cells.stack(), [diagonals * stripes, n])
    return tf.reshape(tf.transpose(tf.gather(skewed, _unskew_indices(stripes))),
                      [n, stripes, stripes])


# One XLA function per (H, dtype) with N left dynamic in the signature: a plain tf.function
# would retrace for every new N, and `reduce_retracing` could relax H, which must stay static.
@functools.lru_cache(maxsize=None)
def _compiled_wavefront(stripes: int, dtype: tf.DType):
    return tf.function(_wavefront, jit_compile=True, input_signature=[
        tf.TensorSpec([None, stripes, stripes], dtype)])


@functools.lru_cache(maxsize=None)
def _compiled_path_cells(stripes: int):
    return tf.function(_path_cells, jit_compile=True, input_signature=[
        tf.TensorSpec([2 * stripes - 1, stripes, None], tf.bool)])


@tf.custom_gradient
def shortest_path(d: tf.Tensor) -> tf.Tensor:
    """Length of the shortest right/down path from (0, 0) to (H-1, H-1), for N matrices.

    S(i, j) = d[i, j] + min(S(i-1, j), S(i, j-1)), computed as an XLA anti-diagonal wavefront.
    Differentiable: the gradient with respect to d is the 0/1 indicator of the optimal path's
    cells (ties prefer the cell above).

    Args:
        d: [N, H, H] cell costs (any real values) with a static H; N may be 0.

    Returns:
        [N] path lengths S(H-1, H-1).

    Reference: arXiv:1711.08184, Sec. 3.1.
    """
    d = tf.convert_to_tensor(d)
    if d.shape.rank != 3 or d.shape[-1] is None or d.shape[-1] != d.shape[-2]:
        raise ValueError(f"shortest_path needs [N, H, H] with a static H, got {d.shape}")
    stripes = d.shape[-1]
    # The tape must not record the XLA call itself (it cannot differentiate an XLA while_loop);
    # the custom gradient below stands in for it.
    lengths, from_above = _compiled_wavefront(stripes, d.dtype)(tf.stop_gradient(d))

    def grad(upstream: tf.Tensor) -> tf.Tensor:
        return upstream[:, tf.newaxis, tf.newaxis] * tf.cast(
            _compiled_path_cells(stripes)(from_above), upstream.dtype)

    return lengths, grad


def aligned_distance(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """AlignedReID's local distance between N pairs of images' stripe features.

    Args:
        x: [N, H, C] stripes of the first image of each pair.
        y: [N, H, C] stripes of the second image, same dtype.

    Returns:
        [N] aligned distances in [0, 2H-1]; symmetric in x and y.

    Reference: arXiv:1711.08184, Sec. 3.1.
    """
    return shortest_path(element_distances(x, y))


def _all_pairs(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """[M, N] aligned distances of every x image against every y image, in one piece."""
    stripes = x.shape[1]
    d = _cross_element_distances(x, y)
    return tf.reshape(shortest_path(tf.reshape(d, [-1, stripes, stripes])),
                      [tf.shape(x)[0], tf.shape(y)[0]])


def _tiled_matrix(x: tf.Tensor, y: tf.Tensor, block: int) -> tf.Tensor:
    """`_all_pairs` over tiles of at most `block` pairs (rows x columns), one at a time; M, N > 0."""
    m, n = tf.shape(x)[0], tf.shape(y)[0]
    # A near-square tile makes the biggest GEMM for its pairs; a thin x or y gets the whole side.
    rows = tf.minimum(m, max(1, int(np.sqrt(block))))
    cols = tf.minimum(n, tf.maximum(1, block // rows))
    rows = tf.minimum(m, tf.maximum(1, block // cols))
    row_tiles, col_tiles = (m + rows - 1) // rows, (n + cols - 1) // cols

    def step(t, out):
        # Edge tiles repeat the last row/column so every tile has one shape (one XLA compile).
        row_index = tf.minimum((t // col_tiles) * rows + tf.range(rows), m - 1)
        col_index = tf.minimum((t % col_tiles) * cols + tf.range(cols), n - 1)
        return t + 1, out.write(t, _all_pairs(tf.gather(x, row_index), tf.gather(y, col_index)))

    out = tf.TensorArray(x.dtype, size=row_tiles * col_tiles, element_shape=[None, None],
                         infer_shape=False)
    _, out = tf.while_loop(lambda t, _: t < row_tiles * col_tiles, step, (tf.constant(0), out),
                           parallel_iterations=1)  # one tile's [rows, cols, H, H] in memory
    tiles = tf.reshape(out.stack(), [row_tiles, col_tiles, rows, cols])
    matrix = tf.reshape(tf.transpose(tiles, [0, 2, 1, 3]), [row_tiles * rows, col_tiles * cols])
    return matrix[:m, :n]


@functools.lru_cache(maxsize=None)
def _compiled_tiled_matrix(stripes: int, dtype: tf.DType, block: int):
    spec = tf.TensorSpec([None, stripes, None], dtype)

    def matrix(x, y):
        m, n = tf.shape(x)[0], tf.shape(y)[0]
        # An empty x or y has no tiles, and an empty TensorArray of unknown shape cannot stack.
        return tf.cond(m * n > 0, lambda: _tiled_matrix(x, y, block),
                       lambda: tf.zeros([m, n], x.dtype))

    return tf.function(matrix, input_signature=[spec, spec])


def aligned_distance_matrix(x: tf.Tensor, y: tf.Tensor, block: int = 4096) -> tf.Tensor:
    """Aligned distances between every image of `x` and every image of `y` (query x gallery).

    Works on tiles of at most `block` pairs (a images of x by b images of y), so memory holds
    one tile's [a, b, H, H] element distances whatever M and N are; a tile's stripe dot products
    are one [a*H, C] x [C, b*H] matmul. When all M*N pairs fit in one block (known statically)
    they are computed in one piece, without the loop. Differentiable either way (e.g. for the
    B x B local distance matrix of a training batch).

    Args:
        x: [M, H, C] stripes, e.g. of the query images.
        y: [N, H, C] stripes, e.g. of the gallery images, same dtype.
        block: pairs per tile.

    Returns:
        [M, N] aligned distances, out[i, j] = aligned_distance(x[i:i+1], y[j:j+1])[0].

    Reference: arXiv:1711.08184, Sec. 3.1.
    """
    if block < 1:
        raise ValueError(f"block must be at least 1 pair, got {block}")
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y, dtype=x.dtype)
    m, n = x.shape[0], y.shape[0]
    if m is not None and n is not None and m * n <= block:
        return _all_pairs(x, y)
    return _compiled_tiled_matrix(x.shape[1], x.dtype, block)(x, y)
