"""PRID 2011 single-shot parser: shared persons split at random, camera-B-only distractors."""

from __future__ import annotations

import pytest

from tests.conftest import image_bytes, write_images
from tfrecords_builder import prid2011
from tfrecords_builder.records import DatasetError

PNG = image_bytes(2, 1, fmt="PNG")


def prid_names(cam_a, cam_b) -> list[str]:
    return ([f"single_shot/cam_a/person_{n:04d}.png" for n in cam_a]
            + [f"single_shot/cam_b/person_{n:04d}.png" for n in cam_b])


def small_layout(root, shared=6, cam_a=8, cam_b=10):
    """Persons 1..shared in both cameras, cam_a up to `cam_a`, cam_b up to `cam_b`."""
    write_images(root, prid_names(range(1, cam_a + 1), range(1, cam_b + 1)), PNG)
    return str(root)


def rows(split, name):
    return [(r.path, r.pid, r.camid) for r in split.of(name)]


def test_full_release_default_split(tmp_path):
    write_images(tmp_path / "prid_2011", prid_names(range(1, 386), range(1, 750)), PNG)
    split = prid2011.parse(str(tmp_path))  # the parent of prid_2011/
    assert split.source == str(tmp_path / "prid_2011") and split.dataset == "prid2011"
    train, query, gallery = split.of("train"), split.of("query"), split.of("gallery")
    train_pids, query_pids = {r.pid for r in train}, {r.pid for r in query}
    assert (len(train), len(query), len(gallery)) == (200, 100, 100 + 549)
    assert (len(train_pids), len(query_pids)) == (100, 100)
    assert train_pids | query_pids == set(range(1, 201))
    assert train_pids.isdisjoint(query_pids)
    assert {r.camid for r in train} == {0, 1}
    assert {r.camid for r in query} == {0} and {r.camid for r in gallery} == {1}
    true_matches = [r for r in gallery if r.pid != 0]
    distractors = [r for r in gallery if r.pid == 0]
    assert {r.pid for r in true_matches} == query_pids and len(true_matches) == 100
    assert sorted(r.path for r in distractors) == [
        f"single_shot/cam_b/person_{n:04d}.png" for n in range(201, 750)]
    # Camera A's persons 201..385 are in no split.
    assert not [r for r in split.records if r.camid == 0 and int(r.path[-8:-4]) > 200]
    assert split.protocol == {
        "protocol": "prid2011-single-shot-random-splits", "split_seed": 0, "split_index": 0,
        "num_splits": 10, "num_shared": 200, "query_camera": 0, "gallery_camera": 1,
        "test_pids": sorted(query_pids), "distractor_pid": 0, "num_distractors": 549,
        "num_unused_camera_a": 185}
    tests = {tuple(prid2011.parse(str(tmp_path), split_index=i).protocol["test_pids"])
             for i in range(10)}
    assert len(tests) == 10


def test_seeded_splits_by_hand(tmp_path):
    root = small_layout(tmp_path)
    split = prid2011.parse(root, num_shared=6)
    # NumPy's legacy RandomState(0) permutes [1..6] into [6, 3, 2, 4, 1, 5] (split 0: train
    # 6, 3, 2) and then into [2, 4, 5, 1, 3, 6] (split 1: test 1, 3, 6).
    assert rows(split, "train") == [
        ("single_shot/cam_a/person_0002.png", 2, 0), ("single_shot/cam_a/person_0003.png", 3, 0),
        ("single_shot/cam_a/person_0006.png", 6, 0), ("single_shot/cam_b/person_0002.png", 2, 1),
        ("single_shot/cam_b/person_0003.png", 3, 1), ("single_shot/cam_b/person_0006.png", 6, 1)]
    assert rows(split, "query") == [
        ("single_shot/cam_a/person_0001.png", 1, 0), ("single_shot/cam_a/person_0004.png", 4, 0),
        ("single_shot/cam_a/person_0005.png", 5, 0)]
    assert rows(split, "gallery") == [
        ("single_shot/cam_b/person_0001.png", 1, 1), ("single_shot/cam_b/person_0004.png", 4, 1),
        ("single_shot/cam_b/person_0005.png", 5, 1),
        ("single_shot/cam_b/person_0007.png", 0, 1), ("single_shot/cam_b/person_0008.png", 0, 1),
        ("single_shot/cam_b/person_0009.png", 0, 1), ("single_shot/cam_b/person_0010.png", 0, 1)]
    assert split.protocol["num_distractors"] == 4
    assert split.protocol["num_unused_camera_a"] == 2  # cam_a persons 7 and 8

    assert prid2011.parse(root, num_shared=6).records == split.records
    assert prid2011.parse(root, split_index=1, num_shared=6).protocol["test_pids"] == [1, 3, 6]
    assert prid2011.parse(root, split_seed=5, num_shared=6).protocol["test_pids"] == [1, 2, 4]


def test_data_dir_is_release_folder(tmp_path):
    root = small_layout(tmp_path / "prid_2011")
    assert prid2011.parse(root, num_shared=6).records == \
        prid2011.parse(str(tmp_path), num_shared=6).records


def expect_error(root, fragment: str, **options) -> str:
    with pytest.raises(DatasetError) as error:
        prid2011.parse(str(root), num_shared=6, **options)
    message = str(error.value)
    assert message.startswith(fragment), message
    assert "\n" not in message
    return message


def test_missing_camera_folder(tmp_path):
    write_images(tmp_path, prid_names(range(1, 7), ()), PNG)
    expect_error(tmp_path, f"{tmp_path / 'single_shot' / 'cam_b'}: missing folder "
                           "(PRID 2011 camera B)")


def test_no_single_shot_folder(tmp_path):
    expect_error(tmp_path, f"{tmp_path / 'single_shot'}: missing (looked in")


@pytest.mark.parametrize("bad_name", ["person_01.png", "person0001.png", "0001.png"])
def test_name_that_does_not_parse(tmp_path, bad_name):
    small_layout(tmp_path)
    write_images(tmp_path, [f"single_shot/cam_a/{bad_name}"], PNG)
    message = expect_error(tmp_path, str(tmp_path / "single_shot" / "cam_a" / bad_name))
    assert "does not parse" in message


@pytest.mark.parametrize("camera", ["cam_a", "cam_b"])
def test_shared_person_missing_from_a_camera(tmp_path, camera):
    small_layout(tmp_path)
    (tmp_path / "single_shot" / camera / "person_0004.png").unlink()
    expect_error(tmp_path, f"{tmp_path / 'single_shot' / camera / 'person_0004.png'}: missing "
                           "(1 of persons 1..6 absent; the protocol needs them in both cameras)")


def test_two_images_of_a_person(tmp_path):
    small_layout(tmp_path)
    write_images(tmp_path, ["single_shot/cam_b/person_0002.jpg"], PNG)
    expect_error(tmp_path, f"{tmp_path / 'single_shot' / 'cam_b' / 'person_0002.png'}: a second "
                           "image of person 2 (besides person_0002.jpg")


@pytest.mark.parametrize("split_index", [-1, 10])
def test_split_index_out_of_range(tmp_path, split_index):
    small_layout(tmp_path)
    expect_error(tmp_path, f"--split_index={split_index}: outside 0..9 (PRID 2011 has 10 "
                           "splits)", split_index=split_index)
