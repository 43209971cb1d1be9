"""Slow obvious twins of the aligned local distance, shared by the tests and the benches.

The fast implementations (`tf_reid.losses.aligned`, `tf_reid.losses.aligned_matrix`,
`tf_reid.evaluation.matching.local_distances`) are tested against these, and
bench/local_distance.py times against them, so there is one copy of each:

* `reference_*`: NumPy loops written as arXiv:1711.08184, Sec. 3.1 states the maths, one cell
  and one pair at a time.
* `element_distances` and `shortest_path`: the unfused TF composition that `aligned_distance`
  fuses, `shortest_path(element_distances(x, y))`, whose gradient the tape takes through the
  expansion and the path indicator separately.

Not a test module (no `test_` prefix): pytest collects nothing here.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from tf_reid.losses.distance import safe_sqrt
from tf_reid.losses.wavefront import path_cells, wavefront

# --- NumPy loops --------------------------------------------------------------------------------


def reference_path(d: np.ndarray) -> tuple[float, np.ndarray]:
    """The slow obvious DP on one [M, L] matrix: (S(M-1, L-1), 0/1 cells of the path).

    Arithmetic stays in d's dtype, cell by cell as the paper writes it; ties come from above.
    """
    h, w = d.shape
    inf = d.dtype.type(np.inf)
    s = np.zeros_like(d)
    from_above = np.zeros((h, w), bool)
    for i in range(h):
        for j in range(w):
            if i == 0 and j == 0:
                s[i][j] = d[i][j]
                continue
            above = s[i - 1][j] if i > 0 else inf
            left = s[i][j - 1] if j > 0 else inf
            from_above[i][j] = above <= left
            s[i][j] = d[i][j] + min(above, left)
    cells = np.zeros_like(d)
    i, j = h - 1, w - 1
    cells[i][j] = 1
    while (i, j) != (0, 0):
        if from_above[i][j]:
            i -= 1
        else:
            j -= 1
        cells[i][j] = 1
    return s[h - 1][w - 1], cells


def reference_element_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[N, M, L] (e^d - 1) / (e^d + 1) of stripe distances, the paper's form, by loops (float64)."""
    n, h, _ = x.shape
    w = y.shape[1]
    out = np.zeros((n, h, w))
    for p in range(n):
        for i in range(h):
            for j in range(w):
                dist = np.sqrt(np.sum((x[p, i].astype(np.float64) - y[p, j]) ** 2))
                out[p, i, j] = (np.exp(dist) - 1) / (np.exp(dist) + 1)
    return out


def reference_gradients(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d aligned_distance / d x and / d y: the path indicator chained through tanh(||.|| / 2).

    d tanh(e / 2) / d x_i = (1 - tanh^2(e / 2)) / 2 * (x_i - y_j) / e, and 0 where e = 0.
    """
    x, y = x.astype(np.float64), y.astype(np.float64)
    grad_x, grad_y = np.zeros_like(x), np.zeros_like(y)
    d = reference_element_distances(x, y)
    for p in range(x.shape[0]):
        _, cells = reference_path(d[p])
        for i, j in zip(*np.nonzero(cells)):
            diff = x[p, i] - y[p, j]
            norm = np.linalg.norm(diff)
            if norm > 0:
                g = (1 - d[p, i, j] ** 2) / 2 * diff / norm
                grad_x[p, i] += g
                grad_y[p, j] -= g
    return grad_x, grad_y


def reference_distance_matrix(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """[P, Q] float64 by the paper's loops: element distances and `reference_path`, pair by pair.

    Args:
        query: [P, M, C] stripes.
        gallery: [Q, L, C] stripes.
    """
    return np.array([[reference_path(reference_element_distances(query[i:i + 1],
                                                                 gallery[j:j + 1])[0])[0]
                      for j in range(len(gallery))] for i in range(len(query))])


# --- the unfused TF composition -----------------------------------------------------------------


def element_distances(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Stripe-to-stripe distances tanh(||x_i - y_j|| / 2) for each of N pairs of images.

    ||x_i - y_j||^2 is expanded as ||x_i||^2 + ||y_j||^2 - 2 x_i.y_j, as `aligned_distance`
    does, and differentiated by the tape. Squared distances up to 1e-12 are exactly 0 with a
    zero gradient (`safe_sqrt`), so x == y never gives NaN.

    Args:
        x: [N, M, C] stripe features of the first image of each pair.
        y: [N, L, C] stripe features of the second image, same dtype; L may differ from M.

    Returns:
        [N, M, L] distances, out[n, i, j] = tanh(||x[n, i] - y[n, j]||_2 / 2), in [0, 1].
    """
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y, dtype=x.dtype)
    x_sq = tf.reduce_sum(tf.square(x), axis=-1)[:, :, tf.newaxis]  # [N, M, 1]
    y_sq = tf.reduce_sum(tf.square(y), axis=-1)[:, tf.newaxis, :]  # [N, 1, L]
    return tf.tanh(safe_sqrt(x_sq + y_sq - 2.0 * tf.matmul(x, y, transpose_b=True)) / 2)


# One XLA function per (M, L, dtype) with N left dynamic: M and L must stay static.
@functools.lru_cache(maxsize=None)
def _compiled_wavefront(rows: int, cols: int, dtype: tf.DType):
    return tf.function(wavefront, jit_compile=True, input_signature=[
        tf.TensorSpec([None, rows, cols], dtype)])


@functools.lru_cache(maxsize=None)
def _compiled_path_cells(rows: int, cols: int):
    return tf.function(functools.partial(path_cells, cols=cols), jit_compile=True,
                       input_signature=[tf.TensorSpec([rows + cols - 1, rows, None], tf.bool)])


@tf.custom_gradient
def shortest_path(d: tf.Tensor) -> tf.Tensor:
    """Length of the shortest right/down path from (0, 0) to (M-1, L-1), for N matrices.

    The library's XLA wavefront (`tf_reid.losses.wavefront`) on arbitrary cell costs, with the
    gradient the path's 0/1 indicator (ties prefer the cell above), traced back in XLA.

    Args:
        d: [N, M, L] cell costs (any real values) with static M, L >= 1; N may be 0.

    Returns:
        [N] path lengths S(M-1, L-1).
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
