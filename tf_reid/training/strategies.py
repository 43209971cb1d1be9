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
    """Several machines, each described by the TF_CONFIG environment variable.

    Every worker runs the same command; the chief (see `is_chief`) writes the workdir, the
    others write their (identical) checkpoints to a temporary folder they delete at the end.
    To resume, every worker must see the chief's workdir (a shared filesystem or a copy).
    """
    return tf.distribute.MultiWorkerMirroredStrategy()


def in_cluster(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` spans a multi-worker cluster (a TF_CONFIG naming this task)."""
    resolver = strategy.cluster_resolver
    return resolver is not None and bool(resolver.task_type)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files: always, except on a multi-worker cluster,
    where only the `chief` task does (worker 0 when TF_CONFIG names no chief)."""
    if not in_cluster(strategy):
        return True
    resolver = strategy.cluster_resolver
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def task_name(strategy: tf.distribute.Strategy) -> str:
    """'worker-1', 'chief-0', ...; 'local' outside a multi-worker cluster."""
    if not in_cluster(strategy):
        return "local"
    return f"{strategy.cluster_resolver.task_type}-{strategy.cluster_resolver.task_id}"


STRATEGIES: dict[str, Callable[[], tf.distribute.Strategy]] = {
    "default": tf.distribute.get_strategy,
    "one_device": _one_device,
    "mirrored": _mirrored,
    "multi_worker": _multi_worker,
}
