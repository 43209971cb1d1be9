"""python -m bench.input_pipeline [--data_dir ../shared/data/cuhk03] [--batches 30]

Throughput of the PK training input (P x K batches: PK sampling over identity shards, decode,
resize to 256x128, flip, pad-crop, random erasing; normalisation by the model, or in the
pipeline) against its bound measured in the same run: the same TFRecords' images only decoded
and resized, with the same parallelism and batch size. Converts the CUHK03 subset in ../shared
to TFRecords in a temporary folder first.
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
from tf_reid.data import augment, pk  # noqa: E402
from tf_reid.data.tfrecords import shard_files  # noqa: E402
from tfrecords_builder import cuhk03, features, writer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", SHARED_CUHK03, "CUHK03 folder (images_labeled/).")
flags.DEFINE_integer("batches", 30, "Batches timed per pipeline and round (after warm-up).")
flags.DEFINE_integer("rounds", 3, "Alternating rounds of both pipelines; the best of each is kept.")
flags.DEFINE_integer("warmup", 5, "Batches run before timing, per pipeline.")
flags.DEFINE_integer("num_identities", 32, "P.")
flags.DEFINE_integer("num_instances", 4, "K.")
flags.DEFINE_integer("height", 256, "Input height.")
flags.DEFINE_integer("width", 128, "Input width.")


def decode_resize_only(data_dir: str, batch_size: int, height: int, width: int) -> tf.data.Dataset:
    """The bound: the train split's images decoded and resized, nothing else."""
    def decode(serialized):
        encoded = tf.io.parse_single_example(
            serialized, {features.IMAGE: features.FEATURE_SPEC[features.IMAGE]})[features.IMAGE]
        return augment.decode_and_resize(encoded, height, width)

    return (tf.data.TFRecordDataset(shard_files(data_dir, "train")).repeat()
            .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def images_per_second(iterator, batches: int) -> tuple[float, float]:
    """(batches/s, images/s) over the next `batches` batches of `iterator`."""
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(iterator)
        images += int(tf.shape(batch[0] if isinstance(batch, tuple) else batch)[0])
    elapsed = time.perf_counter() - start
    return batches / elapsed, images / elapsed


def best_alternating(datasets: list[tf.data.Dataset], batches: int, warmup: int,
                     rounds: int) -> list[tuple[float, float]]:
    """Best (batches/s, images/s) of each dataset over `rounds` alternating timings.

    Alternating rounds and keeping the best of each puts both pipelines under the same
    machine noise (this VM's memory bandwidth varies by tens of percent between minutes).
    """
    iterators = [iter(d) for d in datasets]
    for it in iterators:
        for _ in range(warmup):
            next(it)
    best = [(0.0, 0.0)] * len(datasets)
    for _ in range(rounds):
        for i, it in enumerate(iterators):
            best[i] = max(best[i], images_per_second(it, batches), key=lambda r: r[1])
    return best


def main(argv: list[str]) -> None:
    del argv
    out = tempfile.mkdtemp(prefix="bench_input_")
    try:
        data_dir = os.path.join(out, "cuhk03")
        writer.build(cuhk03.parse(FLAGS.data_dir, allow_missing=True), data_dir, progress=False)
        size = FLAGS.num_identities * FLAGS.num_instances
        bound, full, normalised = best_alternating([
            decode_resize_only(data_dir, size, FLAGS.height, FLAGS.width),
            pk.pk_dataset(data_dir, FLAGS.num_identities, FLAGS.num_instances, FLAGS.height,
                          FLAGS.width),
            pk.pk_dataset(data_dir, FLAGS.num_identities, FLAGS.num_instances, FLAGS.height,
                          FLAGS.width, augment_config=augment.AugmentConfig(normalize=True)),
        ], FLAGS.batches, FLAGS.warmup, FLAGS.rounds)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"CUHK03 subset train split, {FLAGS.height}x{FLAGS.width}, batch "
          f"{FLAGS.num_identities}x{FLAGS.num_instances}, {os.cpu_count()} cores, "
          f"best of {FLAGS.rounds} alternating rounds of {FLAGS.batches} batches")
    print(f"{'':52} {'batches/s':>10} {'images/s':>10} {'/ bound':>8}")
    for name, (bps, ips) in (("decode + resize only (bound, float32)", bound),
                             ("PK + flip, pad-crop, erasing (uint8; model normalises)", full),
                             ("PK + the same + normalise in the pipeline (float32)", normalised)):
        print(f"{name:52} {bps:10.2f} {ips:10.0f} {ips / bound[1]:8.2f}")


if __name__ == "__main__":
    app.run(main)
