"""python -m bench.local_distance [--pairs 16384] [--stripes 8] [--channels 128]

Speed of AlignedReID's aligned local distance (the shortest right/down path through the H x H
stripe distance matrix) for the pairs of a 128-image batch: the XLA anti-diagonal wavefront of
`tf_reid.losses.aligned` against, in the same run, (a) the nested-loop NumPy DP on a subsample,
extrapolated per pair, and (b) the same wavefront vectorised in NumPy. All three are checked to
agree first. Then forward + backward (a tape inside a tf.function, as in a train step) of the
DP alone and of the whole distance from [N, H, C] stripes (element distances included), and
the batch's 128 x 128 matrix by `aligned_distance_matrix` (one GEMM per tile, no pair copies).

Last, the project's target: forward + backward of the whole aligned distance, from stripe
features [N, H, C] (N = 128 x 128 pairs) to the gradients with respect to both inputs, for
H = 8 and H = 16: TF (`aligned_distance` under a tape in a tf.function) against NumPy vectorised
over the pairs (element distances by one batched matmul, the wavefront keeping its choices, the
path traced back and chained through tanh(sqrt(.) / 2)), checked to agree on small N first.
The goal is NumPy / TF >= 3.

Since the 128 x 128 pairs are all pairs of one 128-image batch, the target is also measured in
that form: forward + backward of `aligned_distance_matrix(batch, batch)` from the batch's
stripes [128, H, C] to the gradient with respect to the batch (both arguments' gradients
summed), against (a) the NumPy pair-stack implementation above on the 16,384 pairs (the issue's
baseline; the pair stacks are built before timing and its pair gradients are not summed back
to the batch, both in NumPy's favour) and (b) a NumPy implementation that also uses the
all-pairs structure (element distances by one GEMM, the wavefront vectorised over pairs, the
backward by two GEMMs, or one with W + W^T for a batch against itself, as TF does). All three
are checked to agree on a small batch first. Alternating rounds, best of `target_repeats`.
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

from tf_reid.losses.aligned import (aligned_distance, aligned_distance_matrix,  # noqa: E402
                                    shortest_path)

FLAGS = flags.FLAGS
flags.DEFINE_integer("pairs", 128 * 128, "Pairs N per call (all pairs of a 128-image batch).")
flags.DEFINE_integer("stripes", 8, "H, AlignedReID's horizontal stripes.")
flags.DEFINE_integer("channels", 128, "C, channels per stripe (rows from stripes only).")
flags.DEFINE_integer("block", 4096, "aligned_distance_matrix's pairs per tile.")
flags.DEFINE_integer("reference_pairs", 512, "Pairs the nested-loop NumPy DP is timed on.")
flags.DEFINE_integer("repeats", 20, "Timed calls per implementation; the best is kept.")
flags.DEFINE_list("target_stripes", ["8", "16"], "H values of the forward + backward target.")
flags.DEFINE_integer("target_repeats", 5, "Timed calls per implementation in the target table.")
flags.DEFINE_integer("block_train", 128 * 128, "aligned_distance_matrix's tile in the target "
                     "from one batch (128 x 128 pairs: one piece).")
flags.DEFINE_bool("only_batch_target", False, "Run only the target from one batch.")


def nested_loop_dp(d: np.ndarray) -> np.ndarray:
    """[N] shortest path lengths of [N, H, H], one cell at a time as the paper writes it."""
    n, h, _ = d.shape
    out = np.empty(n, d.dtype)
    for p in range(n):
        s = [[0.0] * h for _ in range(h)]
        m = d[p].tolist()
        for i in range(h):
            for j in range(h):
                if i == 0 and j == 0:
                    s[i][j] = m[i][j]
                elif i == 0:
                    s[i][j] = m[i][j] + s[i][j - 1]
                elif j == 0:
                    s[i][j] = m[i][j] + s[i - 1][j]
                else:
                    s[i][j] = m[i][j] + min(s[i - 1][j], s[i][j - 1])
        out[p] = s[h - 1][h - 1]
    return out


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


def numpy_matrix_forward_backward(x: np.ndarray, y: np.ndarray
                                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All-pairs aligned distances [P, Q] and the gradients of their sum w.r.t. x and y, NumPy.

    x is [P, M, C], y [Q, L, C]. Element distances come from one [P*M, C] x [C, Q*L] GEMM, the
    wavefront runs on [M, P*Q] anti-diagonals (pairs minor), and the backward traces the paths
    into W [P*M, Q*L] (the slope of tanh(||x_i - y_j|| / 2) on path cells) and takes
    grad_x = x * rowsum(W) - W y and grad_y = y * colsum(W) - W^T x, two GEMMs; when y is x,
    their sum x * (rowsum + colsum) - (W + W^T) x, one GEMM, is returned as grad_x and grad_y
    is None. Same expansion, zero-distance rule and tie-breaking (from above) as
    `tf_reid.losses.aligned`.
    """
    p, rows, c = x.shape
    q, cols, _ = y.shape
    n, diagonals = p * q, rows + cols - 1
    x_flat, y_flat = x.reshape(p * rows, c), y.reshape(q * cols, c)
    squared = (np.einsum("ic,ic->i", x_flat, x_flat)[:, None]
               + np.einsum("jc,jc->j", y_flat, y_flat)[None, :] - 2 * x_flat @ y_flat.T)
    # [M, L, P*Q]: cell (i, j) of pair p*Q + q, so each anti-diagonal step is contiguous in pairs.
    squared = np.maximum(squared.reshape(p, rows, q, cols).transpose(1, 3, 0, 2), 0)
    squared = squared.reshape(rows, cols, n)
    nonzero = squared > 1e-12
    norm = np.sqrt(np.where(nonzero, squared, 1))
    d = np.where(nonzero, np.tanh(norm / 2), 0).astype(x.dtype)
    slope = np.where(nonzero, (1 - d * d) / (2 * norm), 0).astype(x.dtype)

    row = np.arange(rows)
    inf = np.full((1, n), np.inf, d.dtype)
    from_above = np.zeros((diagonals, rows, n), bool)
    previous = np.full((rows, n), np.inf, d.dtype)
    previous[0] = d[0, 0]
    for k in range(1, diagonals):
        valid = (k - row >= 0) & (k - row < cols)
        diagonal = np.full((rows, n), np.inf, d.dtype)
        diagonal[valid] = d[row[valid], k - row[valid]]
        above = np.concatenate([inf, previous[:-1]], axis=0)
        from_above[k] = above <= previous
        previous = diagonal + np.minimum(above, previous)
    lengths = previous[rows - 1].reshape(p, q)

    w = np.zeros((rows, cols, n), d.dtype)
    pairs = np.arange(n)
    i = np.full(n, rows - 1)
    for k in range(diagonals - 1, -1, -1):
        w[i, k - i, pairs] = slope[i, k - i, pairs]
        i = i - from_above[k, i, pairs]
    w = w.reshape(rows, cols, p, q).transpose(2, 0, 3, 1).reshape(p * rows, q * cols)
    if y is x:  # a batch against itself: the summed gradient by one GEMM, as TF does
        grad = x_flat * (w.sum(axis=1) + w.sum(axis=0))[:, None] - (w + w.T) @ x_flat
        return lengths, grad.reshape(x.shape), None
    grad_x = x_flat * w.sum(axis=1)[:, None] - w @ y_flat
    grad_y = y_flat * w.sum(axis=0)[:, None] - w.T @ x_flat
    return lengths, grad_x.reshape(x.shape), grad_y.reshape(y.shape)


