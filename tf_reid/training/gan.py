"""Training a DCGAN (`tf_reid.models.dcgan`) on the training crops of a TFRecords folder, to
generate unlabelled pedestrians (Zheng et al. 2017, arXiv 1701.07717); `tools.train_gan` is its
command line (and documents the workdir), `tools.generate_gan_samples` turns a run into TFRecords.

One epoch is one pass over the training images in batches of `batch_size` (the remainder
dropped), each crop resized, flipped at random and scaled to [-1, 1]. The data and the training
noise are functions of the seed, the epoch and the step, so a resumed run trains as an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from tf_reid.data import augment
from tf_reid.data.seeds import pass_seed
from tf_reid.data.tfrecords import shard_files
from tf_reid.models import dcgan
from tf_reid.training import callbacks
from tf_reid.training import workdir as workdir_lib
from tfrecords_builder import atomic, features
from tfrecords_builder.manifest import read_manifest
from tfrecords_builder.records import DatasetError

CONFIG_FILE = "gan.json"
NOISE_FILE = "noise.npy"
SAMPLES = "samples"
LATEST = "latest.png"
# What a run writes into its workdir; before its first checkpoint, a start's leftovers.
RUN_FILES = (workdir_lib.FLAGS_FILE, CONFIG_FILE, NOISE_FILE, workdir_lib.CHECKPOINTS, SAMPLES,
             workdir_lib.LOGS)


@dataclasses.dataclass(frozen=True)
class GanConfig:
    """Everything a run needs.

    Attributes:
      data_dir: TFRecords of `tools.build_tfrecords` (the train split's images are used).
      workdir: where the run writes (layout: `tools.train_gan`).
      height, width: image size, (4 x 2) * 2**n.
      base_channels, learning_rate, beta_1: of `dcgan.DCGAN`.
      batch_size: real images per step.
      epochs: passes over the training images.
      seed: seeds the weights, the data order and flips, the training noise and the sample noise.
      num_samples: images in each sample grid.
      sample_every: write a grid every this many epochs (and after the last).
      checkpoints_to_keep: last epochs' checkpoints kept.
      log_every: TensorBoard scalars every this many steps (0: per epoch only).
      progress: show progress bars.
    """

    data_dir: str
    workdir: str
    height: int = 128
    width: int = 64
    base_channels: int = 64
    batch_size: int = 64
    learning_rate: float = 2e-4
    beta_1: float = 0.5
    epochs: int = 30
    seed: int = 0
    num_samples: int = 32
    sample_every: int = 1
    checkpoints_to_keep: int = 3
    log_every: int = 20
    progress: bool = True


def gan_dataset(data_dir: str, height: int, width: int, batch_size: int, seed: int = 0,
                start_epoch: int = 0, manifest: dict[str, Any] | None = None,
                shuffle_buffer: int = 4096, cycle_length: int = 4,
                num_parallel_calls: int = tf.data.AUTOTUNE) -> tf.data.Dataset:
    """An endless dataset of batches [batch_size, height, width, 3] of real crops in [-1, 1].

    Pass (epoch) e reads the train split's shards in a seeded order, `cycle_length` at a time,
    permutes them in chunks of `shuffle_buffer` records, decodes and resizes each crop
    (`augment.decode_and_resize`), flips it with probability 1/2 and batches, dropping the pass's
    remainder. Every random choice of pass e is a stateless function of (seed, e), so
    `start_epoch=e` yields what a dataset started at 0 yields from its pass e on.

    Raises:
      DatasetError: no manifest, or a damaged shard (`shard_files`).
    """
    manifest = manifest or read_manifest(data_dir)
    files = shard_files(data_dir, "train", manifest)
    spec = {features.IMAGE: features.FEATURE_SPEC[features.IMAGE]}

    def image(serialized: tf.Tensor, flip_seed: tf.Tensor) -> tf.Tensor:
        encoded = tf.io.parse_single_example(serialized, spec)[features.IMAGE]
        pixels = augment.decode_and_resize(encoded, height, width)
        return dcgan.scale_images(augment.random_flip(pixels, flip_seed))

    def one_pass(epoch: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(files)), tf.stack([pass_seed(seed, epoch, 1), 0]))
        records = tf.data.Dataset.from_tensor_slices(tf.gather(files, order)).interleave(
            tf.data.TFRecordDataset, cycle_length=min(cycle_length, len(files)),
            num_parallel_calls=min(cycle_length, len(files)), deterministic=True)

        def permute(index, chunk):
            # Stateless: Dataset.shuffle with a tensor seed breaks under a global seed of 0.
            return tf.gather(chunk, tf.random.experimental.stateless_shuffle(
                tf.range(tf.shape(chunk)[0]), tf.stack([pass_seed(seed, epoch, 2), index])))

        records = records.batch(shuffle_buffer).enumerate().map(permute).unbatch()
        flip_seeds = tf.data.Dataset.counter().map(
            lambda i: tf.stack([pass_seed(seed, epoch, 3), i]))
        return (tf.data.Dataset.zip(records, flip_seeds)
                .map(image, num_parallel_calls=num_parallel_calls, deterministic=True)
                .batch(batch_size, drop_remainder=True))

    return (tf.data.Dataset.counter(start=start_epoch).flat_map(one_pass)
            .prefetch(tf.data.AUTOTUNE))


def train_images(data_dir: str, manifest: dict[str, Any] | None = None) -> int:
    """Images of the train split of a TFRecords folder (its manifest, if already read).

    Raises:
      DatasetError: no manifest, or no train split.
    """
    manifest = manifest or read_manifest(data_dir)
    if "train" not in manifest["splits"]:
        raise DatasetError(f"{data_dir}: no 'train' split to learn from")
    return manifest["splits"]["train"]["images"]


def steps_per_epoch(train_images: int, batch_size: int) -> int:
    """Steps of one pass over `train_images` (the remainder dropped), at least 1.

    Raises:
      ValueError: fewer images than one batch.
    """
    if batch_size > train_images:
        raise ValueError(f"batch_size={batch_size}: more than the {train_images} training images")
    return train_images // batch_size


def image_grid(images: np.ndarray, columns: int, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Tiles [N, H, W, 3] uint8 images row by row into one picture, `pad` pixels around each.

    Returns:
      [rows * (H + pad) + pad, columns * (W + pad) + pad, 3] uint8, rows = ceil(N / columns);
      cells without an image stay `fill`.
    """
    n, height, width, _ = images.shape
    rows = math.ceil(n / columns)
    grid = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, 3), fill,
                   np.uint8)
    for i, image in enumerate(images):
        top, left = pad + (i // columns) * (height + pad), pad + (i % columns) * (width + pad)
        grid[top:top + height, left:left + width] = image
    return grid


def grid_columns(n: int) -> int:
    """Columns that make a grid of n portrait (2:1) images about square: ceil(sqrt(2 n))."""
    return math.ceil(math.sqrt(2 * n))


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes `data` to `path` through a temporary name (a reader never sees half a PNG)."""
    with atomic.file(path, suffix=os.path.splitext(path)[1]) as partial, open(partial, "wb") as f:
        f.write(data)


def fixed_noise(workdir: str, num_samples: int, noise_dim: int, seed: int) -> np.ndarray:
    """[num_samples, noise_dim] float32: the workdir's noise.npy, written first if absent."""
    path = os.path.join(workdir, NOISE_FILE)
    if os.path.isfile(path):
        noise = np.load(path, allow_pickle=False)
        if noise.shape == (num_samples, noise_dim):
            return noise
    noise = np.random.default_rng(seed).standard_normal((num_samples, noise_dim)).astype(
        np.float32)
    with atomic.file(path, suffix=".npy") as partial:
        np.save(partial, noise)
    return noise


def write_samples(generator: keras.Model, noise: np.ndarray, samples_dir: str,
                  epoch: int) -> str:
    """samples_dir/epoch_NNNN.png (and latest.png): the generator's images of `noise` (inference
    mode) in a grid; returns the epoch's path."""
    images = dcgan.to_pixels(generator(noise, training=False))
    data = png_bytes(image_grid(images, grid_columns(len(images))))
    os.makedirs(samples_dir, exist_ok=True)
    path = os.path.join(samples_dir, f"epoch_{epoch:04d}.png")
    write_bytes_atomic(path, data)
    write_bytes_atomic(os.path.join(samples_dir, LATEST), data)
    return path


def checkpoint(gan: dcgan.DCGAN, epoch: tf.Variable | None = None) -> tf.train.Checkpoint:
    """The object graph of a run's checkpoints: both networks, both optimizers, the epoch.
    `tf.train.Checkpoint(generator=...)` restores the generator alone from it."""
    parts: dict[str, Any] = dict(
        generator=gan.generator, discriminator=gan.discriminator,
        generator_optimizer=gan.generator_optimizer,
        discriminator_optimizer=gan.discriminator_optimizer)
    if epoch is not None:
        parts["epoch"] = epoch
    return tf.train.Checkpoint(**parts)


class SamplesAndCheckpoint(keras.callbacks.Callback):
    """At every epoch end: the sample grid when due, then the epoch's checkpoint (so a run killed
    between the two redoes the epoch and rewrites its grid)."""

    def __init__(self, gan: dcgan.DCGAN, noise: np.ndarray, epoch: tf.Variable,
                 manager: tf.train.CheckpointManager, samples_dir: str, sample_every: int,
                 epochs: int):
        super().__init__()
        self.gan, self.noise, self.epoch, self.manager = gan, noise, epoch, manager
        self.samples_dir, self.sample_every, self.epochs = samples_dir, sample_every, epochs

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        self.epoch.assign(done)
        if done % self.sample_every == 0 or done == self.epochs:
            write_samples(self.gan.generator, self.noise, self.samples_dir, done)
        self.manager.save(checkpoint_number=done)


class GanProgressBar(callbacks.ProgressBar):
    """tf_reid.train's bar, showing both losses."""

    def on_train_batch_end(self, batch, logs=None):
        elapsed = time.perf_counter() - self.started
        self.images_per_second = (batch + 1) * self.global_batch / max(elapsed, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix(d_loss=f"{float(logs['d_loss']):.3f}",
                                 g_loss=f"{float(logs['g_loss']):.3f}",
                                 img_s=f"{self.images_per_second:.1f}", refresh=False)
            self.bar.update(1)


def train(config: GanConfig, resume: bool = False) -> dict[str, Any]:
    """Trains (or resumes) a DCGAN; returns {"epoch": epochs done, "train": last epoch's means}.

    Whether `config.workdir` may hold other files is the caller's decision (`workdir.prepare`).

    Raises:
      DatasetError: no manifest, no train split, or a damaged shard.
      ValueError: a size the DCGAN cannot have (`dcgan.upsampling_steps`), or a batch larger
        than the training split.
      WorkdirError: `resume` is False and the workdir holds checkpoints.
    """
    dcgan.upsampling_steps(config.height, config.width)
    manifest = read_manifest(config.data_dir)
    images = train_images(config.data_dir, manifest)
    steps = steps_per_epoch(images, config.batch_size)
    keras.utils.set_random_seed(config.seed)
    gan = dcgan.DCGAN(config.height, config.width, config.base_channels, seed=config.seed,
                      learning_rate=config.learning_rate, beta_1=config.beta_1)
    gan.build_optimizers()
    gan.compile()
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    state = checkpoint(gan, epoch)
    manager = tf.train.CheckpointManager(
        state, os.path.join(config.workdir, workdir_lib.CHECKPOINTS),
        max_to_keep=config.checkpoints_to_keep)
    if manager.latest_checkpoint and not resume:
        raise workdir_lib.WorkdirError(f"{config.workdir}: holds checkpoints of a run; resume "
                                       "it, or choose a new workdir")
    if manager.latest_checkpoint:
        state.restore(manager.latest_checkpoint).assert_consumed()
    start = int(epoch.numpy())
    workdir_lib.write_json(os.path.join(config.workdir, CONFIG_FILE), {
        "gan": gan.get_config(), "data_dir": os.path.abspath(config.data_dir),
        "train_images": images})
    noise = fixed_noise(config.workdir, config.num_samples, gan.noise_dim, config.seed)
    if start >= config.epochs:
        print(f"{config.workdir}: already trained for {start} epochs (--epochs={config.epochs})")
        return {"epoch": start}
    data = gan_dataset(config.data_dir, config.height, config.width, config.batch_size,
                       config.seed, start_epoch=start, manifest=manifest)
    history = gan.fit(data, initial_epoch=start, epochs=config.epochs, steps_per_epoch=steps,
                      verbose=0, shuffle=False, callbacks=[
                          GanProgressBar(config.epochs, steps, config.batch_size,
                                         config.progress),
                          callbacks.ScalarLogger(os.path.join(config.workdir, workdir_lib.LOGS),
                                                 gan.discriminator_optimizer, config.log_every),
                          SamplesAndCheckpoint(gan, noise, epoch, manager,
                                               os.path.join(config.workdir, SAMPLES),
                                               config.sample_every, config.epochs)])
    return {"epoch": int(epoch.numpy()),
            "train": {k: float(v[-1]) for k, v in history.history.items()}}
