"""Aligned local distance: hand-worked values, the paper's loops, the unfused twin, replicas."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO
from tests.tf_reid.losses.conftest import stripes
from tests.tf_reid.losses.references import (element_distances, reference_element_distances,
                                             reference_gradients, reference_path, shortest_path)
from tf_reid.losses.aligned import aligned_distance


def distances_and_gradients(x, y):
    x, y = tf.constant(x), tf.constant(y)
    with tf.GradientTape() as tape:
        tape.watch([x, y])
        dist = aligned_distance(x, y)
    grad_x, grad_y = tape.gradient(dist, [x, y])
    return dist.numpy(), grad_x.numpy(), grad_y.numpy()


# --- element distances (the unfused twin's, as aligned_distance expands them) ------------------

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
    # Random stripes cancel to a residue of about sqrt(machine epsilon) * ||x|| (3.5e-4 in
    # float32, 1.5e-8 in float64), so tanh(e / 2) <= 1e-3 * ||x|| and 1e-7 * ||x||.
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


def test_rejects_unknown_stripe_counts():
    with pytest.raises(ValueError, match="static M and L"):
        tf.function(aligned_distance, input_signature=[
            tf.TensorSpec([None, None, 3]), tf.TensorSpec([None, 4, 3])]).get_concrete_function()


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
