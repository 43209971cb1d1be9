"""PK sampling over identity-sharded TFRecords: every batch is P identities x K images.

How a batch is made (one pass = one epoch "by identities"):
  1. the split's shards, shuffled, are read `cycle_length` at a time (interleave); inside a
     shard an identity's records are contiguous, so `group_by_window` turns them into one
     element per identity. Memory is bounded by `cycle_length` shards, never the dataset.
  2. each identity draws K of its records (without replacement when it has >= K, with
     replacement otherwise), then identities are shuffled in chunks of `shuffle_buffer` (K
     records each), so memory holds K records per buffered identity.
  3. P x num_replicas identities form a global batch (the pass's remainder is dropped, so no
     batch spans two passes and no identity appears twice in a batch); images are laid out
     identity-major: K images of identity 0, then K of identity 1, ...
  4. each image is decoded, resized, flipped and pad-cropped with its own stateless seed;
     random erasing (and normalisation, if asked for) then runs on the whole batch.

Views: with `views=V` each image is decoded once and augmented V times (flip, crop, erasing
from V seeds; view 0 is the single-view image), for mutual-learning students that each see
their own view of the same identities.

Normalisation: with `augment_config.normalize` False (the default) images stay uint8 in
[0, 255] and the model applies `augment.normalize` as its first step. Where memory bandwidth is
scarce one float32 pass over a batch costs as much as decoding it (see BUILD.md), and on an
accelerator the model normalises for free on 4x fewer transferred bytes. With
`normalize=True` the pipeline yields normalised float32 instead.

Global batch and replicas: the global batch holds num_replicas x P x K images. A
MirroredStrategy's `experimental_distribute_dataset` splits axis 0 into num_replicas contiguous
slices of P x K, and because the layout is identity-major each slice is P whole identities:
batch-hard mining per replica stays valid. Under MultiWorkerMirroredStrategy every worker
builds the same global batches (same seed) and data sharding keeps each worker's replicas'
slices, in the same order.

Joint training (AlignedReID trains one model on several datasets' training sets): given several
TFRecords folders, their training identities are one label space, each dataset's contiguous
labels shifted by the identities of the datasets before it (`training_sets`, `label_map`).
Shards hold one dataset's identities, so an identity never spans two datasets. With
`sampling="identities"` (the default) a pass visits every identity of every dataset once, so
datasets are drawn in proportion to their identities; with "equal" a pass takes the same number
of identities from each (the smallest dataset's count; a different random subset of the larger
ones every pass), alternating between datasets before the shuffle.

Generated images (LSRO): with `generated_per_batch=N` each replica's slice gets N records of a
`tools.generate_gan_samples` output after its P x K real images (`tf_reid.data.generated`),
decoded and augmented like the real ones.

Determinism: every random choice is seeded from `seed` (shuffles with explicit seeds, stateless
ops for sampling and augmentation, deterministic parallel maps), so the same seed gives the same
batches.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import tensorflow as tf

from tf_reid.data import augment
from tf_reid.data.generated import append_generated, generated_records
from tf_reid.data.seeds import pass_seed
from tf_reid.data.tfrecords import largest_shard, parse_identity, shard_files
from tfrecords_builder import features
from tfrecords_builder.manifest import read_manifest
from tfrecords_builder.records import DatasetError

# One fused pass instead of four elementwise ones.
_normalize_compiled = tf.function(augment.normalize, jit_compile=True)


def sample_instances(records: tf.Tensor, num_instances: int, seed: tf.Tensor) -> tf.Tensor:
    """K of an identity's records: without replacement if it has >= K, else with replacement.

    Args:
      records: [n] serialised records of one identity, n >= 1.
      num_instances: K.
      seed: [2] int stateless seed.

    Returns:
      [K] records.
    """
    n = tf.shape(records)[0]
    keys = tf.random.stateless_uniform([n], seed)
    distinct = tf.argsort(keys)[: tf.minimum(n, num_instances)]
    repeated = tf.random.stateless_uniform([num_instances], seed[::-1], maxval=n, dtype=tf.int32)
    index = tf.cond(n >= num_instances, lambda: distinct, lambda: repeated)
    return tf.ensure_shape(tf.gather(records, index), [num_instances])


def identities_of_shard(path: tf.Tensor, window: int) -> tf.data.Dataset:
    """One element per identity of a shard: (label, pid, [n] serialised records).

    `window` must be >= the largest identity (the largest shard bounds it), so that an
    identity is never cut into two elements.
    """
    records = tf.data.TFRecordDataset(path).map(lambda s: (*parse_identity(s), s))
    grouped = records.group_by_window(
        key_func=lambda pid, label, s: pid,
        reduce_func=lambda key, ds: ds.batch(window),
        window_size=window)
    return grouped.map(lambda pids, labels, s: (labels[0], pids[0], s))


def steps_per_epoch(total_identities: int, num_identities: int, num_replicas: int = 1) -> int:
    """Batches in an epoch, one pass over the identities (the remainder is dropped).

    Args:
      total_identities: identities of the split.
      num_identities: P, identities per replica batch.
      num_replicas: replicas sharing the global batch.

    Returns:
      total_identities // (P x num_replicas), at least 1.
    """
    steps = total_identities // (num_identities * num_replicas)
    if steps < 1:
        raise ValueError(f"{total_identities} training identities cannot fill a batch of "
                         f"{num_identities} x {num_replicas} replicas")
    return steps


SAMPLINGS = ("identities", "equal")


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    """One dataset's part of a (joint) training set.

    Attributes:
      data_dir: its `tools.build_tfrecords` output.
      manifest: its parsed manifest.
      label_offset: added to its contiguous training labels: the identities of the datasets
        before it.
    """

    data_dir: str
    manifest: dict[str, Any] = dataclasses.field(repr=False)
    label_offset: int

    @property
    def identities(self) -> int:
        return self.manifest["splits"]["train"]["identities"]


def training_sets(data_dirs: str | Sequence[str],
                  manifests: Sequence[dict[str, Any]] | None = None) -> list[TrainingSet]:
    """The datasets of a training set, in the order given, with their label offsets.

    Args:
      data_dirs: one TFRecords folder, or several for joint training.
      manifests: their parsed manifests, if already loaded.

    Raises:
      DatasetError: a folder has no manifest, or one is given twice.
    """
    data_dirs = [data_dirs] if isinstance(data_dirs, str) else list(data_dirs)
    seen = {}
    for data_dir in data_dirs:
        key = os.path.realpath(data_dir)
        if key in seen:
            raise DatasetError(f"{data_dir}: given twice (also as {seen[key]}): its identities "
                               "would get two labels each")
        seen[key] = data_dir
    manifests = manifests or [read_manifest(d) for d in data_dirs]
    sets, offset = [], 0
    for data_dir, manifest in zip(data_dirs, manifests):
        sets.append(TrainingSet(data_dir, manifest, offset))
        offset += sets[-1].identities
    return sets


def num_classes(sets: Sequence[TrainingSet]) -> int:
    """Training identities of all the datasets together."""
    return sum(s.identities for s in sets)


def pass_identities(sets: Sequence[TrainingSet], sampling: str = "identities") -> int:
    """Identities one pass (epoch) visits: all of them, or with "equal" the smallest dataset's
    count from each."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    if sampling == "equal":
        return len(sets) * min(s.identities for s in sets)
    return num_classes(sets)


