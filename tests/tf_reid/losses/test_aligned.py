"""Aligned local distance: hand-worked paths, a nested-loop DP twin, gradients, replicas."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO
from tf_reid.losses.aligned import (aligned_distance, aligned_distance_matrix_forward,
                                    element_distances, shortest_path, unit_tanh_half_sqrt)


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
    """[N, M, L] (e^d - 1) / (e^d + 1) of stripe distances, the paper's form, by loops."""
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


def path_and_cells(d, dtype=tf.float64):
    """(shortest_path(d), its gradient with respect to d: the path's indicator)."""
    d = tf.constant(d, dtype)
    with tf.GradientTape() as tape:
        tape.watch(d)
        lengths = shortest_path(d)
    return lengths.numpy(), tape.gradient(lengths, d).numpy()


def distances_and_gradients(x, y):
    x, y = tf.constant(x), tf.constant(y)
    with tf.GradientTape() as tape:
        tape.watch([x, y])
        dist = aligned_distance(x, y)
    grad_x, grad_y = tape.gradient(dist, [x, y])
    return dist.numpy(), grad_x.numpy(), grad_y.numpy()


def stripes(seed: int, n: int, h: int, c: int, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, h, c)).astype(dtype)


# --- the DP -------------------------------------------------------------------------------------

def test_hand_worked_3x3():
    d = [[0.1, 0.5, 0.1],
         [0.2, 0.1, 0.9],
         [0.4, 0.3, 0.2]]
    # The six right/down paths, each of 5 cells:
    #   RRDD .1+.5+.1+.9+.2 = 1.8   RDRD .1+.5+.1+.9+.2 = 1.8   RDDR .1+.5+.1+.3+.2 = 1.2
    #   DRRD .1+.2+.1+.9+.2 = 1.5   DRDR .1+.2+.1+.3+.2 = 0.9   DDRR .1+.2+.4+.3+.2 = 1.2
    # Shortest: down, right, down, right = 0.9. As the DP table S:
    #   .1  .6  .7
    #   .3  .4 1.3
    #   .7  .7  .9
    lengths, cells = path_and_cells([d])
    np.testing.assert_allclose(lengths, [0.9], atol=1e-12)
    np.testing.assert_array_equal(cells[0], [[1, 0, 0],
                                             [1, 1, 0],
                                             [0, 1, 1]])


def test_hand_worked_2x2_and_ties_come_from_above():
    # Right then down: .5 + .2 + .4 = 1.1; down then right: .5 + .1 + .4 = 1.0.
    lengths, cells = path_and_cells([[[0.5, 0.2], [0.1, 0.4]]])
    np.testing.assert_allclose(lengths, [1.0], atol=1e-12)
    np.testing.assert_array_equal(cells[0], [[1, 0], [1, 1]])
    # Both paths cost 0 + 1 + 0 = 1; (1, 1) takes its predecessor from above, (0, 1).
    lengths, cells = path_and_cells([[[0.0, 1.0], [1.0, 0.0]]])
    np.testing.assert_allclose(lengths, [1.0], atol=1e-12)
    np.testing.assert_array_equal(cells[0], [[1, 1], [0, 1]])


def test_one_stripe_is_the_single_cell():
    lengths, cells = path_and_cells([[[0.3]], [[2.0]]])
    np.testing.assert_allclose(lengths, [0.3, 2.0], atol=1e-12)
    np.testing.assert_array_equal(cells, [[[1]], [[1]]])


@pytest.mark.parametrize("h", [1, 2, 5, 8, 16])
@pytest.mark.parametrize("n", [1, 7, 100])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wavefront_matches_nested_loop_dp(h, n, dtype):
    d = np.random.default_rng(h * 1000 + n).uniform(size=(n, h, h)).astype(dtype)
    lengths, cells = path_and_cells(d, tf.as_dtype(dtype))
    expected = [reference_path(m) for m in d]
    np.testing.assert_allclose(lengths, [length for length, _ in expected], rtol=1e-5, atol=1e-5)
    # Same operations in the same dtype and order, so even near-ties resolve identically.
    np.testing.assert_array_equal(cells, np.stack([c for _, c in expected]))


