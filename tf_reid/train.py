"""python -m tf_reid.train --flagfile=configs/smoke.flags --workdir=runs/smoke

Trains AlignedReID (one student, or several with mutual learning) on identity-sharded TFRecords.
The workdir receives the resolved flags (flags.txt, itself a valid --flagfile), model.json,
checkpoints of the last epochs and of the best evaluation, TensorBoard logs and metrics.json.
A non-empty workdir is refused unless --resume, which continues from the last checkpoint with
the same step, optimiser state and data position (only --epochs and reporting flags may change).
A run that fails before its first checkpoint leaves the workdir as it found it (and a killed one's
leftovers are cleared by the next run), so the corrected command simply runs.

Joint training (as AlignedReID trains on Market-1501, CUHK03, MARS and CUHK-SYSU at once):
`--data_dir=data/market1501,data/cuhk03` trains one model on the union of the training
identities, each dataset's labels offset by the identities before it (recorded in model.json,
"training_sets"); evaluation reports each dataset under its own protocol and their mean, which
decides the best checkpoint. `--joint_sampling=equal` draws as many identities from each dataset
per epoch (the smallest one's count) instead of every identity once.

GAN samples with LSRO (Zheng et al. 2017): `--generated_dir=data/cuhk03_gan --generated_per_batch=N`
appends N images of a `tools.generate_gan_samples` output to every P x K batch; their ID loss is
cross-entropy against the uniform distribution over the training identities, and they take no
part in the metric, local and mutual losses.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

import inspect  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

from absl import app, flags  # noqa: E402

from tf_reid.data import augment, generated, pk  # noqa: E402
from tf_reid.evaluation.feature_choice import DEFAULT_FLIP  # noqa: E402
from tf_reid.losses.metric import METRIC_LOSSES  # noqa: E402
from tf_reid.models.aligned_reid import POOLINGS  # noqa: E402
from tf_reid.models.backbones import BACKBONES  # noqa: E402
from tf_reid.training import loop, objective  # noqa: E402
from tf_reid.training import strategies  # noqa: E402
from tf_reid.training import workdir as workdir_lib  # noqa: E402
from tfrecords_builder.manifest import read_manifest  # noqa: E402
from tfrecords_builder.records import DatasetError  # noqa: E402
from tools.cli import (FlagError, check_resume, flagfile_text, flags_as_keywords,  # noqa: E402
                       own_flags, parse_flags, run_reporting)

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (see `tools.cli`)."""
    # Data and run.
    flags.DEFINE_list("data_dir", None, "TFRecords folder written by tools.build_tfrecords; "
                      "several, comma-separated, for joint training.")
    flags.DEFINE_enum("joint_sampling", "identities", list(pk.SAMPLINGS),
                      "Joint training: every identity of every dataset once per epoch, or as "
                      "many identities from each dataset (the smallest dataset's count).")
    flags.DEFINE_string("workdir", None,
                        "Folder of this run (created; must be empty unless --resume).")
    flags.DEFINE_bool("resume", False, "Continue the run in --workdir from its last checkpoint.")
    flags.DEFINE_integer("epochs", 300,
                         "Epochs; one epoch is one pass over the training identities.")
    flags.DEFINE_integer("seed", 0, "Seeds the initialisation and the data.")
    # Model.
    flags.DEFINE_enum("backbone", "resnet50", sorted(BACKBONES), "Backbone network.")
    flags.DEFINE_string("backbone_weights", None,
                        "None, 'imagenet' or a weights file for the backbone.")
    flags.DEFINE_integer("last_stride", 1, "resnet50: stride of the last stage (1 or 2).")
    flags.DEFINE_bool("torch_padding", False,
                      "mobilenet_v2: PyTorch padding, for converted weights.")
    flags.DEFINE_integer("height", 256, "Input height.")
    flags.DEFINE_integer("width", 128, "Input width.")
    flags.DEFINE_integer("embedding_dim", None,
                         "Project the global feature to this width (None: keep C).")
    flags.DEFINE_bool("bn_neck", True, "BatchNorm between the global feature and the classifier.")
    flags.DEFINE_integer("local_channels", 128, "Channels of each local stripe feature.")
    flags.DEFINE_enum("local_pooling", "max", list(POOLINGS), "Pooling over each stripe's width.")
    flags.DEFINE_enum("global_pooling", "mean", list(POOLINGS), "Pooling of the global feature.")
    flags.DEFINE_float("bn_momentum", 0.9, "Momentum of every BatchNorm's moving statistics (Keras' "
                       "convention; 0.9 = PyTorch's 0.1). Keras' MobileNetV2 ships 0.999.")
    flags.DEFINE_integer("students", 1, "Students; >= 2 trains them together by mutual learning.")
    flags.DEFINE_enum("mutual_views", "shared", list(loop.MUTUAL_VIEWS),
                      "Mutual learning: every student sees the same augmented batch (shared), or "
                      "its own augmentation of the same images (independent).")
    # Batches and augmentation.
    flags.DEFINE_integer("num_identities", 32, "P: identities per batch (per replica).")
    flags.DEFINE_integer("num_instances", 4, "K: images per identity.")
    flags.DEFINE_bool("flip", True, "Random horizontal flips.")
    flags.DEFINE_integer("pad", 10, "Pad this many pixels, then crop randomly (0: off).")
    flags.DEFINE_float("erasing_probability", 0.5, "Random erasing probability (0: off).")
    flags.DEFINE_string("generated_dir", None, "TFRecords of tools.generate_gan_samples: images "
                        "of nobody added to every batch, trained with LSRO.")
    flags.DEFINE_integer("generated_per_batch", 0, "N generated images appended to each "
                         "replica's P x K batch (needs --generated_dir); ID loss LSRO, no "
                         "metric loss.")
    # Objective.
    flags.DEFINE_float("id_weight", 1.0, "Weight of the softmax ID loss.")
    flags.DEFINE_float("global_triplet_weight", 1.0, "Weight of the global TriHard loss.")
    flags.DEFINE_float("local_triplet_weight", 1.0,
                       "Weight of the local (aligned) TriHard loss; 0: baseline.")
    flags.DEFINE_float("mutual_id_weight", 0.01, "Weight of the KL mutual loss (>= 2 students).")
    flags.DEFINE_float("mutual_metric_weight", 0.001,
                       "Weight of the metric mutual loss (>= 2 students).")
    flags.DEFINE_float("margin", 0.3, "Global TriHard margin.")
    flags.DEFINE_float("local_margin", 0.3, "Local TriHard margin.")
    flags.DEFINE_enum("metric_loss", "trihard", sorted(METRIC_LOSSES),
                      "Metric loss on the global distance (weighted by --global_triplet_weight, "
                      "margin --margin); the local branch keeps TriHard.")
    flags.DEFINE_bool("metric_normalize", False, "The global metric loss on L2-normalised "
                      "features (distances in [0, 2]); MSML needs it (BUILD.md).")
    flags.DEFINE_bool("soft_margin", False, "Soft-margin triplet loss instead of the hinge "
                      "(--metric_loss=trihard).")
    flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing of the ID loss.")
    # Optimiser.
    flags.DEFINE_float("learning_rate", 1e-3, "Adam's base learning rate.")
    flags.DEFINE_list("decay_epochs", ["80", "160"],
                      "Epochs at which the rate is multiplied by --decay_factor.")
    flags.DEFINE_float("decay_factor", 0.1, "Step decay factor.")
    flags.DEFINE_float("warmup_epochs", 0.0, "Linear warm-up length in epochs (0: none).")
    flags.DEFINE_float("warmup_factor", 0.01, "Warm-up starts at this fraction of the rate.")
    flags.DEFINE_float("weight_decay", 5e-4, "Coupled L2 weight decay on kernels.")
    # Execution.
    flags.DEFINE_enum("strategy", "default", sorted(strategies.STRATEGIES),
                      "Distribution strategy.")
    flags.DEFINE_integer("cpu_replicas", 0, "Split the CPU into this many logical devices (testing "
                         "--strategy=mirrored without GPUs); 0: off.")
    flags.DEFINE_enum("precision", "float32", list(loop.PRECISIONS),
                      "Keras mixed-precision policy.")
    flags.DEFINE_bool("jit_compile", False, "XLA-compile the whole train step (single device).")
    flags.DEFINE_bool("deterministic", False, "Deterministic TensorFlow ops (slower).")
    # Evaluation and reporting.
    flags.DEFINE_integer("eval_every", 0,
                         "Evaluate every N epochs (0: at the end only; -1: never).")
    flags.DEFINE_integer("eval_batch_size", 128, "Batch size of feature extraction.")
    flags.DEFINE_bool("eval_flip", DEFAULT_FLIP, "Average features of the image and its mirror "
                     "(as tf_reid.evaluate does by default).")
    flags.DEFINE_integer("checkpoints_to_keep", 3,
                         "Checkpoints of the last epochs kept (+ the best).")
    flags.DEFINE_integer("log_every", 20, "TensorBoard scalars every N steps.")
    flags.DEFINE_bool("progress", True, "Progress bars.")


