"""Mutual learning losses: KL and distance-matrix matching, with the peer held constant."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tf_reid.losses.mutual import classification_mutual_loss, metric_mutual_loss


@pytest.fixture(params=["eager", "xla"])
def compiled(request):
    """Runs a function as written or compiled by XLA; every test must hold for both."""
    if request.param == "eager":
        return lambda fn: fn
    return lambda fn: tf.function(fn, jit_compile=True)


def numpy_kl(target_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """KL(p_target || p) per row, straight from the definition, in float64."""
    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    p_t, p = softmax(target_logits.astype(np.float64)), softmax(logits.astype(np.float64))
    return np.sum(p_t * np.log(p_t / p), axis=-1)


def test_classification_hand_worked(compiled):
    # p = softmax([0, 0]) = [1/2, 1/2]; p_t = softmax([ln 3, 0]) = [3/4, 1/4].
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.304099 - 0.173287 = 0.130812
    out = compiled(classification_mutual_loss)(tf.constant([[0.0, 0.0]]),
                                               tf.constant([[np.log(3.0), 0.0]], tf.float32))
    np.testing.assert_allclose(out, [0.130812], atol=1e-6)


def test_classification_matches_numpy(compiled):
    rng = np.random.default_rng(0)
    logits = (2.0 * rng.normal(size=(6, 9))).astype(np.float32)
    target = (2.0 * rng.normal(size=(6, 9))).astype(np.float32)
    out = compiled(classification_mutual_loss)(logits, target)
    assert out.shape == (6,)
    np.testing.assert_allclose(out, numpy_kl(target, logits), rtol=1e-5, atol=1e-6)


def test_classification_zero_for_equal_posteriors(compiled):
    logits = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    np.testing.assert_allclose(compiled(classification_mutual_loss)(logits, logits), np.zeros(4),
                               atol=1e-6)
    # Softmax ignores a per-row shift, so shifted logits are the same posterior.
    np.testing.assert_allclose(compiled(classification_mutual_loss)(logits, logits + 7.0),
                               np.zeros(4), atol=1e-5)


def test_classification_finite_on_extreme_logits(compiled):
    # p_t = [~0, 1], log p = [0, -2000]: KL = 1 * (0 - (-2000)) = 2000, the ~0 term adds 0.
    out = compiled(classification_mutual_loss)(tf.constant([[1000.0, -1000.0]]),
                                               tf.constant([[-1000.0, 1000.0]]))
    np.testing.assert_allclose(out, [2000.0], rtol=1e-6)


def gradients_of(loss_fn):
    """f(x, target) -> (d sum(loss) / dx, d sum(loss) / dtarget, zeros where there is none)."""
    def grads(x, target):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([x, target])
            loss = tf.reduce_sum(loss_fn(x, target))
        g_target = tape.gradient(loss, target)
        return tape.gradient(loss, x), tf.zeros_like(target) if g_target is None else g_target

    return grads


def test_classification_gradients(compiled):
    grads = gradients_of(classification_mutual_loss)
    g_logits, g_target = compiled(grads)(tf.constant([[0.0, 0.0]]),
                                         tf.constant([[np.log(3.0), 0.0]], tf.float32))
    # d KL / d logits = p - p_t = [1/2 - 3/4, 1/2 - 1/4].
    np.testing.assert_allclose(g_logits, [[-0.25, 0.25]], atol=1e-6)
    np.testing.assert_array_equal(g_target, [[0.0, 0.0]])


def test_classification_target_gradient_is_none_eagerly():
    logits, target = tf.constant([[0.3, -1.0, 2.0]]), tf.constant([[1.0, 0.0, -0.5]])
    with tf.GradientTape() as tape:
        tape.watch([logits, target])
        loss = classification_mutual_loss(logits, target)
    g_logits, g_target = tape.gradient(loss, [logits, target])
    assert g_target is None
    assert np.any(g_logits.numpy() != 0)


# dist = [[0, 1], [1, 0]], target = [[0, 3], [3, 0]]: each row's squared differences are 0 and 4,
# mean 2, so the per-anchor losses are [2, 2]; their sum / B = 2 = (1/B^2) * (0 + 4 + 4 + 0).
# Gradient of the sum: 2 (D - T) / B = [[0, -2], [-2, 0]].
def test_metric_hand_worked(compiled):
    out = compiled(metric_mutual_loss)(tf.constant([[0.0, 1.0], [1.0, 0.0]]),
                                       tf.constant([[0.0, 3.0], [3.0, 0.0]]))
    np.testing.assert_allclose(out, [2.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(tf.nn.compute_average_loss(out, global_batch_size=2), 2.0)


def test_metric_matches_paper_formula(compiled):
    rng = np.random.default_rng(2)
    dist, target = rng.uniform(0, 3, size=(2, 8, 8)).astype(np.float32)
    out = compiled(metric_mutual_loss)(dist, target)
    assert out.shape == (8,)
    np.testing.assert_allclose(out.numpy().sum() / 8, ((dist - target) ** 2).sum() / 64, rtol=1e-5)
    np.testing.assert_allclose(compiled(metric_mutual_loss)(dist, dist), np.zeros(8))


def test_metric_gradients(compiled):
    grads = gradients_of(metric_mutual_loss)
    g_dist, g_target = compiled(grads)(tf.constant([[0.0, 1.0], [1.0, 0.0]]),
                                       tf.constant([[0.0, 3.0], [3.0, 0.0]]))
    np.testing.assert_allclose(g_dist, [[0.0, -2.0], [-2.0, 0.0]], atol=1e-6)
    np.testing.assert_array_equal(g_target, np.zeros((2, 2)))


def test_metric_target_gradient_is_none_eagerly():
    dist, target = tf.constant([[0.0, 1.0], [1.0, 0.0]]), tf.constant([[0.0, 3.0], [3.0, 0.0]])
    with tf.GradientTape() as tape:
        tape.watch([dist, target])
        loss = metric_mutual_loss(dist, target)
    assert tape.gradient(loss, target) is None
