"""Embeddings to index or query, read from the files other tools write.

A features file (`tf_reid.evaluation.features_file`: `tf_reid.evaluate --save_features`,
`tools.embed`) gives one split's global features, L2-normalised here, with their paths, pids
and camids. It is read with NumPy alone, so the search commands start without importing
TensorFlow. A plain .npy [N, D] array gives embeddings only.
"""

from __future__ import annotations

import os

import numpy as np

from tf_reid.evaluation import features_file
from tf_reid.evaluation.matching import l2_normalize
from tf_reid.index.gallery import Metadata
from tf_reid.index.kinds import IndexInputError


def read_embeddings(path: str, split: str) -> tuple[np.ndarray, Metadata]:
    """L2-normalised embeddings [N, D] float32 and metadata of one split of `path`.

    Args:
      path: a features file (.npz; `split`'s global features, paths, pids, camids) or an .npy
        of [N, D] embeddings (metadata unknown).
      split: "query" or "gallery" (ignored for .npy).

    Raises:
      IndexInputError: no such file, not a features file, no such split, wrong shape, a row
        that is not finite.
    """
    if not os.path.isfile(path):
        raise IndexInputError(f"{path}: no such file")
    if path.endswith(".npy"):
        try:
            embeddings = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise IndexInputError(f"{path}: cannot read embeddings ({e})") from e
        metadata = None
    else:
        try:
            features = features_file.load(path, split, with_local=False)
        except features_file.FeaturesFileError as e:
            raise IndexInputError(str(e)) from e
        embeddings = features.global_
        metadata = Metadata(features.paths.astype(str), features.pids.astype(np.int64),
                            features.camids.astype(np.int64))
    if embeddings.ndim != 2 or 0 in embeddings.shape:
        raise IndexInputError(f"{path}: embeddings must be a non-empty [N, D] array, got shape "
                              f"{embeddings.shape}")
    finite = np.isfinite(embeddings).all(axis=1)
    if not finite.all():
        raise IndexInputError(f"{path}: {split} embeddings row {int(np.argmin(finite))} is not "
                              "finite (NaN/inf)")
    if metadata is None:
        metadata = Metadata.unknown(len(embeddings))
    return l2_normalize(np.asarray(embeddings, dtype=np.float32)), metadata
