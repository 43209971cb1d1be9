"""The TFRecord feature keys, defined once: the writer serialises with them, readers parse with them.

Every record is one `tf.train.Example` holding one image as stored on disk (no re-encoding).
`label` is the contiguous training label 0..C-1 (-1 outside the train split); `pid` is the
dataset's own identity number; `camid` is 0-based; `tracklet` and `frame` are -1 for image
datasets.
"""

from __future__ import annotations

import tensorflow as tf

FORMAT_VERSION = 1

IMAGE = "image/encoded"
FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
PATH = "image/path"
PID = "pid"
LABEL = "label"
CAMID = "camid"
TRACKLET = "tracklet"
FRAME = "frame"

FEATURE_SPEC = {
    IMAGE: tf.io.FixedLenFeature([], tf.string),
    FORMAT: tf.io.FixedLenFeature([], tf.string),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    WIDTH: tf.io.FixedLenFeature([], tf.int64),
    PATH: tf.io.FixedLenFeature([], tf.string),
    PID: tf.io.FixedLenFeature([], tf.int64),
    LABEL: tf.io.FixedLenFeature([], tf.int64),
    CAMID: tf.io.FixedLenFeature([], tf.int64),
    TRACKLET: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    FRAME: tf.io.FixedLenFeature([], tf.int64, default_value=-1),
}


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def serialize(image: bytes, image_format: str, height: int, width: int, path: str, pid: int,
              label: int, camid: int, tracklet: int = -1, frame: int = -1) -> bytes:
    """One serialised `tf.train.Example` with the keys above."""
    feature = {
        IMAGE: _bytes(image), FORMAT: _bytes(image_format.encode()), HEIGHT: _int(height),
        WIDTH: _int(width), PATH: _bytes(path.encode()), PID: _int(pid), LABEL: _int(label),
        CAMID: _int(camid), TRACKLET: _int(tracklet), FRAME: _int(frame),
    }
    # Deterministic: map entries in key order, so the same records give the same shard bytes
    # (and manifest checksums) in every process.
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
        deterministic=True)


def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one serialised example (scalar string tensor) into a dict of scalar tensors."""
    return tf.io.parse_single_example(serialized, FEATURE_SPEC)
