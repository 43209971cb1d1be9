"""python -m bench.train_step [--backbones mobilenet_v2,resnet50] [--steps resnet50:2] [--rounds 2]

Training speed (images/s) of `tf_reid.training.trainer.MutualTrainer`'s train step, built as
`tf_reid.training.loop.train` builds it (AlignedReID students at 256x128, one Adam with the
epoch schedule per student, weight decay 5e-4, `fit` without XLA on the whole step), on one
P x K = 8 x 4 batch of seeded random uint8 images held in memory, so the input pipeline is not
measured (see `bench.input_pipeline` for it).

Grid: backbone x precision (Keras global policy) x objective:
  baseline  ID + global TriHard (`LossWeights(local_triplet=0)`), 1 student;
  aligned   + local TriHard on the aligned distance (AlignedReID's default weights), 1 student;
  mutual    the same with 2 students and the mutual terms (Deep Mutual Learning).
A policy must be set before any model is built, so each backbone x precision runs in its own
subprocess (`--one=backbone:precision`, one JSON line back); inside it the three objectives'
trainers are built side by side, traced and warmed up, then timed in alternating rounds, the
best round of each kept, so their ratios share the machine's noise. A mutual step trains two
students on the batch, but its images are counted once.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from tf_reid.models.aligned_reid import AlignedReID  # noqa: E402
from tf_reid.training import objective, schedule, trainer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("backbones", ["mobilenet_v2", "resnet50"], "Backbones (keys of BACKBONES).")
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"], "Keras mixed-precision policies.")
flags.DEFINE_list("steps", ["mobilenet_v2:5", "resnet50:2"],
                  "backbone:steps timed per objective and round (others: the first's count).")
flags.DEFINE_integer("rounds", 2, "Alternating rounds over the objectives; the best is kept.")
flags.DEFINE_integer("warmup", 1, "Steps run after tracing, before timing, per objective.")
flags.DEFINE_integer("num_identities", 8, "P.")
flags.DEFINE_integer("num_instances", 4, "K.")
flags.DEFINE_integer("num_classes", 751, "Classifier width (Market-1501's training identities).")
flags.DEFINE_integer("height", 256, "Input height.")
flags.DEFINE_integer("width", 128, "Input width.")
flags.DEFINE_string("one", None, "backbone:precision to measure in this process (internal).")

OBJECTIVES = {  # name: (loss weights, students)
    "baseline": (objective.LossWeights(local_triplet=0.0), 1),
    "aligned": (objective.LossWeights(), 1),
    "mutual": (objective.LossWeights(), 2),
}
_RESULT = "RESULT "  # prefix of the subprocess's JSON line


def build_trainer(backbone: str, weights: objective.LossWeights, num_students: int,
                  prefix: str, steps_per_execution: int = 1) -> trainer.MutualTrainer:
    """A compiled MutualTrainer as `loop.train` makes it (random init, nothing downloaded)."""
    students = [AlignedReID(FLAGS.num_classes, backbone=backbone,
                            backbone_options={"weights": None},
                            input_shape=(FLAGS.height, FLAGS.width, 3), name=f"{prefix}student_{i}",
                            local_branch=weights.local_triplet > 0)
                for i in range(num_students)]
    # Steps per epoch of Market-1501 at P = 8 (751 ids); the rate stays 1e-3 over the bench.
    optimizers = [keras.optimizers.Adam(schedule.EpochSchedule(1e-3, 94, (80, 160)))
                  for _ in students]
    model = trainer.MutualTrainer(students, optimizers, weights, weight_decay=5e-4)
    model.build_optimizers()
    model.compile(optimizer=optimizers[0], jit_compile=False,
                  steps_per_execution=steps_per_execution)
    return model


def steps_for(backbone: str) -> int:
    counts = dict(entry.split(":") for entry in FLAGS.steps)
    return int(counts.get(backbone, next(iter(counts.values()))))


def measure(backbone: str, precision: str) -> dict[str, object]:
    """{objective: best images/s, "trace_s": {objective: s}} for one backbone and policy."""
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    size = FLAGS.num_identities * FLAGS.num_instances
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (size, FLAGS.height, FLAGS.width, 3), dtype=np.uint8)
    # Identity-major, as pk.pk_dataset yields them: 0 0 0 0 1 1 1 1 ...
    labels = np.repeat(np.arange(FLAGS.num_identities, dtype=np.int64), FLAGS.num_instances)
    # Autotuning's backed-off wake-ups make each timed fit call on a fresh iterator return only
    # at 10 ms * (2^n - 1) on this CPU; a constant batch needs no tuning.
    options = tf.data.Options()
    options.autotune.enabled = False
    data = tf.data.Dataset.from_tensors((images, labels)).repeat().with_options(options)

    models, trace = {}, {}
    for name, (weights, num_students) in OBJECTIVES.items():
        models[name] = build_trainer(backbone, weights, num_students, f"{name}_")
        start = time.perf_counter()
        models[name].fit(data, epochs=1, steps_per_epoch=1 + FLAGS.warmup, verbose=0,
                         shuffle=False)
        trace[name] = time.perf_counter() - start

    steps = steps_for(backbone)
    best = dict.fromkeys(models, 0.0)
    for _ in range(FLAGS.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
            best[name] = max(best[name], steps * size / (time.perf_counter() - start))
    return {**best, "trace_s": trace, "steps": steps}


def run_one(backbone: str, precision: str) -> dict[str, object]:
    """`measure` in a fresh interpreter, so the policy is set before anything is built."""
    command = [sys.executable, "-m", "bench.train_step", f"--one={backbone}:{precision}",
               f"--steps={','.join(FLAGS.steps)}", f"--rounds={FLAGS.rounds}",
               f"--warmup={FLAGS.warmup}", f"--num_identities={FLAGS.num_identities}",
               f"--num_instances={FLAGS.num_instances}", f"--num_classes={FLAGS.num_classes}",
               f"--height={FLAGS.height}", f"--width={FLAGS.width}"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(command, cwd=root, stdout=subprocess.PIPE, text=True, check=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(_RESULT)]
    if not lines:
        raise RuntimeError(f"{backbone}:{precision} printed no result:\n{done.stdout}")
    return json.loads(lines[-1][len(_RESULT):])


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.one:
        backbone, precision = FLAGS.one.split(":")
        print(_RESULT + json.dumps(measure(backbone, precision)), flush=True)
        return

    results = {}
    for backbone in FLAGS.backbones:
        for precision in FLAGS.precisions:
            start = time.perf_counter()
            results[backbone, precision] = run_one(backbone, precision)
            print(f"[{backbone} {precision}: {time.perf_counter() - start:.0f} s, images/s "
                  + ", ".join(f"{name} {results[backbone, precision][name]:.2f}"
                              for name in OBJECTIVES) + "]", file=sys.stderr, flush=True)

    size = FLAGS.num_identities * FLAGS.num_instances
    reference = FLAGS.precisions[0]
    print(f"MutualTrainer.fit, {FLAGS.height}x{FLAGS.width}, batch {FLAGS.num_identities}x"
          f"{FLAGS.num_instances} = {size} images from memory, {FLAGS.num_classes} classes, "
          f"{os.cpu_count()} cores; best of {FLAGS.rounds} alternating rounds "
          f"({', '.join(f'{b}: {steps_for(b)} steps' for b in FLAGS.backbones)}) after tracing + "
          f"{FLAGS.warmup} warm-up step(s). images/s counts each batch once (mutual: 2 students "
          "per batch).")
    print(f"{'backbone':13} {'precision':15} {'objective':9} {'images/s':>9} "
          f"{'/ baseline':>10} {'/ ' + reference:>{len(reference) + 2}} {'trace+warm-up s':>16}")
    for (backbone, precision), result in results.items():
        for name in OBJECTIVES:
            rate = result[name]
            versus_precision = rate / results[backbone, reference][name]
            print(f"{backbone:13} {precision:15} {name:9} {rate:9.2f} "
                  f"{rate / result['baseline']:10.2f} {versus_precision:{len(reference) + 2}.2f} "
                  f"{result['trace_s'][name]:16.0f}")


if __name__ == "__main__":
    app.run(main)
