"""MSMT17 parser: V1 and V2 layouts, list files, combine_trainval, bad input."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import write_images
from tfrecords_builder import msmt17
from tfrecords_builder.records import DatasetError

# list file -> lines; camera = third `_`-field of the name.
LISTS = {
    "list_train.txt": ["0000/0000_000_01_0303morning_0015_0.jpg 0",
                       "0000/0000_001_03_0303morning_0020_1.jpg 0",
                       "0001/0001_000_15_0304noon_0100_0.jpg 1"],
    "list_val.txt": ["0001/0001_001_07_0304noon_0200_0.jpg 1"],
    "list_query.txt": ["0000/0000_000_02_0303afternoon_0011_0.jpg 0"],
    "list_gallery.txt": ["0000/0000_001_05_0303afternoon_0300_0.jpg 0",
                         "0002/0002_000_10_0305morning_0001_0.jpg 2"],
}
V1 = ("train", "test")
V2 = ("mask_train_v2", "mask_test_v2")


def make_release(root, folders=V1, lists=None, skip=()) -> str:
    """Writes list files and the images they list (except `skip`) under `root`."""
    lists = LISTS if lists is None else lists
    train, test = folders
    os.makedirs(os.path.join(root, train), exist_ok=True)
    os.makedirs(os.path.join(root, test), exist_ok=True)
    for list_name, lines in lists.items():
        with open(os.path.join(root, list_name), "w") as f:
            f.write("\n".join(lines) + "\n")
        folder = train if list_name in ("list_train.txt", "list_val.txt") else test
        listed = [line.split()[0] for line in lines if line.strip()]
        write_images(root, [os.path.join(folder, rel) for rel in listed if rel not in skip])
    return str(root)


def summary(split, name):
    return [(r.path, r.pid, r.camid) for r in split.of(name)]


def test_v1_standard_protocol(tmp_path):
    make_release(tmp_path / "MSMT17_V1")
    split = msmt17.parse(str(tmp_path))  # the parent of MSMT17_V1/
    assert split.source == str(tmp_path / "MSMT17_V1")
    assert split.dataset == "msmt17"
    assert summary(split, "train") == [
        ("train/0000/0000_000_01_0303morning_0015_0.jpg", 0, 0),
        ("train/0000/0000_001_03_0303morning_0020_1.jpg", 0, 2),
        ("train/0001/0001_000_15_0304noon_0100_0.jpg", 1, 14)]
    assert summary(split, "query") == [("test/0000/0000_000_02_0303afternoon_0011_0.jpg", 0, 1)]
    assert summary(split, "gallery") == [
        ("test/0000/0000_001_05_0303afternoon_0300_0.jpg", 0, 4),
        ("test/0002/0002_000_10_0305morning_0001_0.jpg", 2, 9)]
    assert all(r.tracklet == -1 and r.frame == -1 for r in split.records)
    assert split.protocol == {"version": "v1", "combine_trainval": False}
    assert msmt17.parse(str(tmp_path / "MSMT17_V1")).records == split.records


def test_combine_trainval_adds_val_to_train(tmp_path):
    root = make_release(tmp_path)
    split = msmt17.parse(root, combine_trainval=True)
    assert len(split.of("train")) == 4
    assert summary(split, "train")[3] == ("train/0001/0001_001_07_0304noon_0200_0.jpg", 1, 6)
    assert {r.pid for r in split.of("train")} == {0, 1}
    assert (len(split.of("query")), len(split.of("gallery"))) == (1, 2)
    assert split.protocol == {"version": "v1", "combine_trainval": True}


def test_v2_layout(tmp_path):
    make_release(tmp_path / "MSMT17_V2", folders=V2)
    split = msmt17.parse(str(tmp_path))
    assert split.source == str(tmp_path / "MSMT17_V2")
    assert split.protocol["version"] == "v2"
    assert [p for p, _, _ in summary(split, "train")] == [
        "mask_train_v2/0000/0000_000_01_0303morning_0015_0.jpg",
        "mask_train_v2/0000/0000_001_03_0303morning_0020_1.jpg",
        "mask_train_v2/0001/0001_000_15_0304noon_0100_0.jpg"]
    assert summary(split, "gallery")[1] == (
        "mask_test_v2/0002/0002_000_10_0305morning_0001_0.jpg", 2, 9)


def test_blank_lines_are_ignored(tmp_path):
    lists = dict(LISTS, **{"list_query.txt": ["", LISTS["list_query.txt"][0], "  ", ""]})
    split = msmt17.parse(make_release(tmp_path, lists=lists))
    assert len(split.of("query")) == 1


def test_val_list_only_read_when_combining(tmp_path):
    lists = {k: v for k, v in LISTS.items() if k != "list_val.txt"}
    root = make_release(tmp_path, lists=lists)
    assert len(msmt17.parse(root).of("train")) == 3
    with pytest.raises(DatasetError, match=r"list_val\.txt: missing file"):
        msmt17.parse(root, combine_trainval=True)


def test_no_release_found(tmp_path):
    with pytest.raises(DatasetError, match=r"list_train\.txt: missing"):
        msmt17.parse(str(tmp_path))


def test_missing_image_folders(tmp_path):
    for list_name in LISTS:
        (tmp_path / list_name).write_text("")
    with pytest.raises(DatasetError) as error:
        msmt17.parse(str(tmp_path))
    assert str(error.value).startswith(f"{tmp_path / 'train'}: missing folder")


def test_missing_test_folder(tmp_path):
    root = make_release(tmp_path)
    shutil.rmtree(tmp_path / "test")
    with pytest.raises(DatasetError) as error:
        msmt17.parse(root)
    assert str(error.value).startswith(f"{tmp_path / 'test'}: missing folder")


def test_missing_list_file(tmp_path):
    root = make_release(tmp_path)
    os.remove(tmp_path / "list_gallery.txt")
    with pytest.raises(DatasetError) as error:
        msmt17.parse(root)
    assert str(error.value).startswith(f"{tmp_path / 'list_gallery.txt'}: missing file")


@pytest.mark.parametrize("line", ["0000/0000_000_02_0303afternoon_0011_0.jpg",
                                  "0000/0000_000_02_0303afternoon_0011_0.jpg 0 extra",
                                  "0000/0000_000_02_0303afternoon_0011_0.jpg zero"])
def test_list_line_that_does_not_parse(tmp_path, line):
    lists = dict(LISTS, **{"list_query.txt": [LISTS["list_query.txt"][0], line]})
    root = make_release(tmp_path, lists=lists)
    with pytest.raises(DatasetError) as error:
        msmt17.parse(root)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'list_query.txt'}: line 2 does not parse")
    assert "\n" not in message


def test_name_that_does_not_parse(tmp_path):
    lists = dict(LISTS, **{"list_gallery.txt": ["0000/0000-001-05.jpg 0"]})
    root = make_release(tmp_path, lists=lists)
    with pytest.raises(DatasetError) as error:
        msmt17.parse(root)
    assert str(error.value).startswith(
        f"{tmp_path / 'test' / '0000' / '0000-001-05.jpg'}: file name does not parse")


@pytest.mark.parametrize("camera", ["00", "16"])
def test_camera_outside_fifteen(tmp_path, camera):
    name = f"0002/0002_000_{camera}_0305morning_0001_0.jpg"
    lists = dict(LISTS, **{"list_gallery.txt": [f"{name} 2"]})
    root = make_release(tmp_path, lists=lists)
    with pytest.raises(DatasetError) as error:
        msmt17.parse(root)
    assert str(error.value).startswith(
        f"{tmp_path / 'test' / name}: camera {int(camera)} outside 1..15")


def test_missing_listed_file_names_the_first(tmp_path):
    first, second = (line.split()[0] for line in LISTS["list_gallery.txt"])
    root = make_release(tmp_path, skip=(first, second))
    with pytest.raises(DatasetError) as error:
        msmt17.parse(root)
    assert str(error.value) == (f"{tmp_path / 'test' / first}: missing file "
                                f"(listed in {tmp_path / 'list_gallery.txt'} line 1)")
