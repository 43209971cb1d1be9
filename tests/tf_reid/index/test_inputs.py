"""Embeddings read from features files as `features_file.save` writes them, and from .npy."""

from __future__ import annotations

import numpy as np
import pytest

from tf_reid.evaluation import features_file
from tf_reid.index import inputs
from tf_reid.index.kinds import IndexInputError


def features(global_: list[list[float]], pids: list[int], prefix: str
             ) -> features_file.SplitFeatures:
    n = len(pids)
    return features_file.SplitFeatures(
        np.array(global_, np.float32), None, np.array(pids, np.int64),
        np.arange(n, dtype=np.int64), np.array([f"{prefix}/{i}.jpg" for i in range(n)]),
        np.full(n, -1, np.int64), np.full(n, -1, np.int64))


def test_reads_what_save_features_writes(tmp_path):
    query = features([[3, 4]], [7], "q")
    gallery = features([[0, 2], [1, 1], [0, 0]], [1, 2, 3], "g")
    features_file.save(str(tmp_path / "f.npz"), {"query": query, "gallery": gallery},
                       {"data_dir": "x"})

    embeddings, metadata = inputs.read_embeddings(str(tmp_path / "f.npz"), "gallery")
    # L2-normalised; the all-zero row stays zero.
    np.testing.assert_allclose(embeddings, [[0, 1], [0.5 ** .5, 0.5 ** .5], [0, 0]], atol=1e-7)
    assert embeddings.dtype == np.float32
    assert metadata.paths.tolist() == ["g/0.jpg", "g/1.jpg", "g/2.jpg"]
    assert (metadata.pids.tolist(), metadata.camids.tolist()) == ([1, 2, 3], [0, 1, 2])
    embeddings, metadata = inputs.read_embeddings(str(tmp_path / "f.npz"), "query")
    np.testing.assert_allclose(embeddings, [[0.6, 0.8]], atol=1e-7)
    assert (metadata.paths.tolist(), metadata.pids.tolist()) == (["q/0.jpg"], [7])


def test_reads_npy_without_metadata(tmp_path):
    np.save(tmp_path / "q.npy", np.array([[0, 5], [2, 0]], np.float64))
    embeddings, metadata = inputs.read_embeddings(str(tmp_path / "q.npy"), "query")
    np.testing.assert_array_equal(embeddings, [[0, 1], [1, 0]])
    assert (metadata.paths.tolist(), metadata.pids.tolist()) == (["", ""], [-1, -1])


def test_bad_files(tmp_path):
    with pytest.raises(IndexInputError, match="missing.npz: no such file"):
        inputs.read_embeddings(str(tmp_path / "missing.npz"), "gallery")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(IndexInputError, match="other.npz: not a features file"):
        inputs.read_embeddings(str(tmp_path / "other.npz"), "gallery")
    features_file.save(str(tmp_path / "q.npz"), {"query": features([[1, 0]], [1], "q")})
    with pytest.raises(IndexInputError, match="q.npz: no 'gallery' split"):
        inputs.read_embeddings(str(tmp_path / "q.npz"), "gallery")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(IndexInputError, match="junk.npz: not a features file"):
        inputs.read_embeddings(str(tmp_path / "junk.npz"), "gallery")
    np.save(tmp_path / "flat.npy", np.zeros(4, np.float32))
    with pytest.raises(IndexInputError, match="flat.npy: embeddings must be a non-empty"):
        inputs.read_embeddings(str(tmp_path / "flat.npy"), "query")
