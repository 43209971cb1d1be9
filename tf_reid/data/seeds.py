"""Stateless seeds of the input pipelines, a function of (seed, pass, random choice) only."""

from __future__ import annotations

import tensorflow as tf


def pass_seed(seed: int, epoch: tf.Tensor | int, stream: int) -> tf.Tensor:
    """int64 scalar, the first half of a stateless seed for random choice `stream` (1, 2, ...) of
    pass `epoch`: a function of (seed, epoch, stream) only, so a resumed pass draws the same."""
    return tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64) * 101 + stream
