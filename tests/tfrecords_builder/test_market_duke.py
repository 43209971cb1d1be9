"""Market-1501 and DukeMTMC-reID parsers on placeholder files laid out under the real names, and
Market-1501's gt_bbox/ (generated names beside the real query list) as the multi_query split."""

from __future__ import annotations

import csv
import os

import pytest

from tests.conftest import write_images
from tfrecords_builder import dukemtmc, market1501, writer
from tfrecords_builder.manifest import split_table
from tfrecords_builder.naming import stem
from tfrecords_builder.records import DatasetError

# Official counts (Zheng et al. 2015; Zheng et al. 2017), as (images, identities).
OFFICIAL = {
    "market1501": {"train": (12936, 751), "query": (3368, 750), "gallery": (15913, None)},
    "dukemtmc": {"train": (16522, 702), "query": (2228, 702), "gallery": (17661, None)},
}
PARSERS = {"market1501": (market1501.parse, "Market-1501-v15.09.15"),
           "dukemtmc": (dukemtmc.parse, "DukeMTMC-reID")}


def fixture_rows(shared, dataset):
    """(pid, relative path) of every image of the release, from ../shared/fixtures/names."""
    rows = []
    for part in ("train", "query", "test"):
        with open(shared / f"fixtures/names/{dataset}_{part}.csv") as f:
            rows += [(int(pid), path) for pid, path in csv.reader(f)]
    return rows


def write_release(shared, tmp_path_factory, dataset):
    """The release of `dataset` as placeholder files under its real names: (folder, rows)."""
    folder = tmp_path_factory.mktemp(dataset) / PARSERS[dataset][1]
    rows = fixture_rows(shared, dataset)
    write_images(folder, [path for _, path in rows])
    (folder / "bounding_box_test" / "Thumbs.db").write_bytes(b"not an image")
    return folder, rows


@pytest.fixture(scope="module")
def market_release(shared, tmp_path_factory):
    """The Market-1501 release without gt_bbox/ (as most copies are): (folder, rows)."""
    return write_release(shared, tmp_path_factory, "market1501")


@pytest.fixture(scope="module", params=sorted(PARSERS))
def laid_out(request, shared, tmp_path_factory):
    dataset = request.param
    if dataset == "market1501":
        folder, rows = request.getfixturevalue("market_release")
    else:
        folder, rows = write_release(shared, tmp_path_factory, dataset)
    return dataset, PARSERS[dataset][0](str(folder.parent)), rows


def test_official_counts(laid_out):
    dataset, split, _ = laid_out
    for name, (images, ids) in OFFICIAL[dataset].items():
        records = split.of(name)
        assert len(records) == images, name
        if ids is not None:
            assert len({r.pid for r in records}) == ids, name


def test_pids_match_the_release_lists_and_junk_is_dropped(laid_out):
    dataset, split, rows = laid_out
    listed = {path: pid for pid, path in rows}
    assert all(listed[r.path] == r.pid for r in split.records)
    dropped = {path for path, pid in listed.items() if pid == -1}
    assert dropped.isdisjoint(r.path for r in split.records)
    assert len(split.records) == len(listed) - len(dropped)
    if dataset == "market1501":
        assert len(dropped) == 19732 - 15913  # bounding_box_test minus the official gallery
        distractors = [r for r in split.records if r.pid == 0]
        assert distractors and all(r.split == "gallery" for r in distractors)


def test_camids_are_zero_based_from_the_name(laid_out):
    _, split, _ = laid_out
    for r in split.records[::97]:
        cam = int(r.path.split("_c")[1][0])
        assert r.camid == cam - 1
    cams = {r.camid for r in split.records}
    assert min(cams) == 0


def test_root_may_be_the_release_folder_itself(tmp_path):
    root = tmp_path / "whatever"
    write_images(root, ["bounding_box_train/0002_c1s1_000451_03.jpg", "query/0003_c1s1_000551_00.jpg",
                        "bounding_box_test/0003_c2s1_000601_01.jpg"])
    split = market1501.parse(str(root))
    assert [(r.split, r.pid, r.camid) for r in split.records] == \
        [("train", 2, 0), ("query", 3, 0), ("gallery", 3, 1)]


def test_duke_name_that_does_not_parse(tmp_path):
    write_images(tmp_path, ["bounding_box_train/0001_c2_f0046182.jpg", "query/0005_c2.jpg",
                            "bounding_box_test/0005_c1_f0000001.jpg"])
    with pytest.raises(DatasetError, match=r"query/0005_c2.jpg: file name does not parse"):
        dukemtmc.parse(str(tmp_path))


def pid_cam(name):
    """(pid, 1-based camera) read off a Market-1501 name by splitting it, not by the regex."""
    head = os.path.basename(name).split("_")
    return int(head[0]), int(head[1][1])


