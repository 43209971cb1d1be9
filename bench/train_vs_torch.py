"""python -m bench.train_vs_torch [--backbones mobilenet_v2,resnet50] [--objectives ...] [--check]

Training throughput (images/s) of tf-reid against a minimal PyTorch reference, side by side
(`make bench-torch` installs PyTorch into .venv-bench and runs this).

Both sides train on one seeded P x K = 16 x 4 batch of uint8 images at 256x128 held in memory
(the same bytes: the parent compares their SHA-256), float32, 751 classes (Market-1501's
training identities):
  tf-reid  `MutualTrainer.fit`, built by `bench.train_step.build_trainer` as
           `tf_reid.training.loop.train` builds it (AlignedReID students with BN-neck and local
           branch, one Adam per student, coupled weight decay 5e-4 on kernels, no XLA on the
           whole step), with the recipe's defaults (no label smoothing), per objective:
             baseline  ID + global TriHard (`LossWeights(local_triplet=0)`), 1 student;
             aligned   + local TriHard on the aligned distance (default weights), 1 student;
             mutual    aligned with 2 students and the mutual terms.
  PyTorch  torchvision MobileNetV2 / ResNet50 (last stride 1) without weights, global average
           pooling, BN-neck, bias-free linear classifier, label-smoothed (0.1) cross-entropy +
           batch-hard triplet (margin 0.3) on the pre-BN feature's Euclidean distances, Adam
           3.5e-4 with coupled weight decay 5e-4 on kernels, channels_last (details in
           `bench.train_sides`); steps:
             baseline  1 network (the row of tf-reid's baseline and aligned);
             mutual    2 networks, each with its own loss and optimizer, plus the same mutual
                       terms as tf-reid (KL 0.01, distance-matrix MSE 0.001, peers detached).
The ratio tf-reid / PyTorch of the aligned row therefore includes the local branch's cost,
which the reference does not have. The learning rates differ (1e-3 / 3.5e-4) and label
smoothing is on in the reference only; neither changes the work of a step.

Each side runs in its own long-lived subprocess (`python -m bench.train_sides`: tf with this
Python, PyTorch with --torch_python), one pair per backbone: the two runtimes never share a
process, their thread pools never compete (the parent asks one side at a time and the other
waits on its stdin), PyTorch never enters .venv, and one backbone's memory is gone before the
next is built. Both sides use --threads intra-op threads (default: every core, which is what
each framework takes by default). The parent runs every row's first step (tracing, oneDNN
primitive creation) and --warmup more steps untimed, then --rounds rounds that time --steps
steps of each row in turn, alternating sides, and keeps each row's best round, so a transient
load on the machine costs a round, not the result. images/s counts a batch once, also when 2
networks train on it.

--check stops after the first steps: it fails unless every first-step loss is finite, both
sides hold the same batch, and the PyTorch batch-hard triplet matches a hand-worked example
and a NumPy loop (both checked on every run anyway).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from typing import Any

from absl import app, flags

from bench.train_sides import BACKBONES, TORCH_STEP_FOR

FLAGS = flags.FLAGS
flags.DEFINE_list("backbones", list(BACKBONES), f"Backbones, of {', '.join(BACKBONES)}.")
flags.DEFINE_list("objectives", list(TORCH_STEP_FOR),
                  f"tf-reid objectives, of {', '.join(TORCH_STEP_FOR)}.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds over the rows; each row's best is kept.")
flags.DEFINE_list("steps", ["mobilenet_v2:5", "resnet50:4"],
                  "Steps timed per row and round: N for every backbone, or backbone:N entries.")
flags.DEFINE_integer("warmup", 1, "Untimed steps per row after its first step.")
flags.DEFINE_bool("check", False, "Only build, run each row's first step and check (see above).")
flags.DEFINE_integer("num_identities", 16, "P.")
flags.DEFINE_integer("num_instances", 4, "K.")
flags.DEFINE_integer("num_classes", 751, "Classifier width on both sides.")
flags.DEFINE_integer("height", 256, "Input height.")
flags.DEFINE_integer("width", 128, "Input width.")
flags.DEFINE_integer("threads", os.cpu_count(), "Intra-op threads of each side.")
flags.DEFINE_integer("seed", 0, "Seeds the batch and the initialisation.")
flags.DEFINE_string("torch_python", ".venv-bench/bin/python",
                    "Python with torch and torchvision (relative paths: from the repository).")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CHECK_TOLERANCE = 1e-4


class BenchError(Exception):
    """A bad flag or a side that failed; main prints it as one `error:` line."""


class Side:
    """One side's worker process: `run(row, steps)` -> (seconds, mean loss)."""

    def __init__(self, name: str, python: str, config: dict[str, Any]):
        self.name = name
        self.peak_rss_mb = 0.0
        self.process = subprocess.Popen(
            [python, "-m", "bench.train_sides", name, json.dumps(config)], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def receive(self) -> dict[str, Any]:
        line = self.process.stdout.readline()
        if not line:
            raise BenchError(f"the {self.name} side exited (code {self.process.wait()}); "
                             "its messages are above")
        message = json.loads(line)
        self.peak_rss_mb = max(self.peak_rss_mb, message["peak_rss_mb"])
        return message

    def run(self, row: str, steps: int) -> tuple[float, float]:
        self.process.stdin.write(json.dumps({"row": row, "steps": steps}) + "\n")
        answer = self.receive()
        if not math.isfinite(answer["loss"]):
            raise BenchError(f"{self.name} {row}: loss {answer['loss']} is not finite")
        return answer["seconds"], answer["loss"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()


def steps_for(backbone: str) -> int:
    """--steps for `backbone`: its backbone:N entry, else a bare N, else the first entry's N."""
    counts = {}
    for entry in FLAGS.steps:
        name, _, count = entry.rpartition(":")
        counts[name or None] = int(count)
    return counts.get(backbone, counts.get(None, next(iter(counts.values()))))


def validate() -> str:
    """Checks the flags; returns the PyTorch Python's path. Raises BenchError."""
    for flag, values, known in (("backbones", FLAGS.backbones, BACKBONES),
                                ("objectives", FLAGS.objectives, tuple(TORCH_STEP_FOR))):
        unknown = [v for v in values if v not in known]
        if unknown or not values:
            raise BenchError(f"--{flag}: {', '.join(unknown) or 'empty'}; choose from "
                             f"{', '.join(known)}")
    try:
        if any(steps_for(b) < 1 for b in FLAGS.backbones):
            raise ValueError
    except ValueError:
        raise BenchError(f"--steps: {','.join(FLAGS.steps)}: want N or backbone:N, N >= 1")
    if FLAGS.rounds < 1 or FLAGS.warmup < 0:
        raise BenchError("--rounds must be >= 1 and --warmup >= 0")
    if FLAGS.num_instances < 2 or FLAGS.num_identities < 2:
        raise BenchError("--num_identities and --num_instances must be >= 2 (batch-hard mining)")
    python = os.path.join(ROOT, FLAGS.torch_python)
    if not os.access(python, os.X_OK):
        raise BenchError(f"--torch_python: {python} not found; `make bench-torch` creates "
                         ".venv-bench with requirements-bench.txt")
    return python


def measure(backbone: str, torch_python: str) -> dict[str, Any]:
    """One backbone: {"rows": {(side, row): best images/s}, "first": {...}, "info": {...}}."""
    config = {"backbone": backbone, "num_identities": FLAGS.num_identities,
              "num_instances": FLAGS.num_instances, "height": FLAGS.height, "width": FLAGS.width,
              "num_classes": FLAGS.num_classes, "threads": FLAGS.threads, "seed": FLAGS.seed}
    torch_rows = list(dict.fromkeys(TORCH_STEP_FOR[name] for name in FLAGS.objectives))
    sides = {"tf": Side("tf", sys.executable, {**config, "rows": FLAGS.objectives}),
             "torch": Side("torch", torch_python, {**config, "rows": torch_rows})}
    try:
        info = {name: side.receive() for name, side in sides.items()}
        check(info)
        print(f"[{backbone} built: " + ", ".join(f"{name} {answer['build_s']:.0f} s" for
                                               name, answer in info.items()) + "]",
              file=sys.stderr, flush=True)
        # Alternate sides row by row: tf baseline, torch baseline, tf aligned, tf mutual, ...
        order = []
        for name in FLAGS.objectives:
            order.append(("tf", name))
            if ("torch", TORCH_STEP_FOR[name]) not in order:
                order.append(("torch", TORCH_STEP_FOR[name]))
        first, warmup = {}, {}
        for side, row in order:
            seconds, first[side, row] = sides[side].run(row, 1)
            warmup[side, row] = seconds + (sides[side].run(row, FLAGS.warmup)[0]
                                           if FLAGS.warmup and not FLAGS.check else 0.0)
            print(f"[{backbone} {side} {row}: first step loss {first[side, row]:.4f}, first + "
                  f"warm-up {warmup[side, row]:.0f} s]", file=sys.stderr, flush=True)
        best = dict.fromkeys(order, 0.0)
        steps = steps_for(backbone)
        size = FLAGS.num_identities * FLAGS.num_instances
        for round_index in range(0 if FLAGS.check else FLAGS.rounds):
            for side, row in order:
                seconds, _ = sides[side].run(row, steps)
                best[side, row] = max(best[side, row], steps * size / seconds)
                print(f"[{backbone} round {round_index + 1} {side} {row}: "
                      f"{steps * size / seconds:.2f} images/s, {seconds:.2f} s]", file=sys.stderr,
                      flush=True)
    finally:
        for side in sides.values():
            side.close()
    return {"rows": best, "first": first, "warmup": warmup, "info": info,
            "peak_rss_mb": {name: side.peak_rss_mb for name, side in sides.items()}}


def check(info: dict[str, dict[str, Any]]) -> None:
    """Same batch on both sides, and the torch triplet right. Raises BenchError."""
    if info["tf"]["batch_sha256"] != info["torch"]["batch_sha256"]:
        raise BenchError("the two sides built different batches")
    errors = info["torch"]["triplet_check"]
    if not max(errors.values()) <= _CHECK_TOLERANCE:
        raise BenchError(f"PyTorch batch-hard triplet off: {errors}")


def report(results: dict[str, dict[str, Any]]) -> None:
    """The header and one line per backbone x objective, the ratio last."""
    info = next(iter(results.values()))["info"]
    size = FLAGS.num_identities * FLAGS.num_instances
    print(f"Train step, tf-reid ({info['tf']['framework']}, {info['tf']['threads']} threads) vs "
          f"PyTorch ({info['torch']['framework']}, {info['torch']['threads']} threads), "
          f"{os.cpu_count()} cores: {FLAGS.height}x{FLAGS.width}, batch {FLAGS.num_identities}x"
          f"{FLAGS.num_instances} = {size} uint8 images from memory, {FLAGS.num_classes} "
          f"classes, float32.")
    for name, side in info.items():
        print(f"  {name}: same batch sha256 {side['batch_sha256'][:16]}...")
    errors = info["torch"]["triplet_check"]
    print(f"  PyTorch batch-hard triplet: hand example max error {errors['hand_max_error']:.1e}, "
          f"NumPy loop max error {errors['numpy_loop_max_error']:.1e}.")
    first = ", ".join(f"{backbone} {side} {row} {loss:.4f}" for backbone, result in
                      results.items() for (side, row), loss in result["first"].items())
    print(f"  First-step losses (all finite): {first}.")
    peaks = ", ".join(f"{backbone} {side} {mb / 1024:.1f}" for backbone, result in results.items()
                      for side, mb in result["peak_rss_mb"].items())
    print(f"  Peak RSS of each side's process, GB: {peaks}.")
    if FLAGS.check:
        print("check: ok")
        return
    print(f"Best of {FLAGS.rounds} alternating rounds of "
          f"{', '.join(f'{b}: {steps_for(b)} steps' for b in results)} per row, after each "
          f"row's first step + {FLAGS.warmup} warm-up step(s). images/s counts a batch once "
          "(mutual: 2 networks train on it).")
    print(f"{'backbone':13} {'objective':9} {'PyTorch step':12} {'tf-reid img/s':>13} "
          f"{'PyTorch img/s':>13} {'tf-reid / PyTorch':>17}")
    for backbone, result in results.items():
        for name in FLAGS.objectives:
            ours, theirs = result["rows"]["tf", name], result["rows"]["torch", TORCH_STEP_FOR[name]]
            print(f"{backbone:13} {name:9} {TORCH_STEP_FOR[name]:12} {ours:13.2f} "
                  f"{theirs:13.2f} {ours / theirs:17.2f}")


def main(argv: list[str]) -> None:
    del argv
    try:
        torch_python = validate()
        results = {}
        for backbone in FLAGS.backbones:
            start = time.perf_counter()
            results[backbone] = measure(backbone, torch_python)
            print(f"[{backbone}: {time.perf_counter() - start:.0f} s]", file=sys.stderr,
                  flush=True)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    report(results)


if __name__ == "__main__":
    app.run(main)
