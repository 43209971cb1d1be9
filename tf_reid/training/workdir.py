"""A training run's directory: resolved flags, model configs, checkpoints (last few + best).

Layout of WORKDIR:
  flags.txt          the resolved flags, one `--name=value` per line (a valid `--flagfile`)
  model.json         {"students": [AlignedReID.get_config(), ...], ...} to rebuild the models
  checkpoints/       tf.train.CheckpointManager: ckpt-<epoch>, the last `keep` epochs
  best/              the checkpoint of the best evaluation so far (one)
  logs/              TensorBoard event files
  metrics.json       the latest evaluation

A checkpoint holds the students, their optimizers (moments and iteration counts) and the number
of completed epochs; the data position is a function of the epoch (see `tf_reid.data.pk`), so
resuming from it continues exactly where the run stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Collection, Iterator, Sequence

import keras
import tensorflow as tf

from tf_reid.models.aligned_reid import AlignedReID
from tfrecords_builder import atomic

FLAGS_FILE = "flags.txt"
MODEL_FILE = "model.json"
METRICS_FILE = "metrics.json"
CHECKPOINTS = "checkpoints"
BEST = "best"
LOGS = "logs"
WHICH = ("best", "last")


class WorkdirError(ValueError):
    """A workdir that cannot be used as asked (not empty without resume, nothing to load)."""


# What a run writes into its workdir; before its first checkpoint, they are a start's leftovers.
RUN_FILES = (FLAGS_FILE, MODEL_FILE, METRICS_FILE, CHECKPOINTS, BEST, LOGS)


def latest_checkpoint(workdir: str) -> str | None:
    """The prefix of the workdir's last epoch checkpoint, or None."""
    return tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINTS))


def written_for(name: str) -> str:
    """The file a temporary name is written for: "flags.txt.partial-12" -> "flags.txt",
    "noise.partial-12.npy" -> "noise.npy" (`atomic.temporary_name`); other names unchanged."""
    stem, partial, rest = name.partition(atomic.PARTIAL)
    return stem + rest[len(rest.split(".")[0]):] if partial else name


def failed_start(workdir: str, run_files: Collection[str] = RUN_FILES) -> bool:
    """Whether `workdir` holds only what a run writes before its first checkpoint (its flags,
    model config, logs, their temporaries): a start that failed or was killed, nothing to
    resume.

    Args:
      workdir: the run's folder.
      run_files: the names a run writes into it (a command's own list; `tf_reid.train`'s by
        default).
    """
    entries = os.listdir(workdir) if os.path.isdir(workdir) else []
    own = all(written_for(name) in run_files for name in entries)
    return bool(entries) and own and latest_checkpoint(workdir) is None


def prepare(workdir: str, resume: bool, run_files: Collection[str] = RUN_FILES) -> bool:
    """Creates `workdir` or checks it may be reused; returns whether a run is being resumed.

    The leftovers of a failed start (`failed_start` with `run_files`) are cleared: a re-run,
    with or without --resume, starts afresh instead of being refused.

    Raises:
      WorkdirError: `workdir` holds other files and `resume` is False.
    """
    if failed_start(workdir, run_files):
        for name in os.listdir(workdir):
            atomic.remove(os.path.join(workdir, name))
    if os.path.isdir(workdir) and os.listdir(workdir):
        if not resume:
            raise WorkdirError(f"{workdir}: not empty; pass --resume to continue the run in it, "
                               "or choose a new --workdir")
        return True
    os.makedirs(workdir, exist_ok=True)
    return False


