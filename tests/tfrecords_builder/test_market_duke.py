"""Market-1501 and DukeMTMC-reID parsers on placeholder files laid out under the real names."""

from __future__ import annotations

import csv

import pytest

from tests.conftest import write_images
from tfrecords_builder import dukemtmc, market1501
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


@pytest.fixture(scope="module", params=sorted(PARSERS))
def laid_out(request, shared, tmp_path_factory):
    dataset = request.param
    parse, folder = PARSERS[dataset]
    tmp = tmp_path_factory.mktemp(dataset)
    rows = fixture_rows(shared, dataset)
    write_images(tmp / folder, [path for _, path in rows])
    (tmp / folder / "bounding_box_test" / "Thumbs.db").write_bytes(b"not an image")
    return dataset, parse(str(tmp)), rows


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
