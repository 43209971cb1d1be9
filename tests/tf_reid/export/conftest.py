"""Shared by the export tests: encoded test images and one exported tiny model."""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_reid.export import saved_model
from tf_reid.models.aligned_reid import AlignedReID

SHAPE = (32, 16, 3)


def encoded(seed: int, height: int = 45, width: int = 21, fmt: str = "PNG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="package")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(1)
    model = AlignedReID(7, backbone="tiny", input_shape=SHAPE)
    # Non-trivial BatchNorm statistics, so inference mode matters.
    model(np.random.default_rng(0).integers(0, 256, (16, *SHAPE), dtype=np.uint8), training=True)
    root = tmp_path_factory.mktemp("export")
    path = saved_model.export(model, str(root), "reid", warmup_images=[encoded(0), encoded(1)],
                              model_card={"training_data": "synthetic"})
    return model, path, tf.saved_model.load(path)