def label_map(sets: Sequence[TrainingSet]) -> list[dict[str, Any]]:
    """JSON-ready record of which labels belong to which dataset: per dataset its absolute
    data_dir, name, label_offset and identities (labels offset .. offset + identities - 1;
    each dataset's own label -> pid map is in its manifest)."""
    return [{"data_dir": os.path.abspath(s.data_dir), "dataset": s.manifest.get("dataset"),
             "label_offset": s.label_offset, "identities": s.identities} for s in sets]


def pk_dataset(data_dir: str | Sequence[str], num_identities: int = 32, num_instances: int = 4,
               height: int = 256, width: int = 128, seed: int = 0,
               augment_config: augment.AugmentConfig = augment.AugmentConfig(),
               num_replicas: int = 1, shuffle_buffer: int = 1024, cycle_length: int = 4,
               split: str = "train", manifest: dict[str, Any] | None = None,
               num_parallel_calls: int = tf.data.AUTOTUNE, start_epoch: int = 0,
               sampling: str = "identities", generated_dir: str | None = None,
               generated_per_batch: int = 0, views: int = 1) -> tf.data.Dataset:
    """An endless dataset of PK training batches (see the module docstring).

    Args:
      data_dir: output of `tools.build_tfrecords`, or several for joint training (labels of
        each offset by the identities of those before it: `training_sets`).
      num_identities: P, identities per replica batch.
      num_instances: K, images per identity.
      height, width: model input size.
      seed: seeds every random choice.
      augment_config: which augmentations run.
      num_replicas: replicas sharing the global batch.
      shuffle_buffer: identities shuffled together (a chunk of the pass).
      cycle_length: shards read at once.
      split: which split of the manifest to sample.
      manifest: the parsed manifest of a single `data_dir`, if already loaded.
      num_parallel_calls: parallelism of the decode/augment map.
      start_epoch: the first pass to produce. Every random choice of pass e depends only on
        (seed, e), so `start_epoch=e` yields exactly what a dataset started at 0 yields from
        its pass e on: a resumed training run sees the same batches as an uninterrupted one.
      sampling: joint training: one of SAMPLINGS (see the module docstring).
      generated_dir: a `tools.generate_gan_samples` output (its "generated" split).
      generated_per_batch: N generated images appended to each replica's P x K (0: none).
      views: V augmented views of every image (decoded once; view v's flip, crop and erasing
        seeded by `augment.view_seed(seed, v)`, so view 0 is the single-view batch), for
        students that see different views (`trainer.MutualTrainer`); not with generated ones.

    Returns:
      Elements (images [R*(P*K+N), height, width, 3], or [R*P*K, V, height, width, 3] when
      views > 1, labels [R*(P*K+N)] int64), where labels
      are the contiguous training labels (offset per dataset), -1 for generated images; per
      replica slice P*K real images identity-major, then N generated; R = num_replicas. Images
      are uint8 in [0, 255], or normalised float32 when `augment_config.normalize`.

    Raises:
      DatasetError: generated_per_batch > 0 and generated_dir has no "generated" split.
      ValueError: views < 1, or views > 1 with generated images.
    """
    if views < 1 or (views > 1 and generated_per_batch):
        raise ValueError(f"views={views}: needs >= 1, and 1 with generated images")
    sets = training_sets(data_dir, [manifest] if manifest else None)
    window = max(largest_shard(s.manifest, split) for s in sets)
    ids_per_batch = num_identities * num_replicas
    steps_per_epoch(pass_identities(sets, sampling), num_identities, num_replicas)
    parts = [(shard_files(s.data_dir, split, s.manifest), s.label_offset) for s in sets]
    if sampling == "equal":
        streams = [(files, [offset] * len(files), min(s.identities for s in sets))
                   for files, offset in parts]
    else:  # one stream of every dataset's shards
        streams = [([f for files, _ in parts for f in files],
                    [offset for files, offset in parts for _ in files], None)]

    generated = (generated_records(generated_dir, num_replicas * generated_per_batch,
                                   shuffle_buffer, seed) if generated_per_batch else None)

    def identities(epoch: tf.Tensor, stream: int, files: list[str], offsets: list[int],
                   count: int | None) -> tf.data.Dataset:
        """The identities of one stream's shards in a seeded shard order (`count` of them)."""
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(files)), tf.stack([pass_seed(seed, epoch, 1), stream]))
        shards = tf.data.Dataset.from_tensor_slices((tf.gather(files, order),
                                                     tf.gather(tf.constant(offsets, tf.int64),
                                                               order)))
        ids = shards.interleave(
            lambda path, offset: identities_of_shard(path, window).map(
                lambda label, pid, records: (label + offset, pid, records)),
            cycle_length=min(cycle_length, len(files)),
            num_parallel_calls=min(cycle_length, len(files)), deterministic=True)
        return ids if count is None else ids.take(count)

    def one_pass(epoch: tf.Tensor) -> tf.data.Dataset:
        if len(streams) == 1:
            ids = identities(epoch, 0, *streams[0])
        else:  # equal: datasets in turn, each stream as long as the smallest dataset
            ids = tf.data.Dataset.choose_from_datasets(
                [identities(epoch, i, *stream) for i, stream in enumerate(streams)],
                tf.data.Dataset.range(len(streams)).repeat(), stop_on_empty_dataset=True)

        def draw(index, identity):
            label, _, records = identity
            sample_seed = tf.stack([pass_seed(seed, epoch, 3), index])
            return sample_instances(records, num_instances, sample_seed), tf.fill([num_instances], label)

        def shuffle(index, chunk):
            records, labels = chunk
            order = tf.random.experimental.stateless_shuffle(
                tf.range(tf.shape(labels)[0]), tf.stack([pass_seed(seed, epoch, 2), index]))
            return tf.gather(records, order), tf.gather(labels, order)

        # Drawing K before the shuffle keeps K records per identity in the buffer, not all.
        # Chunks of `shuffle_buffer` identities are permuted with stateless ops: Dataset.shuffle
        # with a tensor seed breaks when the global seed is 0 (tf.random.set_seed(0)).
        ids = (ids.enumerate().map(draw).batch(shuffle_buffer).enumerate().map(shuffle)
               .unbatch())

        def seeds(index, batch):
            # Stateless seeds of the batch (erasing) and of each image (flip, crop), from the
            # pass and the batch's place in it, so no seed stream runs across passes.
            records, labels = batch
            n = tf.size(records, out_type=tf.int64)
            image_seeds = tf.stack([tf.fill([n], pass_seed(seed, epoch, 4)),
                                    index * n + tf.range(n)], axis=1)
            batch_seed = tf.stack([pass_seed(seed, epoch, 5), index])
            return (tf.reshape(records, [-1]), tf.reshape(labels, [-1]), image_seeds,
                    tf.tile(batch_seed[tf.newaxis], [n, 1]))

        batches = ids.batch(ids_per_batch, drop_remainder=True).enumerate().map(seeds)
        if generated is None:
            return batches
        return tf.data.Dataset.zip(batches, generated(epoch)).map(
            lambda real, extra: append_generated(real, extra, num_replicas))

    # Per image: decode, resize, flip, pad + crop (uint8 unless normalising in the pipeline).
    # Per batch: random erasing and normalisation, whose per-image scalar ops and float passes
    # would cost more than the work itself (see BUILD.md).

    def image(serialized, label, image_seed):
        encoded = tf.io.parse_single_example(
            serialized, {features.IMAGE: features.FEATURE_SPEC[features.IMAGE]})[features.IMAGE]
        # Geometric ops move 4x fewer bytes on uint8.
        dtype = tf.float32 if augment_config.normalize else tf.uint8
        pixels = augment.decode_and_resize(encoded, height, width, dtype)
        if views > 1:
            return augment.augment_views(pixels, image_seed, views, augment_config), label
        return augment.augment(pixels, image_seed, augment_config), label

    def finish(images, labels, batch_seeds):
        batch_seed = batch_seeds[0]
        if views > 1:
            images = augment.erase_views(images, batch_seed, augment_config)
        elif augment_config.erasing_probability > 0:
            images = augment.random_erasing_batch(
                images, batch_seed, augment_config.erasing_probability,
                augment_config.erasing_area, augment_config.erasing_aspect,
                augment_config.erasing_fill)
        if augment_config.normalize:
            images = _normalize_compiled(images)
        return images, labels

    batch_size = num_replicas * (num_identities * num_instances + generated_per_batch)
    images = tf.data.Dataset.counter(start=start_epoch).flat_map(one_pass).unbatch()
    batches = (images
               .map(lambda record, label, image_seed, batch_seed:
                    (*image(record, label, image_seed), batch_seed),
                    num_parallel_calls=num_parallel_calls, deterministic=True)
               .batch(batch_size, drop_remainder=True))
    # Multi-worker: every worker builds the same global batches and keeps its replicas' slices
    # (sharding by file would break the identity-major PK layout).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return (batches
            .map(finish, num_parallel_calls=num_parallel_calls, deterministic=True)
            .prefetch(tf.data.AUTOTUNE)
            .with_options(options))
