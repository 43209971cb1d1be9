"""Features of a query or gallery split, their retrieval metrics, and a file to keep them in.

`extract_features` runs a model function over an evaluation dataset (`tf_reid.data.eval_input`)
and returns NumPy arrays; `evaluate_features` ranks the gallery for every query with the global
distance and, optionally, AlignedReID's global + local distance (Zhang et al. 2017,
arXiv:1711.08184, Sec. 4), each optionally k-reciprocal re-ranked (Zhong et al., CVPR 2017), and
returns JSON-ready numbers. A model function is anything that maps a uint8 image batch
[B, H, W, 3] to a dict with "global" [B, D] and "local" [B, h, c]: a Keras `AlignedReID`
(`keras_model_fn`) or, later, an exported SavedModel's signature.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tf_reid.data.eval_input import eval_dataset
from tf_reid.evaluation import matching, metrics, protocols, reranking
from tfrecords_builder.manifest import read_manifest
from tfrecords_builder.records import DatasetError

ModelFn = Callable[[tf.Tensor], Mapping[str, Any]]

RANKS = (1, 5, 10)
# Keys of each entry of `evaluate_features`' result.
METRIC_KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP", "num_query", "skipped_queries")
# Distances `evaluate_features` may report, in table order.
VARIANTS = ("global", "global+rerank", "global+local", "global+local+rerank")
FILE_VERSION = 1
_FIELDS = ("global_", "local", "pids", "camids", "paths", "tracklets", "frames")


@dataclasses.dataclass(frozen=True, eq=False)
class Features:
    """Per-image features and metadata of one split, in dataset order (N images).

    Attributes:
      global_: [N, D] float32 global features.
      local: [N, h, c] float32 stripe features, or None when not extracted.
      pids: [N] int64 identities.
      camids: [N] int64 camera ids.
      paths: [N] str, each image's path as stored in the TFRecords.
      tracklets: [N] int64 tracklet ids (-1 for image datasets).
      frames: [N] int64 frame indices (-1 for image datasets).
    """

    global_: np.ndarray
    local: np.ndarray | None
    pids: np.ndarray
    camids: np.ndarray
    paths: np.ndarray
    tracklets: np.ndarray
    frames: np.ndarray

    def __post_init__(self):
        n = self.global_.shape[0]
        if self.global_.ndim != 2:
            raise ValueError(f"global_ must be [N, D], got shape {self.global_.shape}")
        if self.local is not None and (self.local.ndim != 3 or self.local.shape[0] != n):
            raise ValueError(f"local must be [N={n}, h, c], got shape {self.local.shape}")
        for name in ("pids", "camids", "paths", "tracklets", "frames"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {getattr(self, name).shape}")

    def __len__(self) -> int:
        return self.global_.shape[0]


def keras_model_fn(model: Callable[..., Mapping[str, tf.Tensor]]) -> ModelFn:
    """A compiled inference function of a Keras model: images -> {"global", "local"}."""
    @tf.function(reduce_retracing=True)
    def model_fn(images: tf.Tensor) -> dict[str, tf.Tensor]:
        out = model(images, training=False)
        return {"global": out["global"], "local": out["local"]}

    return model_fn


def _outputs(model_fn: ModelFn, images: tf.Tensor, with_local: bool) -> dict[str, np.ndarray]:
    out = model_fn(images)
    keys = ("global", "local") if with_local else ("global",)
    return {k: np.asarray(out[k], dtype=np.float32) for k in keys}


def extract_features(model_fn: ModelFn, dataset: Iterable[Mapping[str, Any]], flip: bool = False,
                     with_local: bool = True, progress: bool = True, description: str = "",
                     total: int | None = None) -> Features:
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
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _FIELDS}
    with tqdm(total=total, desc=description or None, unit="img",
              disable=None if progress else True, leave=False) as bar:
        for batch in dataset:
            out = _outputs(model_fn, batch["image"], with_local)
            if flip:
                mirror = batch.get("image_flipped")
                if mirror is None:
                    mirror = tf.reverse(batch["image"], axis=[2])
                mirrored = _outputs(model_fn, mirror, with_local)
                out = {k: (out[k] + mirrored[k]) / np.float32(2) for k in out}
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
    return Features(**joined)


def extract_split(model_fn: ModelFn, data_dir: str, split: str, height: int, width: int,
                  batch_size: int = 128, flip: bool = False, with_local: bool = True,
                  progress: bool = True) -> Features:
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


def pool_tracklets(features: Features, method: str = "mean") -> Features:
    """One item per tracklet: its frames' features pooled (the MARS video protocol).

    Global and local features are pooled element-wise by `protocols.pool_tracklets` (Zheng et
    al., ECCV 2016: the tracklet feature is the mean of its frame features; "max" optional).
    Tracklets come out in order of first appearance, each with the path of its first frame and
    frame -1.

    Args:
      features: frame features of one split; every frame has a tracklet id (>= 0).
      method: "mean" or "max".

    Returns:
      Features of T tracklets.

    Raises:
      ValueError: a frame has no tracklet (an image dataset), or a tracklet mixes pids/cameras.
    """
    if (features.tracklets < 0).any():
        raise ValueError("tracklet pooling needs video frames; these images have no tracklet "
                         "(tracklet -1)")
    pooled, pids, camids, tracklets = protocols.pool_tracklets(
        features.global_, features.tracklets, features.pids, features.camids, method)
    local = None
    if features.local is not None:
        n, h, c = features.local.shape
        local = protocols.pool_tracklets(features.local.reshape(n, h * c), features.tracklets,
                                         features.pids, features.camids, method)[0]
        local = local.reshape(-1, h, c)
    # pool_tracklets orders tracklets by first appearance, i.e. by their first frame's index.
    first = np.sort(np.unique(features.tracklets, return_index=True)[1])
    return Features(global_=pooled, local=local, pids=pids, camids=camids,
                    paths=features.paths[first], tracklets=tracklets,
                    frames=np.full(len(first), -1, np.int64))


def distance_matrices(query: Features, gallery: Features, local: bool = False,
                      rerank: bool = False, normalize: bool = True, local_weight: float = 1.0,
                      k1: int = 20, k2: int = 6, lambda_value: float = 0.3
                      ) -> dict[str, np.ndarray]:
    """Query x gallery distances [Q, G] of every requested variant, keyed as in `VARIANTS`.

    Args:
      query, gallery: features of the two splits.
      local: add "global+local": global + local_weight * aligned local distance
        (`tf_reid.evaluation.matching`).
      rerank: add the k-reciprocal re-ranked version of each ("...+rerank"). For global + local
        this builds the Q x Q and G x G combined distances (G x G aligned distances: slow and
        G^2 x 4 bytes on a large gallery).
      normalize: L2-normalise the global features (the inference descriptor of
        `AlignedReID.embed`); stripes are always normalised, as in `matching.local_distances`.
      local_weight: weight of the local distance.
      k1, k2, lambda_value: re-ranking parameters (Zhong et al. 2017).

    Returns:
      {name: [Q, G] float32}, in `VARIANTS` order.
    """
    def global_dist(a: Features, b: Features) -> np.ndarray:
        return matching.global_distances(a.global_, b.global_, normalize)

    def combined_dist(a: Features, b: Features) -> np.ndarray:
        return matching.combined_distances(global_dist(a, b),
                                           matching.local_distances(a.local, b.local),
                                           local_weight)

    out = {"global": global_dist(query, gallery)}
    if rerank:
        q, g = query.global_, gallery.global_
        if normalize:
            q, g = matching.l2_normalize(q), matching.l2_normalize(g)
        out["global+rerank"] = reranking.re_ranking_features(q, g, k1, k2, lambda_value)
    if local:
        if query.local is None or gallery.local is None:
            raise ValueError("global+local needs local features; extract them with "
                             "with_local=True")
        out["global+local"] = combined_dist(query, gallery)
        if rerank:
            out["global+local+rerank"] = reranking.re_ranking(
                out["global+local"], combined_dist(query, query), combined_dist(gallery, gallery),
                k1, k2, lambda_value)
    return {name: out[name] for name in VARIANTS if name in out}


def rank_metrics(distmat: np.ndarray, query: Features, gallery: Features, max_rank: int = 50,
                 ap_mode: str = "standard") -> dict[str, float | int]:
    """Rank-1/5/10, mAP and mINP (fractions in [0, 1]) of one [Q, G] distance matrix.

    Same-pid same-camera gallery items are junk for a query (`metrics.evaluate_rank`); queries
    with no match left are skipped and counted in "skipped_queries".
    """
    if max_rank < max(RANKS):
        raise ValueError(f"max_rank must be >= {max(RANKS)}, got {max_rank}")
    details = metrics.evaluate_rank(distmat, query.pids, gallery.pids, query.camids,
                                    gallery.camids, max_rank=max_rank, ap_mode=ap_mode,
                                    return_details=True)
    result: dict[str, float | int] = {f"rank{k}": float(details["cmc"][k - 1]) for k in RANKS}
    result.update(mAP=float(details["mAP"]), mINP=float(details["mINP"]),
                  num_query=int(distmat.shape[0]), skipped_queries=int(details["num_skipped"]))
    return result


def evaluate_features(query: Features, gallery: Features, local: bool = False,
                      rerank: bool = False, max_rank: int = 50, normalize: bool = True,
                      local_weight: float = 1.0, k1: int = 20, k2: int = 6,
                      lambda_value: float = 0.3, ap_mode: str = "standard"
                      ) -> dict[str, dict[str, float | int]]:
    """Retrieval metrics of query against gallery for every requested distance.

    Args: as `distance_matrices` and `rank_metrics`.

    Returns:
      {variant: {"rank1", "rank5", "rank10", "mAP", "mINP" (fractions), "num_query",
      "skipped_queries" (ints)}} for "global", and "global+local" with `local`, each also
      re-ranked ("global+rerank", "global+local+rerank") with `rerank`. Plain Python numbers.
    """
    distances = distance_matrices(query, gallery, local, rerank, normalize, local_weight, k1, k2,
                                  lambda_value)
    return {name: rank_metrics(d, query, gallery, max_rank, ap_mode)
            for name, d in distances.items()}


def metrics_table(results: Mapping[str, Mapping[str, float | int]]) -> list[str]:
    """`evaluate_features`' result as printable lines, metrics in %."""
    columns = [("rank-1", "rank1"), ("rank-5", "rank5"), ("rank-10", "rank10"), ("mAP", "mAP"),
               ("mINP", "mINP")]
    width = max(len("distance"), *(len(name) for name in results))
    lines = [f"{'distance':{width}}" + "".join(f" {title:>8}" for title, _ in columns)]
    for name, row in results.items():
        lines.append(f"{name:{width}}" + "".join(f" {100 * row[key]:8.2f}" for _, key in columns))
    # Junk and matches depend on pids and cameras only, so every row skips the same queries.
    first = next(iter(results.values()))
    lines.append(f"queries: {first['num_query']}, skipped (no cross-camera match): "
                 f"{first['skipped_queries']}")
    return lines


