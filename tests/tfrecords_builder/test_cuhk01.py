"""CUHK01 parser: campus/IIIIJJJ.png names, the seeded identity split, bad input."""

from __future__ import annotations

import os

import pytest

from tests.conftest import image_bytes, write_images
from tfrecords_builder import cuhk01
from tfrecords_builder.records import DatasetError

PNG = image_bytes(fmt="PNG")


def campus_names(pids, numbers=(1, 2, 3, 4)) -> list[str]:
    return [f"campus/{pid:04d}{number:03d}.png" for pid in pids for number in numbers]


def test_full_release_default_split(tmp_path):
    write_images(tmp_path / "CUHK01", campus_names(range(1, 972)), PNG)
    split = cuhk01.parse(str(tmp_path))  # the parent of CUHK01/
    assert split.source == str(tmp_path / "CUHK01")
    train, query, gallery = split.of("train"), split.of("query"), split.of("gallery")
    train_pids = {r.pid for r in train}
    query_pids = {r.pid for r in query}
    assert (len(train_pids), len(query_pids)) == (485, 486)
    assert (len(train), len(query), len(gallery)) == (485 * 4, 486 * 2, 486 * 2)
    assert {r.pid for r in gallery} == query_pids
    assert train_pids.isdisjoint(query_pids)
    assert train_pids | query_pids == set(range(1, 972))
    assert {r.camid for r in train} == {0, 1}
    assert {r.camid for r in query} == {0}
    assert {r.camid for r in gallery} == {1}
    assert split.protocol == {"split_seed": 0, "num_train_identities": 485,
                              "query_camera": 0, "gallery_camera": 1}


def test_seeded_split_by_hand(tmp_path):
    pids = (3, 7, 9, 12, 20, 31)
    write_images(tmp_path, campus_names(pids), PNG)
    split = cuhk01.parse(str(tmp_path), split_seed=0, num_train_identities=3)
    # NumPy's legacy RandomState(0).permutation([3, 7, 9, 12, 20, 31]) is
    # [31, 9, 7, 12, 3, 20] (that stream is frozen by NumPy's compatibility policy).
    assert {r.pid for r in split.of("train")} == {7, 9, 31}
    assert [r.path for r in split.of("query")] == [
        "campus/0003001.png", "campus/0003002.png", "campus/0012001.png",
        "campus/0012002.png", "campus/0020001.png", "campus/0020002.png"]
    assert [r.path for r in split.of("gallery")] == [
        "campus/0003003.png", "campus/0003004.png", "campus/0012003.png",
        "campus/0012004.png", "campus/0020003.png", "campus/0020004.png"]
    first = split.records[0]
    assert (first.path, first.pid, first.camid, first.split, first.tracklet, first.frame) == \
        ("campus/0003001.png", 3, 0, "query", -1, -1)
    camids = {r.path[-7:-4]: r.camid for r in split.records if r.pid == 7}
    assert camids == {"001": 0, "002": 0, "003": 1, "004": 1}
    assert split.protocol["split_seed"] == 0 and split.protocol["num_train_identities"] == 3

    again = cuhk01.parse(str(tmp_path), split_seed=0, num_train_identities=3)
    assert again.records == split.records
    # RandomState(1).permutation([3, 7, 9, 12, 20, 31]) starts [9, 7, 20].
    other = cuhk01.parse(str(tmp_path), split_seed=1, num_train_identities=3)
    assert {r.pid for r in other.of("train")} == {7, 9, 20}


def test_data_dir_is_release_folder(tmp_path):
    write_images(tmp_path / "cuhk01", campus_names((1, 2)), PNG)
    direct = cuhk01.parse(str(tmp_path / "cuhk01"), num_train_identities=1)
    via_parent = cuhk01.parse(str(tmp_path), num_train_identities=1)
    assert direct.records == via_parent.records and len(direct.records) == 8
    assert direct.source == via_parent.source == str(tmp_path / "cuhk01")


def test_missing_campus_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"campus: missing \(looked in"):
        cuhk01.parse(str(tmp_path))


@pytest.mark.parametrize("bad_name", ["0001_001.png", "00010010.png", "abcd001.png"])
def test_name_that_does_not_parse(tmp_path, bad_name):
    write_images(tmp_path, campus_names((1, 2)) + [f"campus/{bad_name}"], PNG)
    with pytest.raises(DatasetError) as error:
        cuhk01.parse(str(tmp_path), num_train_identities=1)
    assert str(error.value).startswith(os.path.join(str(tmp_path), "campus", bad_name))
    assert "does not parse" in str(error.value)
    assert "\n" not in str(error.value)


def test_image_number_outside_four(tmp_path):
    write_images(tmp_path, campus_names((1, 2)) + ["campus/0002005.png"], PNG)
    with pytest.raises(DatasetError, match=r"campus/0002005\.png: image number 5 outside 1\.\.4"):
        cuhk01.parse(str(tmp_path), num_train_identities=1)


@pytest.mark.parametrize("num_train", [0, 2, 5])
def test_train_identities_must_leave_a_test_set(tmp_path, num_train):
    write_images(tmp_path, campus_names((1, 2)), PNG)
    with pytest.raises(DatasetError, match=rf"campus: 2 identities, cannot train on {num_train}"):
        cuhk01.parse(str(tmp_path), num_train_identities=num_train)
