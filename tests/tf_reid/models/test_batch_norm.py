"""FusedBatchNormalization against Keras' BatchNormalization, the layer it replaces."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.tf_reid.training.conftest import LABELS, images
from tf_reid.models.aligned_reid import AlignedReID
from tf_reid.models.batch_norm import FusedBatchNormalization, batch_norms
from tf_reid.training import objective, trainer

OPTIONS = [{}, {"center": False}, {"scale": False}, {"epsilon": 1e-5, "momentum": 0.9}]


def run(layer, x, upstream, training):
    """(output, gradients of sum(output * upstream) w.r.t. x and the trainable variables)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(y * upstream)
    return y.numpy(), [g.numpy() for g in tape.gradient(loss, [x, *layer.trainable_variables])]


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("training", [True, False])
def test_same_outputs_gradients_and_moving_statistics(options, training):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, (6, 5, 4, 3)), tf.float32)
    upstream = tf.constant(rng.normal(size=x.shape), tf.float32)
    layers = [keras.layers.BatchNormalization(**options), FusedBatchNormalization(**options)]
    for layer in layers:
        layer.build(x.shape)
        layer.set_weights([np.linspace(0.5, 1.5, 3, dtype=np.float32) + i
                           for i, _ in enumerate(layer.weights)])
    (y_ref, g_ref), (y, g) = (run(layer, x, upstream, training) for layer in layers)
    # float32 sums over the 120 values of a channel: errors of ~120 * 2^-24 relative to the
    # largest term, far below 1e-5 of the values here.
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(g, g_ref):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    for got, want in zip(layers[1].non_trainable_weights, layers[0].non_trainable_weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)
    if training:  # the moving statistics did move
        assert not np.allclose(layers[1].moving_mean.numpy(), 1.5)


def test_other_ranks_take_the_parents_path():
    x = tf.constant(np.random.default_rng(1).normal(size=(8, 5)), tf.float32)
    plain, fused = keras.layers.BatchNormalization(), FusedBatchNormalization()
    np.testing.assert_array_equal(fused(x, training=True).numpy(),
                                  plain(x, training=True).numpy())


def test_every_backbone_batch_norm_is_fused_and_the_weights_are_kept():
    keras.utils.set_random_seed(0)
    plain = AlignedReID(4, backbone="tiny", input_shape=(16, 8, 3), fused_batch_norm=False)
    fused = AlignedReID(4, backbone="tiny", input_shape=(16, 8, 3))
    fused.set_weights(plain.get_weights())
    assert [type(layer) for layer in batch_norms(fused.backbone)] == [FusedBatchNormalization] * 3
    assert [v.path for v in fused.weights] == [v.path for v in plain.weights]


def test_a_training_step_makes_the_reference_update():
    """One MutualTrainer step (aligned objective, weight decay, SGD at lr 1, so a parameter moves
    by its gradient) from the same weights on the same batch: every variable, BatchNorm moving
    statistics included, ends where the Keras-BatchNormalization step puts it."""
    keras.utils.set_random_seed(0)
    models = [AlignedReID(4, backbone="tiny", input_shape=(16, 8, 3), name="plain",
                          fused_batch_norm=False),
              AlignedReID(4, backbone="tiny", input_shape=(16, 8, 3), name="fused")]
    models[1].set_weights(models[0].get_weights())
    before = [v.numpy() for v in models[0].weights]
    batch = (tf.constant(images()), tf.constant(LABELS))
    for model in models:
        trainer.MutualTrainer([model], [keras.optimizers.SGD(1.0)], objective.LossWeights(),
                              weight_decay=5e-4).train_step(batch)
    largest = max(np.abs(ref.numpy() - start).max() for start, ref in zip(before, models[0].weights))
    for ref, got in zip(models[0].weights, models[1].weights):
        # The steps differ by float32 rounding of the sums over each channel's 8 x h x w values
        # (at most 1,024 here), ~1e-7 relative; 1e-4 of the step's largest move bounds it, also
        # for variables whose gradient is zero up to rounding (a bias before a BatchNorm).
        np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4 * largest,
                                   err_msg=ref.path)