# Flags that may differ when resuming: they change neither the model nor the data stream.
RESUMABLE = {"resume", "epochs", "eval_every", "eval_batch_size", "log_every", "progress",
             "checkpoints_to_keep", "deterministic"}
# Backbone flags, passed to the backbone functions that take them.
BACKBONE_FLAGS = {"backbone_weights": "weights", "last_stride": "last_stride",
                  "torch_padding": "torch_padding"}
PATH_FLAGS = ("data_dir", "workdir", "backbone_weights", "generated_dir")


# Valid values of the numeric flags: (lowest, highest, lowest excluded); None = unbounded.
RANGES = {
    "epochs": (1, None, False), "students": (1, None, False), "height": (1, None, False),
    "width": (1, None, False), "embedding_dim": (1, None, False),
    "local_channels": (1, None, False), "bn_momentum": (0.0, 1.0, False),
    "last_stride": (1, 2, False), "num_identities": (1, None, False),
    "num_instances": (1, None, False), "pad": (0, None, False),
    "generated_per_batch": (0, None, False),
    "erasing_probability": (0.0, 1.0, False), "id_weight": (0.0, None, False),
    "global_triplet_weight": (0.0, None, False), "local_triplet_weight": (0.0, None, False),
    "mutual_id_weight": (0.0, None, False), "mutual_metric_weight": (0.0, None, False),
    "margin": (0.0, None, False), "local_margin": (0.0, None, False),
    "label_smoothing": (0.0, 1.0, False), "learning_rate": (0.0, None, True),
    "decay_factor": (0.0, None, True), "warmup_epochs": (0.0, None, False),
    "warmup_factor": (0.0, 1.0, True), "weight_decay": (0.0, None, False),
    "cpu_replicas": (0, None, False), "eval_every": (-1, None, False),
    "eval_batch_size": (1, None, False), "checkpoints_to_keep": (1, None, False),
    "log_every": (1, None, False),
}


