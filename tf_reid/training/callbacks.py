"""Keras callbacks of a training run: progress with images/s, TensorBoard scalars, checkpoints,
periodic evaluation with the best checkpoint kept."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

import keras
import tensorflow as tf
from tqdm import tqdm

from tf_reid.training import workdir as workdir_lib


def _floats(logs: dict[str, Any] | None) -> dict[str, float]:
    return {k: float(v) for k, v in (logs or {}).items()}


class ProgressBar(keras.callbacks.Callback):
    """One tqdm bar per epoch: steps, running loss and training images/s."""

    def __init__(self, epochs: int, steps_per_epoch: int, global_batch: int, enabled: bool = True):
        super().__init__()
        self.epochs, self.steps, self.global_batch = epochs, steps_per_epoch, global_batch
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.started = 0.0
        self.images_per_second = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}", unit="step",
                        disable=not self.enabled, dynamic_ncols=True, leave=True)
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        elapsed = time.perf_counter() - self.started
        self.images_per_second = (batch + 1) * self.global_batch / max(elapsed, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}",
                                 img_s=f"{self.images_per_second:.1f}", refresh=False)
            self.bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["images_per_second"] = self.images_per_second
        if self.bar is not None:
            self.bar.close()


class ScalarLogger(keras.callbacks.Callback):
    """TensorBoard scalars: the running losses and statistics every `every` steps, the epoch
    means, the learning rate and images/s at every epoch end (step = optimizer iterations)."""

    def __init__(self, logdir: str, optimizer: keras.optimizers.Optimizer, every: int = 20):
        super().__init__()
        self.writer = tf.summary.create_file_writer(logdir)
        self.optimizer = optimizer
        self.every = every

    def _write(self, prefix: str, values: dict[str, float], step: int) -> None:
        with self.writer.as_default():
            for name, value in values.items():
                tf.summary.scalar(f"{prefix}/{name}", value, step=step)

    def _step(self) -> int:
        # `.value` is a MirroredVariable under MultiWorkerMirroredStrategy, which int() refuses.
        return int(self.optimizer.iterations.value.numpy())

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if self.every and step % self.every == 0:
            self._write("train_steps", _floats(logs), step)

    def on_epoch_end(self, epoch, logs=None):
        step = self._step()
        values = _floats(logs)
        values["learning_rate"] = float(self.optimizer.learning_rate.numpy())
        self._write("train", values, step)
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()


class EvaluateAndCheckpoint(keras.callbacks.Callback):
    """At every epoch end: evaluate when due, keep the best, then save the epoch's checkpoint.

    The best checkpoint is saved before the epoch's own checkpoint, so a run killed between the
    two redoes (and re-evaluates) that epoch when resumed; `best.json` is written after the best
    checkpoint, so it never names a checkpoint that is not there.

    Args:
      epoch: the checkpointed count of completed epochs.
      last: manager of the last few epochs' checkpoints.
      best: manager of the best checkpoint (max_to_keep=1).
      evaluate: returns the metrics dict (with `best_key` in it) of the current weights.
      eval_every: evaluate every this many epochs (0: only after the last epoch).
      epochs: the run's total epochs.
      workdir: where metrics.json and best/best.json go.
      best_key: the metric that decides "best" (higher is better).
    """

    def __init__(self, epoch: tf.Variable, last: tf.train.CheckpointManager,
                 best: tf.train.CheckpointManager, evaluate: Callable[[], dict[str, Any]] | None,
                 eval_every: int, epochs: int, workdir: str, best_key: Sequence[str]):
        super().__init__()
        self.epoch, self.last, self.best = epoch, last, best
        self.evaluate, self.eval_every, self.epochs = evaluate, eval_every, epochs
        self.workdir, self.best_key = workdir, tuple(best_key)
        self.best_file = os.path.join(workdir, workdir_lib.BEST, "best.json")

    def _due(self, done: int) -> bool:
        return self.evaluate is not None and (
            done == self.epochs or (self.eval_every > 0 and done % self.eval_every == 0))

    def _best_value(self) -> float:
        if os.path.isfile(self.best_file):
            return float(workdir_lib.read_json(self.best_file)["value"])
        return float("-inf")

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        self.epoch.assign(done)
        if self._due(done):
            metrics = self.evaluate()
            value = metrics
            for key in self.best_key:
                value = value[key]
            record = {"epoch": done, "metrics": metrics,
                      "train": _floats({k: v for k, v in (logs or {}).items()})}
            workdir_lib.write_json(os.path.join(self.workdir, workdir_lib.METRICS_FILE), record)
            if float(value) > self._best_value():
                self.best.save(checkpoint_number=done)
                workdir_lib.write_json(self.best_file, {
                    "epoch": done, "metric": "/".join(self.best_key), "value": float(value),
                    "checkpoint": os.path.basename(self.best.latest_checkpoint)})
        self.last.save(checkpoint_number=done)
