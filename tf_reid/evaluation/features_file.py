"""Features of one query or gallery split, and the .npz file that keeps them.

`SplitFeatures` holds one split's per-image features and metadata, in dataset order. A features
file (written by `tf_reid.evaluate --save_features` and `tools.embed`, read by
`tf_reid.evaluate --features`, `tools.visualize_ranks`, `tools.build_index` and `tools.search`)
is one .npz of:

  "<split>/<field>"  every field of each stored split ("query/global_", "gallery/paths", ...;
                     no "<split>/local" when local is None)
  "metadata"         a JSON string: {"format_version": FILE_VERSION, "splits": {name: the
                     TFRecords split it came from}} plus what the writer adds ("data_dir", ...)

It loads without pickle and with NumPy alone, so the search commands read it without importing
TensorFlow. A file of another format_version is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import zipfile
from typing import Any, Iterator, Mapping

import numpy as np

from tfrecords_builder import atomic

FILE_VERSION = 1
SPLITS = ("query", "gallery")  # the splits an evaluation compares, in that order
FIELDS = ("global_", "local", "pids", "camids", "paths", "tracklets", "frames")
_METADATA = "metadata"
_ZIP_MAGIC = b"PK\x03\x04"  # an .npz is a zip archive


class FeaturesFileError(ValueError):
    """A features file that cannot be read as asked; the message is one line naming it."""


@dataclasses.dataclass(frozen=True, eq=False)
class SplitFeatures:
    """Per-image features and metadata of one split, in dataset order (N images).

    Attributes:
      global_: [N, D] float32 global features.
      local: [N, h, c] float32 stripe features, or None when not extracted.
      pids: [N] int64 identities.
      camids: [N] int64 camera ids.
      paths: [N] str, each image's path as stored in the TFRecords (or on disk).
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


def save(path: str, splits: Mapping[str, SplitFeatures],
         metadata: Mapping[str, Any] | None = None) -> None:
    """Writes the features of each named split (e.g. {"query": ..., "gallery": ...}) to `path`.

    Args:
      path: the .npz to write (replaced if it exists).
      splits: split name -> its features.
      metadata: JSON-ready extras stored beside "format_version" and "splits" (e.g.
        "data_dir", so the images can be found again in the TFRecords).
    """
    arrays: dict[str, np.ndarray] = {}
    for split, features in splits.items():
        for field in FIELDS:
            value = getattr(features, field)
            if value is not None:
                arrays[f"{split}/{field}"] = value
    meta = {"format_version": FILE_VERSION, "splits": {name: name for name in splits},
            **(metadata or {})}
    arrays[_METADATA] = np.array(json.dumps(meta, sort_keys=True))
    with atomic.file(path) as partial, open(partial, "wb") as f:
        np.savez(f, **arrays)


@contextlib.contextmanager
def _open(path: str) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(the open NpzFile, its metadata) of a features file of this FILE_VERSION.

    Raises:
      FeaturesFileError: no such file, not a features file, or another format_version.
    """
    if not os.path.isfile(path):
        raise FeaturesFileError(f"{path}: no such features file")
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if head != _ZIP_MAGIC:  # else NumPy would talk of pickles about any garbage
        raise FeaturesFileError(f"{path}: not a features file "
                                f"({'empty' if not head else 'not an .npz archive'})")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise FeaturesFileError(f"{path}: not a features file ({e})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise FeaturesFileError(f"{path}: not a features file (one array, not an .npz)")
    with data:
        if _METADATA not in data.files:
            raise FeaturesFileError(f"{path}: not a features file (no '{_METADATA}' entry)")
        try:
            metadata = json.loads(str(data[_METADATA]))
        except ValueError as e:
            raise FeaturesFileError(f"{path}: unreadable metadata ({e})") from None
        version = metadata.get("format_version") if isinstance(metadata, dict) else None
        if version != FILE_VERSION:
            raise FeaturesFileError(f"{path}: features file format_version {version!r}, but this "
                                    f"tf_reid reads version {FILE_VERSION}; write it again "
                                    "(tf_reid.evaluate --save_features or tools.embed)")
        yield data, metadata


def load(path: str, split: str, with_local: bool = True) -> SplitFeatures:
    """The features of one split of a file `save` wrote.

    Args:
      path: the .npz.
      split: e.g. "query" or "gallery".
      with_local: also read the stripe features (when stored); False leaves local None.

    Raises:
      FeaturesFileError: as `_open`, or the file has no such split.
    """
    with _open(path) as (data, metadata):
        if split not in metadata.get("splits", {}):
            raise FeaturesFileError(f"{path}: no '{split}' split (it holds "
                                    f"{', '.join(metadata.get('splits', {})) or 'none'})")
        values = {}
        for field in FIELDS:
            key = f"{split}/{field}"
            if field == "local":
                values[field] = data[key] if with_local and key in data.files else None
            elif key not in data.files:
                raise FeaturesFileError(f"{path}: no '{key}' array")
            else:
                values[field] = data[key]
        try:
            return SplitFeatures(**values)
        except ValueError as e:
            raise FeaturesFileError(f"{path}: {split}: {e}") from None


def load_metadata(path: str) -> dict[str, Any]:
    """The metadata dict `save` stored in `path` ("format_version", "splits", extras).

    Raises:
      FeaturesFileError: as `_open`.
    """
    with _open(path) as (_, metadata):
        return metadata
