"""Shared test fixtures: the real files in ../shared and tiny generated images."""

from __future__ import annotations

import io
import os
import pathlib
import tempfile

import numpy as np
import pytest
from PIL import Image

import tf_reid  # noqa: F401  # before any test imports TensorFlow: the environment tf_reid sets

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
# The journal of outputs being written (tfrecords_builder.atomic), away from the user's home;
# the commands the tests start inherit it.
os.environ.setdefault("TF_REID_STATE", tempfile.mkdtemp(prefix="tf-reid-state-"))


@pytest.fixture(scope="session")
def shared() -> pathlib.Path:
    """../shared, which CI always provides; its absence is a failure, not a skip."""
    assert (SHARED / "README.md").is_file(), f"{SHARED} is missing: clone beside ../shared"
    return SHARED


def image_bytes(height: int = 8, width: int = 4, fmt: str = "JPEG", seed: int = 0) -> bytes:
    """A tiny random RGB image encoded as `fmt` (JPEG or PNG)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def write_images(root: os.PathLike, relpaths, data: bytes | None = None) -> None:
    """Writes the same tiny image under every relative path in `relpaths`."""
    data = data if data is not None else image_bytes()
    for rel in relpaths:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def write_generated(root: os.PathLike, count: int, red: int = 250) -> str:
    """A `tools.generate_gan_samples`-like output in root/gan: `count` constant-colour images of
    nobody, 8x4, colour (red, 10 x index, 77), in shards of 7; returns its path."""
    from tfrecords_builder import writer
    from tfrecords_builder.records import GENERATED, NO_IDENTITY, ParsedDataset, Record

    root = pathlib.Path(root)
    records = []
    for index in range(count):
        path = f"{GENERATED}/{index:06d}.png"
        pixels = np.empty((8, 4, 3), np.uint8)
        pixels[...] = (red, index * 10, 77)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        write_images(root / "gan_src", [path], buf.getvalue())
        records.append(Record(path, NO_IDENTITY, NO_IDENTITY, GENERATED))
    parsed = ParsedDataset("dcgan", str(root / "gan_src"), tuple(records))
    writer.build(parsed, str(root / "gan"), records_per_shard=7, progress=False)
    return str(root / "gan")