def test_path_has_2h_minus_1_cells_including_both_corners():
    _, cells = path_and_cells(np.random.default_rng(3).uniform(size=(50, 6, 6)))
    np.testing.assert_array_equal(cells.sum(axis=(1, 2)), np.full(50, 11))
    np.testing.assert_array_equal(cells[:, 0, 0], 1)
    np.testing.assert_array_equal(cells[:, -1, -1], 1)


def test_empty_batch():
    lengths, cells = path_and_cells(np.zeros((0, 4, 4)))
    assert lengths.shape == (0,) and cells.shape == (0, 4, 4)
    lengths, cells = path_and_cells(np.zeros((0, 3, 5)))
    assert lengths.shape == (0,) and cells.shape == (0, 3, 5)


def test_hand_worked_2x3():
    d = [[0.1, 0.9, 0.2],
         [0.3, 0.1, 0.4]]
    # The three right/down paths, each of 2 + 3 - 1 = 4 cells:
    #   RRD .1+.9+.2+.4 = 1.6   RDR .1+.9+.1+.4 = 1.5   DRR .1+.3+.1+.4 = 0.9
    lengths, cells = path_and_cells([d])
    np.testing.assert_allclose(lengths, [0.9], atol=1e-12)
    np.testing.assert_array_equal(cells[0], [[1, 0, 0],
                                             [1, 1, 1]])
    # Transposed, the same path runs right then down: lengths do not depend on orientation.
    lengths, cells = path_and_cells([np.transpose(d)])
    np.testing.assert_allclose(lengths, [0.9], atol=1e-12)
    np.testing.assert_array_equal(cells[0], [[1, 1], [0, 1], [0, 1]])


def test_single_row_or_column_is_the_sum():
    d = np.random.default_rng(24).uniform(size=(4, 1, 5))
    for m in (d, np.transpose(d, [0, 2, 1])):
        lengths, cells = path_and_cells(m)
        np.testing.assert_allclose(lengths, m.sum(axis=(1, 2)), atol=1e-12)
        np.testing.assert_array_equal(cells, 1)


