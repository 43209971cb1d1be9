"""VIPeR parser: cam_a/cam_b NNN_AA.bmp pairs, the 10 seeded random splits, bad input."""

from __future__ import annotations

import pytest

from tests.conftest import image_bytes, write_images
from tfrecords_builder import viper
from tfrecords_builder.records import DatasetError

BMP = image_bytes(2, 1, fmt="BMP")
# Person numbers with gaps, as in the release (000..873, 632 used); angles differ per camera.
NUMBERS = (0, 3, 5, 10, 11, 20)  # pids 1, 4, 6, 11, 12, 21


def viper_names(numbers=NUMBERS) -> list[str]:
    return ([f"cam_a/{n:03d}_{(0, 45)[n % 2]}.bmp" for n in numbers]
            + [f"cam_b/{n:03d}_{(90, 180)[n % 2]}.bmp" for n in numbers])


def rows(split, name):
    return [(r.path, r.pid, r.camid) for r in split.of(name)]


def test_full_release_default_split(tmp_path):
    numbers = [n for n in range(874) if n % 4 != 3][:632]
    write_images(tmp_path / "VIPeR", viper_names(numbers), BMP)
    split = viper.parse(str(tmp_path))  # the parent of VIPeR/
    assert split.source == str(tmp_path / "VIPeR") and split.dataset == "viper"
    train, query, gallery = split.of("train"), split.of("query"), split.of("gallery")
    train_pids, query_pids = {r.pid for r in train}, {r.pid for r in query}
    assert (len(train), len(query), len(gallery)) == (632, 316, 316)
    assert (len(train_pids), len(query_pids)) == (316, 316)
    assert {r.pid for r in gallery} == query_pids
    assert train_pids.isdisjoint(query_pids)
    assert train_pids | query_pids == {n + 1 for n in numbers}
    assert {r.camid for r in train} == {0, 1}
    assert {r.camid for r in query} == {0} and {r.camid for r in gallery} == {1}
    assert all(r.path.startswith("cam_a/") for r in query)
    assert all(r.path.startswith("cam_b/") for r in gallery)
    assert all((r.tracklet, r.frame) == (-1, -1) for r in split.records)
    assert split.protocol == {
        "protocol": "viper-random-splits", "split_seed": 0, "split_index": 0, "num_splits": 10,
        "num_train_identities": 316, "query_camera": 0, "gallery_camera": 1,
        "test_pids": sorted(query_pids)}
    # The 10 splits of a seed are 10 different halves.
    tests = {tuple(viper.parse(str(tmp_path), split_index=i).protocol["test_pids"])
             for i in range(10)}
    assert len(tests) == 10 and all(len(t) == 316 for t in tests)


def test_seeded_splits_by_hand(tmp_path):
    write_images(tmp_path, viper_names(), BMP)
    split = viper.parse(str(tmp_path), split_seed=0, split_index=0)
    # NumPy's legacy RandomState(0) permutes [1, 4, 6, 11, 12, 21] into [21, 6, 4, 11, 1, 12]
    # first (split 0: train 21, 6, 4) and [4, 11, 12, 1, 6, 21] next (split 1: train 4, 11, 12);
    # that stream is frozen by NumPy's compatibility policy.
    assert rows(split, "train") == [
        ("cam_a/003_45.bmp", 4, 0), ("cam_a/005_45.bmp", 6, 0), ("cam_a/020_0.bmp", 21, 0),
        ("cam_b/003_180.bmp", 4, 1), ("cam_b/005_180.bmp", 6, 1), ("cam_b/020_90.bmp", 21, 1)]
    assert rows(split, "query") == [
        ("cam_a/000_0.bmp", 1, 0), ("cam_a/010_0.bmp", 11, 0), ("cam_a/011_45.bmp", 12, 0)]
    assert rows(split, "gallery") == [
        ("cam_b/000_90.bmp", 1, 1), ("cam_b/010_90.bmp", 11, 1), ("cam_b/011_180.bmp", 12, 1)]
    assert split.protocol["test_pids"] == [1, 11, 12]
    assert split.protocol["num_train_identities"] == 3

    assert viper.parse(str(tmp_path), split_seed=0, split_index=0).records == split.records
    second = viper.parse(str(tmp_path), split_seed=0, split_index=1)
    assert {r.pid for r in second.of("train")} == {4, 11, 12}
    assert second.protocol["split_index"] == 1
    # RandomState(1)'s first permutation trains 4, 6, 12.
    other_seed = viper.parse(str(tmp_path), split_seed=1)
    assert {r.pid for r in other_seed.of("train")} == {4, 6, 12}
    assert other_seed.protocol["split_seed"] == 1