def save_features(path: str, query: Features, gallery: Features,
                  metadata: Mapping[str, Any] | None = None) -> None:
    """Writes query and gallery features to one .npz, through a temporary name.

    Arrays are stored as "<split>/<field>" ("query/global_", "gallery/paths", ...; no "local"
    when it is None) plus "metadata", a JSON string ({"format_version", "splits": {"query":
    "query", "gallery": "gallery"}} and whatever `metadata` adds, e.g. "data_dir"), so the
    images can be found again in the TFRecords. Loads without pickle.
    """
    arrays: dict[str, np.ndarray] = {}
    for split, features in (("query", query), ("gallery", gallery)):
        for field in _FIELDS:
            value = getattr(features, field)
            if value is not None:
                arrays[f"{split}/{field}"] = value
    meta = {"format_version": FILE_VERSION, "splits": {"query": "query", "gallery": "gallery"},
            **(metadata or {})}
    arrays["metadata"] = np.array(json.dumps(meta, sort_keys=True))
    partial = f"{path}.partial-{os.getpid()}"
    try:
        with open(partial, "wb") as f:
            np.savez(f, **arrays)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def load_features(path: str) -> tuple[Features, Features]:
    """(query, gallery) as written by `save_features`."""
    with np.load(path, allow_pickle=False) as data:
        def split(name: str) -> Features:
            values = {f: data[f"{name}/{f}"] if f"{name}/{f}" in data.files else None
                      for f in _FIELDS}
            return Features(**values)
        return split("query"), split("gallery")


def load_metadata(path: str) -> dict[str, Any]:
    """The metadata dict `save_features` stored in `path`."""
    with np.load(path, allow_pickle=False) as data:
        return json.loads(str(data["metadata"]))
