"""Evaluation input: query or gallery in a fixed order, no augmentation."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tf_reid.data import augment
from tf_reid.data.tfrecords import shard_files
from tfrecords_builder import features

# Keys of an evaluation element, next to "image" (and "image_flipped" with flip TTA).
METADATA = {"pid": features.PID, "camid": features.CAMID, "path": features.PATH,
            "tracklet": features.TRACKLET, "frame": features.FRAME}


def eval_dataset(data_dir: str, split: str, height: int = 256, width: int = 128,
                 batch_size: int = 128, flip: bool = False, normalize: bool = False,
                 manifest: dict[str, Any] | None = None,
                 num_parallel_calls: int = tf.data.AUTOTUNE) -> tf.data.Dataset:
    """Batches of one split in manifest order (shards in order, records in shard order).

    Args:
      data_dir: output of `tools.build_tfrecords`.
      split: "query" or "gallery" (or "train").
      height, width: model input size.
      batch_size: images per batch; the last batch may be smaller.
      flip: also yield the horizontally flipped image (test-time augmentation).
      normalize: yield normalised float32 instead of uint8 (by default the model normalises,
        as in training: see `tf_reid.data.pk`).
      manifest: the parsed manifest, if already loaded.
      num_parallel_calls: parallelism of the decode map (order is kept).

    Returns:
      Elements {"image": [B, height, width, 3] uint8 (float32 if `normalize`), "pid": [B] int64,
      "camid": [B] int64, "path": [B] string, "tracklet": [B] int64, "frame": [B] int64}
      plus "image_flipped" [B, height, width, 3] when `flip`.
    """
    def element(serialized):
        parsed = tf.io.parse_single_example(serialized, features.FEATURE_SPEC)
        image = augment.decode_and_resize(parsed[features.IMAGE], height, width,
                                          tf.float32 if normalize else tf.uint8)
        image = augment.normalize(image) if normalize else image
        out = {"image": image, **{k: parsed[v] for k, v in METADATA.items()}}
        if flip:
            out["image_flipped"] = tf.reverse(image, axis=[1])
        return out

    return (tf.data.TFRecordDataset(shard_files(data_dir, split, manifest))
            .map(element, num_parallel_calls=num_parallel_calls, deterministic=True)
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE))
