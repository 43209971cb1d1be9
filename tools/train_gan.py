"""python -m tools.train_gan --data_dir data/cuhk03 --workdir runs/gan

Trains a DCGAN (`tf_reid.models.dcgan`, by `tf_reid.training.gan`) on the training split's crops
of a TFRecords folder written by tools.build_tfrecords, to generate unlabelled pedestrians (Zheng
et al. 2017, arXiv 1701.07717; `tools.generate_gan_samples` turns a run into TFRecords). One epoch
is one pass over the training images in batches of --batch_size (the remainder dropped), each
crop resized to --height x --width, flipped at random and scaled to [-1, 1].

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

import os  # noqa: E402

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from tf_reid.models import dcgan  # noqa: E402
from tf_reid.training import gan  # noqa: E402
from tf_reid.training import workdir as workdir_lib  # noqa: E402
from tfrecords_builder.records import DatasetError  # noqa: E402
from tools.cli import (FlagError, check_resume, flagfile_text, own_flags,  # noqa: E402
                       parse_flags, run_reporting)

FLAGS = flags.FLAGS

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


def check_size(height: int, width: int) -> None:
    """Raises a FlagError unless height x width is (4 x 2) * 2**n, n >= 1."""
    try:
        dcgan.upsampling_steps(height, width)
    except ValueError as e:
        raise FlagError(f"--height={height} --width={width}: {str(e).split(': ', 1)[1]}") from None


def check_batch(train_images: int, batch_size: int) -> None:
    """Raises a FlagError unless --batch_size fills a step from the training images."""
    try:
        gan.steps_per_epoch(train_images, batch_size)
    except ValueError:
        raise FlagError(f"--batch_size={batch_size}: more than the {train_images} training "
                        "images of --data_dir") from None


def run() -> list[str]:
    check_size(FLAGS.height, FLAGS.width)
    check_batch(gan.train_images(FLAGS.data_dir), FLAGS.batch_size)
    values = own_flags(sys.modules[__name__])
    for name in PATH_FLAGS:
        values[name] = os.path.abspath(values[name])
    if FLAGS.resume:
        check_resume(FLAGS.workdir, values, RESUMABLE, gan.RUN_FILES)
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    config = gan.GanConfig(
        data_dir=FLAGS.data_dir, workdir=FLAGS.workdir, height=FLAGS.height, width=FLAGS.width,
        base_channels=FLAGS.base_channels, batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate, beta_1=FLAGS.beta_1, epochs=FLAGS.epochs,
        seed=FLAGS.seed, num_samples=FLAGS.num_samples, sample_every=FLAGS.sample_every,
        checkpoints_to_keep=FLAGS.checkpoints_to_keep, log_every=FLAGS.log_every,
        progress=FLAGS.progress)
    with workdir_lib.undone_on_failed_start(FLAGS.workdir):
        workdir_lib.prepare(FLAGS.workdir, FLAGS.resume, gan.RUN_FILES)
        workdir_lib.write_text_atomic(os.path.join(FLAGS.workdir, workdir_lib.FLAGS_FILE),
                                      flagfile_text(values))
        result = gan.train(config, resume=FLAGS.resume)
    lines = [f"trained {result['epoch']} epochs in {FLAGS.workdir}"]
    if result.get("train"):
        lines.append("last epoch: " + ", ".join(f"{k} {v:.4f}"
                                                for k, v in sorted(result["train"].items())))
    samples = os.path.join(FLAGS.workdir, gan.SAMPLES, gan.LATEST)
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