def range_errors(values: dict[str, object]) -> list[str]:
    """`--name=value: must be ...` for each value of `values` outside its RANGES entry."""
    errors = []
    for name, (low, high, low_open) in RANGES.items():
        value = values.get(name)
        if value is None:
            continue
        below = value <= low if low_open else value < low
        if below or (high is not None and value > high):
            bound = (f"in [{low}, {high}]" if high is not None and not low_open else
                     f"in ({low}, {high}]" if high is not None else
                     f"> {low}" if low_open else f">= {low}")
            errors.append(f"--{name}={value}: must be {bound}")
    return errors


def batch_errors(values: dict[str, object], train_identities: int,
                 replicas: int = 1) -> list[str]:
    """What makes the P x K batch impossible for the objective or the training split (a step
    takes P identities on each of `replicas`)."""
    errors = []
    triplet = values["global_triplet_weight"] or values["local_triplet_weight"]
    if triplet and values["num_instances"] < 2:
        errors.append(f"--num_instances={values['num_instances']}: the triplet losses need K >= 2 "
                      "(a positive pair per identity)")
    if triplet and values["num_identities"] < 2:
        errors.append(f"--num_identities={values['num_identities']}: the triplet losses need "
                      "P >= 2 (a negative per anchor)")
    if values.get("soft_margin") and values.get("metric_loss", "trihard") != "trihard":
        errors.append(f"--soft_margin: applies to --metric_loss=trihard, not "
                      f"--metric_loss={values['metric_loss']}")
    if values.get("mutual_views") == "independent" and values["students"] < 2:
        errors.append(f"--mutual_views=independent: needs --students >= 2, got "
                      f"--students={values['students']}")
    if values.get("mutual_views") == "independent" and values.get("generated_per_batch"):
        errors.append("--mutual_views=independent: not with --generated_per_batch (generated "
                      "images have one view)")
    if values.get("generated_per_batch") and not values.get("generated_dir"):
        errors.append(f"--generated_per_batch={values['generated_per_batch']}: needs "
                      "--generated_dir")
    if values.get("generated_dir") and not values.get("generated_per_batch"):
        errors.append(f"--generated_dir={values['generated_dir']}: has no effect without "
                      "--generated_per_batch > 0")
    if values["num_identities"] * replicas > train_identities:
        per_step = (f" x {replicas} replicas = {values['num_identities'] * replicas} identities "
                    "per step," if replicas > 1 else "")
        errors.append(f"--num_identities={values['num_identities']}:{per_step} more than the "
                      f"{train_identities} training identities an epoch draws from --data_dir")
    return errors


