"""python -m bench.build_tfrecords [--data_dir ../shared/data/cuhk03] [--repeats 3]

Converts the CUHK03 subset in ../shared (labeled boxes, new protocol, missing images allowed) to
identity-sharded TFRecords and compares its images/s, in the same run, with two baselines over
the same files: only reading their bytes, and reading + decoding them with TensorFlow (the
converter's decode check). Best of `--repeats` runs each, warm page cache.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from tf_reid.quiet import quiet_tensorflow

    quiet_tensorflow(sys.argv)

import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from bench.common import SHARED_CUHK03  # noqa: E402
from tfrecords_builder import cuhk03, writer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", SHARED_CUHK03, "CUHK03 folder (images_labeled/).")
flags.DEFINE_integer("repeats", 3, "Runs per measurement; the best is reported.")
flags.DEFINE_integer("num_workers", None, "Converter decoders (default: autotuned).")


def best_of(repeats: int, fn) -> float:
    """Shortest wall time of `repeats` calls of `fn`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str]) -> None:
    del argv
    parsed = cuhk03.parse(FLAGS.data_dir, allow_missing=True)
    paths = [os.path.join(parsed.source, r.path) for r in parsed.records]
    n = len(paths)

    def read_only():
        for p in paths:
            with open(p, "rb") as f:
                f.read()

    def read_decode():
        for p in paths:
            with open(p, "rb") as f:
                tf.io.decode_image(f.read(), channels=3, expand_animations=False)

    out_root = tempfile.mkdtemp(prefix="bench_tfrecords_")

    def convert():
        out = os.path.join(out_root, "out")
        shutil.rmtree(out, ignore_errors=True)
        writer.build(parsed, out, progress=False, num_workers=FLAGS.num_workers)

    try:
        read_only()  # warm the page cache so every measurement sees the same state
        t_read = best_of(FLAGS.repeats, read_only)
        t_decode = best_of(FLAGS.repeats, read_decode)
        t_convert = best_of(FLAGS.repeats, convert)
    finally:
        shutil.rmtree(out_root, ignore_errors=True)
    print(f"CUHK03 subset: {n} images, {os.cpu_count()} cores, "
          f"converter decoders: {FLAGS.num_workers or 'autotuned'}")
    print(f"{'':34} {'s':>7} {'img/s':>9}")
    for name, t in (("read bytes only", t_read), ("read + TF decode (1 thread)", t_decode),
                    ("convert to TFRecords", t_convert)):
        print(f"{name:34} {t:7.2f} {n / t:9.0f}")
    print(f"convert / read-only: {t_read / t_convert:.3f} of the read-only throughput; "
          f"convert / single-thread decode: {t_decode / t_convert:.2f}x")


if __name__ == "__main__":
    app.run(main)
