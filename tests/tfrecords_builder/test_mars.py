"""MARS parser: per-frame records, the official-kit gallery, table checks, and full scale."""

from __future__ import annotations

import collections
import os
import shutil

import numpy as np
import pytest
import scipy.io

from tfrecords_builder import mars
from tfrecords_builder.records import DatasetError

TRAIN_NAMES = [
    "0001C1T0001F001.jpg", "0001C1T0001F002.jpg",                         # row 1
    "0001C2T0001F001.jpg",                                                # row 2
    "0003C6T0001F001.jpg", "0003C6T0001F002.jpg", "0003C6T0001F003.jpg",  # row 3
]
TRAIN_TABLE = [[1, 2, 1, 1], [3, 3, 1, 2], [4, 6, 3, 6]]
TEST_NAMES = [
    "00-1C1T0001F001.jpg", "00-1C1T0001F002.jpg",  # row 1: junk
    "0000C2T0001F001.jpg",                         # row 2: distractor
    "0002C1T0001F001.jpg", "0002C1T0001F002.jpg",  # row 3: query
    "0002C3T0001F001.jpg",                         # row 4: query
    "0002C3T0002F001.jpg",                         # row 5
    "0005C4T0001F001.jpg",                         # row 6
]
TEST_TABLE = [[1, 2, -1, 1], [3, 3, 0, 2], [4, 5, 2, 1], [6, 6, 2, 3], [7, 7, 2, 3],
              [8, 8, 5, 4]]
QUERY_ROWS = [3, 4]


def write_names(path, names) -> None:
    with open(path, "w") as f:
        f.write("\n".join(names) + "\n")


def make_mars(root, train_names=TRAIN_NAMES, train_table=TRAIN_TABLE, test_names=TEST_NAMES,
              test_table=TEST_TABLE, query_rows=QUERY_ROWS) -> str:
    """A MARS tree with the given info files and empty bbox folders (parse reads no frames)."""
    info = os.path.join(root, "info")
    os.makedirs(info)
    os.makedirs(os.path.join(root, "bbox_train"))
    os.makedirs(os.path.join(root, "bbox_test"))
    write_names(os.path.join(info, "train_name.txt"), train_names)
    write_names(os.path.join(info, "test_name.txt"), test_names)
    scipy.io.savemat(os.path.join(info, "tracks_train_info.mat"),
                     {"track_train_info": np.array(train_table, np.int32)})
    scipy.io.savemat(os.path.join(info, "tracks_test_info.mat"),
                     {"track_test_info": np.array(test_table, np.int32)})
    scipy.io.savemat(os.path.join(info, "query_IDX.mat"),
                     {"query_IDX": np.array([query_rows], np.uint16)})
    return str(root)


def rows(split, name):
    return [(r.path, r.pid, r.camid, r.tracklet, r.frame) for r in split.of(name)]


def test_official_protocol_by_hand(tmp_path):
    make_mars(tmp_path / "MARS")
    split = mars.parse(str(tmp_path))  # the parent of MARS/
    assert split.source == str(tmp_path / "MARS")
    assert split.dataset == "mars"
    assert rows(split, "train") == [
        ("bbox_train/0001/0001C1T0001F001.jpg", 1, 0, 0, 0),
        ("bbox_train/0001/0001C1T0001F002.jpg", 1, 0, 0, 1),
        ("bbox_train/0001/0001C2T0001F001.jpg", 1, 1, 1, 0),
        ("bbox_train/0003/0003C6T0001F001.jpg", 3, 5, 2, 0),
        ("bbox_train/0003/0003C6T0001F002.jpg", 3, 5, 2, 1),
        ("bbox_train/0003/0003C6T0001F003.jpg", 3, 5, 2, 2)]
    query = [
        ("bbox_test/0002/0002C1T0001F001.jpg", 2, 0, 2, 0),
        ("bbox_test/0002/0002C1T0001F002.jpg", 2, 0, 2, 1),
        ("bbox_test/0002/0002C3T0001F001.jpg", 2, 2, 3, 0)]
    assert rows(split, "query") == query
    # Every test tracklet but the junk row 1, the queries included, the distractor kept.
    assert rows(split, "gallery") == [
        ("bbox_test/0000/0000C2T0001F001.jpg", 0, 1, 1, 0), *query,
        ("bbox_test/0002/0002C3T0002F001.jpg", 2, 2, 4, 0),
        ("bbox_test/0005/0005C4T0001F001.jpg", 5, 3, 5, 0)]
    assert split.protocol == {"protocol": "mars-official-kit", "gallery": "all_test",
                              "junk_pid": -1, "distractor_pid": 0}
    assert mars.parse(str(tmp_path / "MARS")).records == split.records


