"""The features file: round trip, one split at a time, and refusals naming the file."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.tf_reid.evaluation.conftest import features
from tf_reid.evaluation import features_file
from tf_reid.evaluation.features_file import FeaturesFileError, SplitFeatures


def test_save_and_load_round_trip(hand_built, tmp_path):
    query, gallery = hand_built
    gallery = features(gallery.global_, None, gallery.pids, gallery.camids)
    path = str(tmp_path / "features.npz")
    features_file.save(path, {"query": query, "gallery": gallery}, {"data_dir": "/data"})
    assert os.listdir(tmp_path) == ["features.npz"]  # no temporary file left behind
    got_query, got_gallery = (features_file.load(path, s) for s in ("query", "gallery"))
    for want, got in ((query, got_query), (gallery, got_gallery)):
        for field in ("global_", "pids", "camids", "paths", "tracklets", "frames"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    np.testing.assert_array_equal(got_query.local, query.local)
    assert got_gallery.local is None
    assert features_file.load(path, "query", with_local=False).local is None
    assert features_file.load_metadata(path) == {
        "data_dir": "/data", "format_version": 1,
        "splits": {"query": "query", "gallery": "gallery"}}
    # The layout other readers rely on: "<split>/<field>" arrays and a JSON "metadata".
    with np.load(path) as data:
        assert sorted(data.files) == sorted(
            ["metadata"] + [f"query/{f}" for f in features_file.FIELDS]
            + [f"gallery/{f}" for f in features_file.FIELDS if f != "local"])


def test_one_split_file(tmp_path):
    path = str(tmp_path / "q.npz")
    features_file.save(path, {"query": features([[3, 4]], pids=[7], camids=[0])})
    assert features_file.load(path, "query").pids.tolist() == [7]
    with pytest.raises(FeaturesFileError, match=r"q.npz: no 'gallery' split \(it holds query\)"):
        features_file.load(path, "gallery")


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.npz"
    target.mkdir()  # the final rename onto a directory fails after the file is written
    with pytest.raises(OSError):
        features_file.save(str(target), {"query": features([[1, 0]], pids=[1], camids=[0])})
    assert os.listdir(tmp_path) == ["out.npz"] and not os.listdir(target)


def test_refusals_are_one_line_naming_the_file(tmp_path):
    def refusal(path) -> str:
        with pytest.raises(FeaturesFileError) as error:
            features_file.load(str(path), "query")
        message = str(error.value)
        assert message.startswith(f"{path}: ") and "\n" not in message
        return message

    assert refusal(tmp_path / "missing.npz").endswith("no such features file")
    (tmp_path / "junk.npz").write_text("not a zip")
    assert "not a features file" in refusal(tmp_path / "junk.npz")
    np.save(tmp_path / "array.npy", np.zeros(3))
    assert "not a features file" in refusal(tmp_path / "array.npy")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    assert "no 'metadata' entry" in refusal(tmp_path / "other.npz")

    # A later format: the one line names its version and the version this code reads.
    query = features([[1, 0]], pids=[1], camids=[0])
    arrays = {f"query/{f}": getattr(query, f) for f in features_file.FIELDS if f != "local"}
    np.savez(tmp_path / "future.npz", metadata=np.array(json.dumps(
        {"format_version": 2, "splits": {"query": "query"}})), **arrays)
    assert refusal(tmp_path / "future.npz") == (
        f"{tmp_path / 'future.npz'}: features file format_version 2, but this tf_reid reads "
        "version 1; write it again (tf_reid.evaluate --save_features or tools.embed)")
    with pytest.raises(FeaturesFileError, match="format_version 2"):
        features_file.load_metadata(str(tmp_path / "future.npz"))

    del arrays["query/frames"]
    np.savez(tmp_path / "short.npz", metadata=np.array(json.dumps(
        {"format_version": 1, "splits": {"query": "query"}})), **arrays)
    assert refusal(tmp_path / "short.npz").endswith("no 'query/frames' array")


def test_split_features_check_their_lengths():
    with pytest.raises(ValueError, match="pids"):
        SplitFeatures(np.zeros((2, 3), np.float32), None, np.zeros(3, np.int64),
                      np.zeros(2, np.int64), np.array(["a", "b"]), np.zeros(2, np.int64),
                      np.zeros(2, np.int64))
