"""python -m tools.train_gan --data_dir data/cuhk03 --workdir runs/gan

Trains a DCGAN (`tf_reid.models.dcgan`) on the training split's crops of a TFRecords folder
written by tools.build_tfrecords, to generate unlabelled pedestrians (Zheng et al. 2017, arXiv
1701.07717; `tools.generate_gan_samples` turns a run into TFRecords). One epoch is one pass over
the training images in batches of --batch_size (the remainder dropped), each crop resized to
--height x --width, flipped at random and scaled to [-1, 1].

The workdir follows tf_reid.train's rules: a non-empty workdir is refused unless --resume, which
continues from the last checkpoint (both networks, both optimizers, the epoch; the data and the
training noise are functions of the seed, the epoch and the step, so a killed and resumed run
trains as an uninterrupted one), and a start that fails or is killed before its first checkpoint
is cleared by the next run. Layout of WORKDIR:
  flags.txt            the resolved flags (a valid --flagfile)
  gan.json             {"gan": DCGAN.get_config(), "data_dir": ..., "train_images": ...}
  noise.npy            [--num_samples, 100] the fixed noise of the sample grids
  checkpoints/         ckpt-<epoch>: the last --checkpoints_to_keep epochs
  samples/             epoch_NNNN.png every --sample_every epochs (and after the last), latest.png
  logs/                TensorBoard: train/d_loss, g_loss, d_real = mean D(x), d_fake = mean
                       D(G(z)) per epoch (train_steps/... every --log_every steps)
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

import dataclasses  # noqa: E402
import io  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from PIL import Image  # noqa: E402

from tf_reid.data import augment  # noqa: E402
from tf_reid.data.tfrecords import shard_files  # noqa: E402
from tf_reid.models import dcgan  # noqa: E402
from tf_reid.training import callbacks  # noqa: E402
from tf_reid.training import workdir as workdir_lib  # noqa: E402
from tfrecords_builder import atomic, features  # noqa: E402
from tfrecords_builder.manifest import read_manifest  # noqa: E402
from tfrecords_builder.records import DatasetError  # noqa: E402
from tools.cli import FlagError, changed_settings, parse_flags, run_reporting  # noqa: E402

FLAGS = flags.FLAGS

CONFIG_FILE = "gan.json"
NOISE_FILE = "noise.npy"
SAMPLES = "samples"
LATEST = "latest.png"
# What a run writes into its workdir; before its first checkpoint, a start's leftovers.
RUN_FILES = (workdir_lib.FLAGS_FILE, CONFIG_FILE, NOISE_FILE, workdir_lib.CHECKPOINTS, SAMPLES,
             workdir_lib.LOGS)
# Flags that may differ when resuming: they change neither the networks nor the data stream.
RESUMABLE = {"resume", "epochs", "sample_every", "log_every", "progress", "checkpoints_to_keep",
             "deterministic"}
PATH_FLAGS = ("data_dir", "workdir")


def define_flags() -> None:
    """The command's flags (see `tools.cli`)."""
    flags.DEFINE_string("data_dir", None, "TFRecords folder written by tools.build_tfrecords "
                        "(its train split is used).")
    flags.DEFINE_string("workdir", None,
                        "Folder of this run (created; must be empty unless --resume).")
    flags.DEFINE_bool("resume", False, "Continue the run in --workdir from its last checkpoint.")
    flags.DEFINE_integer("epochs", 30, "Epochs; one epoch is one pass over the training images.",
                         lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seeds the initialisation, the data, the noise.")
    flags.DEFINE_integer("height", 128, "Image height: 4 x 2^n (with --width = height / 2).",
                         lower_bound=1)
    flags.DEFINE_integer("width", 64, "Image width: 2 x 2^n.", lower_bound=1)
    flags.DEFINE_integer("base_channels", 64, "Channels of the largest feature maps (x8 at 4x2).",
                         lower_bound=1)
    flags.DEFINE_integer("batch_size", 64, "Real images per step (as many generated).",
                         lower_bound=1)
    flags.DEFINE_float("learning_rate", 2e-4, "Adam's learning rate, both networks.",
                       lower_bound=0.0)
    flags.DEFINE_float("beta_1", 0.5, "Adam's beta_1, both networks.", lower_bound=0.0,
                       upper_bound=1.0)
    flags.DEFINE_integer("num_samples", 32, "Images in each sample grid (from a fixed noise).",
                         lower_bound=1)
    flags.DEFINE_integer("sample_every", 1, "Write a sample grid every N epochs.", lower_bound=1)
    flags.DEFINE_integer("checkpoints_to_keep", 3, "Checkpoints of the last epochs kept.",
                         lower_bound=1)
    flags.DEFINE_integer("log_every", 20, "TensorBoard scalars every N steps (0: per epoch only).",
                         lower_bound=0)
    flags.DEFINE_bool("deterministic", False, "Deterministic TensorFlow ops (slower).")
    flags.DEFINE_bool("progress", True, "Progress bars.")


@dataclasses.dataclass(frozen=True)
class GanConfig:
    """Everything a run needs.

    Attributes:
      data_dir: TFRecords of `tools.build_tfrecords` (the train split's images are used).
      workdir: where the run writes (see the module docstring).
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


def _pass_seed(seed: int, epoch: tf.Tensor, stream: int) -> tf.Tensor:
    return tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64) * 101 + stream


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
            tf.range(len(files)), tf.stack([_pass_seed(seed, epoch, 1), 0]))
        records = tf.data.Dataset.from_tensor_slices(tf.gather(files, order)).interleave(
            tf.data.TFRecordDataset, cycle_length=min(cycle_length, len(files)),
            num_parallel_calls=min(cycle_length, len(files)), deterministic=True)

        def permute(index, chunk):
            # Stateless: Dataset.shuffle with a tensor seed breaks under a global seed of 0.
            return tf.gather(chunk, tf.random.experimental.stateless_shuffle(
                tf.range(tf.shape(chunk)[0]), tf.stack([_pass_seed(seed, epoch, 2), index])))

        records = records.batch(shuffle_buffer).enumerate().map(permute).unbatch()
        flip_seeds = tf.data.Dataset.counter().map(
            lambda i: tf.stack([_pass_seed(seed, epoch, 3), i]))
        return (tf.data.Dataset.zip(records, flip_seeds)
                .map(image, num_parallel_calls=num_parallel_calls, deterministic=True)
                .batch(batch_size, drop_remainder=True))

    return (tf.data.Dataset.counter(start=start_epoch).flat_map(one_pass)
            .prefetch(tf.data.AUTOTUNE))


def steps_per_epoch(train_images: int, batch_size: int) -> int:
    """Steps of one pass over `train_images` (the remainder dropped), at least 1.

    Raises:
      FlagError: fewer images than one batch.
    """
    if batch_size > train_images:
        raise FlagError(f"--batch_size={batch_size}: more than the {train_images} training "
                        "images of --data_dir")
    return train_images // batch_size


def check_size(height: int, width: int) -> None:
    """Raises a FlagError unless height x width is (4 x 2) * 2**n, n >= 1."""
    try:
        dcgan.upsampling_steps(height, width)
    except ValueError as e:
        raise FlagError(f"--height={height} --width={width}: {str(e).split(': ', 1)[1]}") from None


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
      DatasetError: no manifest, or a damaged shard.
      FlagError: a bad size, or a batch larger than the training split.
      WorkdirError: `resume` is False and the workdir holds checkpoints.
    """
    check_size(config.height, config.width)
    manifest = read_manifest(config.data_dir)
    if "train" not in manifest["splits"]:
        raise DatasetError(f"{config.data_dir}: no 'train' split to learn from")
    train_images = manifest["splits"]["train"]["images"]
    steps = steps_per_epoch(train_images, config.batch_size)
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
        "train_images": train_images})
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


