"""Evaluation input: fixed order, metadata, no augmentation, flip TTA."""

from __future__ import annotations

import io

import numpy as np
import tensorflow as tf
from PIL import Image

from tests.tf_reid.data.test_pk import colour_png
from tests.conftest import write_images
from tf_reid.data import augment
from tf_reid.data.eval_input import eval_dataset
from tfrecords_builder import features, writer
from tfrecords_builder.records import ParsedDataset, Record


def test_order_metadata_and_flip(tmp_path):
    # Gallery of pids 5, 2, 9 (written in pid order: 2, 5, 9), two frames of a tracklet for 5.
    plan = [("gallery", 5, 1, 40, 1), ("gallery", 2, 0, 41, 0), ("gallery", 9, 3, 42, 0),
            ("gallery", 5, 1, 40, 0), ("query", 2, 1, 43, 0), ("train", 1, 0, 44, 0)]
    records = []
    for i, (split, pid, camid, tracklet, frame) in enumerate(plan):
        path = f"{split}/{pid:04d}_{i}.png"
        write_images(tmp_path / "src", [path], colour_png(pid, i))
        records.append(Record(path, pid, camid, split, tracklet, frame))
    writer.build(ParsedDataset("t", str(tmp_path / "src"), tuple(records)), str(tmp_path / "out"),
                 records_per_shard=2, progress=False)
    batches = list(eval_dataset(str(tmp_path / "out"), "gallery", height=6, width=4, batch_size=3,
                                flip=True, normalize=True))
    assert [len(b["pid"]) for b in batches] == [3, 1]
    got = {k: np.concatenate([b[k].numpy() for b in batches]) for k in batches[0]}
    assert got["pid"].tolist() == [2, 5, 5, 9]
    assert got["frame"].tolist() == [0, 0, 1, 0]
    assert got["tracklet"].tolist() == [41, 40, 40, 42]
    assert got["camid"].tolist() == [0, 1, 1, 3]
    assert [p.decode() for p in got["path"]] == ["gallery/0002_1.png", "gallery/0005_3.png",
                                                 "gallery/0005_0.png", "gallery/0009_2.png"]
    # Constant colours survive resizing; normalisation by hand: (v / 255 - mean) / std.
    mean, std = np.array(augment.IMAGENET_MEAN), np.array(augment.IMAGENET_STD)
    for image, pid, path in zip(got["image"], got["pid"], got["path"]):
        index = int(path.decode().split("_")[1][:-4])
        want = (np.array([pid * 8, index * 30, 77]) / 255 - mean) / std
        np.testing.assert_allclose(image, np.broadcast_to(want, (6, 4, 3)), atol=1e-5)
    np.testing.assert_array_equal(got["image_flipped"], got["image"][:, :, ::-1])
    assert got["image"].shape == (4, 6, 4, 3)
    spec = eval_dataset(str(tmp_path / "out"), "query", height=6, width=4).element_spec
    assert spec["image"].shape.as_list() == [None, 6, 4, 3] and "image_flipped" not in spec
    # By default the model normalises: uint8 pixels, the source colours exactly.
    raw = next(iter(eval_dataset(str(tmp_path / "out"), "gallery", height=6, width=4)))
    assert raw["image"].dtype == tf.uint8
    np.testing.assert_array_equal(raw["image"].numpy()[0], np.broadcast_to([16, 30, 77], (6, 4, 3)))


def test_flip_mirrors_an_asymmetric_image(tmp_path):
    pixels = np.zeros((8, 4, 3), np.uint8)
    pixels[:, 2:] = 255  # left half black, right half white
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    records = []
    for split in ("train", "query", "gallery"):
        write_images(tmp_path / "src", [f"{split}.png"], buf.getvalue())
        records.append(Record(f"{split}.png", 1, 0, split))
    writer.build(ParsedDataset("t", str(tmp_path / "src"), tuple(records)), str(tmp_path / "out"),
                 progress=False)
    batch = next(iter(eval_dataset(str(tmp_path / "out"), "query", height=8, width=4, flip=True)))
    image, flipped = batch["image"].numpy()[0], batch["image_flipped"].numpy()[0]
    assert image[0, 0, 0] == 0 and image[0, 3, 0] == 255
    np.testing.assert_array_equal(flipped, image[:, ::-1])
