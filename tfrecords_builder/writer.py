"""Identity-sharded TFRecord writer: every image of an identity is contiguous inside one shard.

Output layout (`OUT/`):
  train-00000-of-00004.tfrecord ...   query-*.tfrecord   gallery-*.tfrecord   manifest.json
  (and multi_query-*.tfrecord when the dataset has that optional split; GAN samples are an
  output of generated-*.tfrecord alone)

The run writes into `OUT.partial-<pid>` and renames it to `OUT` only when everything,
manifest included, is on disk (`atomic.folder`), so an interrupted run leaves nothing that looks
complete; the next run deletes what a killed one left.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tfrecords_builder import atomic, features, images
from tfrecords_builder.manifest import write_manifest
from tfrecords_builder.records import (GENERATED, OPTIONAL_SPLITS, SPLITS, DatasetError,
                                      ParsedDataset, Record, sort_key)

KIND = "tfrecords"  # the output's marker (`atomic.check_target`)


def plan_shards(records: Sequence[Record], records_per_shard: int) -> list[list[Record]]:
    """Packs whole identities, in pid order, into shards of about `records_per_shard` records.

    A shard is closed when the next identity would take it past the target; an identity larger
    than the target gets a shard of its own (identities are never split).

    Args:
      records: the records of one split, any order.
      records_per_shard: target number of records per shard, >= 1.

    Returns:
      Shards as lists of records, each identity contiguous in exactly one shard.
    """
    if records_per_shard < 1:
        raise ValueError(f"records_per_shard must be >= 1, got {records_per_shard}")
    by_pid: dict[int, list[Record]] = collections.defaultdict(list)
    for record in sorted(records, key=sort_key):
        by_pid[record.pid].append(record)
    shards: list[list[Record]] = []
    current: list[Record] = []
    for pid in sorted(by_pid):
        group = by_pid[pid]
        if current and len(current) + len(group) > records_per_shard:
            shards.append(current)
            current = []
        current.extend(group)
    if current:
        shards.append(current)
    return shards


def shard_name(split: str, index: int, count: int) -> str:
    """'train-00003-of-00012.tfrecord'."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def split_counts(records: Sequence[Record]) -> dict[str, int]:
    """Image, identity and camera counts (and tracklets for video) of one split."""
    counts = {"images": len(records), "identities": len({r.pid for r in records}),
              "cameras": len({r.camid for r in records})}
    if any(r.tracklet >= 0 for r in records):
        counts["tracklets"] = len({r.tracklet for r in records})
    return counts


def load_record(reader: Callable[[str, str], bytes], source: str,
                record: Record) -> tuple[bytes, images.ImageInfo]:
    """Reads a record's bytes and checks they decode; raises DatasetError naming the file."""
    name = os.path.join(source, record.path)
    try:
        data = reader(source, record.path)
    except OSError as e:
        raise DatasetError(f"{name}: cannot read ({e.strerror or e})") from None
    return data, images.probe(data, name)


def load_records(parsed: ParsedDataset, records: Sequence[Record], num_parallel: int | None,
                 chunk: int = 64) -> Iterator[tuple[bytes, images.ImageInfo] | DatasetError]:
    """For each record, in order: (bytes, ImageInfo), or the DatasetError saying what is wrong.

    Reading stays in Python (any `parsed.reader`), `chunk` records per generator call; decoding,
    the expensive part, runs in a tf.data map over the cores. Eager TF ops hold the GIL, so
    threads do not scale, and per-element iteration costs more than the decode (both measured
    here), hence the chunks in and out. A record whose read or decode fails is dropped by
    `ignore_errors`; its index is missing from the stream, and only that record is re-read
    eagerly to get the message.
    """
    def read():
        for start in range(0, len(records), chunk):
            data = []
            for record in records[start:start + chunk]:
                try:
                    data.append(parsed.reader(parsed.source, record.path))
                except OSError:
                    data.append(b"")  # fails to decode below; load_record names the error
            yield np.arange(start, start + len(data)), np.array(data, dtype=object)

    def decode(index, data):
        shape = tf.shape(tf.io.decode_image(data, channels=3, expand_animations=False))
        return index, data, shape[0], shape[1]

    signature = (tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.string))
    stream = (tf.data.Dataset.from_generator(read, output_signature=signature)
              .unbatch()
              .map(decode, num_parallel_calls=num_parallel or tf.data.AUTOTUNE, deterministic=True)
              .ignore_errors()
              .batch(chunk)
              .prefetch(2))
    expected = 0
    for batch in stream.as_numpy_iterator():
        for index, data, height, width in zip(*batch):
            for bad in range(expected, int(index)):
                yield _error_of(parsed, records[bad])
            image_format = images.sniff_format(data)
            if image_format is None:
                yield _error_of(parsed, records[int(index)])
            else:
                yield data, images.ImageInfo(image_format, int(height), int(width))
            expected = int(index) + 1
    for bad in range(expected, len(records)):
        yield _error_of(parsed, records[bad])