def pair_stacks(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[P*Q, M, C] and [P*Q, L, C]: pair p*Q + q is (x[p], y[q])."""
    return np.repeat(x, len(y), axis=0), np.tile(y, (len(x), 1, 1))


def stacks_forward_backward(x: np.ndarray, y: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`numpy_distance_forward_backward` on the pair stacks, gradients summed back to x and y."""
    lengths, grad_x, grad_y = numpy_distance_forward_backward(*pair_stacks(x, y))
    p, q = len(x), len(y)
    return (lengths.reshape(p, q), grad_x.reshape(p, q, *x.shape[1:]).sum(axis=1),
            grad_y.reshape(p, q, *y.shape[1:]).sum(axis=0))


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
    if FLAGS.only_batch_target:
        batch_target(rng, int(np.sqrt(n)), c)
        return
    d = rng.uniform(size=(n, h, h)).astype(np.float32)
    sub = d[:FLAGS.reference_pairs]

    d_tf = tf.constant(d)
    # Scaled so stripe distances are around 1.4, where tanh(d / 2) is not saturated.
    x = tf.constant((rng.normal(size=(n, h, c)) / np.sqrt(c)).astype(np.float32))
    y = tf.constant((rng.normal(size=(n, h, c)) / np.sqrt(c)).astype(np.float32))
    side = int(np.sqrt(n))
    batch = x[:side]

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

    @tf.function
    def matrix(batch):
        return aligned_distance_matrix(batch, batch, block=FLAGS.block)

    xla = shortest_path(d_tf).numpy()
    np.testing.assert_allclose(numpy_wavefront(d), xla, rtol=1e-6)
    np.testing.assert_allclose(nested_loop_dp(sub), xla[:len(sub)], rtol=1e-6)
    pairs = aligned_distance(tf.repeat(batch, side, axis=0), tf.tile(batch, [side, 1, 1]))
    # Off the diagonal: an image against itself is where the two matmuls' rounding differs most.
    distinct = ~np.eye(side, dtype=bool).reshape(-1)
    np.testing.assert_allclose(matrix(batch).numpy().reshape(-1)[distinct],
                               pairs.numpy()[distinct], atol=1e-4)

    def run(fn):
        return lambda: tf.nest.map_structure(lambda t: t.numpy(), fn())

    repeats = FLAGS.repeats
    rows = [
        ("DP: XLA wavefront (tf)", n, best_seconds(run(lambda: shortest_path(d_tf)), repeats)),
        ("DP: NumPy wavefront, vectorised", n, best_seconds(lambda: numpy_wavefront(d), repeats)),
        (f"DP: NumPy nested loops ({len(sub)} pairs, extrapolated)", n,
         best_seconds(lambda: nested_loop_dp(sub), 1) / len(sub) * n),
        ("DP forward + backward (tf.function)", n,
         best_seconds(run(lambda: dp_forward_backward(d_tf)), repeats)),
        (f"distance from [N,{h},{c}] forward", n,
         best_seconds(run(lambda: distance_forward(x, y)), repeats)),
        (f"distance from [N,{h},{c}] forward + backward", n,
         best_seconds(run(lambda: distance_forward_backward(x, y)), repeats)),
        (f"matrix {side} x {side} from [{side},{h},{c}], tiles <= {FLAGS.block}", side * side,
         best_seconds(run(lambda: matrix(batch)), repeats)),
    ]
    xla_rate = n / rows[0][2]
    print(f"N = {n} pairs, H = {h}, float32, {os.cpu_count()} cores, best of {repeats} "
          f"(nested loops: one run on {len(sub)} pairs); all DPs and the matrix agree")
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
    batch_target(rng, side, c)


def check_batch_forms(rng: np.random.Generator, stripes: int, c: int) -> None:
    """TF's all-pairs matrix, NumPy pair stacks (a) and NumPy all pairs (b) agree on 24 images.

    float32 with two different batches, and float64 with one batch on both sides (an image
    against itself: float32's expansion residue makes those self-pairs' slopes huge, so their
    gradients differ between any two summation orders).
    """
    x = (rng.normal(size=(24, stripes, c)) / np.sqrt(c)).astype(np.float32)
    y = (rng.normal(size=(24, stripes, c)) / np.sqrt(c)).astype(np.float32)
    tf_dist, tf_gx, tf_gy = matrix_forward_backward(tf.constant(x), tf.constant(y))
    for name, fn in (("(a)", stacks_forward_backward), ("(b)", numpy_matrix_forward_backward)):
        dist, gx, gy = fn(x, y)
        np.testing.assert_allclose(dist, tf_dist.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(gx, tf_gx.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(gy, tf_gy.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
    b = x.astype(np.float64)
    tf_dist, tf_grad = batch_forward_backward(tf.constant(b))
    dist, gx, gy = stacks_forward_backward(b, b)
    np.testing.assert_allclose(dist, tf_dist.numpy(), atol=1e-9)
    np.testing.assert_allclose(gx + gy, tf_grad.numpy(), atol=1e-9)
    dist, grad, _ = numpy_matrix_forward_backward(b, b)
    np.testing.assert_allclose(dist, tf_dist.numpy(), atol=1e-9)
    np.testing.assert_allclose(grad, tf_grad.numpy(), atol=1e-9)


@tf.function
def matrix_forward_backward(x, y):
    """Distances [P, Q] and gradients of their sum w.r.t. x and y, as in a train step."""
    with tf.GradientTape() as tape:
        tape.watch([x, y])
        dist = aligned_distance_matrix(x, y, block=FLAGS.block_train)
    return dist, *tape.gradient(dist, [x, y])


@tf.function
def batch_forward_backward(batch):
    """The batch's [B, B] distances and the gradient of their sum w.r.t. the batch."""
    with tf.GradientTape() as tape:
        tape.watch(batch)
        dist = aligned_distance_matrix(batch, batch, block=FLAGS.block_train)
    return dist, tape.gradient(dist, batch)


def batch_target(rng: np.random.Generator, side: int, c: int) -> None:
    """The target from one batch's stripes [side, H, c], TF against NumPy (a) and (b)."""
    table = []
    for stripes in map(int, FLAGS.target_stripes):
        check_batch_forms(rng, stripes, c)
        batch = (rng.normal(size=(side, stripes, c)) / np.sqrt(c)).astype(np.float32)
        batch_tf = tf.constant(batch)
        stack_x, stack_y = pair_stacks(batch, batch)  # (a)'s input, built before timing
        calls = {
            "tf": lambda: [t.numpy() for t in batch_forward_backward(batch_tf)],
            "a": lambda: numpy_distance_forward_backward(stack_x, stack_y),
            "b": lambda: numpy_matrix_forward_backward(batch, batch),
        }
        best = {name: float("inf") for name in calls}
        for fn in calls.values():
            fn()  # warm-up (XLA compiles)
        # Alternating rounds: the cores are shared, so load drifts between implementations.
        for _ in range(FLAGS.target_repeats):
            for name, fn in calls.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
        table.append((stripes, best))
    print(f"\nTarget from one batch: all-pairs matrix of [{side},H,{c}] stripes, forward + "
          f"backward to the batch's gradient, {side * side} pairs, best of "
          f"{FLAGS.target_repeats} alternating rounds; TF, (a) and (b) agree on 24 images; "
          f"goal NumPy / TF >= 3")
    print(f"{'H':>4} {'TF ms':>9} {'(a) stacks ms':>14} {'(b) all-pairs ms':>17} "
          f"{'(a) / TF':>9} {'(b) / TF':>9}")
    for stripes, best in table:
        print(f"{stripes:4d} {best['tf'] * 1e3:9.2f} {best['a'] * 1e3:14.2f} "
              f"{best['b'] * 1e3:17.2f} {best['a'] / best['tf']:9.2f} "
              f"{best['b'] / best['tf']:9.2f}")


if __name__ == "__main__":
    app.run(main)
