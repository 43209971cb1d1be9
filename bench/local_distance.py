"""python -m bench.local_distance [--pairs 16384] [--stripes 8] [--channels 128]

Speed of AlignedReID's aligned local distance (the shortest right/down path through the H x H
stripe distance matrix) for N pairs (by default as many as a 128-image batch has): the XLA
anti-diagonal wavefront of `tf_reid.losses.wavefront` against, in the same run, (a) the tests'
nested-loop NumPy DP (`tests.tf_reid.losses.references.reference_path`, which also traces the
path back) on a subsample, extrapolated per pair, and (b) the same wavefront vectorised in NumPy.
All three are checked to agree first. Then forward + backward (a tape inside a tf.function, as in
a train step) of the DP alone and of the whole distance `aligned_distance` from [N, H, C]
stripes (element distances included).

Last, the project's target: forward + backward of the whole aligned distance, from stripe
features [N, H, C] to the gradients with respect to both inputs, for H = 8 and H = 16: TF
(`aligned_distance` under a tape in a tf.function) against NumPy vectorised over the pairs
(element distances by one batched matmul, the wavefront keeping its choices, the path traced
back and chained through tanh(sqrt(.) / 2)), checked to agree on small N first. The goal is
NumPy / TF >= 3.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

import os  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from tests.tf_reid.losses.references import reference_path, shortest_path  # noqa: E402
from tf_reid.losses.aligned import aligned_distance  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("pairs", 128 * 128, "Pairs N per call (all pairs of a 128-image batch).")
flags.DEFINE_integer("stripes", 8, "H, AlignedReID's horizontal stripes.")
flags.DEFINE_integer("channels", 128, "C, channels per stripe (rows from stripes only).")
flags.DEFINE_integer("reference_pairs", 512, "Pairs the nested-loop NumPy DP is timed on.")
flags.DEFINE_integer("repeats", 20, "Timed calls per implementation; the best is kept.")
flags.DEFINE_list("target_stripes", ["8", "16"], "H values of the forward + backward target.")
flags.DEFINE_integer("target_repeats", 5, "Timed calls per implementation in the target table.")


def numpy_wavefront(d: np.ndarray) -> np.ndarray:
    """[N] shortest path lengths of [N, H, H], one vectorised anti-diagonal at a time."""
    n, h, _ = d.shape
    rows = np.arange(h)
    previous = np.full((n, h), np.inf, d.dtype)
    previous[:, 0] = d[:, 0, 0]
    for k in range(1, 2 * h - 1):
        cols = k - rows
        valid = (cols >= 0) & (cols < h)
        diagonal = np.full((n, h), np.inf, d.dtype)
        diagonal[:, valid] = d[:, rows[valid], cols[valid]]
        above = np.concatenate([np.full((n, 1), np.inf, d.dtype), previous[:, :-1]], axis=1)
        previous = diagonal + np.minimum(above, previous)
    return previous[:, h - 1]


def numpy_distance_forward_backward(x: np.ndarray, y: np.ndarray
                                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aligned distances [N] and their gradients w.r.t. x [N, M, C] and y [N, L, C], in NumPy.

    Vectorised over the N pairs; loops only over the M+L-1 anti-diagonals (forward) and back.
    Same expansion and zero-distance rule as `tf_reid.losses.aligned`: squared distances at or
    below 1e-12 are 0 with a zero gradient.
    """
    n, rows, _ = x.shape
    cols = y.shape[1]
    x_sq = np.einsum("nic,nic->ni", x, x)[:, :, None]
    y_sq = np.einsum("njc,njc->nj", y, y)[:, None, :]
    squared = np.maximum(x_sq + y_sq - 2 * np.matmul(x, y.transpose(0, 2, 1)), 0)
    nonzero = squared > 1e-12
    norm = np.sqrt(np.where(nonzero, squared, 1)) * nonzero  # [N, M, L]
    d = np.tanh(norm / 2)

    # Wavefront over anti-diagonals k = i + j in the skewed layout (row i), keeping choices.
    diagonals = rows + cols - 1
    row = np.arange(rows)
    inf = np.full((n, 1), np.inf, d.dtype)
    padded = np.concatenate([d.reshape(n, rows * cols), inf], axis=1)  # +inf off the matrix
    skew = np.array([np.where((k - row >= 0) & (k - row < cols), row * cols + k - row,
                              rows * cols) for k in range(diagonals)])
    from_above = np.zeros((diagonals, n, rows), bool)
    previous = padded[:, skew[0]]
    for k in range(1, diagonals):
        above = np.concatenate([inf, previous[:, :-1]], axis=1)
        from_above[k] = above <= previous
        previous = padded[:, skew[k]] + np.minimum(above, previous)
    lengths = previous[:, rows - 1]

    # Trace back: the path's cell on anti-diagonal k is (i, k - i); ties came from above.
    path = np.zeros((n, rows, cols), d.dtype)
    pairs = np.arange(n)
    i = np.full(n, rows - 1)
    for k in range(diagonals - 1, -1, -1):
        path[pairs, i, k - i] = 1
        i = i - from_above[k, pairs, i]

    # d tanh(e / 2) / d x_i = (1 - tanh^2) / 2 * (x_i - y_j) / e, and 0 where e = 0.
    w = path * (1 - d * d) / 2 / np.where(nonzero, norm, 1) * nonzero
    grad_x = x * w.sum(axis=2)[:, :, None] - np.matmul(w, y)
    grad_y = y * w.sum(axis=1)[:, :, None] - np.matmul(w.transpose(0, 2, 1), x)
    return lengths, grad_x, grad_y


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` timed calls after one warm-up call (which compiles)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str]) -> None:
    del argv
    n, h, c = FLAGS.pairs, FLAGS.stripes, FLAGS.channels
    rng = np.random.default_rng(0)
    d = rng.uniform(size=(n, h, h)).astype(np.float32)
    sub = d[:FLAGS.reference_pairs]

    d_tf = tf.constant(d)
    # Scaled so stripe distances are around 1.4, where tanh(d / 2) is not saturated.
    x = tf.constant((rng.normal(size=(n, h, c)) / np.sqrt(c)).astype(np.float32))
    y = tf.constant((rng.normal(size=(n, h, c)) / np.sqrt(c)).astype(np.float32))

    @tf.function
    def dp_forward_backward(d):
        with tf.GradientTape() as tape:
            tape.watch(d)
            lengths = shortest_path(d)
        return lengths, tape.gradient(lengths, d)

    @tf.function
    def distance_forward(x, y):
        return aligned_distance(x, y)

    @tf.function
    def distance_forward_backward(x, y):
        with tf.GradientTape() as tape:
            tape.watch([x, y])
            dist = aligned_distance(x, y)
        return dist, tape.gradient(dist, [x, y])

    xla = shortest_path(d_tf).numpy()
    np.testing.assert_allclose(numpy_wavefront(d), xla, rtol=1e-6)

    def nested_loops(d):
        return np.array([reference_path(m)[0] for m in d])

    np.testing.assert_allclose(nested_loops(sub), xla[:len(sub)], rtol=1e-6)

    def run(fn):
        return lambda: tf.nest.map_structure(lambda t: t.numpy(), fn())

    repeats = FLAGS.repeats
    rows = [
        ("DP: XLA wavefront (tf)", n, best_seconds(run(lambda: shortest_path(d_tf)), repeats)),
        ("DP: NumPy wavefront, vectorised", n, best_seconds(lambda: numpy_wavefront(d), repeats)),
        (f"DP: NumPy nested loops ({len(sub)} pairs, extrapolated)", n,
         best_seconds(lambda: nested_loops(sub), 1) / len(sub) * n),
        ("DP forward + backward (tf.function)", n,
         best_seconds(run(lambda: dp_forward_backward(d_tf)), repeats)),
        (f"distance from [N,{h},{c}] forward", n,
         best_seconds(run(lambda: distance_forward(x, y)), repeats)),
        (f"distance from [N,{h},{c}] forward + backward", n,
         best_seconds(run(lambda: distance_forward_backward(x, y)), repeats)),
    ]
    xla_rate = n / rows[0][2]
    print(f"N = {n} pairs, H = {h}, float32, {os.cpu_count()} cores, best of {repeats} "
          f"(nested loops: one run on {len(sub)} pairs); all DPs agree")
    print(f"{'':56} {'ms':>9} {'pairs/s':>10} {'XLA DP / this':>14}")
    for name, count, seconds in rows:
        print(f"{name:56} {seconds * 1e3:9.2f} {count / seconds:10.3g} "
              f"{xla_rate / (count / seconds):14.1f}")

    target = []
    for stripes in map(int, FLAGS.target_stripes):
        xs = tf.constant((rng.normal(size=(n, stripes, c)) / np.sqrt(c)).astype(np.float32))
        ys = tf.constant((rng.normal(size=(n, stripes, c)) / np.sqrt(c)).astype(np.float32))
        x_np, y_np = xs.numpy(), ys.numpy()
        small = slice(0, 256)
        tf_dist, (tf_gx, tf_gy) = distance_forward_backward(xs[small], ys[small])
        np_dist, np_gx, np_gy = numpy_distance_forward_backward(x_np[small], y_np[small])
        np.testing.assert_allclose(np_dist, tf_dist.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np_gx, tf_gx.numpy(), atol=1e-5)
        np.testing.assert_allclose(np_gy, tf_gy.numpy(), atol=1e-5)
        # CPU kernels have finished when the call returns; .numpy() would add a copy of each
        # [N, H, C] gradient that the NumPy side does not pay.
        tf_seconds = best_seconds(lambda: distance_forward_backward(xs, ys), FLAGS.target_repeats)
        np_seconds = best_seconds(lambda: numpy_distance_forward_backward(x_np, y_np),
                                  FLAGS.target_repeats)
        target.append((stripes, tf_seconds, np_seconds))
    print(f"\nTarget: distance forward + backward from [N,H,{c}] to both gradients, N = {n}, "
          f"best of {FLAGS.target_repeats}; TF and NumPy agree on 256 pairs; goal NumPy / TF >= 3")
    print(f"{'H':>4} {'TF ms':>10} {'NumPy ms':>10} {'NumPy / TF':>11}")
    for stripes, tf_seconds, np_seconds in target:
        print(f"{stripes:4d} {tf_seconds * 1e3:10.2f} {np_seconds * 1e3:10.2f} "
              f"{np_seconds / tf_seconds:11.2f}")


if __name__ == "__main__":
    app.run(main)
