"""A whole training run: data, students, optimizers, `fit` over epochs, checkpoints, evaluation.

`train(config, strategy)` is what `python -m tf_reid.train` calls once its flags are resolved;
it takes explicit arguments only.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from typing import Any

import keras
import tensorflow as tf

from tf_reid.data import augment, pk
from tf_reid.evaluation.feature_choice import DEFAULT_FLIP
from tf_reid.models.aligned_reid import AlignedReID
from tf_reid.training import callbacks, objective, schedule, strategies, trainer
from tf_reid.training import workdir as workdir_lib

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# Mutual learning: every student sees the same augmented batch, or its own view of it.
MUTUAL_VIEWS = ("shared", "independent")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs besides the strategy.

    Attributes:
      data_dirs: TFRecords of `tools.build_tfrecords` (train split; query/gallery for
        evaluation); several for joint training: one model on the union of their training
        identities, each dataset evaluated under its own protocol (`tf_reid.data.pk`).
      sampling: joint training: how a pass draws the datasets (`pk.SAMPLINGS`).
      workdir: where the run writes (see `tf_reid.training.workdir`).
      model: keyword arguments of `AlignedReID` except num_classes (backbone, input_shape, ...).
      students: 1 for plain training, >= 2 for mutual learning.
      mutual_views: one of MUTUAL_VIEWS: "independent" gives each student its own augmentation
        of the batch's images (`pk.pk_dataset(views=students)`); needs >= 2 students and no
        generated images.
      num_identities, num_instances: P and K of the PK batches (per replica).
      augmentation: training augmentation (flip, pad-crop, random erasing).
      losses: weights and margins of the objective.
      weight_decay: coupled L2 on kernels.
      learning_rate, decay_epochs, decay_factor, warmup_epochs, warmup_factor: Adam's schedule.
      epochs: epochs (one epoch = one pass over the training identities).
      seed: seeds the weights' initialisation and the data.
      checkpoints_to_keep: last epochs' checkpoints kept (the best is kept besides).
      eval_every: evaluate every this many epochs; 0 = only at the end; < 0 = never.
      eval_batch_size, eval_flip: feature extraction settings.
      precision: one of PRECISIONS (Keras mixed-precision policy).
      jit_compile: XLA-compile the whole train step (single device; the aligned distance is
        XLA-compiled either way).
      log_every: TensorBoard scalars every this many steps.
      progress: show progress bars.
      generated_dir, generated_per_batch: N images of a `tools.generate_gan_samples` output
        appended to every replica's P x K batch, trained with LSRO (0: none).
    """
    data_dirs: tuple[str, ...]
    workdir: str
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    students: int = 1
    mutual_views: str = "shared"
    num_identities: int = 32
    num_instances: int = 4
    augmentation: augment.AugmentConfig = augment.AugmentConfig()
    losses: objective.LossWeights = objective.LossWeights()
    weight_decay: float = 5e-4
    learning_rate: float = 1e-3
    decay_epochs: tuple[int, ...] = (80, 160)
    decay_factor: float = 0.1
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.01
    epochs: int = 300
    seed: int = 0
    checkpoints_to_keep: int = 3
    eval_every: int = 0
    eval_batch_size: int = 128
    eval_flip: bool = DEFAULT_FLIP
    precision: str = "float32"
    jit_compile: bool = False
    log_every: int = 20
    progress: bool = True
    sampling: str = "identities"
    generated_dir: str | None = None
    generated_per_batch: int = 0


def _optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate = schedule.EpochSchedule(config.learning_rate, steps_per_epoch, config.decay_epochs,
                                  config.decay_factor, config.warmup_epochs, config.warmup_factor)
    optimizer = keras.optimizers.Adam(rate)
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _evaluator(config: TrainConfig, student: AlignedReID, sets: list[pk.TrainingSet]):
    """A function computing query/gallery metrics of `student` on each dataset that has those
    splits, under the protocol its manifest records, or None when none has them.

    One dataset: `report.evaluate_features`' dict. Several: the same keys holding the mean over
    the datasets (`report.mean_metrics`, so "best" is the best mean), plus "datasets": {name:
    that dataset's dict}.
    """
    # The training loop does not need the evaluation package otherwise.
    from tf_reid.evaluation import extract, features_file, protocols, report

    evaluated = [s for s in sets if set(features_file.SPLITS) <= set(s.manifest["splits"])]
    if not evaluated or config.eval_every < 0:
        return None

    height, width = student.image_shape[:2]
    predict = extract.keras_model_fn(student)
    names = report.dataset_names([s.data_dir for s in evaluated])

    def evaluate_one(data_set: pk.TrainingSet) -> dict[str, Any]:
        query, gallery = (extract.extract_split(
            predict, data_set.data_dir, split, height, width, config.eval_batch_size,
            flip=config.eval_flip, with_local=False, progress=config.progress)
            for split in features_file.SPLITS)
        return report.evaluate_features(
            query, gallery, single_gallery_shot=protocols.single_gallery_shot(data_set.manifest))

    def evaluate() -> dict[str, Any]:
        if len(sets) == 1:
            return evaluate_one(evaluated[0])
        per_dataset = {name: evaluate_one(s) for name, s in zip(names, evaluated)}
        return {**report.mean_metrics(per_dataset.values()), "datasets": per_dataset}

    return evaluate