@contextlib.contextmanager
def undone_on_failed_start(workdir: str) -> Iterator[None]:
    """Leaves `workdir` as the block found it when the block fails before a new checkpoint.

    A run that cannot start (bad data, a bad weights file, interrupted in its first epoch)
    would otherwise leave flags.txt and logs behind, and the corrected re-run be refused as
    "not empty". Entries the block added are deleted, flags.txt is put back, and a workdir the
    block created is removed; a failure after a new checkpoint keeps everything for --resume.
    """
    existed = os.path.isdir(workdir)
    before = set(os.listdir(workdir)) if existed else set()
    flags_path = os.path.join(workdir, FLAGS_FILE)
    flags_text = open(flags_path).read() if os.path.isfile(flags_path) else None
    checkpoint = latest_checkpoint(workdir)
    try:
        yield
    except BaseException:
        if latest_checkpoint(workdir) == checkpoint:
            for name in set(os.listdir(workdir) if os.path.isdir(workdir) else ()) - before:
                atomic.remove(os.path.join(workdir, name))
            if flags_text is not None:
                write_text_atomic(flags_path, flags_text)
            if not existed and os.path.isdir(workdir) and not os.listdir(workdir):
                os.rmdir(workdir)
        raise


def write_text_atomic(path: str, text: str) -> None:
    """Writes `text` to `path` through a temporary name, so a reader never sees half a file."""
    with atomic.file(path) as partial, open(partial, "w") as f:
        f.write(text)


def write_json(path: str, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def save_model_config(workdir: str, students: Sequence[AlignedReID], **extra: Any) -> None:
    """Writes model.json: every student's `get_config()` plus `extra` (input size, data, ...)."""
    write_json(os.path.join(workdir, MODEL_FILE),
               {"students": [s.get_config() for s in students], **extra})


def read_model_config(workdir: str) -> dict[str, Any]:
    if not os.path.isdir(workdir):
        raise WorkdirError(f"{workdir}: no such workdir")
    path = os.path.join(workdir, MODEL_FILE)
    if not os.path.isfile(path):
        raise WorkdirError(f"{path}: missing; is {workdir} a tf_reid.train workdir?")
    return read_json(path)


def checkpoint(students: Sequence[keras.Model], optimizers: Sequence[keras.optimizers.Optimizer]
               | None = None, epoch: tf.Variable | None = None) -> tf.train.Checkpoint:
    """The object graph every checkpoint of a run uses (students[i], optimizers[i], epoch)."""
    parts: dict[str, Any] = {"students": list(students)}
    if optimizers is not None:
        parts["optimizers"] = list(optimizers)
    if epoch is not None:
        parts["epoch"] = epoch
    return tf.train.Checkpoint(**parts)


def checkpoint_path(workdir: str, which: str = "best") -> str:
    """The newest checkpoint prefix of `which` ("best", falling back to "last"; or "last").

    Raises:
      WorkdirError: no checkpoint exists.
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    folders = [BEST, CHECKPOINTS] if which == "best" else [CHECKPOINTS]
    for folder in folders:
        path = tf.train.latest_checkpoint(os.path.join(workdir, folder))
        if path:
            return path
    raise WorkdirError(f"{workdir}: no checkpoint in {' or '.join(folders)}/")


def load_students(workdir: str, which: str = "best") -> list[AlignedReID]:
    """Rebuilds the run's students from model.json and restores their weights.

    Args:
      workdir: a `tf_reid.train` workdir.
      which: "best" (the best evaluation; the last checkpoint if the run never evaluated) or
        "last".

    Returns:
      The students, in training order; inference uses the global feature of any of them.
    """
    config = read_model_config(workdir)
    students = [AlignedReID.from_config(dict(c)) for c in config["students"]]
    path = checkpoint_path(workdir, which)
    checkpoint(students).restore(path).expect_partial().assert_existing_objects_matched()
    return students


def load_student(workdir: str, which: str = "best", student: int = 0) -> AlignedReID:
    """One student of a run, its weights restored: what evaluation and export load.

    Args:
      workdir: a `tf_reid.train` workdir.
      which: as `load_students`.
      student: its index (0 for a run of one student).

    Raises:
      WorkdirError: no such workdir, no model.json, no such student, or no checkpoint.
    """
    if not os.path.isdir(workdir):
        raise WorkdirError(f"{workdir}: no such workdir")
    num = len(read_model_config(workdir)["students"])
    if not 0 <= student < num:
        raise WorkdirError(f"{workdir}: no student {student}; the run has {num} student(s) "
                           f"(0..{num - 1})")
    return load_students(workdir, which)[student]
