"""python -m bench.profile_step [--side tf|torch] [--backbone mobilenet_v2] [--objective baseline]

Where one training step's time goes: the step `bench.train_vs_torch` times, run `--steps` times
after a warm-up under the framework's own profiler, its op time summed by op type (the share of
the step each type takes; with 2 threads, op time can exceed wall time). The tf side reads the
TensorFlow profiler's trace (xplane) of `bench.train_step.build_trainer`'s `fit`; the torch side
runs `bench.train_sides`' reference step under `torch.profiler`. Run the torch side with
.venv-bench's Python (it holds torch), the tf side with .venv's.
"""

from __future__ import annotations

import collections
import glob
import os
import sys
import tempfile
import time

if __name__ == "__main__" and "--side=torch" not in sys.argv:
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("side", "tf", ["tf", "torch"], "Which framework's step to profile.")
flags.DEFINE_string("backbone", "mobilenet_v2", "mobilenet_v2 or resnet50.")
flags.DEFINE_string("objective", "baseline", "baseline, aligned or mutual.")
flags.DEFINE_integer("profile_steps", 3, "Profiled steps (after the warm-up).")
flags.DEFINE_integer("profile_warmup", 2, "Steps before profiling.")
flags.DEFINE_integer("top", 25, "Op types listed.")
flags.DEFINE_integer("threads", 2, "Intra-op threads of either side.")
flags.DEFINE_string("pk", "16x4", "P x K of the batch.")


def summarise(totals: dict[str, float], wall: float, steps: int) -> list[str]:
    """Lines: per op type (seconds over `steps` steps in `totals`), ms per step and share."""
    total = sum(totals.values())
    lines = [f"wall {1e3 * wall / steps:.0f} ms/step; summed op time {1e3 * total / steps:.0f} "
             f"ms/step"]
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[:FLAGS.top]:
        lines.append(f"  {1e3 * seconds / steps:9.1f} ms  {100 * seconds / total:5.1f}%  {name}")
    return lines


def tf_op_times(logdir: str) -> dict[str, float]:
    """Seconds per op type from the host plane of the xplane trace in `logdir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = max(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True),
               key=os.path.getmtime)
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals: dict[str, float] = collections.defaultdict(float)
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            # Executor ops are traced as "op_name:OpType"; Python and runtime events are not.
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" in name and not name.startswith(("$", "Eager")) and "::" not in name:
                    totals[name.rsplit(":", 1)[1]] += event.duration_ps * 1e-12
    return totals


def config() -> dict:
    p, k = (int(v) for v in FLAGS.pk.split("x"))
    return {"backbone": FLAGS.backbone, "num_identities": p, "num_instances": k, "height": 256,
            "width": 128, "num_classes": 751, "seed": 0, "threads": FLAGS.threads}


def profile_tf() -> list[str]:
    import tensorflow as tf

    from bench import train_sides

    cfg = {**config(), "rows": [FLAGS.objective]}
    images, pids = train_sides.pk_batch(cfg["num_identities"], cfg["num_instances"], 256, 128, 0)
    runners, _ = train_sides.tf_runners(cfg, images, pids)
    run = runners[FLAGS.objective]
    run(FLAGS.profile_warmup)
    logdir = tempfile.mkdtemp(prefix="tf_profile_")
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    run(FLAGS.profile_steps)
    wall = time.perf_counter() - start
    tf.profiler.experimental.stop()
    return [f"tf {FLAGS.backbone} {FLAGS.objective} (trace in {logdir})",
            *summarise(tf_op_times(logdir), wall, FLAGS.profile_steps)]


def profile_torch() -> list[str]:
    import torch

    from bench import train_sides

    cfg = {**config(), "rows": [train_sides.TORCH_STEP_FOR[FLAGS.objective]]}
    images, pids = train_sides.pk_batch(cfg["num_identities"], cfg["num_instances"], 256, 128, 0)
    runners, _ = train_sides.torch_runners(cfg, images, pids)
    run = runners[cfg["rows"][0]]
    run(FLAGS.profile_warmup)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        run(FLAGS.profile_steps)
        wall = time.perf_counter() - start
    totals = {e.key: e.self_cpu_time_total * 1e-6 for e in prof.key_averages()}
    return [f"torch {FLAGS.backbone} {cfg['rows'][0]}",
            *summarise(totals, wall, FLAGS.profile_steps)]


def main(argv: list[str]) -> None:
    del argv
    lines = profile_tf() if FLAGS.side == "tf" else profile_torch()
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