def test_exclude_query_gallery(tmp_path):
    split = mars.parse(make_mars(tmp_path), gallery="exclude_query")
    assert len(split.of("query")) == 3
    assert rows(split, "gallery") == [
        ("bbox_test/0000/0000C2T0001F001.jpg", 0, 1, 1, 0),
        ("bbox_test/0002/0002C3T0002F001.jpg", 2, 2, 4, 0),
        ("bbox_test/0005/0005C4T0001F001.jpg", 5, 3, 5, 0)]
    assert split.protocol["gallery"] == "exclude_query"


def test_unknown_gallery_option(tmp_path):
    with pytest.raises(ValueError, match="gallery must be one of"):
        mars.parse(make_mars(tmp_path), gallery="torchreid")


def expect_error(root, fragment: str) -> str:
    with pytest.raises(DatasetError) as error:
        mars.parse(root)
    message = str(error.value)
    assert message.startswith(fragment), message
    assert "\n" not in message
    return message


@pytest.mark.parametrize("folder", ["bbox_test", "info"])
def test_missing_folder(tmp_path, folder):
    root = make_mars(tmp_path)
    shutil.rmtree(tmp_path / folder)
    expect_error(root, f"{tmp_path / folder}: missing folder")


def test_no_mars_root(tmp_path):
    expect_error(str(tmp_path), f"{tmp_path / 'bbox_train'}: missing (looked in")


@pytest.mark.parametrize("file", ["train_name.txt", "test_name.txt", "tracks_train_info.mat",
                                  "tracks_test_info.mat", "query_IDX.mat"])
def test_missing_info_file(tmp_path, file):
    root = make_mars(tmp_path)
    os.remove(tmp_path / "info" / file)
    expect_error(root, f"{tmp_path / 'info' / file}: missing file")


@pytest.mark.parametrize("bad_name", ["0000_c2_f001.jpg", "0000C2T0001.jpg", "000C2T0001F001.jpg"])
def test_name_that_does_not_parse(tmp_path, bad_name):
    test_names = TEST_NAMES[:2] + [bad_name] + TEST_NAMES[3:]
    root = make_mars(tmp_path, test_names=test_names)
    message = expect_error(root, f"{tmp_path / 'info' / 'test_name.txt'}: line 3 does not parse")
    assert bad_name in message


def test_table_pid_disagrees_with_names(tmp_path):
    train_table = TRAIN_TABLE[:2] + [[4, 6, 4, 6]]
    root = make_mars(tmp_path, train_table=train_table)
    message = expect_error(root, f"{tmp_path / 'info' / 'train_name.txt'}: line 4 "
                                 "(0003C6T0001F001.jpg) does not match row 3 of ")
    assert message.endswith("tracks_train_info.mat (pid 4, camera 6)")


def test_table_camera_disagrees_with_names(tmp_path):
    test_table = TEST_TABLE[:5] + [[8, 8, 5, 5]]
    root = make_mars(tmp_path, test_table=test_table)
    expect_error(root, f"{tmp_path / 'info' / 'test_name.txt'}: line 8 "
                       f"(0005C4T0001F001.jpg) does not match row 6 of "
                       f"{tmp_path / 'info' / 'tracks_test_info.mat'} (pid 5, camera 5)")


def test_frames_of_a_row_straddle_two_tracklets(tmp_path):
    # Rows 2 and 3 shifted by one line: row 2 now starts on pid 1's camera-2 frame and ends on
    # a pid-3 frame.
    train_table = [[1, 2, 1, 1], [3, 4, 1, 2], [5, 6, 3, 6]]
    root = make_mars(tmp_path, train_table=train_table)
    expect_error(root, f"{tmp_path / 'info' / 'train_name.txt'}: line 4 "
                       "(0003C6T0001F001.jpg) does not match row 2 of")


def test_row_outside_the_name_list(tmp_path):
    train_table = TRAIN_TABLE[:2] + [[4, 7, 3, 6]]
    root = make_mars(tmp_path, train_table=train_table)
    message = expect_error(root, f"{tmp_path / 'info' / 'tracks_train_info.mat'}: row 3 has "
                                 "frames 4..7, outside lines 1..6 of ")
    assert message.endswith("train_name.txt")


def test_table_without_its_variable(tmp_path):
    root = make_mars(tmp_path)
    path = tmp_path / "info" / "tracks_test_info.mat"
    scipy.io.savemat(path, {"track_info": np.array(TEST_TABLE, np.int32)})
    expect_error(root, f"{path}: no variable 'track_test_info'")


def test_table_of_wrong_shape(tmp_path):
    root = make_mars(tmp_path, train_table=[row[:3] for row in TRAIN_TABLE])
    expect_error(root, f"{tmp_path / 'info' / 'tracks_train_info.mat'}: table has shape (3, 3)")


