"""iLIDS-VID parser: sequences as tracklets of frames, the official ls_set splits, bad input, and
a conversion end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.io

from tests.conftest import REPO, image_bytes, write_images
from tfrecords_builder import features, ilidsvid, verify
from tfrecords_builder.records import DatasetError

PNG = image_bytes(2, 1, fmt="PNG")
# Person numbers with gaps, as in the release (001..319, 300 used): folder indices 1..6.
PERSONS = (1, 2, 4, 7, 9, 12)
# Frames per sequence: person -> (camera 1, camera 2).
LENGTHS = {1: (2, 3), 2: (1, 2), 4: (3, 1), 7: (2, 2), 9: (1, 1), 12: (2, 1)}
# 10 rows of 1-based indices into the sorted person folders; the first half of a row is tested.
LS_SET = [[3, 1, 6, 2, 4, 5], [2, 5, 4, 1, 3, 6]] + [[1, 2, 3, 4, 5, 6]] * 8
SPLIT_FILE = "train-test people splits/train_test_splits_ilidsvid.mat"


def frame_paths(person: int, cam: int, length: int, first: int = 100) -> list[str]:
    folder = f"i-LIDS-VID/sequences/cam{cam}/person{person:03d}"
    return [f"{folder}/cam{cam}_person{person:03d}_{first + 7 * f:05d}.png" for f in range(length)]


def write_splits(root, ls_set=LS_SET, key="ls_set") -> None:
    path = os.path.join(root, SPLIT_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    scipy.io.savemat(path, {key: np.array(ls_set, np.float64)})  # MATLAB's default double


def make_ilidsvid(root, lengths=LENGTHS, ls_set=LS_SET, data=None) -> str:
    """The release layout: a sequence per person and camera, and the splits file."""
    for person, (n1, n2) in lengths.items():
        for cam, length in ((1, n1), (2, n2)):
            for i, path in enumerate(frame_paths(person, cam, length)):
                write_images(root, [path], data(person, cam, i) if data else PNG)
    write_splits(root, ls_set)
    return str(root)


def rows(split, name):
    return [(os.path.basename(r.path), r.pid, r.camid, r.tracklet, r.frame) for r in split.of(name)]


def test_official_split_by_hand(tmp_path):
    make_ilidsvid(tmp_path / "ilids-vid")
    split = ilidsvid.parse(str(tmp_path))  # the parent of ilids-vid/
    assert split.source == str(tmp_path / "ilids-vid") and split.dataset == "ilidsvid"
    # Row 1 is [3, 1, 6 | 2, 4, 5]: folders 3, 1, 6 (persons 4, 1, 12) are tested.
    assert rows(split, "query") == [
        ("cam1_person001_00100.png", 1, 0, 0, 0), ("cam1_person001_00107.png", 1, 0, 0, 1),
        ("cam1_person004_00100.png", 4, 0, 4, 0), ("cam1_person004_00107.png", 4, 0, 4, 1),
        ("cam1_person004_00114.png", 4, 0, 4, 2),
        ("cam1_person012_00100.png", 12, 0, 10, 0), ("cam1_person012_00107.png", 12, 0, 10, 1)]
    assert rows(split, "gallery") == [
        ("cam2_person001_00100.png", 1, 1, 1, 0), ("cam2_person001_00107.png", 1, 1, 1, 1),
        ("cam2_person001_00114.png", 1, 1, 1, 2),
        ("cam2_person004_00100.png", 4, 1, 5, 0),
        ("cam2_person012_00100.png", 12, 1, 11, 0)]
    train = split.of("train")
    assert {r.pid for r in train} == {2, 7, 9}
    assert sorted({(r.pid, r.camid, r.tracklet) for r in train}) == [
        (2, 0, 2), (2, 1, 3), (7, 0, 6), (7, 1, 7), (9, 0, 8), (9, 1, 9)]
    assert len(train) == sum(sum(LENGTHS[p]) for p in (2, 7, 9))
    assert train[0].path == "i-LIDS-VID/sequences/cam1/person002/cam1_person002_00100.png"
    assert split.protocol == {
        "protocol": "ilidsvid-official-splits", "split_file": SPLIT_FILE, "split_index": 0,
        "num_splits": 10, "test": "first half of the row", "query_camera": 0,
        "gallery_camera": 1, "test_pids": [1, 4, 12]}

    second = ilidsvid.parse(str(tmp_path / "ilids-vid"), split_index=1)
    # Row 2 is [2, 5, 4 | 1, 3, 6]: persons 2, 9, 7 are tested.
    assert second.protocol["test_pids"] == [2, 7, 9]
    assert {r.pid for r in second.of("query")} == {2, 7, 9}
    assert {r.pid for r in second.of("train")} == {1, 4, 12}
    assert ilidsvid.parse(str(tmp_path), split_index=0).records == split.records


def test_splits_follow_the_written_rows(tmp_path):
    rng = np.random.default_rng(0)
    ls_set = [rng.permutation(6) + 1 for _ in range(10)]
    root = make_ilidsvid(tmp_path, ls_set=ls_set)
    for index, row in enumerate(ls_set):
        split = ilidsvid.parse(root, split_index=index)
        assert split.protocol["test_pids"] == sorted(PERSONS[i - 1] for i in row[:3])
        assert {r.pid for r in split.of("train")} == {PERSONS[i - 1] for i in row[3:]}
        assert {r.pid for r in split.of("gallery")} == set(split.protocol["test_pids"])


def test_full_scale(tmp_path):
    persons = [n for n in range(1, 400) if n % 16 != 5][:300]
    write_images(tmp_path, [p for n in persons for cam in (1, 2)
                            for p in frame_paths(n, cam, 1 + n % 2)], PNG)
    ls_set = [np.random.default_rng(i).permutation(300) + 1 for i in range(10)]
    write_splits(tmp_path, ls_set)
    split = ilidsvid.parse(str(tmp_path), split_index=9)
    query, gallery, train = split.of("query"), split.of("gallery"), split.of("train")
    tracklets = {s: len({r.tracklet for r in split.of(s)}) for s in ("train", "query", "gallery")}
    assert tracklets == {"train": 300, "query": 150, "gallery": 150}
    assert {r.pid for r in query} == {r.pid for r in gallery} == \
        {persons[i - 1] for i in ls_set[9][:150]}
    assert {r.pid for r in train}.isdisjoint({r.pid for r in query})
    assert len(split.records) == sum(2 * (1 + n % 2) for n in persons)
    assert {r.camid for r in query} == {0} and {r.camid for r in gallery} == {1}


def expect_error(root, fragment: str, **options) -> str:
    with pytest.raises(DatasetError) as error:
        ilidsvid.parse(str(root), **options)
    message = str(error.value)
    assert message.startswith(fragment), message
    assert "\n" not in message
    return message


def test_missing_splits_file(tmp_path):
    make_ilidsvid(tmp_path)
    os.remove(tmp_path / SPLIT_FILE)
    expect_error(tmp_path, f"{tmp_path / SPLIT_FILE}: missing file (iLIDS-VID train/test splits)")


@pytest.mark.parametrize("ls_set, shape", [
    (np.array(LS_SET).T, "(6, 10)"), (LS_SET[:9], "(9, 6)"),
    ([row[:5] for row in LS_SET], "(10, 5)")])
def test_splits_of_the_wrong_shape(tmp_path, ls_set, shape):
    make_ilidsvid(tmp_path, ls_set=ls_set)
    expect_error(tmp_path, f"{tmp_path / SPLIT_FILE}: ls_set has shape {shape}, expected (10, 6) "
                           "= 10 splits x the 6 person folders of ")


def test_splits_row_not_a_permutation(tmp_path):
    make_ilidsvid(tmp_path, ls_set=LS_SET[:3] + [[1, 2, 3, 4, 5, 5]] + LS_SET[4:])
    expect_error(tmp_path, f"{tmp_path / SPLIT_FILE}: row 4 of ls_set is not a permutation of 1..6")


def test_splits_without_ls_set(tmp_path):
    make_ilidsvid(tmp_path)
    write_splits(tmp_path, key="splits")
    expect_error(tmp_path, f"{tmp_path / SPLIT_FILE}: no variable 'ls_set'")


@pytest.mark.parametrize("split_index", [-1, 10])
def test_split_index_out_of_range(tmp_path, split_index):
    make_ilidsvid(tmp_path)
    expect_error(tmp_path, f"--split_index={split_index}: outside 0..9 (iLIDS-VID has 10 "
                           "splits)", split_index=split_index)


def test_missing_camera_folder(tmp_path):
    make_ilidsvid(tmp_path, lengths={p: (n, 0) for p, (n, _) in LENGTHS.items()})
    expect_error(tmp_path, f"{tmp_path / 'i-LIDS-VID' / 'sequences' / 'cam2'}: missing folder")


def test_person_in_one_camera_only(tmp_path):
    make_ilidsvid(tmp_path, lengths={**LENGTHS, 13: (2, 0)})
    cams = tmp_path / "i-LIDS-VID" / "sequences"
    expect_error(tmp_path, f"{cams / 'cam1' / 'person013'}: no sequence of this person in "
                           f"{cams / 'cam2'} (1 such persons;")


@pytest.mark.parametrize("bad_name", ["cam1_person004_0100.png", "person004_00100.png",
                                      "cam1_person4_00100.png"])
def test_frame_name_that_does_not_parse(tmp_path, bad_name):
    make_ilidsvid(tmp_path)
    folder = tmp_path / "i-LIDS-VID" / "sequences" / "cam1" / "person004"
    write_images(folder, [bad_name], PNG)
    message = expect_error(tmp_path, str(folder / bad_name))
    assert "does not parse" in message


@pytest.mark.parametrize("bad_name", ["cam2_person004_00300.png", "cam1_person007_00300.png"])
def test_frame_of_another_sequence(tmp_path, bad_name):
    make_ilidsvid(tmp_path)
    folder = tmp_path / "i-LIDS-VID" / "sequences" / "cam1" / "person004"
    write_images(folder, [bad_name], PNG)
    expect_error(tmp_path, f"{folder / bad_name}: frame of camera ")


def test_person_folder_name_that_does_not_parse(tmp_path):
    make_ilidsvid(tmp_path)
    (tmp_path / "i-LIDS-VID" / "sequences" / "cam2" / "person_13").mkdir()
    expect_error(tmp_path, f"{tmp_path / 'i-LIDS-VID' / 'sequences' / 'cam2' / 'person_13'}: "
                           "folder name does not parse")


def test_empty_sequence(tmp_path):
    make_ilidsvid(tmp_path)
    folder = tmp_path / "i-LIDS-VID" / "sequences" / "cam2" / "person009"
    os.remove(folder / "cam2_person009_00100.png")
    expect_error(tmp_path, f"{folder}: no frames in this sequence")


def test_no_release_folder(tmp_path):
    expect_error(tmp_path, f"{tmp_path / 'i-LIDS-VID'}: missing (looked in")


def test_build_tfrecords_end_to_end(tmp_path):
    """The command converts split 1; every record read back has its frame's bytes, pid, camera,
    tracklet and frame index, and the manifest counts sequences."""
    def data(person, cam, frame):
        return image_bytes(4 + frame, 2, "PNG", seed=100 * person + 10 * cam + frame)

    source = make_ilidsvid(tmp_path / "ilids-vid", data=data)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "tools.build_tfrecords", "--dataset=ilidsvid",
         f"--data_dir={tmp_path}", f"--output_dir={out}", "--split_index=1", "--noprogress",
         "--records_per_shard=4"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"] == "ilidsvid"
    assert manifest["protocol"]["split_index"] == 1
    assert manifest["protocol"]["test_pids"] == [2, 7, 9]
    counts = {s: (manifest["splits"][s]["images"], manifest["splits"][s]["identities"],
                  manifest["splits"][s]["tracklets"]) for s in ("train", "query", "gallery")}
    assert counts == {"train": (12, 3, 6), "query": (4, 3, 3), "gallery": (5, 3, 3)}
    assert manifest["label_map"] == {"1": 0, "4": 1, "12": 2}
    expected = {r.path: r for r in ilidsvid.parse(source, split_index=1).records}
    seen = []
    for split, summary in manifest["splits"].items():
        for shard in summary["shards"]:
            for e in verify.read_shard(str(out / shard["file"])):
                path = e[features.PATH].decode()
                record = expected[path]
                person, cam = record.pid, record.camid + 1
                assert e[features.IMAGE] == data(person, cam, record.frame), path
                assert (split, e[features.PID], e[features.CAMID], e[features.TRACKLET],
                        e[features.FRAME]) == (record.split, record.pid, record.camid,
                                               record.tracklet, record.frame), path
                seen.append(path)
    assert sorted(seen) == sorted(expected)