def gt_bbox_names(query_rows):
    """Generated gt_bbox/ names for the real query list, and those the converter keeps.

    As in the release, every query image is also a hand-drawn box under its own name; here each
    gets 0, 1 or 2 more boxes of its identity and camera (later frames). Never kept: boxes of a
    training identity, junk (-1), a distractor (0000), and a test identity's box in a camera
    where it has no query.
    """
    kept = set()
    for i, (_, path) in enumerate(query_rows):
        name = stem(path)
        kept.add(f"gt_bbox/{name}.jpg")
        pid, rest = name.split("_", 1)
        cam_seq, frame, box = rest.split("_")
        kept.update(f"gt_bbox/{pid}_{cam_seq}_{int(frame) + k:06d}_{box}.jpg"
                    for k in range(1, 1 + i % 3))
    query_cams = {}
    for _, path in query_rows:
        pid, cam = pid_cam(path)
        query_cams.setdefault(pid, set()).add(cam)
    pid = min(p for p, cams in query_cams.items() if len(cams) < 6)
    missing_cam = min(set(range(1, 7)) - query_cams[pid])
    never = {"gt_bbox/0002_c1s1_000451_00.jpg", "gt_bbox/-1_c1s1_000401_00.jpg",
             "gt_bbox/0000_c1s1_000151_00.jpg",
             f"gt_bbox/{pid:04d}_c{missing_cam}s1_000001_00.jpg"}
    return sorted(kept | never), kept


@pytest.fixture(scope="module")
def with_gt_bbox(market_release, tmp_path_factory):
    """The same release plus a gt_bbox/ folder (the other folders linked, not copied):
    (parsed, parsed without gt_bbox/, the gt_bbox names kept)."""
    folder, rows = market_release
    release = tmp_path_factory.mktemp("gt_bbox") / folder.name
    release.mkdir()
    for sub in ("bounding_box_train", "bounding_box_test", "query"):
        (release / sub).symlink_to(folder / sub, target_is_directory=True)
    names, kept = gt_bbox_names([row for row in rows if row[1].startswith("query/")])
    write_images(release, names)
    return market1501.parse(str(release.parent)), market1501.parse(str(folder.parent)), kept


def test_without_gt_bbox_there_is_no_multi_query_split(with_gt_bbox):
    _, without, _ = with_gt_bbox
    assert {r.split for r in without.records} == {"train", "query", "gallery"}
    assert without.protocol == {"protocol": "single-query", "junk_pid": -1, "distractor_pid": 0}


def test_gt_bbox_boxes_of_the_query_identities_and_cameras_are_the_multi_query_split(
        with_gt_bbox):
    parsed, without, kept = with_gt_bbox
    # The other splits and their protocol are exactly those of the release without gt_bbox/.
    assert tuple(r for r in parsed.records if r.split != "multi_query") == without.records
    assert parsed.protocol == {**without.protocol, "multi_query": "gt_bbox"}
    multi = parsed.of("multi_query")
    assert {r.path for r in multi} == kept
    assert len(multi) == 3368 + sum(i % 3 for i in range(3368))  # 6,736 boxes
    for r in multi:
        pid, cam = pid_cam(r.path)
        assert (r.pid, r.camid) == (pid, cam - 1)
    # Every query has at least its own box; every box shares a query's identity and camera.
    query_keys = {(r.pid, r.camid) for r in parsed.of("query")}
    assert {(r.pid, r.camid) for r in multi} == query_keys
    assert len({r.pid for r in multi}) == 750


def market_layout(root, gt_bbox):
    """A three-image Market-1501 release plus the given gt_bbox/ names."""
    write_images(root, ["bounding_box_train/0002_c1s1_000451_03.jpg",
                        "query/0003_c1s1_000551_00.jpg",
                        "bounding_box_test/0003_c2s1_000601_01.jpg",
                        *(f"gt_bbox/{name}" for name in gt_bbox)])


def test_gt_bbox_name_that_does_not_parse(tmp_path):
    market_layout(tmp_path, ["0003_c1s1_000551_00.jpg", "0003_c1.jpg"])
    with pytest.raises(DatasetError, match=r"gt_bbox/0003_c1.jpg: file name does not parse"):
        market1501.parse(str(tmp_path))


def test_the_writer_writes_the_multi_query_split(tmp_path):
    market_layout(tmp_path / "release", ["0003_c1s1_000551_00.jpg", "0003_c1s1_000576_00.jpg",
                                         "0003_c2s1_000601_00.jpg", "-1_c1s1_000001_00.jpg"])
    manifest = writer.build(market1501.parse(str(tmp_path / "release")), str(tmp_path / "out"),
                            progress=False)
    assert list(manifest["splits"]) == ["train", "query", "gallery", "multi_query"]
    summary = manifest["splits"]["multi_query"]
    assert (summary["images"], summary["identities"], summary["cameras"]) == (2, 1, 1)
    assert os.path.isfile(tmp_path / "out" / summary["shards"][0]["file"])
    assert manifest["protocol"]["multi_query"] == "gt_bbox"
    assert split_table(manifest) == [
        "split         images    ids  cams shards",
        "train              1      1     1      1",
        "query              1      1     1      1",
        "gallery            1      1     1      1",
        "multi_query        2      1     1      1",
    ]
