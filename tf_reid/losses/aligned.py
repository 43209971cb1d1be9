"""AlignedReID's aligned local distance: the shortest path through the stripe distance matrix.

Zhang et al. 2017, "AlignedReID: Surpassing Human-Level Performance in Person
Re-Identification" (arXiv:1711.08184), Sec. 3.1. Each image is described by H horizontal
stripes f_1..f_H (C channels each). For two images the element distances are
d_ij = (e^||f_i - g_j|| - 1) / (e^||f_i - g_j|| + 1) = tanh(||f_i - g_j|| / 2), and the aligned
distance is the length of the shortest path from (0, 0) to (H-1, H-1) through the H x H matrix
moving only right or down:

    S(i, j) = d_ij + min(S(i-1, j), S(i, j-1)),   S(0, 0) = d_00,

with the first row and column as cumulative sums. Every such path visits 2H-1 cells. The two
images may also be cut into different numbers of stripes, M and L: the matrix is then M x L,
the path ends at (M-1, L-1) and visits M+L-1 cells.

The dynamic programme runs as an anti-diagonal wavefront: S(i, j) depends only on the previous
anti-diagonal i + j - 1, so M+L-1 vectorised steps, each updating one whole anti-diagonal for all
N pairs, replace M*L scalar steps. It is an XLA-compiled `tf.while_loop`. A gradient tape cannot
see through an XLA while_loop ("Support for TensorList crossing the XLA/TF boundary is not
implemented"), so the gradient is supplied by `tf.custom_gradient`: the derivative of the path
length with respect to d is the 0/1 indicator of the cells on the optimal path (a subgradient
where two paths tie; ties prefer coming from above), found by tracing back the argmin choices
that the forward pass keeps, again in XLA.

Retrieval needs no gradient: `aligned_distance_matrix_forward` keeps no choices or slopes and
writes the recurrence out cell by cell (static M and L), fused with the tile's GEMM and tanh in
one XLA program for the whole query x gallery matrix.
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
    [N, M, L] intermediates, where the difference form needs [N, M, L, C] (C times the memory and,
    measured with C = 128 on this host, 3x the time; see bench/local_distance.py). The expansion
    cancels for nearly equal stripes: in float32 equal random stripes come out up to about
    1e-3 * ||x_i|| apart instead of 0 (float64: 4e-8 * ||x_i||; measured). Squared distances up
    to 1e-12 are exactly 0 with a zero gradient, so x == y never gives NaN.

    Args:
        x: [N, M, C] stripe features of the first image of each pair.
        y: [N, L, C] stripe features of the second image, same dtype; L may differ from M.

    Returns:
        [N, M, L] distances, out[n, i, j] = tanh(||x[n, i] - y[n, j]||_2 / 2), in [0, 1].

    Reference: arXiv:1711.08184, Sec. 3.1 (the normalised distance (e^d - 1) / (e^d + 1)).
    """
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y, dtype=x.dtype)
    x_sq = tf.reduce_sum(tf.square(x), axis=-1)[:, :, tf.newaxis]  # [N, M, 1]
    y_sq = tf.reduce_sum(tf.square(y), axis=-1)[:, tf.newaxis, :]  # [N, 1, L]
    return _tanh_half_norm(x_sq + y_sq - 2.0 * tf.matmul(x, y, transpose_b=True))


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


