"""id_loss and lsro_loss: hand-worked cross-entropy (label smoothing, uniform target), eager and XLA."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf

from tf_reid.losses.identity import id_loss, lsro_loss


@pytest.fixture(params=["eager", "xla"])
def compiled(request):
    """Runs a function as written or compiled by XLA; every test must hold for both."""
    if request.param == "eager":
        return lambda fn: fn
    return lambda fn: tf.function(fn, jit_compile=True)


# Logits [2, 0], C = 2: log p = [-ln(1 + e^-2), -2 - ln(1 + e^-2)] = [-0.126928, -2.126928].
# eps = 0:   label 0 -> 0.126928;  label 1 -> 2.126928
# eps = 0.1: target = (1 - 0.1) one_hot + 0.1 / 2, i.e. [0.95, 0.05] or [0.05, 0.95]
#            label 0 -> 0.95 * 0.126928 + 0.05 * 2.126928 = 0.226928
#            label 1 -> 0.05 * 0.126928 + 0.95 * 2.126928 = 2.026928
@pytest.mark.parametrize("label_smoothing, expected", [(0.0, [0.126928, 2.126928]),
                                                       (0.1, [0.226928, 2.026928])])
def test_hand_worked_two_classes(compiled, label_smoothing, expected):
    loss = functools.partial(id_loss, label_smoothing=label_smoothing)
    out = compiled(loss)(tf.constant([0, 1]), tf.constant([[2.0, 0.0], [2.0, 0.0]]))
    assert out.shape == (2,)
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
def test_uniform_logits_cost_log_num_classes_whatever_the_smoothing(compiled, label_smoothing):
    loss = functools.partial(id_loss, label_smoothing=label_smoothing)
    out = compiled(loss)(tf.constant([0, 2], tf.int64), tf.zeros([2, 3]))
    np.testing.assert_allclose(out, [np.log(3.0)] * 2, atol=1e-6)


def test_matches_numpy_on_random_logits(compiled):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, size=5).astype(np.int32)
    logits = (3.0 * rng.normal(size=(5, 7))).astype(np.float32)
    out = compiled(functools.partial(id_loss, label_smoothing=0.1))(labels, logits)
    log_p = logits - np.log(np.exp(logits.astype(np.float64)).sum(1, keepdims=True))
    # Smoothed CE = (1 - eps) * (-log p_label) + eps * mean over classes of (-log p_c).
    expected = 0.9 * -log_p[np.arange(5), labels] + 0.1 * -log_p.mean(1)
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_finite_on_extreme_logits(compiled):
    out = compiled(functools.partial(id_loss, label_smoothing=0.1))(
        tf.constant([1]), tf.constant([[1000.0, -1000.0]]))
    # -log p = [0, 2000]; target [0.05, 0.95] -> 0.95 * 2000 = 1900.
    np.testing.assert_allclose(out, [1900.0], rtol=1e-6)


def test_gradient_is_softmax_minus_target():
    logits = tf.constant([[2.0, 0.0]])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = id_loss(tf.constant([0]), logits, label_smoothing=0.1)
    # softmax([2, 0]) = [0.880797, 0.119203]; target [0.95, 0.05].
    np.testing.assert_allclose(tape.gradient(loss, logits), [[-0.069203, 0.069203]], atol=1e-6)


# LSRO: logits ln [1, 2, 3] give p = [1, 2, 3] / 6, so -(ln 1/6 + ln 2/6 + ln 3/6) / 3
# = (3 ln 6 - ln 6) / 3 = 2 ln 6 / 3 = ln 36 / 3 (as ln 1 + ln 2 + ln 3 = ln 6); equal logits: ln 3.
def test_lsro_hand_worked(compiled):
    out = compiled(lsro_loss)(tf.math.log(tf.constant([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])))
    np.testing.assert_allclose(out, [np.log(36.0) / 3, np.log(3.0)], rtol=1e-6)


def test_lsro_is_full_label_smoothing_and_smallest_when_uniform(compiled):
    rng = np.random.default_rng(1)
    logits = (2.0 * rng.normal(size=(4, 5))).astype(np.float32)
    lsro = compiled(lsro_loss)(logits)
    # eps = 1: the target is uniform whatever the label.
    np.testing.assert_allclose(lsro, id_loss(tf.constant([0, 1, 2, 3]), logits, 1.0), rtol=1e-6)
    assert (lsro.numpy() > np.log(5.0)).all()  # Gibbs: cross-entropy >= entropy of the uniform
