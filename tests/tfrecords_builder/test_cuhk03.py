"""CUHK03: new and classic protocols from extracted images, the v7.3 cuhk-03.mat, and CUHK03-NP."""

from __future__ import annotations

import io
import itertools
import os

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from tests.conftest import write_images
from tfrecords_builder import cuhk03, writer
from tfrecords_builder.records import DatasetError

SIZES = (3, 2, 1, 1, 2)  # identities per camera pair in the small release
EMPTY = {(1, 2, 4), (3, 1, 9)}  # (pair, identity, slot) left empty, as the real file has


def pixels(pair: int, pid: int, slot: int, box: str) -> np.ndarray:
    """A distinct, non-square [H, W, 3] image per slot, so a missed transpose shows."""
    rng = np.random.default_rng(hash((pair, pid, slot, box)) % 2**32)
    return rng.integers(0, 256, (9 + slot, 4 + pair, 3), dtype=np.uint8)


def write_release_mat(path, testsets) -> None:
    """A small cuhk-03.mat in MATLAB v7.3 layout: cells of object references under #refs#,
    every array stored transposed (HDF5 keeps MATLAB's column-major order)."""
    with h5py.File(path, "w") as f:
        refs, counter = f.create_group("#refs#"), itertools.count()

        def put(array):
            return refs.create_dataset(f"r{next(counter)}", data=array).ref

        for box in cuhk03.BOX_TYPES:
            pair_refs = []
            for pair, size in enumerate(SIZES, start=1):
                grid = np.empty((10, size), dtype=h5py.ref_dtype)  # MATLAB [M, 10], transposed
                for pid, slot in itertools.product(range(1, size + 1), range(1, 11)):
                    empty = (pair, pid, slot) in EMPTY
                    # MATLAB stores [] as a 2-vector of zeros; images as [3, W, H].
                    grid[slot - 1, pid - 1] = put(np.zeros(2, np.uint64) if empty else
                                                  pixels(pair, pid, slot, box).transpose(2, 1, 0))
                pair_refs.append(put(grid))
            f.create_dataset(box, data=np.array([pair_refs], dtype=h5py.ref_dtype))
        split_refs = [put(np.asarray(t, dtype=np.float64).T) for t in testsets]
        f.create_dataset("testsets", data=np.array([split_refs], dtype=h5py.ref_dtype))


def all_stems():
    for pair, size in enumerate(SIZES, start=1):
        for pid, slot in itertools.product(range(1, size + 1), range(1, 11)):
            if (pair, pid, slot) not in EMPTY:
                yield pair, pid, slot, f"{pair}_{pid:03d}_{1 if slot <= 5 else 2}_{slot:02d}"


OFFSETS = (0, 3, 5, 6, 7)  # cumulative SIZES: global pid = OFFSETS[pair - 1] + identity
NEW_SPLIT = {"train": [(1, 1), (1, 3), (2, 2), (4, 1)],
             "test": [(1, 2), (2, 1), (3, 1), (5, 1), (5, 2)]}


def write_split_file(path, box: str) -> dict:
    """A new-protocol split file (MATLAB v5) listing every non-empty slot, as the official one.

    Returns the expected (images per split) worked out from the same plan."""
    names, labels, cams, idx = [], [], [], {"train": [], "query": [], "gallery": []}
    expected = {"train": 0, "query": 0, "gallery": 0}
    for pair, size in enumerate(SIZES, start=1):
        for pid, slot in itertools.product(range(1, size + 1), range(1, 11)):
            if (pair, pid, slot) in EMPTY:
                continue
            view = 1 if slot <= 5 else 2
            names.append(f"{pair}_{pid:03d}_{view}_{slot:02d}.png")
            labels.append(OFFSETS[pair - 1] + pid)
            cams.append(view)
            # test identities: first slot of each view is a query, the rest gallery.
            split = ("train" if (pair, pid) in NEW_SPLIT["train"] else
                     "query" if slot in (1, 6) else "gallery")
            idx[split].append(len(names))  # 1-based
            expected[split] += 1
    filelist = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        filelist[i, 0] = n
    scipy.io.savemat(path, {"filelist": filelist, "labels": np.array(labels)[:, None],
                            "camId": np.array(cams)[:, None],
                            **{f"{k}_idx": np.array(v)[:, None] for k, v in idx.items()}})
    return expected


@pytest.fixture()
def release(tmp_path):
    testsets = [[(1 + i % 5, 1)] + [(1, 2)] for i in range(20)]
    testsets[3] = [(1, 2), (2, 1)]
    write_release_mat(tmp_path / "cuhk-03.mat", testsets)
    expected = {box: write_split_file(tmp_path / f"cuhk03_new_protocol_config_{box}.mat", box)
                for box in cuhk03.BOX_TYPES}
    return tmp_path, expected


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("box", cuhk03.BOX_TYPES)
def test_mat_source_new_protocol(release, box):
    root, expected = release
    split = cuhk03.parse(str(root), box_type=box, source="mat")
    assert split.protocol["source"] == "mat" and split.protocol["protocol"] == "new"
    assert {s: len(split.of(s)) for s in expected[box]} == expected[box]
    assert {r.pid for r in split.of("train")} == {1, 3, 5, 7}
    assert {r.pid for r in split.of("query")} == {2, 4, 6, 8, 9}
    for record in split.records:
        pair, pid, view, slot = (int(x) for x in record.path.split("/")[1].split("_"))
        assert record.camid == 2 * (pair - 1) + view - 1
        image = decode(split.reader(split.source, record.path))
        np.testing.assert_array_equal(image, pixels(pair, pid, slot, box))  # exact, not transposed


