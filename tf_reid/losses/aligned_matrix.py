"""AlignedReID's aligned distance between every query and every gallery image, for retrieval.

The distance is `tf_reid.losses.aligned.aligned_distance`'s (arXiv:1711.08184, Sec. 3.1): the
shortest right/down path through the M x L matrix of element distances
tanh(||f_i - g_j|| / 2). Retrieval needs no gradient, so no DP choices or slopes are kept: the
recurrence is written out cell by cell (static M and L) and fused with each tile's GEMM and
element distances in one XLA program for the whole query x gallery matrix.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

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
    s = -pi^2, far from the interval), so the interpolant converges geometrically: degree 7
    already brings sqrt(s) * h(s), in float32 Horner form, within a few float32 rounding steps
    of tanh(sqrt(s) / 2) over the whole interval (the tests check it on a dense grid).
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
    operations, in the elementwise pass over every tile's [a, M, L, b] squared distances.
    Negative inputs (rounding of the expansion) count as 0. Outside the interval the result
    is wrong: callers check the stripe norms first.

    Args:
        squared: any shape, float32 squared distances.

    Returns:
        Same shape: element distances, within a few float32 rounding steps of
        tanh(sqrt(squared) / 2).
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
    taking tanh per plane would let XLA fuse it into the DP's loop, but XLA does not vectorise
    that loop.

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
    are scaled by -2 and the gallery made stripe-major ([L, Q, C]) once, before the loop,
    rather than per tile, and a tile's operands are static-size slices: for a slice of size -1
    at a dynamic offset XLA pads every input to twice its size. The last tile of each axis
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

    Forward only (no gradient), for retrieval. Tiles of tq x tg images (at most `query_tile` x
    `gallery_tile`, evened out) each take one [tq*M, C] x [C, L*tg] GEMM, tanh(sqrt(.) / 2) and
    the M x L recurrence written out cell by cell on [tq, tg] planes (`_tile_forward`),
    so the tile's element distances (M*L*tq*tg floats, 4 MB at 8 x 8 x 64 x 256) stay in the
    L3 cache between the GEMM and the DP and nothing per pair is kept. XLA threads each tile's
    GEMM and fusions over the host's cores. When every stripe has a norm of at most ~1
    (squared norm <= 1 + 1/128, as after the L2 normalisation retrieval applies), the element
    distance is `unit_tanh_half_sqrt` (sqrt times a polynomial, as accurate as float32 tanh
    to a few rounding steps) instead of tf.tanh. The GEMM, 2 * P * Q * M * L * C flops, is
    most of the work. float32 only: the stripes are converted.

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
    # The squared norms are taken once, outside XLA, where TF's einsum uses every core, rather
    # than per tile inside the loop.
    x_sq, y_sq = tf.einsum("pic,pic->pi", x, x), tf.einsum("qjc,qjc->qj", y, y)
    # Unit stripes (norms up to 1 + 1/128) take the tanh-free element distance.
    unit = bool(tf.reduce_max(x_sq) <= _UNIT_NORM_SQ_MAX
                and tf.reduce_max(y_sq) <= _UNIT_NORM_SQ_MAX)
    return _compiled_forward(int(query_tile), int(gallery_tile), unit)(x, y, x_sq, y_sq)
