"""Reading what `tools.build_tfrecords` wrote: the manifest's shard lists and parsed records.

Every shard is checked against the manifest's sha256 before its first use in a process: a
truncated or damaged shard is one error naming it, instead of a DataLossError deep in tf.data
(perhaps an epoch into a run). A shard is hashed once per process while its size and mtime stay
the same.
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

from tfrecords_builder import atomic, features
from tfrecords_builder.manifest import read_manifest
from tfrecords_builder.records import DatasetError

_checked: set[tuple[str, int, int, str]] = set()  # (path, size, mtime_ns, sha256) seen intact


def check_shard(path: str, sha256: str) -> None:
    """Raises a DatasetError naming `path` unless its bytes have the manifest's `sha256`."""
    try:
        stat = os.stat(path)
    except OSError as e:
        raise DatasetError(f"{path}: shard listed in the manifest cannot be read "
                           f"({e.strerror})") from None
    key = (path, stat.st_size, stat.st_mtime_ns, sha256)
    if key in _checked:
        return
    if atomic.sha256_file(path) != sha256:
        raise DatasetError(f"{path}: sha256 differs from the manifest's (the shard is truncated "
                           "or damaged; rebuild the output with tools.build_tfrecords)")
    _checked.add(key)


def shard_files(data_dir: str, split: str, manifest: dict[str, Any] | None = None) -> list[str]:
    """Paths of one split's shards, in the manifest's (pid) order, each checked (`check_shard`).

    Raises:
      DatasetError: a shard is missing or its bytes differ from the manifest's checksum.
    """
    manifest = manifest or read_manifest(data_dir)
    shards = manifest["splits"][split]["shards"]
    for shard in shards:
        check_shard(os.path.join(data_dir, shard["file"]), shard["sha256"])
    return [os.path.join(data_dir, s["file"]) for s in shards]


def largest_shard(manifest: dict[str, Any], split: str) -> int:
    """Records in the split's largest shard: an upper bound on one identity's images."""
    return max(s["records"] for s in manifest["splits"][split]["shards"])


def parse_identity(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(pid, label) of one serialised record, without touching the image bytes."""
    spec = {k: features.FEATURE_SPEC[k] for k in (features.PID, features.LABEL)}
    parsed = tf.io.parse_single_example(serialized, spec)
    return parsed[features.PID], parsed[features.LABEL]
