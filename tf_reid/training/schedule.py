"""Learning-rate schedule of the AlignedReID recipe: step decay at epoch boundaries, linear warm-up.

AlignedReID (arXiv 1711.08184, Sec. 4.1) trains with Adam at 1e-3, decayed x0.1 at epochs 80 and
160 (mutual learning: 3e-4, decayed at 60 and 120). Warm-up as in Luo et al. 2019, "Bag of
Tricks" (arXiv 1903.07071): the rate rises linearly from warmup_factor * base to base.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import tensorflow as tf


def learning_rate(step: tf.Tensor, base: float, steps_per_epoch: int,
                  decay_epochs: Sequence[int] = (), decay_factor: float = 0.1,
                  warmup_epochs: float = 0.0, warmup_factor: float = 0.01) -> tf.Tensor:
    """The rate at optimizer step `step` (0-based): scalar float32.

    epoch = step / steps_per_epoch (fractional); rate = base * decay_factor ** (number of
    decay_epochs <= epoch), times warmup_factor + (1 - warmup_factor) * epoch / warmup_epochs
    while epoch < warmup_epochs.
    """
    epoch = tf.cast(step, tf.float32) / float(steps_per_epoch)
    passed = tf.add_n([tf.cast(epoch >= e, tf.float32) for e in decay_epochs] or [0.0])
    rate = base * tf.pow(tf.constant(decay_factor, tf.float32), passed)
    if warmup_epochs > 0:
        ramp = warmup_factor + (1.0 - warmup_factor) * epoch / warmup_epochs
        rate = rate * tf.minimum(ramp, 1.0)
    return rate


@keras.saving.register_keras_serializable(package="tf_reid")
class EpochSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`learning_rate` as a Keras schedule, so optimizers evaluate it at their own iteration."""

    def __init__(self, base: float, steps_per_epoch: int, decay_epochs: Sequence[int] = (),
                 decay_factor: float = 0.1, warmup_epochs: float = 0.0,
                 warmup_factor: float = 0.01):
        self.base = base
        self.steps_per_epoch = steps_per_epoch
        self.decay_epochs = tuple(decay_epochs)
        self.decay_factor = decay_factor
        self.warmup_epochs = warmup_epochs
        self.warmup_factor = warmup_factor

    def __call__(self, step):
        return learning_rate(step, **self.get_config())

    def get_config(self) -> dict[str, Any]:
        return {"base": self.base, "steps_per_epoch": self.steps_per_epoch,
                "decay_epochs": list(self.decay_epochs), "decay_factor": self.decay_factor,
                "warmup_epochs": self.warmup_epochs, "warmup_factor": self.warmup_factor}