def test_odd_number_of_persons_trains_the_smaller_half(tmp_path):
    write_images(tmp_path, viper_names(NUMBERS[:5]), BMP)
    split = viper.parse(str(tmp_path))
    assert len({r.pid for r in split.of("train")}) == 2
    assert len(split.of("query")) == len(split.of("gallery")) == 3


def test_data_dir_is_release_folder(tmp_path):
    write_images(tmp_path / "VIPeR", viper_names(), BMP)
    direct = viper.parse(str(tmp_path / "VIPeR"))
    assert direct.records == viper.parse(str(tmp_path)).records
    assert direct.source == str(tmp_path / "VIPeR")


def expect_error(root, fragment: str, **options) -> str:
    with pytest.raises(DatasetError) as error:
        viper.parse(str(root), **options)
    message = str(error.value)
    assert message.startswith(fragment), message
    assert "\n" not in message
    return message


def test_missing_camera_folder(tmp_path):
    write_images(tmp_path, viper_names()[:len(NUMBERS)], BMP)  # cam_a only
    expect_error(tmp_path, f"{tmp_path / 'cam_b'}: missing folder (VIPeR camera B)")


def test_no_viper_folder(tmp_path):
    expect_error(tmp_path, f"{tmp_path / 'cam_a'}: missing (looked in")


@pytest.mark.parametrize("bad_name", ["000.bmp", "0000_45.bmp", "a00_45.bmp", "000_45_1.bmp"])
def test_name_that_does_not_parse(tmp_path, bad_name):
    write_images(tmp_path, viper_names() + [f"cam_b/{bad_name}"], BMP)
    message = expect_error(tmp_path, str(tmp_path / "cam_b" / bad_name))
    assert "does not parse" in message


def test_two_images_of_a_person_in_one_camera(tmp_path):
    write_images(tmp_path, viper_names() + ["cam_a/005_90.bmp"], BMP)
    expect_error(tmp_path, f"{tmp_path / 'cam_a' / '005_90.bmp'}: a second image of person 5 "
                           "(besides 005_45.bmp")


@pytest.mark.parametrize("camera, other", [("cam_a", "cam_b"), ("cam_b", "cam_a")])
def test_person_in_one_camera_only(tmp_path, camera, other):
    write_images(tmp_path, viper_names() + [f"{camera}/007_45.bmp", f"{camera}/008_45.bmp"], BMP)
    message = expect_error(tmp_path, f"{tmp_path / camera / '007_45.bmp'}: person 007 has no "
                                     f"image in {tmp_path / other}")
    assert "(2 such persons;" in message


@pytest.mark.parametrize("split_index", [-1, 10])
def test_split_index_out_of_range(tmp_path, split_index):
    write_images(tmp_path, viper_names(), BMP)
    expect_error(tmp_path, f"--split_index={split_index}: outside 0..9 (VIPeR has 10 splits)",
                 split_index=split_index)


def test_too_few_persons(tmp_path):
    write_images(tmp_path, viper_names(NUMBERS[:1]), BMP)
    expect_error(tmp_path, f"{tmp_path}: only 1 person(s), too few to split")


def test_random_split_is_a_seeded_half():
    train, test = viper.random_split(range(1, 11), split_seed=0, split_index=0)
    assert (train, test) == ([2, 3, 5, 9, 10], [1, 4, 6, 7, 8])
    assert viper.random_split(range(1, 11), 0, 1) == ([2, 3, 4, 6, 10], [1, 5, 7, 8, 9])