def test_query_row_outside_the_test_table(tmp_path):
    root = make_mars(tmp_path, query_rows=[3, 7])
    expect_error(root, f"{tmp_path / 'info' / 'query_IDX.mat'}: query row 7 outside the 6 rows")


def test_unreadable_table(tmp_path):
    root = make_mars(tmp_path)
    (tmp_path / "info" / "query_IDX.mat").write_bytes(b"not a MATLAB file")
    expect_error(root, f"{tmp_path / 'info' / 'query_IDX.mat'}: not a readable MATLAB file")


# ---- full scale: the real protocol tables with name lists that agree with them ----

def names_for(table: np.ndarray) -> list[str]:
    """Frame names that agree with `table`: its pid and camera, tracklets numbered per
    (pid, camera) from 1, frames from 1."""
    tracklets: collections.Counter = collections.Counter()
    names = []
    for start, end, pid, cam in table.tolist():
        tracklets[pid, cam] += 1
        prefix = f"{'00-1' if pid == -1 else f'{pid:04d}'}C{cam}T{tracklets[pid, cam]:04d}F"
        names.extend(f"{prefix}{frame:03d}.jpg" for frame in range(1, end - start + 2))
    return names


@pytest.fixture(scope="module")
def full_mars(shared, tmp_path_factory):
    """(root, train table, test table, 0-based query rows) of a full-scale MARS tree."""
    root = tmp_path_factory.mktemp("mars_full")
    info = root / "info"
    shutil.copytree(shared / "fixtures" / "mars" / "info", info)
    os.chmod(info, 0o755)
    (root / "bbox_train").mkdir()
    (root / "bbox_test").mkdir()
    train = scipy.io.loadmat(info / "tracks_train_info.mat")["track_train_info"].astype(np.int64)
    test = scipy.io.loadmat(info / "tracks_test_info.mat")["track_test_info"].astype(np.int64)
    query = scipy.io.loadmat(info / "query_IDX.mat")["query_IDX"].ravel().astype(np.int64) - 1
    write_names(info / "train_name.txt", names_for(train))
    write_names(info / "test_name.txt", names_for(test))
    return str(root), train, test, query


def counts(records) -> tuple[int, int, int]:
    """(tracklets, identities, frames)."""
    return len({r.tracklet for r in records}), len({r.pid for r in records}), len(records)


def queries_without_cross_camera_match(query_keys, gallery_keys) -> int:
    """Queries (pid, camid) with no gallery item of the same pid in another camera."""
    cameras = collections.defaultdict(set)
    for pid, camid in gallery_keys:
        cameras[pid].add(camid)
    return sum(not cameras[pid] - {camid} for pid, camid in query_keys)


def test_full_scale_official_protocol(full_mars):
    root, train, test, query = full_mars
    split = mars.parse(root)
    lengths = test[:, 1] - test[:, 0] + 1
    kept = test[:, 2] != -1
    assert counts(split.of("train")) == (8298, 625, 509914)  # the shared README's counts
    assert counts(split.of("query")) == (1980, len(np.unique(test[query, 2])),
                                         int(lengths[query].sum()))
    assert counts(split.of("gallery")) == (int(kept.sum()), len(np.unique(test[kept, 2])),
                                           int(lengths[kept].sum()))
    gallery = split.of("gallery")
    assert {r.tracklet for r in split.of("query")} <= {r.tracklet for r in gallery}
    assert {r.camid for r in split.records} == set(range(6))
    # With the queries in the gallery, every query has a cross-camera match.
    query_keys = [(int(test[row, 2]), int(test[row, 3])) for row in query]
    assert queries_without_cross_camera_match(
        query_keys, {(r.pid, r.camid + 1) for r in gallery}) == 0


def test_full_scale_exclude_query(full_mars):
    root, _, test, query = full_mars
    split = mars.parse(root, gallery="exclude_query")
    lengths = test[:, 1] - test[:, 0] + 1
    kept = (test[:, 2] != -1) & ~np.isin(np.arange(len(test)), query)
    assert counts(split.of("gallery")) == (int(kept.sum()), len(np.unique(test[kept, 2])),
                                           int(lengths[kept].sum()))
    assert len({r.tracklet for r in split.of("query")}) == 1980
    # torchreid's gallery strands some queries; the module docstring states how many (140).
    query_keys = [(int(test[row, 2]), int(test[row, 3])) for row in query]
    from_table = queries_without_cross_camera_match(query_keys, map(tuple, test[kept][:, 2:4]))
    from_split = queries_without_cross_camera_match(
        query_keys, {(r.pid, r.camid + 1) for r in split.of("gallery")})
    assert from_split == from_table == 140