def _target(name: str) -> str:
    """The file a temporary name is written for: "noise.partial-12.npy" -> "noise.npy"."""
    stem, partial, rest = name.partition(atomic.PARTIAL)
    return stem + rest[len(rest.split(".")[0]):] if partial else name


def failed_start(workdir: str) -> bool:
    """Whether `workdir` holds only what a run writes before its first checkpoint (as
    `workdir.failed_start`, with this command's files)."""
    entries = os.listdir(workdir) if os.path.isdir(workdir) else []
    own = all(_target(name) in RUN_FILES for name in entries)
    return bool(entries) and own and workdir_lib.latest_checkpoint(workdir) is None


def own_flags() -> dict[str, Any]:
    """This command's flags and their values, paths absolute (what flags.txt records)."""
    module = sys.modules[__name__]
    names = [f.name for f in FLAGS.get_flags_for_module(module)]
    if not names:  # run as __main__: absl files the flags under the script's name
        names = [f.name for f in FLAGS.get_flags_for_module(sys.argv[0])]
    values = {name: FLAGS[name].value for name in sorted(names)}
    for name in PATH_FLAGS:
        values[name] = os.path.abspath(values[name])
    return values


def flagfile_text(values: dict[str, Any]) -> str:
    lines = [(f"--{n}" if v else f"--no{n}") if isinstance(v, bool) else f"--{n}={v}"
             for n, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def read_flagfile(path: str) -> dict[str, str]:
    """{name: value} of a flags.txt ("--noname" -> {"name": "False"}, "--name" -> "True")."""
    settings = {}
    with open(path) as f:
        for line in f.read().split():
            name, sep, value = line[2:].partition("=")
            if not sep:
                value = "True"
                if name.startswith("no") and name[2:] in FLAGS:
                    name, value = name[2:], "False"
            settings[name] = value
    return settings


def check_resume(workdir: str, values: dict[str, Any]) -> None:
    """Refuses to resume a run with settings that change the networks or their data."""
    path = os.path.join(workdir, workdir_lib.FLAGS_FILE)
    if not os.path.isfile(path) or failed_start(workdir):
        return  # nothing to resume: the run starts afresh
    current = {name: str(value) for name, value in values.items()}
    changed = changed_settings(read_flagfile(path), current, RESUMABLE)
    if changed:
        raise workdir_lib.WorkdirError(
            f"{path}: --resume with different settings ({', '.join(changed)}); only "
            f"{', '.join(sorted(RESUMABLE))} may change")


def run() -> list[str]:
    check_size(FLAGS.height, FLAGS.width)
    manifest = read_manifest(FLAGS.data_dir)
    if "train" not in manifest["splits"]:
        raise DatasetError(f"{FLAGS.data_dir}: no 'train' split to learn from")
    steps_per_epoch(manifest["splits"]["train"]["images"], FLAGS.batch_size)
    values = own_flags()
    if FLAGS.resume:
        check_resume(FLAGS.workdir, values)
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    config = GanConfig(
        data_dir=FLAGS.data_dir, workdir=FLAGS.workdir, height=FLAGS.height, width=FLAGS.width,
        base_channels=FLAGS.base_channels, batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate, beta_1=FLAGS.beta_1, epochs=FLAGS.epochs,
        seed=FLAGS.seed, num_samples=FLAGS.num_samples, sample_every=FLAGS.sample_every,
        checkpoints_to_keep=FLAGS.checkpoints_to_keep, log_every=FLAGS.log_every,
        progress=FLAGS.progress)
    with workdir_lib.undone_on_failed_start(FLAGS.workdir):
        if failed_start(FLAGS.workdir):  # a killed start's leftovers: start afresh
            for name in os.listdir(FLAGS.workdir):
                atomic.remove(os.path.join(FLAGS.workdir, name))
        workdir_lib.prepare(FLAGS.workdir, FLAGS.resume)
        workdir_lib.write_text_atomic(os.path.join(FLAGS.workdir, workdir_lib.FLAGS_FILE),
                                      flagfile_text(values))
        result = train(config, resume=FLAGS.resume)
    lines = [f"trained {result['epoch']} epochs in {FLAGS.workdir}"]
    if result.get("train"):
        lines.append("last epoch: " + ", ".join(f"{k} {v:.4f}"
                                                for k, v in sorted(result["train"].items())))
    samples = os.path.join(FLAGS.workdir, SAMPLES, LATEST)
    if os.path.isfile(samples):
        lines.append(f"samples: {samples}")
    return lines


def main(argv: list[str]) -> int:
    del argv
    return run_reporting(run, errors=(DatasetError, workdir_lib.WorkdirError))


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["data_dir", "workdir"])
    app.run(main, flags_parser=parse_flags)
