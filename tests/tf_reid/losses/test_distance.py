"""pairwise_distance: values against NumPy, finite gradients at zero distance, XLA."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tf_reid.losses.distance import pairwise_distance


@pytest.fixture(params=["eager", "xla"])
def compiled(request):
    """Runs a function as written or compiled by XLA; every test must hold for both."""
    if request.param == "eager":
        return lambda fn: fn
    return lambda fn: tf.function(fn, jit_compile=True)


def numpy_distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The obvious definition: the norm of every difference, in float64."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    return np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))


def test_hand_worked(compiled):
    # (0,0)-(3,4) is the 3-4-5 triangle; (1,1)-(1,1) coincide.
    x = tf.constant([[0.0, 0.0], [1.0, 1.0]])
    y = tf.constant([[3.0, 4.0], [1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(compiled(pairwise_distance)(x, y),
                               [[5.0, np.sqrt(2.0), 0.0], [np.sqrt(13.0), 0.0, np.sqrt(2.0)]],
                               rtol=1e-6, atol=1e-6)


def test_matches_numpy(compiled):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 16)).astype(np.float32)
    y = rng.normal(size=(7, 16)).astype(np.float32)
    out = compiled(pairwise_distance)(tf.constant(x), tf.constant(y))
    assert out.shape == (5, 7) and out.dtype == tf.float32
    np.testing.assert_allclose(out, numpy_distance(x, y), rtol=1e-5, atol=1e-5)


def test_self_distance_is_symmetric_with_small_diagonal(compiled):
    x = np.random.default_rng(1).normal(size=(6, 32)).astype(np.float32)
    out = compiled(pairwise_distance)(tf.constant(x), tf.constant(x)).numpy()
    np.testing.assert_allclose(out, out.T, atol=1e-6)
    off_diagonal = ~np.eye(6, dtype=bool)
    np.testing.assert_allclose(out[off_diagonal], numpy_distance(x, x)[off_diagonal], rtol=1e-5)
    # ||x||^2 + ||x||^2 - 2 x.x cancels to a few float32 ulps of 2 ||x||^2, not to 0; the sqrt
    # of one ulp is about 5e-4 ||x||.
    assert np.all(np.diag(out) < 2e-3 * np.linalg.norm(x, axis=1))


def test_exact_zero_in_float64():
    x = tf.constant([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]], tf.float64)
    np.testing.assert_array_equal(np.diag(pairwise_distance(x, x)), [0.0, 0.0])


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_gradient_finite_on_self_distance(compiled, dtype):
    x = tf.constant(np.random.default_rng(2).normal(size=(6, 8)), dtype)

    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(pairwise_distance(x, x))
        return tape.gradient(total, x)

    g = compiled(grad)(x).numpy()
    assert np.all(np.isfinite(g))
    # The off-diagonal terms are ordinary: d/dx_i sum_j 2 ||x_i - x_j|| = 2 sum_j unit(x_i - x_j).
    xs = x.numpy().astype(np.float64)
    diff = xs[:, None, :] - xs[None, :, :]
    norm = np.linalg.norm(diff, axis=-1, keepdims=True)
    expected = 2.0 * np.sum(np.divide(diff, norm, out=np.zeros_like(diff), where=norm > 0), axis=1)
    np.testing.assert_allclose(g, expected, atol=1e-3 if dtype == tf.float32 else 1e-9)


def test_gradient_finite_and_zero_for_identical_rows(compiled):
    x = tf.constant([[1.0, 2.0, 3.0], [4.0, 0.0, -1.0]])
    y = tf.constant([[9.0, 9.0, 9.0], [1.0, 2.0, 3.0]])  # y[1] == x[0]

    def grads(x, y):
        with tf.GradientTape() as tape:
            tape.watch([x, y])
            d = pairwise_distance(x, y)[0, 1]  # the zero entry alone
        return tape.gradient(d, [x, y])

    gx, gy = compiled(grads)(x, y)
    # Coincident points: the distance is at its minimum, the (sub)gradient chosen is 0.
    np.testing.assert_array_equal(gx, np.zeros((2, 3)))
    np.testing.assert_array_equal(gy, np.zeros((2, 3)))


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(3, 4)))
    y = tf.constant(rng.normal(size=(5, 4)))
    theoretical, numerical = tf.test.compute_gradient(pairwise_distance, [x, y])
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, rtol=1e-6, atol=1e-6)