def test_images_source_matches_by_stem_and_agrees_with_mat(release):
    root, expected = release
    # Extracted crops saved as JPEG under .jpg names while the split file says .png.
    for pair, pid, slot, name in all_stems():
        buf = io.BytesIO()
        Image.fromarray(pixels(pair, pid, slot, "labeled")).save(buf, format="JPEG")
        write_images(root, [f"images_labeled/{name}.jpg"], buf.getvalue())
    from_dir = cuhk03.parse(str(root))  # auto: the image folder wins
    from_mat = cuhk03.parse(str(root), source="mat")
    assert from_dir.protocol["source"] == "images"
    key = lambda r: (cuhk03.stem(r.path), r.pid, r.camid, r.split)  # noqa: E731
    assert sorted(map(key, from_dir.records)) == sorted(map(key, from_mat.records))
    assert from_dir.missing == ()


def test_missing_images_are_an_error_unless_allowed(release):
    root, expected = release
    present = [s for s in all_stems() if s[0] == 1]  # only camera pair 1 extracted
    write_images(root, [f"images_labeled/{name}.png" for *_, name in present])
    with pytest.raises(DatasetError) as info:
        cuhk03.parse(str(root))
    # Train entries come first; the first train identity outside pair 1 is (pair 2, id 2).
    assert str(info.value).startswith(f"{root / 'images_labeled/2_002_1_01.png'}: missing image "
                                      "listed in cuhk03_new_protocol_config_labeled.mat")
    split = cuhk03.parse(str(root), allow_missing=True)
    assert len(split.records) == len(present)
    # Missing: every listed (non-empty) slot outside pair 1.
    assert len(split.missing) == 10 * sum(SIZES) - len(EMPTY) - len(present)
    assert "2_001_1_01.png" in split.missing


def test_classic_protocol(release):
    root, _ = release
    split = cuhk03.parse(str(root), protocol="classic", split_index=3, source="mat")
    # Split 3 tests (pair 1, id 2) -> pid 2 and (pair 2, id 1) -> pid 4, with 9 + 10 images
    # (slot 4 of (1, 2) is empty); query and gallery are both the whole test set.
    for name in ("query", "gallery"):
        records = split.of(name)
        assert {r.pid for r in records} == {2, 4} and len(records) == 19
    train = split.of("train")
    assert {r.pid for r in train} == {1, 3, 5, 6, 7, 8, 9}
    assert len(train) == 10 * sum(SIZES) - len(EMPTY) - 19
    assert split.protocol["split_index"] == 3


def test_classic_split_index_out_of_range(release):
    root, _ = release
    with pytest.raises(DatasetError, match=r"cuhk-03.mat: split_index 20 outside 0..19"):
        cuhk03.parse(str(root), protocol="classic", split_index=20, source="mat")


def test_mat_images_convert_to_lossless_png_records(release, tmp_path):
    root, _ = release
    split = cuhk03.parse(str(root), source="mat")
    manifest = writer.build(split, str(tmp_path / "out"), progress=False)
    assert manifest["splits"]["train"]["images"] == len(split.of("train"))
    assert manifest["source"] == str(root / "cuhk-03.mat")


def test_cuhk03_np_layout(tmp_path):
    names = ["bounding_box_train/0001_c1_1.png", "bounding_box_train/0001_c2_6.png",
             "query/0003_c1_1.png", "bounding_box_test/0003_c2_7.png",
             "bounding_box_test/0004_c1_2.png"]
    write_images(tmp_path / "cuhk03-np/detected", names)
    split = cuhk03.parse(str(tmp_path), box_type="detected")
    assert split.protocol["source"] == "np"
    assert [(r.split, r.pid, r.camid) for r in split.records] == \
        [("train", 1, 0), ("train", 1, 1), ("query", 3, 0), ("gallery", 3, 1), ("gallery", 4, 0)]
    with pytest.raises(DatasetError, match="only hold the new protocol"):
        cuhk03.parse(str(tmp_path), box_type="detected", protocol="classic")


def test_bad_names_and_options(tmp_path):
    write_images(tmp_path, ["images_labeled/1_001_1_01.png", "images_labeled/person7.png"])
    with pytest.raises(DatasetError, match=r"images_labeled/person7.png: file name does not parse"):
        cuhk03.parse(str(tmp_path))
    with pytest.raises(DatasetError, match="unknown CUHK03 box_type 'boxes'"):
        cuhk03.parse(str(tmp_path), box_type="boxes")
    with pytest.raises(DatasetError, match=r"detected: no CUHK03 images found|images_detected"):
        cuhk03.parse(str(tmp_path), box_type="detected")
    os.remove(tmp_path / "images_labeled/person7.png")
    with pytest.raises(DatasetError, match=r"cuhk-03.mat: missing file"):
        cuhk03.parse(str(tmp_path), protocol="classic")