@pytest.mark.parametrize("rows, cols", [(1, 5), (5, 1), (3, 7), (7, 3), (8, 6), (2, 16)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_square_wavefront_matches_nested_loop_dp(rows, cols, dtype):
    rng = np.random.default_rng(rows * 100 + cols)
    n = int(rng.integers(1, 60))
    d = rng.uniform(size=(n, rows, cols)).astype(dtype)
    lengths, cells = path_and_cells(d, tf.as_dtype(dtype))
    expected = [reference_path(m) for m in d]
    np.testing.assert_allclose(lengths, [length for length, _ in expected], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cells, np.stack([c for _, c in expected]))
    np.testing.assert_array_equal(cells.sum(axis=(1, 2)), np.full(n, rows + cols - 1))


def test_rejects_unknown_or_empty_stripe_counts():
    with pytest.raises(ValueError, match="static"):
        tf.function(shortest_path,
                    input_signature=[tf.TensorSpec([None, 3, None])]).get_concrete_function()
    with pytest.raises(ValueError, match="at least one"):
        shortest_path(np.zeros((2, 0, 3), np.float32))


# --- element distances ----------------------------------------------------------------------------

def test_element_distances_hand_worked():
    # ||(3, 4) - (0, 0)|| = 5, tanh(5 / 2) = (e^5 - 1) / (e^5 + 1) = 147.413 / 149.413 = 0.986614.
    x = [[[0.0, 0.0], [3.0, 4.0]]]
    y = [[[0.0, 0.0], [0.0, 0.0]]]
    np.testing.assert_allclose(element_distances(x, y).numpy(), [[[0.0, 0.0],
                                                                   [0.986614, 0.986614]]],
                               atol=1e-6)


def test_tanh_half_is_the_papers_normalisation():
    e = np.linspace(0.0, 30.0, 301)
    np.testing.assert_allclose(np.tanh(e / 2), (np.exp(e) - 1) / (np.exp(e) + 1), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_element_distances_match_loops(dtype):
    x, y = stripes(0, 6, 5, 4, dtype), stripes(1, 6, 5, 4, dtype)
    np.testing.assert_allclose(element_distances(x, y).numpy(),
                               reference_element_distances(x, y), atol=1e-6)


def test_equal_stripes_are_zero_up_to_the_expansions_rounding():
    # Small integers make ||x||^2 + ||y||^2 - 2 x.y exact: equal stripes are exactly 0.
    x = np.random.default_rng(2).integers(-5, 6, size=(3, 4, 8)).astype(np.float32)
    np.testing.assert_array_equal(np.diagonal(element_distances(x, x.copy()).numpy(), axis1=1,
                                              axis2=2), 0)
    # Random stripes cancel to a residue of about sqrt(machine epsilon) * ||x||: tanh(e / 2) <=
    # 1e-3 * ||x|| in float32 (measured up to 4e-4), 1e-7 * ||x|| in float64 (measured 2e-8).
    for dtype, bound in ((np.float32, 1e-3), (np.float64, 1e-7)):
        x = stripes(2, 50, 8, 128, dtype)
        diagonal = np.diagonal(element_distances(x, x.copy()).numpy(), axis1=1, axis2=2)
        assert np.all(diagonal <= bound * np.linalg.norm(x, axis=-1)), dtype


# --- aligned distance ---------------------------------------------------------------------------

def test_identical_images_hand_worked():
    # x == y = stripes (0, 0), (3, 4): D = [[0, t], [t, 0]] with t = tanh(2.5) = 0.986614, both
    # paths cost t (not 0: a path cannot stay on the diagonal) and the tie goes through (0, 1).
    # Gradient: cell (0, 1) is x_0 against y_1, d t / d x_0 = (1 - t^2) / 2 * (x_0 - y_1) / 5
    #   = 0.0265922 / 2 * (-0.6, -0.8) = (-0.0079777, -0.0106369), and the opposite for y_1;
    # the zero-distance diagonal cells contribute 0, not NaN.
    x = np.array([[[0.0, 0.0], [3.0, 4.0]]], np.float32)
    dist, grad_x, grad_y = distances_and_gradients(x, x.copy())
    np.testing.assert_allclose(dist, [0.986614], atol=1e-6)
    np.testing.assert_allclose(grad_x, [[[-0.0079777, -0.0106369], [0.0, 0.0]]], atol=1e-6)
    np.testing.assert_allclose(grad_y, [[[0.0, 0.0], [0.0079777, 0.0106369]]], atol=1e-6)


@pytest.mark.parametrize("h", [1, 3, 8])
@pytest.mark.parametrize("dtype, atol", [(np.float32, 1e-2), (np.float64, 1e-6)])
def test_identical_images_match_reference(h, dtype, atol):
    # The tolerance is the expansion's residue on the path's diagonal cells (see above).
    x = stripes(4, 20, h, 6, dtype)
    expected = [reference_path(m)[0] for m in reference_element_distances(x, x)]
    dist, grad_x, grad_y = distances_and_gradients(x, x.copy())
    np.testing.assert_allclose(dist, expected, atol=atol)
    assert np.all(np.isfinite(grad_x)) and np.all(np.isfinite(grad_y))
    if h == 1:
        np.testing.assert_allclose(dist, 0, atol=atol)


def test_symmetric_and_bounded():
    x, y = stripes(5, 40, 8, 16), stripes(6, 40, 8, 16)
    xy, yx = aligned_distance(x, y).numpy(), aligned_distance(y, x).numpy()
    np.testing.assert_allclose(xy, yx, rtol=1e-6)
    assert np.all(xy >= 0) and np.all(xy <= 2 * 8 - 1)
    # Far-apart stripes saturate tanh: every cell is ~1 and the distance approaches 2H-1.
    far = aligned_distance(x * 100, -x * 100 + 1000).numpy()
    np.testing.assert_allclose(far, 15.0, rtol=1e-6)


def test_matches_reference_on_random_stripes():
    x, y = stripes(7, 30, 8, 16), stripes(8, 30, 8, 16)
    expected = [reference_path(m)[0] for m in reference_element_distances(x, y)]
    np.testing.assert_allclose(aligned_distance(x, y).numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("rows, cols", [(1, 5), (5, 1), (3, 7), (8, 6)])
def test_non_square_matches_reference_and_is_symmetric(rows, cols):
    n = int(np.random.default_rng(rows * 10 + cols).integers(1, 40))
    x, y = stripes(25, n, rows, 16), stripes(26, n, cols, 16)
    d = element_distances(x, y).numpy()
    assert d.shape == (n, rows, cols)
    reference = reference_element_distances(x, y)
    np.testing.assert_allclose(d, reference, atol=1e-6)
    dist = aligned_distance(x, y).numpy()
    np.testing.assert_allclose(dist, [reference_path(m)[0] for m in reference], rtol=1e-5)
    np.testing.assert_allclose(aligned_distance(y, x).numpy(), dist, rtol=1e-6)
    assert np.all(dist >= 0) and np.all(dist <= rows + cols - 1)


# --- gradients ----------------------------------------------------------------------------------

def finite_difference(x: np.ndarray, y: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of aligned_distance(x, y)[n] with respect to x[n], all in one call.

    x is [N, M, C] and y [N, L, C]; M and L may differ.
    """
    n, h, c = x.shape
    basis = np.eye(h * c).reshape(h * c, h, c) * eps
    plus = np.concatenate([x[p] + basis for p in range(n)])
    minus = np.concatenate([x[p] - basis for p in range(n)])
    ys = np.repeat(y, h * c, axis=0)
    diff = aligned_distance(plus, ys).numpy() - aligned_distance(minus, ys).numpy()
    return (diff / (2 * eps)).reshape(n, h, c)


def test_gradient_matches_finite_differences():
    x, y = stripes(9, 4, 5, 3, np.float64), stripes(10, 4, 5, 3, np.float64)
    _, grad_x, grad_y = distances_and_gradients(x, y)
    np.testing.assert_allclose(grad_x, finite_difference(x, y), atol=1e-7)
    # Symmetry: d(x, y) = d(y, x), so y's gradient is the same difference taken the other way.
    np.testing.assert_allclose(grad_y, finite_difference(y, x), atol=1e-7)


def test_non_square_gradient_matches_finite_differences():
    x, y = stripes(27, 4, 3, 3, np.float64), stripes(28, 4, 7, 3, np.float64)
    _, grad_x, grad_y = distances_and_gradients(x, y)
    np.testing.assert_allclose(grad_x, finite_difference(x, y), atol=1e-7)
    np.testing.assert_allclose(grad_y, finite_difference(y, x), atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seeds, stripes_y", [((11, 12), 8), ((29, 30), 6)])  # square, non-square
def test_gradient_is_the_reference_paths_chain_rule(dtype, seeds, stripes_y):
    x, y = stripes(seeds[0], 25, 8, 6, dtype), stripes(seeds[1], 25, stripes_y, 6, dtype)
    _, grad_x, grad_y = distances_and_gradients(x, y)
    expected_x, expected_y = reference_gradients(x, y)
    np.testing.assert_allclose(grad_x, expected_x, atol=1e-6)
    np.testing.assert_allclose(grad_y, expected_y, atol=1e-6)


@pytest.mark.parametrize("rows, cols", [(8, 8), (3, 7), (6, 1)])
def test_fused_distance_is_the_taped_composition(rows, cols):
    # aligned_distance chains the path by hand; the tape through element_distances and
    # shortest_path is the unfused twin.
    x, y = tf.constant(stripes(33, 20, rows, 5)), tf.constant(stripes(34, 20, cols, 5))
    weights = tf.constant(np.random.default_rng(35).normal(size=20), tf.float32)
    results = []
    for fn in (aligned_distance, lambda a, b: shortest_path(element_distances(a, b))):
        with tf.GradientTape() as tape:
            tape.watch([x, y])
            dist = fn(x, y)
            total = tf.reduce_sum(weights * dist)
        results.append([dist.numpy(), *[g.numpy() for g in tape.gradient(total, [x, y])]])
    for fused, taped in zip(*results):
        np.testing.assert_allclose(fused, taped, atol=1e-5)


def test_empty_batch_and_unknown_batch_size():
    x, y = tf.zeros([0, 4, 3]), tf.zeros([0, 5, 3])
    with tf.GradientTape() as tape:
        tape.watch([x, y])
        dist = aligned_distance(x, y)
    grad_x, grad_y = tape.gradient(dist, [x, y])
    assert dist.shape == (0,) and grad_x.shape == (0, 4, 3) and grad_y.shape == (0, 5, 3)
    # Zeros against ones in 3 channels: every cell is tanh(sqrt(3) / 2), 4 + 6 - 1 on the path.
    traced = tf.function(aligned_distance, input_signature=[tf.TensorSpec([None, 4, None]),
                                                            tf.TensorSpec([None, 6, None])])
    np.testing.assert_allclose(traced(tf.zeros([2, 4, 3]), tf.ones([2, 6, 3])).numpy(),
                               np.full(2, 9 * np.tanh(np.sqrt(3) / 2)), rtol=1e-6)


def test_same_values_and_gradients_inside_tf_function():
    x, y = stripes(13, 10, 6, 4), stripes(14, 10, 6, 4)

    @tf.function
    def graph(x, y):
        with tf.GradientTape() as tape:
            tape.watch([x, y])
            dist = aligned_distance(x, y)
        return dist, *tape.gradient(dist, [x, y])

    for eager, traced in zip(distances_and_gradients(x, y), graph(tf.constant(x), tf.constant(y))):
        np.testing.assert_allclose(traced.numpy(), eager, atol=1e-7)


# --- replicas -----------------------------------------------------------------------------------

MIRRORED_SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tf_reid.losses.aligned import aligned_distance

    STRIPES, CHANNELS, BATCH = 4, 3, 8


    class Local(keras.Model):
        # A Dense layer read as stripes; the loss pulls images 2k and 2k+1 together.
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(STRIPES * CHANNELS)
            self.tracker = keras.metrics.Mean(name="loss")

        def call(self, inputs):
            return tf.reshape(self.dense(inputs), [-1, STRIPES, CHANNELS])

        @property
        def metrics(self):
            return [self.tracker]

        def train_step(self, data):
            with tf.GradientTape() as tape:
                stripes = self(data, training=True)
                per_pair = aligned_distance(stripes[0::2], stripes[1::2])
                loss = tf.nn.compute_average_loss(per_pair, global_batch_size=BATCH // 2)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            self.tracker.update_state(tf.reduce_mean(per_pair))
            return {"loss": self.tracker.result()}


    def train(strategy):
        inputs = np.random.default_rng(0).normal(size=(2 * BATCH, 5)).astype(np.float32)
        kernel = np.random.default_rng(1).normal(size=(5, STRIPES * CHANNELS)).astype(np.float32)
        with strategy.scope():
            model = Local()
            model(np.zeros((1, 5), np.float32))
            model.dense.set_weights([kernel, np.zeros(STRIPES * CHANNELS, np.float32)])
            model.compile(optimizer=keras.optimizers.SGD(0.1))
        data = tf.data.Dataset.from_tensor_slices(inputs).batch(BATCH)
        history = model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)
        return history.history["loss"][-1], model.dense.get_weights()[0], kernel


    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    loss, trained, initial = train(mirrored)
    _, single, _ = train(tf.distribute.get_strategy())
    print(json.dumps({"replicas": mirrored.num_replicas_in_sync, "loss": float(loss),
                      "moved": float(np.abs(trained - initial).max()),
                      "vs_single": float(np.abs(trained - single).max())}))
""")


def test_trains_under_mirrored_strategy_on_two_cpus():
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert np.isfinite(report["loss"]) and report["loss"] > 0
    assert report["moved"] > 1e-3
    # Pairs never straddle the replicas' halves, so two replicas take the single device's steps.
    assert report["vs_single"] < 1e-5


# --- forward only (retrieval) ------------------------------------------------------------------


def nested_loop_matrix(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """[P, Q] by the paper's loops: element distances and `reference_path`, pair by pair."""
    return np.array([[reference_path(reference_element_distances(query[i:i + 1],
                                                                 gallery[j:j + 1])[0])[0]
                      for j in range(len(gallery))] for i in range(len(query))])


def scaled_to_norm(x: np.ndarray, norm: float) -> np.ndarray:
    """x with every stripe rescaled to the given L2 norm over its channels."""
    return x * (norm / np.linalg.norm(x, axis=-1, keepdims=True))


def test_unit_tanh_half_sqrt_matches_tanh_on_its_interval():
    # Unit stripes: squared distances from 0 (equal) to 4 (opposite), plus the headroom.
    s = np.concatenate([np.linspace(0.0, 4.0625, 100_003), [0.0, 1e-12, 1e-6, 2.0, 4.0]])
    got = unit_tanh_half_sqrt(tf.constant(s, tf.float32)).numpy().astype(np.float64)
    s32 = s.astype(np.float32).astype(np.float64)  # the input the function actually sees
    # float32 tanh values below 0.8 are spaced 6e-8 apart; allow a few such steps.
    np.testing.assert_allclose(got, np.tanh(np.sqrt(s32) / 2), rtol=0, atol=2.5e-7)
    assert got[-1] == pytest.approx(np.tanh(1.0), abs=2.5e-7)
    # Rounding can make an expanded squared distance slightly negative: it counts as 0.
    assert unit_tanh_half_sqrt(tf.constant([-1e-6, -0.0], tf.float32)).numpy().tolist() == [0, 0]


@pytest.mark.parametrize("rows, cols", [(4, 4), (8, 8), (3, 6), (6, 1)])
@pytest.mark.parametrize("tiles", [(64, 256), (2, 3), (1, 1), (4, 8)])
@pytest.mark.parametrize("norm", [None, 1.0])
def test_forward_matrix_matches_nested_loop_dp(rows, cols, tiles, norm):
    # 7 x 11 images: tiles of 2 x 3 or 4 x 8 leave last tiles that overlap the one before.
    # norm None: raw normal stripes (tf.tanh); 1.0: unit stripes (the tanh-free path).
    query, gallery = stripes(60, 7, rows, 5), stripes(61, 11, cols, 5)
    if norm is not None:
        query, gallery = scaled_to_norm(query, norm), scaled_to_norm(gallery, norm)
    dist = aligned_distance_matrix_forward(query, gallery, *tiles)
    assert dist.shape == (7, 11) and dist.dtype == tf.float32
    np.testing.assert_allclose(dist.numpy(), nested_loop_matrix(query, gallery), rtol=1e-6,
                               atol=1e-5)


def test_forward_matrix_is_the_training_pair_distance():
    # Unit stripes, as in retrieval, 8 x 128 as the benchmark's; a gallery longer than a tile.
    # Pair (p, q) of the matrix is aligned_distance on the stacked pair p*300 + q.
    query = scaled_to_norm(stripes(62, 9, 8, 128), 1.0)
    gallery = scaled_to_norm(stripes(63, 300, 8, 128), 1.0)
    pairs = aligned_distance(np.repeat(query, 300, axis=0), np.tile(gallery, (9, 1, 1)))
    np.testing.assert_allclose(aligned_distance_matrix_forward(query, gallery, 4, 64).numpy(),
                               pairs.numpy().reshape(9, 300), atol=2e-6)


@pytest.mark.parametrize("norm", [1.0038, 1.0041, 1.5])
def test_forward_matrix_either_side_of_the_unit_norm_bound(norm):
    # Squared norms up to 1 + 1/128 (norms up to 1.0038) take the tanh-free path, above it tf.tanh;
    # both must match the loops. Opposite stripes give the largest squared distance, 4 norm^2.
    query = scaled_to_norm(stripes(68, 5, 6, 16), norm)
    gallery = np.concatenate([-query, scaled_to_norm(stripes(69, 9, 6, 16), norm)])
    np.testing.assert_allclose(aligned_distance_matrix_forward(query, gallery, 2, 4).numpy(),
                               nested_loop_matrix(query, gallery), rtol=1e-6, atol=1e-5)


def test_forward_matrix_of_one_query_and_empty_sides():
    x, y = stripes(64, 1, 5, 4), stripes(67, 20, 5, 4)
    np.testing.assert_allclose(aligned_distance_matrix_forward(x, y, 8, 8).numpy(),
                               nested_loop_matrix(x, y), rtol=1e-6, atol=1e-5)
    assert aligned_distance_matrix_forward(x[:0], y).shape == (0, 20)
    assert aligned_distance_matrix_forward(x, y[:0]).shape == (1, 0)


def test_forward_matrix_rejects_bad_arguments():
    x = stripes(65, 2, 3, 4)
    with pytest.raises(ValueError, match="query_tile"):
        aligned_distance_matrix_forward(x, x, query_tile=0)
    with pytest.raises(ValueError, match=r"\[P, M, C\]"):
        aligned_distance_matrix_forward(x, stripes(66, 2, 3, 5))
