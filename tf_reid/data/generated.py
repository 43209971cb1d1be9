"""GAN-generated images of nobody in PK batches (LSRO, Zheng et al. 2017, arXiv 1701.07717).

With `generated_per_batch=N`, `tf_reid.data.pk` appends N records of a
`tools.generate_gan_samples` output after each replica's P x K real images, with label -1
(`records.NO_IDENTITY`): a global batch is R slices of [P x K real, N generated]. The generated
records are read in a seeded order per pass (chunks of `shuffle_buffer` records permuted, as for
identities) and cycled when a pass needs more than there are.
"""

from __future__ import annotations

import tensorflow as tf

from tf_reid.data.seeds import pass_seed
from tf_reid.data.tfrecords import shard_files
from tfrecords_builder.manifest import read_manifest
from tfrecords_builder.records import GENERATED, NO_IDENTITY, DatasetError


def generated_shards(generated_dir: str) -> list[str]:
    """The shards of a `tools.generate_gan_samples` output, each checked.

    Raises:
      DatasetError: no manifest, no "generated" split, or a shard missing or changed.
    """
    manifest = read_manifest(generated_dir)
    if GENERATED not in manifest["splits"]:
        raise DatasetError(f"{generated_dir}: its manifest has no {GENERATED!r} split (not a "
                           "tools.generate_gan_samples output)")
    return shard_files(generated_dir, GENERATED, manifest)


def generated_records(generated_dir: str, per_batch: int, shuffle_buffer: int, seed: int):
    """A function of the pass giving the generated records of each of its batches.

    Args:
      generated_dir: a `tools.generate_gan_samples` output.
      per_batch: generated records per global batch (R x N).
      shuffle_buffer: records permuted together.
      seed: seeds the order, per pass.

    Returns:
      f(epoch) -> endless dataset of ([per_batch] serialised records, [per_batch, 2] int64
      stateless image seeds), a function of (seed, epoch) only.

    Raises:
      DatasetError: `generated_dir` has no "generated" split.
    """
    files = generated_shards(generated_dir)

    def of_pass(epoch: tf.Tensor) -> tf.data.Dataset:
        def shuffle(index, chunk):
            order = tf.random.experimental.stateless_shuffle(
                tf.range(tf.shape(chunk)[0]), tf.stack([pass_seed(seed, epoch, 6), index]))
            return tf.gather(chunk, order)

        def seeds(index, records):
            image_seeds = tf.stack([tf.fill([per_batch], pass_seed(seed, epoch, 7)),
                                    index * per_batch + tf.range(per_batch, dtype=tf.int64)],
                                   axis=1)
            return records, image_seeds

        # The epoch's copy of the records is cycled (not a new order per cycle) so that the
        # order depends on (seed, epoch) alone.
        records = (tf.data.TFRecordDataset(files).batch(shuffle_buffer).enumerate()
                   .map(shuffle).unbatch().repeat())
        return records.batch(per_batch, drop_remainder=True).enumerate().map(seeds)

    return of_pass


def append_generated(real: tuple[tf.Tensor, ...], generated: tuple[tf.Tensor, tf.Tensor],
                     num_replicas: int) -> tuple[tf.Tensor, ...]:
    """One global batch's records with each replica's N generated ones after its P x K real.

    Args:
      real: ([R*P*K] records, [R*P*K] labels, [R*P*K, 2] image seeds, [R*P*K, 2] batch seeds).
      generated: ([R*N] records, [R*N, 2] image seeds).
      num_replicas: R.

    Returns:
      The four tensors of `real` with R*(P*K+N) rows; generated rows have label -1 and the
      batch's batch seed.
    """
    records, labels, image_seeds, batch_seeds = real
    extra_records, extra_seeds = generated
    n = tf.shape(extra_records)[0]
    extra = (extra_records, tf.fill([n], tf.constant(NO_IDENTITY, tf.int64)), extra_seeds,
             tf.tile(batch_seeds[:1], [n, 1]))

    def per_replica(a, b):  # [R*m, ...] and [R*n, ...] -> [R*(m+n), ...]
        a = tf.reshape(a, tf.concat([[num_replicas, -1], tf.shape(a)[1:]], 0))
        b = tf.reshape(b, tf.concat([[num_replicas, -1], tf.shape(b)[1:]], 0))
        joined = tf.concat([a, b], axis=1)
        return tf.reshape(joined, tf.concat([[-1], tf.shape(joined)[2:]], 0))

    return tuple(per_replica(a, b) for a, b in zip((records, labels, image_seeds, batch_seeds),
                                                    extra))
