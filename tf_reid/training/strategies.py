"""Distribution strategies by name, and splitting the CPU into logical devices for testing them."""

from __future__ import annotations

from typing import Callable

import tensorflow as tf


def split_cpu(replicas: int) -> None:
    """Makes the first CPU appear as `replicas` logical devices (before TensorFlow starts).

    Lets MirroredStrategy be exercised on a machine without GPUs.

    Raises:
      RuntimeError: TensorFlow's runtime is already initialised in this process.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)])


def _one_device() -> tf.distribute.Strategy:
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def _mirrored() -> tf.distribute.Strategy:
    """All local GPUs; without GPUs, every logical CPU (see `split_cpu`)."""
    if tf.config.list_logical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=cpus)


def _multi_worker() -> tf.distribute.Strategy:
    """Several machines, each described by the TF_CONFIG environment variable."""
    return tf.distribute.MultiWorkerMirroredStrategy()


STRATEGIES: dict[str, Callable[[], tf.distribute.Strategy]] = {
    "default": tf.distribute.get_strategy,
    "one_device": _one_device,
    "mirrored": _mirrored,
    "multi_worker": _multi_worker,
}