def _error_of(parsed: ParsedDataset,
              record: Record) -> tuple[bytes, images.ImageInfo] | DatasetError:
    try:
        return load_record(parsed.reader, parsed.source, record)
    except DatasetError as e:
        return e


def _check_splits(parsed: ParsedDataset) -> dict[str, tuple[Record, ...]]:
    """The records of every split to write: each of SPLITS (none may be empty; none at all for
    GAN samples, GENERATED records only), then each of OPTIONAL_SPLITS that has records."""
    alone = bool(parsed.records) and all(r.split == GENERATED for r in parsed.records)
    parts = {} if alone else {name: parsed.of(name) for name in SPLITS}
    for name, records in parts.items():
        if not records:
            raise DatasetError(f"{parsed.source}: empty split '{name}' (no {name} images found)")
    parts.update((name, records) for name in OPTIONAL_SPLITS if (records := parsed.of(name)))
    return parts


def build(parsed: ParsedDataset, output_dir: str, records_per_shard: int = 1000,
          overwrite: bool = False, skip_bad_images: bool = False, num_workers: int | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Writes `parsed` as identity-sharded TFRecords plus `manifest.json` into `output_dir`.

    Args:
      parsed: what a dataset parser returned.
      output_dir: the folder to create.
      records_per_shard: target shard size in records.
      overwrite: replace an existing `output_dir` (only an earlier output of `build`).
      skip_bad_images: list undecodable images in the manifest instead of failing.
      num_workers: parallel image decoders (default: tf.data's autotuning over the cores).
      progress: show a progress bar on stderr (when it is a terminal).

    Returns:
      The manifest (also written to `output_dir/manifest.json`).

    Raises:
      DatasetError: one line naming the file and the problem.
      atomic.OutputError: `output_dir` exists and may not be replaced, or holds the input.
    """
    output_dir = os.path.abspath(output_dir)
    atomic.check_target(output_dir, overwrite, [parsed.source], KIND)
    plans = {name: plan_shards(records, records_per_shard)
             for name, records in _check_splits(parsed).items()}
    with atomic.folder(output_dir, kind=KIND) as partial:
        manifest = _write_partial(parsed, plans, partial, skip_bad_images, num_workers, progress)
        manifest["options"] = {"records_per_shard": records_per_shard,
                               "skip_bad_images": skip_bad_images}
        write_manifest(partial, manifest)
    return manifest


def _write_partial(parsed: ParsedDataset, plans: dict[str, list[list[Record]]], partial: str,
                   skip_bad_images: bool, num_workers: int | None,
                   progress: bool) -> dict[str, Any]:
    ordered = [r for name in plans for shard in plans[name] for r in shard]
    label_map: dict[int, int] = {}
    bad: list[dict[str, str]] = []
    summary: dict[str, Any] = {}
    with tqdm(total=len(ordered), desc=f"{parsed.dataset} -> tfrecords", unit="img",
              disable=None if progress else True, leave=False) as bar:
        loaded = load_records(parsed, ordered, num_workers)
        for name in plans:
            kept: list[Record] = []
            shards = []
            for index, shard in enumerate(plans[name]):
                file = shard_name(name, index, len(plans[name]))
                count = 0
                with tf.io.TFRecordWriter(os.path.join(partial, file)) as writer:
                    for record in shard:
                        result = next(loaded)
                        bar.update()
                        if isinstance(result, DatasetError):
                            if not skip_bad_images:
                                raise result
                            bad.append({"path": record.path, "error": str(result)})
                            continue
                        data, info = result
                        label = label_map.setdefault(record.pid, len(label_map)) \
                            if name == "train" else -1
                        writer.write(features.serialize(
                            data, info.format, info.height, info.width, record.path, record.pid,
                            label, record.camid, record.tracklet, record.frame))
                        kept.append(record)
                        count += 1
                shards.append({"file": file, "records": count,
                               "sha256": atomic.sha256_file(os.path.join(partial, file))})
            if not kept:
                raise DatasetError(f"{parsed.source}: empty split '{name}' "
                                   "(every image was skipped as bad)")
            summary[name] = {**split_counts(kept), "shards": shards}
    return {
        "format_version": features.FORMAT_VERSION,
        "dataset": parsed.dataset,
        "source": os.path.abspath(parsed.source),
        "protocol": dict(parsed.protocol),
        "splits": summary,
        "num_classes": len(label_map),
        "label_map": {str(pid): label for pid, label in label_map.items()},
        "missing": list(parsed.missing),
        "bad_images": bad,
    }
