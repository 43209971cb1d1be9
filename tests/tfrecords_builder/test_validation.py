"""Validation split carved from training identities: disjointness, matches, seeds, counts."""

from __future__ import annotations

import pytest

from tfrecords_builder.records import ParsedDataset, Record
from tfrecords_builder.validation import carve_validation, has_cross_camera_matches


def records_of(pid: int, images_per_camera: dict[int, int], split: str = "train") -> list[Record]:
    return [Record(path=f"{split}/{pid:04d}_c{cam}_{i:02d}.jpg", pid=pid, camid=cam, split=split)
            for cam, count in images_per_camera.items() for i in range(count)]


def dataset() -> ParsedDataset:
    """20 training identities (pids 1..20) plus test query/gallery (pids 101, 102).

    pids 1..14: cameras 0 and 1, 3 images each (eligible);
    pid 15: 3 cameras with 1, 2, 2 images (eligible: cameras 1 and 2 give gallery images);
    pids 16, 17: one camera only (never held out);
    pid 18: cameras 0 and 1 with 1 and 4 images (camera 1's query has no cross-camera gallery);
    pids 19, 20: one image in each of two cameras (no gallery at all).
    """
    records = []
    for pid in range(1, 15):
        records += records_of(pid, {0: 3, 1: 3})
    records += records_of(15, {0: 1, 1: 2, 2: 2})
    records += records_of(16, {0: 5}) + records_of(17, {1: 2})
    records += records_of(18, {0: 1, 1: 4})
    records += records_of(19, {0: 1, 1: 1}) + records_of(20, {0: 1, 2: 1})
    for pid in (101, 102):
        records += records_of(pid, {0: 1, 1: 1}, "query") + records_of(pid, {0: 2, 1: 2}, "gallery")
    return ParsedDataset("toy", "/nowhere", tuple(records), protocol={"protocol": "toy"})


ELIGIBLE = set(range(1, 16))


def pids(records) -> set[int]:
    return {r.pid for r in records}


def test_eligibility_rule():
    assert has_cross_camera_matches(records_of(1, {0: 2, 1: 2}))
    assert has_cross_camera_matches(records_of(1, {0: 1, 1: 2, 2: 2}))
    assert not has_cross_camera_matches(records_of(1, {0: 5}))
    assert not has_cross_camera_matches(records_of(1, {0: 1, 1: 4}))
    assert not has_cross_camera_matches(records_of(1, {0: 1, 1: 1}))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_disjoint_and_every_query_matches_across_cameras(seed):
    source = dataset()
    carved = carve_validation(source, 5, seed)
    train, query, gallery = (carved.of(s) for s in ("train", "query", "gallery"))
    held_out = pids(query)
    assert held_out <= ELIGIBLE and len(held_out) == 5
    assert pids(gallery) == held_out
    assert not held_out & pids(train)
    # Nothing of the test identities survives; every training image lands in exactly one split.
    assert not {101, 102} & pids(carved.records)
    assert sorted(r.path for r in carved.records) == sorted(r.path for r in source.of("train"))
    for q in query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in gallery), q


def test_counts_one_query_per_identity_and_camera():
    carved = carve_validation(dataset(), 15, seed=0)  # every eligible identity
    query, gallery = carved.of("query"), carved.of("gallery")
    assert pids(query) == ELIGIBLE
    assert len(query) == 14 * 2 + 3  # pid 15 has three cameras
    assert len({(r.pid, r.camid) for r in query}) == len(query)
    assert len(gallery) == 14 * (6 - 2) + (5 - 3)
    assert pids(carved.of("train")) == {16, 17, 18, 19, 20}
    assert len(carved.of("train")) == 5 + 2 + 5 + 2 + 2
    # The query of each camera is its first image; the rest are gallery.
    assert {r.path for r in query if r.pid == 1} == {"train/0001_c0_00.jpg", "train/0001_c1_00.jpg"}


def test_deterministic_by_seed_and_recorded_in_protocol():
    a, b = carve_validation(dataset(), 4, seed=7), carve_validation(dataset(), 4, seed=7)
    assert a == b
    held_out = sorted(pids(a.of("query")))
    assert a.protocol == {"protocol": "toy", "validation": {
        "num_identities": 4, "seed": 7, "held_out_pids": held_out}}
    others = {tuple(sorted(pids(carve_validation(dataset(), 4, seed=s).of("query"))))
              for s in range(8)}
    assert len(others) > 1  # the seed chooses


def test_source_and_dataset_kept():
    carved = carve_validation(dataset(), 2)
    assert (carved.dataset, carved.source, carved.missing) == ("toy", "/nowhere", ())


@pytest.mark.parametrize("num_identities", [0, 16])
def test_rejects_impossible_counts(num_identities):
    with pytest.raises(ValueError, match="num_identities"):
        carve_validation(dataset(), num_identities)


def test_rejects_holding_out_every_identity():
    records = records_of(1, {0: 2, 1: 2}) + records_of(2, {0: 2, 1: 2})
    split = ParsedDataset("toy", "/nowhere", tuple(records))
    with pytest.raises(ValueError, match="leaves none"):
        carve_validation(split, 2)


def test_rejects_video():
    split = ParsedDataset("toy", "/nowhere", (Record("a.jpg", 1, 0, "train", tracklet=0, frame=0),))
    with pytest.raises(ValueError, match="tracklets"):
        carve_validation(split, 1)
