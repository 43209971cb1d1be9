"""BatchNormalization whose training step runs TensorFlow's fused kernel.

Keras 3 normalises a training batch with separate ops (moments, then scale and shift), and the
gradient of that graph is a chain of broadcasts, multiplies and reductions over the whole feature
map for every BatchNormalization: in a MobileNetV2 training step on the CPU those took more time
than the convolutions (BUILD.md, "Train step vs PyTorch"). `FusedBatchNormalization` computes the
same function with `FusedBatchNormV3` (one pass forward, one `FusedBatchNormGradV3` backward),
as Keras 2 did. It is a drop-in subclass: same variables, same config, same moving-average update
(Keras 3's: biased batch variance), and `with_fused_batch_norm` puts it into a built model.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tf_reid")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with a fused training path for [B, H, W, C] inputs.

    Everything else (inference, other ranks or axes, masks, renorm, synchronized statistics)
    is the parent's.
    """

    def _fusable(self, inputs, training, mask) -> bool:
        return (bool(training) and self.trainable and mask is None and not self.renorm
                and not self.synchronized and len(inputs.shape) == 4
                and self.axis in (-1, 3))

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
        empty = tf.zeros([0])  # no running statistics go in while training
        y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=offset, mean=empty, variance=empty,
            epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
            is_training=True)
        # The kernel returns the unbiased (n / (n - 1)) batch variance; Keras 3 averages the
        # biased one into moving_variance.
        count = tf.cast(tf.size(x) // channels, tf.float32)
        variance = variance * (count - 1.0) / count
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            self.moving_variance * momentum + variance * (1.0 - momentum))
        return tf.cast(y, self.compute_dtype)


def with_fused_batch_norm(model: keras.Model) -> keras.Model:
    """`model` with every Keras BatchNormalization of it (nested models' included) fused.

    The subclass adds no state and no variable, so the layers are re-classed in place: the same
    objects, names, variables and weights, without cloning the model (which took about as long
    as building it).
    """
    for layer in batch_norms(model):
        if type(layer) is keras.layers.BatchNormalization:
            layer.__class__ = FusedBatchNormalization
    return model


def batch_norms(model: keras.layers.Layer) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer of `model`, nested models' included."""
    if isinstance(model, keras.layers.BatchNormalization):
        return [model]
    return [bn for layer in getattr(model, "layers", []) for bn in batch_norms(layer)]
