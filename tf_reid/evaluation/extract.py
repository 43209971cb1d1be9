"""Features of a query or gallery split: a model function run over an evaluation dataset.

`extract_features` runs a model function over an evaluation dataset (`tf_reid.data.eval_input`)
and returns NumPy arrays as `SplitFeatures`. A model function is anything that maps a uint8 image
batch [B, H, W, 3] to a dict with "global" [B, D] and "local" [B, h, c]: a Keras `AlignedReID`
through `keras_model_fn` (what `tf_reid.evaluate` and the evaluation during training use) or an
exported SavedModel's signature.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tf_reid.data.eval_input import eval_dataset
from tf_reid.evaluation.feature_choice import DEFAULT_FEATURE, FEATURES
from tf_reid.evaluation.features_file import FIELDS, SplitFeatures
from tfrecords_builder.manifest import read_manifest
from tfrecords_builder.records import DatasetError

ModelFn = Callable[[tf.Tensor], Mapping[str, Any]]


def feature_output(feature: str) -> str:
    """The model output key of a `FEATURES` name; a ValueError names an unknown one."""
    if feature not in FEATURES:
        raise ValueError(f"unknown feature {feature!r} (one of {', '.join(FEATURES)})")
    return FEATURES[feature]


def mirror_average(out: Mapping[str, Any], mirrored: Mapping[str, Any]) -> dict[str, Any]:
    """Flip test-time augmentation: the mean of an image's features and its mirror's, per key
    (before any normalisation, which the distance or the served embedding applies after)."""
    return {k: (out[k] + mirrored[k]) / 2 for k in out}


def embed(model: Callable[..., Mapping[str, tf.Tensor]], images: tf.Tensor,
          feature: str = DEFAULT_FEATURE, flip: bool = False) -> dict[str, tf.Tensor]:
    """uint8 images [B, H, W, 3] -> {"global": [B, D] the `feature`, "local": [B, h, c] (a
    model with a local branch)}, BatchNorm in inference mode, with `flip` the mean over each
    image and its horizontal mirror. What evaluation and the SavedModel both run."""
    key = feature_output(feature)

    def once(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        out = model(pixels, training=False)
        return {"global": out[key], **({"local": out["local"]} if "local" in out else {})}

    out = once(images)
    return mirror_average(out, once(tf.reverse(images, axis=[2]))) if flip else out


def keras_model_fn(model: Callable[..., Mapping[str, tf.Tensor]],
                   feature: str = DEFAULT_FEATURE) -> ModelFn:
    """The compiled `embed` of a Keras model without flip (`extract_features` mirrors the
    evaluation batches itself): uint8 images [B, H, W, 3] -> {"global": [B, D], "local":
    [B, h, c]}."""
    feature_output(feature)

    @tf.function(reduce_retracing=True)
    def model_fn(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return embed(model, images, feature)

    return model_fn


def _outputs(model_fn: ModelFn, images: tf.Tensor, with_local: bool) -> dict[str, np.ndarray]:
    out = model_fn(images)
    keys = ("global", "local") if with_local else ("global",)
    return {k: np.asarray(out[k], dtype=np.float32) for k in keys}


def extract_features(model_fn: ModelFn, dataset: Iterable[Mapping[str, Any]], flip: bool = False,
                     with_local: bool = True, progress: bool = True, description: str = "",
                     total: int | None = None) -> SplitFeatures:
    """Runs `model_fn` over every batch of `dataset` and gathers features and metadata.

    Args:
      model_fn: uint8 images [B, H, W, 3] -> {"global": [B, D], "local": [B, h, c], ...}.
      dataset: batches as `tf_reid.data.eval_input.eval_dataset` yields them ({"image", "pid",
        "camid", "path", "tracklet", "frame"}, and "image_flipped" when built with flip).
      flip: average each image's features with its horizontal mirror's (test-time
        augmentation); the mirror is "image_flipped" if the batch has it, else made here.
      with_local: also gather the local (stripe) features.
      progress: show a tqdm bar (images/s) on stderr when it is a terminal.
      description: the bar's label.
      total: images expected, for the bar's percentage.

    Returns:
      Features of every image, in dataset order.

    Raises:
      ValueError: the dataset is empty.
    """
    parts: dict[str, list[np.ndarray]] = {k: [] for k in FIELDS}
    with tqdm(total=total, desc=description or None, unit="img",
              disable=None if progress else True, leave=False) as bar:
        for batch in dataset:
            out = _outputs(model_fn, batch["image"], with_local)
            if flip:
                mirror = batch.get("image_flipped")
                if mirror is None:
                    mirror = tf.reverse(batch["image"], axis=[2])
                out = mirror_average(out, _outputs(model_fn, mirror, with_local))
            parts["global_"].append(out["global"])
            if with_local:
                parts["local"].append(out["local"])
            for field, key in (("pids", "pid"), ("camids", "camid"), ("tracklets", "tracklet"),
                               ("frames", "frame")):
                parts[field].append(np.asarray(batch[key], dtype=np.int64))
            paths = np.asarray(batch["path"])
            parts["paths"].append(np.array([p.decode() if isinstance(p, bytes) else str(p)
                                            for p in paths], dtype=str))
            bar.update(len(paths))
    if not parts["global_"]:
        raise ValueError("the dataset yielded no images")
    joined = {k: np.concatenate(v) for k, v in parts.items() if v}
    joined.setdefault("local", None)
    return SplitFeatures(**joined)


def extract_split(model_fn: ModelFn, data_dir: str, split: str, height: int, width: int,
                  batch_size: int = 128, flip: bool = False, with_local: bool = True,
                  progress: bool = True) -> SplitFeatures:
    """`extract_features` over one split of a `tools.build_tfrecords` output.

    Raises:
      DatasetError: `data_dir` has no manifest, or the manifest no such split.
    """
    manifest = read_manifest(data_dir)
    if split not in manifest.get("splits", {}):
        raise DatasetError(f"{data_dir}: no '{split}' split in manifest.json")
    dataset = eval_dataset(data_dir, split, height, width, batch_size, flip=flip,
                           manifest=manifest)
    return extract_features(model_fn, dataset, flip=flip, with_local=with_local,
                            progress=progress, description=split,
                            total=manifest["splits"][split].get("images"))
