"""Reading what `tools.build_tfrecords` wrote: the manifest's shard lists and parsed records."""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

from tfrecords_builder import features
from tfrecords_builder.manifest import read_manifest


def shard_files(data_dir: str, split: str, manifest: dict[str, Any] | None = None) -> list[str]:
    """Paths of one split's shards, in the manifest's (pid) order."""
    manifest = manifest or read_manifest(data_dir)
    return [os.path.join(data_dir, s["file"]) for s in manifest["splits"][split]["shards"]]


def largest_shard(manifest: dict[str, Any], split: str) -> int:
    """Records in the split's largest shard: an upper bound on one identity's images."""
    return max(s["records"] for s in manifest["splits"][split]["shards"])


def parse_identity(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(pid, label) of one serialised record, without touching the image bytes."""
    spec = {k: features.FEATURE_SPEC[k] for k in (features.PID, features.LABEL)}
    parsed = tf.io.parse_single_example(serialized, spec)
    return parsed[features.PID], parsed[features.LABEL]
