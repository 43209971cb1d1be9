"""python -m bench.levers [--backbone mobilenet_v2] [--objective baseline] [--levers default,inter_op_1,...] [--num_identities 16]

The training step's speed (images/s) under one lever at a time, against the default measured in
the same run: each lever is a setting that has to be in place before TensorFlow starts (threads,
environment) or before the trainer is compiled (steps per execution), so each (lever, round) runs
in a fresh interpreter (`--one=LEVER`), which builds the trainer as `bench.train_step` does
(`tf_reid.training.loop.train`'s MutualTrainer, one seeded P x K batch held in memory), runs its
first step and --warmup more untimed, then times --steps steps (`bench.train_step`'s flags, which
this bench shares: --steps, --rounds, --warmup, --num_identities, --num_instances). Rounds
alternate over the levers; each lever's best round is kept and printed with its ratio to the
first lever.

Levers (LEVERS):
  default                what `tf_reid.train` does now
  inter_op_1             one inter-op thread (TensorFlow's default: one per core, which can run
                         two ops' intra-op work at once on a 2-core CPU)
  steps_per_execution_4  Keras runs 4 train steps per call into the compiled function
  xla_auto_jit           XLA auto-clustering (TF_XLA_FLAGS=--tf_xla_auto_jit=2
                         --tf_xla_cpu_global_jit): XLA compiles the clusters it can, the rest runs
                         as before
  onednn_off             TF_ENABLE_ONEDNN_OPTS=0 (the setting before issue 15; a reference)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

from absl import app, flags  # noqa: E402

from bench import train_step  # noqa: E402  # its flags are this bench's too

FLAGS = flags.FLAGS
flags.DEFINE_string("backbone", "mobilenet_v2", "Backbone (a key of BACKBONES).")
flags.DEFINE_enum("objective", "baseline", list(train_step.OBJECTIVES),
                  "Objective (bench.train_step.OBJECTIVES).")
flags.DEFINE_list("levers", ["default", "inter_op_1", "steps_per_execution_4", "xla_auto_jit"],
                  "Levers to compare (the first is the reference).")
flags.DEFINE_string("lever", None, "The lever to measure in this process (internal).")

# name: (environment, inter-op threads or None, steps per execution)
LEVERS = {
    "default": ({}, None, 1),
    "inter_op_1": ({}, 1, 1),
    "steps_per_execution_4": ({}, None, 4),
    "xla_auto_jit": ({"TF_XLA_FLAGS": "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit"}, None, 1),
    "onednn_off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, None, 1),
}
_RESULT = "RESULT "


def measure(lever: str) -> dict[str, float]:
    """Images/s of --steps steps of one trainer under `lever` (set up before TensorFlow)."""
    _, inter_op, steps_per_execution = LEVERS[lever]
    import numpy as np
    import tensorflow as tf  # imported, but no op has run: the threads can still be set

    if inter_op is not None:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    size = FLAGS.num_identities * FLAGS.num_instances
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (size, 256, 128, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(FLAGS.num_identities, dtype=np.int64), FLAGS.num_instances)
    options = tf.data.Options()
    options.autotune.enabled = False  # see bench.train_step
    data = tf.data.Dataset.from_tensors((images, labels)).repeat().with_options(options)
    weights, students = train_step.OBJECTIVES[FLAGS.objective]
    model = train_step.build_trainer(FLAGS.backbone, weights, students, "",
                                     steps_per_execution=steps_per_execution)
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=1 + FLAGS.warmup, verbose=0, shuffle=False)
    first = time.perf_counter() - start
    steps = train_step.steps_for(FLAGS.backbone)
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    return {"images_per_second": steps * size / (time.perf_counter() - start), "first_s": first}


def run_one(lever: str) -> dict[str, float]:
    env, _, _ = LEVERS[lever]
    command = [sys.executable, "-m", "bench.levers", f"--lever={lever}",
               f"--backbone={FLAGS.backbone}", f"--objective={FLAGS.objective}",
               f"--steps={','.join(FLAGS.steps)}", f"--warmup={FLAGS.warmup}",
               f"--num_identities={FLAGS.num_identities}",
               f"--num_instances={FLAGS.num_instances}"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(command, cwd=root, env={**os.environ, **env}, stdout=subprocess.PIPE,
                          text=True, check=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(_RESULT)]
    return json.loads(lines[-1][len(_RESULT):])


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.lever:
        print(_RESULT + json.dumps(measure(FLAGS.lever)), flush=True)
        return
    unknown = sorted(set(FLAGS.levers) - set(LEVERS))
    if unknown:
        raise app.UsageError(f"--levers: unknown {', '.join(unknown)} (of {', '.join(LEVERS)})")
    best = dict.fromkeys(FLAGS.levers, 0.0)
    rounds: dict[str, list[float]] = {lever: [] for lever in FLAGS.levers}
    for r in range(FLAGS.rounds):
        for lever in FLAGS.levers:
            result = run_one(lever)
            rounds[lever].append(result["images_per_second"])
            best[lever] = max(best[lever], result["images_per_second"])
            print(f"[round {r + 1} {lever}: {result['images_per_second']:.2f} img/s, first "
                  f"{1 + FLAGS.warmup} steps {result['first_s']:.0f} s]", file=sys.stderr,
                  flush=True)
    reference = FLAGS.levers[0]
    print(f"{FLAGS.backbone} {FLAGS.objective}, batch {FLAGS.num_identities}x"
          f"{FLAGS.num_instances} at 256x128 from memory, {os.cpu_count()} cores; best of "
          f"{FLAGS.rounds} alternating rounds of {train_step.steps_for(FLAGS.backbone)} steps, "
          "each in a fresh process")
    print(f"{'lever':24} {'images/s':>9} {'/ ' + reference:>12}  rounds")
    for lever in FLAGS.levers:
        print(f"{lever:24} {best[lever]:9.2f} {best[lever] / best[reference]:12.2f}  "
              + " ".join(f"{v:.2f}" for v in rounds[lever]))


if __name__ == "__main__":
    app.run(main)