def recorded_flags(values: dict[str, object]) -> dict[str, object]:
    """The settings as flags.txt records them, so that it works as a --flagfile from any folder:
    only the backbone flags the chosen backbone takes, and the paths absolute."""
    taken = inspect.signature(BACKBONES[values["backbone"]]).parameters
    recorded = {}
    for name, value in values.items():
        if name in BACKBONE_FLAGS and BACKBONE_FLAGS[name] not in taken:
            continue
        if name in PATH_FLAGS and value and not (name == "backbone_weights" and
                                                 value == "imagenet"):
            value = ([os.path.abspath(v) for v in value] if isinstance(value, list)
                     else os.path.abspath(value))
        recorded[name] = value
    return recorded


def config_from_flags() -> loop.TrainConfig:
    backbone_options = flags_as_keywords(BACKBONES[FLAGS.backbone], BACKBONE_FLAGS,
                                         f"--backbone={FLAGS.backbone}")
    return loop.TrainConfig(
        data_dirs=tuple(FLAGS.data_dir), sampling=FLAGS.joint_sampling, workdir=FLAGS.workdir,
        model=dict(backbone=FLAGS.backbone, backbone_options=backbone_options,
                   input_shape=(FLAGS.height, FLAGS.width, 3), embedding_dim=FLAGS.embedding_dim,
                   bn_neck=FLAGS.bn_neck, local_channels=FLAGS.local_channels,
                   local_pooling=FLAGS.local_pooling, global_pooling=FLAGS.global_pooling,
                   bn_momentum=FLAGS.bn_momentum),
        students=FLAGS.students, mutual_views=FLAGS.mutual_views,
        num_identities=FLAGS.num_identities,
        num_instances=FLAGS.num_instances,
        augmentation=augment.AugmentConfig(flip=FLAGS.flip, pad=FLAGS.pad,
                                           erasing_probability=FLAGS.erasing_probability),
        losses=objective.LossWeights(
            id=FLAGS.id_weight, global_triplet=FLAGS.global_triplet_weight,
            local_triplet=FLAGS.local_triplet_weight, mutual_id=FLAGS.mutual_id_weight,
            mutual_metric=FLAGS.mutual_metric_weight, margin=FLAGS.margin,
            local_margin=FLAGS.local_margin, soft_margin=FLAGS.soft_margin,
            label_smoothing=FLAGS.label_smoothing, metric_loss=FLAGS.metric_loss,
            metric_normalize=FLAGS.metric_normalize),
        weight_decay=FLAGS.weight_decay, learning_rate=FLAGS.learning_rate,
        decay_epochs=tuple(int(e) for e in FLAGS.decay_epochs), decay_factor=FLAGS.decay_factor,
        warmup_epochs=FLAGS.warmup_epochs, warmup_factor=FLAGS.warmup_factor,
        epochs=FLAGS.epochs, seed=FLAGS.seed, checkpoints_to_keep=FLAGS.checkpoints_to_keep,
        eval_every=FLAGS.eval_every, eval_batch_size=FLAGS.eval_batch_size,
        eval_flip=FLAGS.eval_flip, precision=FLAGS.precision, jit_compile=FLAGS.jit_compile,
        log_every=FLAGS.log_every, progress=FLAGS.progress, generated_dir=FLAGS.generated_dir,
        generated_per_batch=FLAGS.generated_per_batch)