def train(config: TrainConfig, strategy: tf.distribute.Strategy | None = None,
          resume: bool = False) -> dict[str, Any]:
    """Trains (or resumes training) and returns the last epoch's logs and the final metrics.

    On a multi-worker cluster every worker calls this with the same config: the chief writes
    `config.workdir` and evaluates; the others restore from it and write their epoch
    checkpoints (every worker takes part in each save) to a temporary folder, deleted at the end.
    Whether a workdir that holds other files may be used is the caller's decision
    (`workdir.prepare`): a command writes its own files there (its resolved flags) first.

    Args:
      config: the run.
      strategy: default: the current distribution strategy.
      resume: continue from the workdir's last checkpoint, if it has one (same step,
        optimiser state and data position); False starts a new run.

    Raises:
      WorkdirError: `resume` is False and the workdir already holds checkpoints.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {config.precision!r}")
    if config.mutual_views not in MUTUAL_VIEWS:
        raise ValueError(f"mutual_views must be one of {MUTUAL_VIEWS}, "
                         f"got {config.mutual_views!r}")
    if config.mutual_views == "independent" and (config.students < 2
                                                 or config.generated_per_batch):
        raise ValueError("mutual_views='independent' needs >= 2 students and no generated "
                         f"images (students={config.students}, "
                         f"generated_per_batch={config.generated_per_batch})")
    if strategies.is_chief(strategy):
        if not resume and tf.train.latest_checkpoint(
                os.path.join(config.workdir, workdir_lib.CHECKPOINTS)):
            raise workdir_lib.WorkdirError(f"{config.workdir}: holds checkpoints of a run; "
                                           "resume it, or choose a new workdir")
        os.makedirs(config.workdir, exist_ok=True)
        return _train(config, strategy, resume, config.workdir, chief=True)
    out = tempfile.mkdtemp(prefix=f"tf_reid-{strategies.task_name(strategy)}-")
    try:
        return _train(config, strategy, resume, out, chief=False)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _train(config: TrainConfig, strategy: tf.distribute.Strategy, resuming: bool,
           out: str, chief: bool) -> dict[str, Any]:
    """`train`, restoring from `config.workdir` and writing to `out`; only a chief evaluates."""
    keras.mixed_precision.set_global_policy(config.precision)
    keras.utils.set_random_seed(config.seed)

    sets = pk.training_sets(config.data_dirs)
    num_classes = pk.num_classes(sets)
    replicas = strategy.num_replicas_in_sync
    steps = pk.steps_per_epoch(pk.pass_identities(sets, config.sampling), config.num_identities,
                               replicas)
    global_batch = (config.num_identities * config.num_instances
                    + config.generated_per_batch) * replicas

    with strategy.scope():
        # Without the local TriHard nothing trains a stripe branch: the model has none.
        students = [AlignedReID(num_classes, name=f"student_{i}",
                                local_branch=config.losses.local_triplet > 0, **config.model)
                    for i in range(config.students)]
        optimizers = [_optimizer(config, steps) for _ in students]
        model = trainer.MutualTrainer(students, optimizers, config.losses, config.weight_decay,
                                      config.generated_per_batch)
        model.build_optimizers()
        model.compile(optimizer=optimizers[0], jit_compile=config.jit_compile)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    state = workdir_lib.checkpoint(students, optimizers, epoch)
    last = tf.train.CheckpointManager(state, os.path.join(out, workdir_lib.CHECKPOINTS),
                                      max_to_keep=config.checkpoints_to_keep)
    best = tf.train.CheckpointManager(state, os.path.join(out, workdir_lib.BEST), max_to_keep=1)
    latest = tf.train.latest_checkpoint(os.path.join(config.workdir, workdir_lib.CHECKPOINTS))
    if resuming and latest:
        state.restore(latest).assert_consumed()
    start = int(epoch.numpy())
    # "data_dir" is the first dataset, where single-dataset tools look; "training_sets" maps
    # the labels to datasets.
    workdir_lib.save_model_config(out, students, data_dir=os.path.abspath(config.data_dirs[0]),
                                  training_sets=pk.label_map(sets), num_classes=num_classes,
                                  precision=config.precision)
    if start >= config.epochs:
        print(f"{config.workdir}: already trained for {start} epochs (--epochs={config.epochs})")
        return {"epoch": start}

    data = pk.pk_dataset(config.data_dirs, config.num_identities, config.num_instances,
                         *students[0].image_shape[:2], seed=config.seed,
                         augment_config=config.augmentation, num_replicas=replicas,
                         start_epoch=start, sampling=config.sampling,
                         generated_dir=config.generated_dir,
                         generated_per_batch=config.generated_per_batch,
                         views=config.students if config.mutual_views == "independent" else 1)
    progress = callbacks.ProgressBar(config.epochs, steps, global_batch,
                                     config.progress and chief)
    history = model.fit(
        data, initial_epoch=start, epochs=config.epochs, steps_per_epoch=steps, verbose=0,
        shuffle=False, callbacks=[
            progress,
            callbacks.ScalarLogger(os.path.join(out, workdir_lib.LOGS), optimizers[0],
                                   config.log_every),
            callbacks.EvaluateAndCheckpoint(epoch, last, best,
                                            _evaluator(config, students[0], sets)
                                            if chief else None,
                                            config.eval_every, config.epochs, out,
                                            ("global", "mAP")),
        ])
    logs = {k: float(v[-1]) for k, v in history.history.items()}
    metrics_file = os.path.join(out, workdir_lib.METRICS_FILE)
    metrics = workdir_lib.read_json(metrics_file) if os.path.isfile(metrics_file) else None
    return {"epoch": int(epoch.numpy()), "train": logs, "metrics": metrics}