def _wavefront(d: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Shortest path lengths and, per cell, whether its best predecessor is the cell above.

    Args:
        d: [N, M, L] cell costs; M and L must be static.

    Returns:
        lengths: [N], S(M-1, L-1).
        from_above: [M+L-1, M, N] bool in the skewed layout (anti-diagonal k, row i): True where
            S(i-1, j) <= S(i, j-1), so ties go to the cell above.
    """
    rows, cols = d.shape[-2], d.shape[-1]
    return _wavefront_pairs_minor(tf.transpose(tf.reshape(d, [tf.shape(d)[0], rows * cols])),
                                  rows, cols)


def _wavefront_pairs_minor(d: tf.Tensor, rows: int, cols: int) -> tuple[tf.Tensor, tf.Tensor]:
    """`_wavefront` of cell costs laid out [M*L, N]: cell i*L + j of pair n in row i*L + j.

    Pairs are the minor axis throughout: each step's update is then contiguous over N
    (measured 1.4x faster than N-major on this host's CPU).
    """
    n = tf.shape(d)[1]
    # [M*L + 1, N]: a row of +inf appended for cells off the matrix.
    cells = tf.concat([d, tf.fill([1, n], tf.constant(np.inf, d.dtype))], axis=0)
    skew = tf.constant(_skew_indices(rows, cols), tf.int32)
    return _wavefront_loop(lambda k: tf.gather(cells, tf.gather(skew, k)), rows, cols, n, d.dtype)


def _wavefront_loop(diagonal, rows: int, cols: int, n: tf.Tensor, dtype: tf.DType
                    ) -> tuple[tf.Tensor, tf.Tensor]:
    """The wavefront over anti-diagonals; `diagonal(k)` gives [M, N] costs, +inf off the matrix.

    Returns `_wavefront`'s (lengths [N], from_above [M+L-1, M, N]).
    """
    diagonals = rows + cols - 1
    inf = tf.constant(np.inf, dtype)
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


def _path_cells(from_above: tf.Tensor, cols: int) -> tf.Tensor:
    """0/1 indicator [N, M, L] of the optimal path, traced back from the wavefront's choices.

    Args:
        from_above: [M+L-1, M, N] bool from `_wavefront`.
        cols: L.
    """
    rows, n = from_above.shape[1], tf.shape(from_above)[2]
    return tf.reshape(tf.transpose(_path_cells_pairs_minor(from_above, cols)), [n, rows, cols])


def _path_cells_pairs_minor(from_above: tf.Tensor, cols: int) -> tf.Tensor:
    """`_path_cells` laid out [M*L, N] bool: cell i*L + j of pair n in row i*L + j."""
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
    return tf.gather(skewed, _unskew_indices(rows, cols))


# One XLA function per (M, L, dtype) with N left dynamic in the signature: a plain tf.function
# would retrace for every new N, and `reduce_retracing` could relax M and L, which must stay
# static.
@functools.lru_cache(maxsize=None)
def _compiled_wavefront(rows: int, cols: int, dtype: tf.DType):
    return tf.function(_wavefront, jit_compile=True, input_signature=[
        tf.TensorSpec([None, rows, cols], dtype)])


@functools.lru_cache(maxsize=None)
def _compiled_path_cells(rows: int, cols: int):
    return tf.function(functools.partial(_path_cells, cols=cols), jit_compile=True,
                       input_signature=[tf.TensorSpec([rows + cols - 1, rows, None], tf.bool)])


@tf.custom_gradient
def shortest_path(d: tf.Tensor) -> tf.Tensor:
    """Length of the shortest right/down path from (0, 0) to (M-1, L-1), for N matrices.

    S(i, j) = d[i, j] + min(S(i-1, j), S(i, j-1)), computed as an XLA anti-diagonal wavefront
    of M+L-1 steps. Differentiable: the gradient with respect to d is the 0/1 indicator of the
    optimal path's M+L-1 cells (ties prefer the cell above).

    Args:
        d: [N, M, L] cell costs (any real values) with static M, L >= 1 (M == L = H for images
            cut into the same number of stripes); N may be 0.

    Returns:
        [N] path lengths S(M-1, L-1).

    Reference: arXiv:1711.08184, Sec. 3.1.
    """
    d = tf.convert_to_tensor(d)
    if d.shape.rank != 3 or d.shape[-1] is None or d.shape[-2] is None:
        raise ValueError(f"shortest_path needs [N, M, L] with static M and L, got {d.shape}")
    rows, cols = d.shape[-2], d.shape[-1]
    if rows < 1 or cols < 1:
        raise ValueError(f"shortest_path needs at least one row and column, got {d.shape}")
    # The tape must not record the XLA call itself (it cannot differentiate an XLA while_loop);
    # the custom gradient below stands in for it.
    lengths, from_above = _compiled_wavefront(rows, cols, d.dtype)(tf.stop_gradient(d))

    def grad(upstream: tf.Tensor) -> tf.Tensor:
        return upstream[:, tf.newaxis, tf.newaxis] * tf.cast(
            _compiled_path_cells(rows, cols)(from_above), upstream.dtype)

    return lengths, grad


def _fused_forward(x: tf.Tensor, y: tf.Tensor, x_sq: tf.Tensor, y_sq: tf.Tensor
                   ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Aligned distances [N], the wavefront's choices and the element distances' slopes.

    Args:
        x: [N, M, C], y: [N, L, C] stripes; x_sq: [N, M], y_sq: [N, L] their squared norms.

    Returns:
        lengths: [N].
        from_above: [M+L-1, M, N] bool, as from `_wavefront`.
        slope: [N, M, L], (1 - d_ij^2) / (2 ||x_i - y_j||), the chain rule's factor from
            tanh(e / 2) through e = ||x_i - y_j||; 0 where the squared distance is at most 1e-12
            (as in `safe_sqrt`).
    """
    d, slope = _distances_and_slopes(x_sq[:, :, tf.newaxis] + y_sq[:, tf.newaxis, :]
                                     - 2.0 * tf.matmul(x, y, transpose_b=True))
    lengths, from_above = _wavefront(d)
    return lengths, from_above, slope


def _distances_and_slopes(squared: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Element distances tanh(e / 2) and their slopes (1 - tanh^2(e / 2)) / (2 e), any shape.

    e = sqrt(squared), the expansion's squared distance clipped at 0; both are 0 where it is at
    most 1e-12 (as in `safe_sqrt`). d tanh(e / 2) / d x_i = slope * (x_i - y_j).
    """
    squared = tf.maximum(squared, 0.0)
    nonzero = squared > 1e-12
    norm = tf.sqrt(tf.where(nonzero, squared, tf.ones_like(squared)))
    d = tf.where(nonzero, tf.tanh(norm / 2), 0.0)
    return d, tf.where(nonzero, (1 - tf.square(d)) / (2 * norm), 0.0)


def _path_weights(from_above: tf.Tensor, slope: tf.Tensor, upstream: tf.Tensor
                  ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """w = upstream * slope on the path's cells, 0 elsewhere: w [N, M, L], w^T, row and column sums."""
    path = _path_cells(from_above, slope.shape[2])
    w = tf.where(path, slope, tf.zeros_like(slope)) * upstream[:, tf.newaxis, tf.newaxis]
    return w, tf.transpose(w, [0, 2, 1]), tf.reduce_sum(w, axis=2), tf.reduce_sum(w, axis=1)


def _chain(a: tf.Tensor, b: tf.Tensor, w: tf.Tensor, row_sums: tf.Tensor) -> tf.Tensor:
    """sum_j w_ij (a_i - b_j) = a_i rowsum(w)_i - (w b)_i: [N, M, C] from a [N, M, C], b [N, L, C]."""
    return a * row_sums[:, :, tf.newaxis] - tf.matmul(w, b)


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
    rows, cols = x.shape[1], y.shape[1]
    forward, weights = _compiled_fused(rows, cols, x.dtype)
    # The squared norms stay outside XLA: on this host's CPU TF's einsum uses every core where
    # XLA's reduction runs on one (measured 12 ms against 35 ms for [16384, 8, 128]).
    x, y = tf.stop_gradient(x), tf.stop_gradient(y)
    lengths, from_above, slope = forward(x, y, tf.einsum("nic,nic->ni", x, x),
                                         tf.einsum("njc,njc->nj", y, y))

    def grad(upstream: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # One XLA call per input: measured 2 x 33 ms for [16384, 8, 128], where both in one
        # call take 91 ms and TF's unfused kernels 134 ms.
        w, w_t, row_sums, col_sums = weights(from_above, slope, upstream)
        return (_compiled_chain(rows, cols, x.dtype)(x, y, w, row_sums),
                _compiled_chain(cols, rows, x.dtype)(y, x, w_t, col_sums))

    return lengths, grad


def aligned_distance(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """AlignedReID's local distance between N pairs of images' stripe features.

    The same as `shortest_path(element_distances(x, y))`, fused: the forward pass (element
    distances and wavefront) is one XLA call after the squared norms, and the backward pass
    chains the path indicator through tanh(||x_i - y_j|| / 2) by hand (`_path_weights`,
    `_chain`) instead of taping through the expansion, whose gradient makes several [N, M, C]
    temporaries. Measured on this host (2 cores, N = 128 x 128 pairs, H = 8, C = 128): forward +
    backward 118 ms, against 490 ms for the tape through `element_distances`; see
    bench/local_distance.py.

    Args:
        x: [N, M, C] stripes of the first image of each pair.
        y: [N, L, C] stripes of the second image, same dtype; L may differ from M.

    Returns:
        [N] aligned distances in [0, M+L-1]; symmetric in x and y.

    Reference: arXiv:1711.08184, Sec. 3.1.
    """
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y, dtype=x.dtype)
    if x.shape.rank != 3 or y.shape.rank != 3 or x.shape[1] is None or y.shape[1] is None:
        raise ValueError(f"aligned_distance needs [N, M, C] and [N, L, C] with static M and L, "
                         f"got {x.shape} and {y.shape}")
    return _fused_aligned_distance(x, y)


# --- Forward only, for retrieval ---------------------------------------------------------------


def _unrolled_shortest_path(cell, rows: int, cols: int) -> tf.Tensor:
    """S(M-1, L-1) of the recurrence written out cell by cell; `cell(i, j)` gives d_ij, any shape.

    With M and L static this is M*L elementwise adds and mins that XLA fuses into one loop over
    the pairs; nothing but the last row of S is live at once.
    """
    above = None  # S of the row above, cells 0..L-1
    for i in range(rows):
        row = []
        for j in range(cols):
            d = cell(i, j)
            if i == 0:
                row.append(d if j == 0 else row[-1] + d)
            elif j == 0:
                row.append(above[0] + d)
            else:
                row.append(tf.minimum(above[j], row[-1]) + d)
        above = row
    return above[-1]


# Unit stripes (the retrieval default) have squared distances in [0, 4]; a little headroom
# covers squared norms up to 1 + 1/128 and float32 rounding of the expansion.
_UNIT_SQUARED_MAX = 4.0625
_UNIT_NORM_SQ_MAX = 1.0 + 1.0 / 128


@functools.lru_cache(maxsize=None)
def _unit_tanh_coefficients(degree: int = 7) -> tuple[float, ...]:
    """Monomial coefficients, in t = s / 4.0625, of h(s) = tanh(sqrt(s) / 2) / sqrt(s) on s in
    [0, 4.0625]: a degree-7 Chebyshev interpolant (float64), lowest order first.

    h is analytic in s (tanh(u) / u is even in u; its nearest poles, u = +-i pi / 2, lie at
    s = -pi^2, far from the interval), so the interpolant converges geometrically: in float32
    Horner form, sqrt(s) * h(s) is within 1.3e-7 of tanh(sqrt(s) / 2) on the whole interval
    (float32 tanh itself: 8e-8), measured on a 200,001-point grid and asserted by a test.
    """
    s = np.linspace(0.0, _UNIT_SQUARED_MAX, 20001)
    root = np.sqrt(s)
    h = np.divide(np.tanh(root / 2), root, out=np.full_like(s, 0.5), where=root > 0)
    fit = np.polynomial.Chebyshev.fit(s / _UNIT_SQUARED_MAX, h, degree, domain=[0, 1])
    monomial = fit.convert(kind=np.polynomial.Polynomial, domain=[0, 1], window=[0, 1])
    return tuple(float(c) for c in monomial.coef)


def unit_tanh_half_sqrt(squared: tf.Tensor) -> tf.Tensor:
    """tanh(sqrt(squared) / 2) for squared in [0, 4.0625] (unit stripes), without tanh.

    sqrt(s) times a degree-7 polynomial in s (`_unit_tanh_coefficients`): one square root
    and eight multiply-adds where tanh takes a division, a square root and about twenty
    operations; the retrieval matrix at Market-1501 size takes ~13% less time with it
    (measured). Negative inputs (rounding of the expansion) count as 0. Outside the interval
    the result is wrong: callers check the stripe norms first.

    Args:
        squared: any shape, float32 squared distances.

    Returns:
        Same shape: element distances, within 1.3e-7 of tanh(sqrt(squared) / 2).
    """
    squared = tf.maximum(squared, 0.0)
    t = squared * (1.0 / _UNIT_SQUARED_MAX)
    coefficients = _unit_tanh_coefficients()
    h = t * coefficients[-1] + coefficients[-2]
    for c in coefficients[-3::-1]:
        h = h * t + c
    return tf.sqrt(squared) * h


def _tile_forward(x: tf.Tensor, y: tf.Tensor, x_sq: tf.Tensor, y_sq: tf.Tensor, unit: bool
                  ) -> tf.Tensor:
    """[a, b] aligned distances of a query images against b gallery images: GEMM, tanh, DP.

    Args:
        x: [a*M, C] query stripes times -2, image-major (row p*M + i; -2 is exact: a power of
            two).
        y: [L*b, C] gallery stripes, stripe-major (row j*b + q), so the GEMM's [a, M, L, b]
            result has each cell (i, j) as an [a, b] plane whose rows are runs of b contiguous
            values: the DP vectorises along gallery images.
        x_sq: [a, M] squared norms of the query stripes.
        y_sq: [L, b] squared norms of the gallery stripes.
        unit: every stripe has norm at most ~1 (`_UNIT_NORM_SQ_MAX`): element distances by
            `unit_tanh_half_sqrt` instead of tf.tanh.

    tanh(sqrt(.) / 2) is one fusion over the whole [a, M, L, b] block and the DP another:
    taking tanh per plane lets XLA fuse it into the DP's loop, but that loop is then not
    vectorised (measured 2.2x the CPU time at 8 x 8 x 128).

    Returns:
        [a, b] aligned distances.
    """
    (a, rows), (cols, b) = x_sq.shape, y_sq.shape
    dots = tf.reshape(tf.matmul(x, y, transpose_b=True), [a, rows, cols, b])
    squared = x_sq[:, :, tf.newaxis, tf.newaxis] + y_sq[tf.newaxis, tf.newaxis] + dots
    d = (unit_tanh_half_sqrt(squared) if unit
         else tf.tanh(tf.sqrt(tf.maximum(squared, 0.0)) * 0.5))
    return _unrolled_shortest_path(lambda i, j: d[:, i, j, :], rows, cols)


def _tile_size(n: int, tile: int) -> int:
    """Tile length for n items in ceil(n / tile) tiles of near-equal size, a multiple of 8
    (one AVX2 vector of float32) where n allows, never more than n."""
    per_tile = -(-n // -(-n // tile))
    return min(n, -(-per_tile // 8) * 8)


def _untile(tiles: tf.Tensor, axis: int, n: int) -> tf.Tensor:
    """Joins tiles [k, ...] along `axis` (of a tile) into n items; the last tile ends at n.

    Tiles 0..k-2 start at multiples of the tile length t, the last at n - t, overlapping the
    one before: only its last n - (k-1)*t items are new.
    """
    k, t = tiles.shape[0], tiles.shape[axis + 1]
    pieces = tf.unstack(tiles[:-1], axis=0) if k > 1 else []
    last = tf.gather(tiles[-1], tf.range(t - (n - (k - 1) * t), t), axis=axis)
    return tf.concat(pieces + [last], axis=axis)


def _forward_matrix(x: tf.Tensor, y: tf.Tensor, x_sq: tf.Tensor, y_sq: tf.Tensor,
                    query_tile: int, gallery_tile: int, unit: bool) -> tf.Tensor:
    """`aligned_distance_matrix_forward` inside one XLA program; P, Q > 0 and static.

    A while loop over [tq, tg] tiles (query tiles outer), each `_tile_forward`. The queries
    are scaled by -2 and the gallery made stripe-major ([L, Q, C]) once, before the loop, so
    a tile's operands are static-size slices (a slice of size -1 at a dynamic offset made
    XLA pad every input to twice its size first, and the per-tile transpose and scaling cost
    more: about 8.1 s against 6.9 s at Market-1501 size, measured). The last tile of each axis
    starts at P - tq (Q - tg) and so overlaps the one before: every tile has one shape and no
    input is padded; `_untile` keeps the overlap's values once.
    """
    (p, rows, channels), (q, cols, _) = x.shape, y.shape
    tq, tg = _tile_size(p, query_tile), _tile_size(q, gallery_tile)
    query_tiles, gallery_tiles = -(-p // tq), -(-q // tg)
    x_scaled = tf.reshape(-2.0 * x, [p * rows, channels])
    y_major, y_sq_major = tf.transpose(y, [1, 0, 2]), tf.transpose(y_sq)  # [L, Q, C], [L, Q]

    def step(t, out):
        r = tf.minimum((t // gallery_tiles) * tq, p - tq)
        c = tf.minimum((t % gallery_tiles) * tg, q - tg)
        tile = _tile_forward(
            tf.slice(x_scaled, tf.stack([r * rows, 0]), [tq * rows, channels]),
            tf.reshape(tf.slice(y_major, tf.stack([0, c, 0]), [cols, tg, channels]),
                       [cols * tg, channels]),
            tf.slice(x_sq, tf.stack([r, 0]), [tq, rows]),
            tf.slice(y_sq_major, tf.stack([0, c]), [cols, tg]), unit)
        return t + 1, out.write(t, tile)

    out = tf.TensorArray(tf.float32, size=query_tiles * gallery_tiles, element_shape=[tq, tg])
    _, out = tf.while_loop(lambda t, _: t < query_tiles * gallery_tiles, step,
                           (tf.constant(0), out))
    tiles = tf.reshape(out.stack(), [query_tiles, gallery_tiles, tq, tg])
    rows_joined = _untile(tiles, 1, p)  # [gallery_tiles, P, tg]
    return _untile(rows_joined, 1, q)


@functools.lru_cache(maxsize=None)
def _compiled_forward(query_tile: int, gallery_tile: int, unit: bool):
    # No input signature: every (P, Q, M, L, C) is its own trace, as the tile counts are static
    # (`local_distances` makes all its calls one shape).
    return tf.function(functools.partial(_forward_matrix, query_tile=query_tile,
                                         gallery_tile=gallery_tile, unit=unit),
                       jit_compile=True)


def aligned_distance_matrix_forward(x: tf.Tensor, y: tf.Tensor, query_tile: int = 64,
                                    gallery_tile: int = 256) -> tf.Tensor:
    """Aligned distances of every query against every gallery image: one XLA program in all.

    Forward only (no gradient), for retrieval: no DP choices or slopes are kept. Tiles of tq x tg images (at most `query_tile` x
    `gallery_tile`, evened out) each take one [tq*M, C] x [C, L*tg] GEMM, tanh(sqrt(.) / 2) and
    the 8 x 8 (M x L) recurrence written out cell by cell on [tq, tg] planes (`_tile_forward`),
    so the tile's element distances (M*L*tq*tg floats, 4 MB at 8 x 8 x 64 x 256) stay in the
    L3 cache between the GEMM and the DP and nothing per pair is kept. XLA threads each tile's
    GEMM and fusions over the host's cores. When every stripe has a norm of at most ~1
    (squared norm <= 1 + 1/128, as after the L2 normalisation retrieval applies), the element
    distance is `unit_tanh_half_sqrt` (sqrt times a polynomial, within 1.3e-7 of tanh) instead
    of tf.tanh. The GEMM is most of the time: at Market-1501 size (3,368 x 15,913, 8 x 128
    unit stripes, 878 GFLOP) on this host's 2 cores, the whole matrix takes about 11.5
    CPU-seconds, of which the GEMM alone about 10.5 (~170 GFLOP/s, the cores' FMA peak).
    float32 only: the stripes are converted.

    Args:
        x: [P, M, C] query stripes.
        y: [Q, L, C] gallery stripes; L may differ from M.
        query_tile: most query images per tile.
        gallery_tile: most gallery images per tile.

    Returns:
        [P, Q] float32 aligned distances, out[p, q] equal to
        `aligned_distance(x[p:p+1], y[q:q+1])[0]` up to float32 rounding.

    Reference: arXiv:1711.08184, Sec. 3.1.
    """
    for name, value in (("query_tile", query_tile), ("gallery_tile", gallery_tile)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.float32)
    if (x.shape.rank != 3 or y.shape.rank != 3 or not x.shape.is_fully_defined()
            or not y.shape.is_fully_defined() or x.shape[2] != y.shape[2]):
        raise ValueError(f"aligned_distance_matrix_forward needs [P, M, C] and [Q, L, C] of "
                         f"known shapes, got {x.shape} and {y.shape}")
    if x.shape[1] < 1 or y.shape[1] < 1:
        raise ValueError(f"need at least one stripe, got {x.shape} and {y.shape}")
    if x.shape[0] == 0 or y.shape[0] == 0:
        return tf.zeros([x.shape[0], y.shape[0]], tf.float32)
    # The squared norms are taken once, outside XLA, where TF's einsum uses every core (see
    # `_fused_aligned_distance`); per tile inside the loop they took about 1 of 15 CPU-seconds
    # at Market-1501 size (measured).
    x_sq, y_sq = tf.einsum("pic,pic->pi", x, x), tf.einsum("qjc,qjc->qj", y, y)
    # Unit stripes (norms up to 1 + 1/128) take the tanh-free element distance.
    unit = bool(tf.reduce_max(x_sq) <= _UNIT_NORM_SQ_MAX
                and tf.reduce_max(y_sq) <= _UNIT_NORM_SQ_MAX)
    return _compiled_forward(int(query_tile), int(gallery_tile), unit)(x, y, x_sq, y_sq)