def check_flags(values: dict[str, object], replicas: int = 1) -> None:
    """Every impossible or meaningless numeric setting, in one FlagError, before any work."""
    errors = range_errors(values)
    if not errors:
        sets = pk.training_sets(FLAGS.data_dir)
        errors = batch_errors(values, pk.pass_identities(sets, FLAGS.joint_sampling), replicas)
    if errors:
        raise FlagError("; ".join(errors))
    if FLAGS.generated_dir:  # a missing split or changed shard, before any work
        generated.generated_shards(FLAGS.generated_dir)


def run() -> list[str]:
    import tensorflow as tf

    check_flags(own_flags(sys.modules[__name__]))
    if FLAGS.cpu_replicas:
        strategies.split_cpu(FLAGS.cpu_replicas)
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    config = config_from_flags()
    values = recorded_flags(own_flags(sys.modules[__name__]))
    if FLAGS.resume:
        check_resume(FLAGS.workdir, values, RESUMABLE, workdir_lib.RUN_FILES)
    strategy = strategies.STRATEGIES[FLAGS.strategy]()
    if strategy.num_replicas_in_sync > 1:  # P identities on each replica
        check_flags(own_flags(sys.modules[__name__]), strategy.num_replicas_in_sync)
    if strategies.is_chief(strategy):
        with workdir_lib.undone_on_failed_start(FLAGS.workdir):
            workdir_lib.prepare(FLAGS.workdir, FLAGS.resume)
            workdir_lib.write_text_atomic(os.path.join(FLAGS.workdir, workdir_lib.FLAGS_FILE),
                                          flagfile_text(values))
            result = loop.train(config, strategy, resume=FLAGS.resume)
    else:
        result = loop.train(config, strategy, resume=FLAGS.resume)
    if not strategies.is_chief(strategy):
        return [f"{strategies.task_name(strategy)}: trained {result['epoch']} epochs "
                f"(the chief writes {FLAGS.workdir})"]
    lines = [f"trained {result['epoch']} epochs in {FLAGS.workdir}"]
    if result.get("metrics"):
        lines.append("metrics: " + json.dumps(result["metrics"].get("metrics"), sort_keys=True))
    return lines


def main(argv: list[str]) -> int:
    del argv
    return run_reporting(run, errors=(DatasetError, workdir_lib.WorkdirError))


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["data_dir", "workdir"])
    app.run(main, flags_parser=parse_flags)
