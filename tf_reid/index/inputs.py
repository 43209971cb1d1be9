"""Embeddings to index or query, read from the files other tools write.

A features file (`tf_reid.evaluation.extract.save_features`, an .npz holding "<split>/<field>"
arrays) gives one split's global features, L2-normalised here, with their paths, pids and
camids. It is read with NumPy alone, so the search commands start without importing
TensorFlow; tests/tf_reid/index/test_inputs.py writes a file with `save_features` and reads it
back here, which keeps the two in step. A plain .npy [N, D] array gives embeddings only.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from tf_reid.index.gallery import Metadata
from tf_reid.index.kinds import IndexInputError

_EPS = 1e-12  # as tf_reid.evaluation.matching.l2_normalize


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of [N, D] divided by max(||row||, 1e-12), float32."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(invalid="ignore"):  # inf rows become NaN; `gallery.build` names them.
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)


def read_embeddings(path: str, split: str) -> tuple[np.ndarray, Metadata]:
    """L2-normalised embeddings [N, D] float32 and metadata of one split of `path`.

    Args:
      path: a features .npz (`save_features`; `split`'s "global_", "paths", "pids", "camids")
        or an .npy of [N, D] embeddings (metadata unknown).
      split: "query" or "gallery" (ignored for .npy).

    Raises:
      IndexInputError: no such file, not a features file, no such split, wrong shape.
    """
    if not os.path.isfile(path):
        raise IndexInputError(f"{path}: no such file")
    try:
        if path.endswith(".npy"):
            embeddings = np.load(path, allow_pickle=False)
            metadata = None
        else:
            with np.load(path, allow_pickle=False) as data:
                key = f"{split}/global_"
                if key not in data.files:
                    raise IndexInputError(f"{path}: not a features file with a {split} split "
                                          f"(no '{key}' array)")
                embeddings = data[key]
                metadata = Metadata(data[f"{split}/paths"].astype(str),
                                    data[f"{split}/pids"].astype(np.int64),
                                    data[f"{split}/camids"].astype(np.int64))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        if isinstance(e, IndexInputError):
            raise
        raise IndexInputError(f"{path}: cannot read embeddings ({e})") from e
    if embeddings.ndim != 2 or 0 in embeddings.shape:
        raise IndexInputError(f"{path}: embeddings must be a non-empty [N, D] array, got shape "
                              f"{embeddings.shape}")
    if metadata is None:
        metadata = Metadata.unknown(len(embeddings))
    return l2_normalize(embeddings), metadata
