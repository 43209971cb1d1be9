"""Backbone registry: output shapes, published Keras parameter counts, ResNet50's last stride."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tf_reid.models import backbones
from tf_reid.models.backbones import BACKBONES, resnet50

# Published counts of keras.applications without their top (Keras' applications table and
# model.summary()), independent of this package's code.
RESNET50_NO_TOP_PARAMS = 23_587_712
MOBILENET_V2_NO_TOP_PARAMS = 2_257_984


@pytest.fixture(scope="module")
def resnets(tmp_path_factory):
    """(stride-1, stride-2) ResNet50s at 64x32, the stride-1 one loaded from the other's file."""
    stride2 = resnet50(input_shape=(64, 32, 3), last_stride=2)
    path = str(tmp_path_factory.mktemp("weights") / "resnet50.weights.h5")
    stride2.save_weights(path)
    stride1 = resnet50(input_shape=(64, 32, 3), weights=path, last_stride=1)
    return stride1, stride2


def test_registry_keys():
    assert sorted(BACKBONES) == ["mobilenet_v2", "resnet50", "tiny"]


def test_resnet50_shapes_and_params(resnets):
    stride1, stride2 = resnets
    images = np.random.default_rng(0).normal(size=(2, 64, 32, 3)).astype(np.float32)
    assert stride1(images).shape == (2, 4, 2, 2048)
    assert stride2(images).shape == (2, 2, 1, 2048)
    # A stride changes no parameter shape.
    assert stride1.count_params() == RESNET50_NO_TOP_PARAMS
    assert stride2.count_params() == RESNET50_NO_TOP_PARAMS


def test_resnet50_weights_file_and_stride_location(resnets):
    stride1, stride2 = resnets
    # Input layers take session-dependent automatic names; every other layer keeps its own.
    assert [layer.name for layer in stride1.layers[1:]] == [
        layer.name for layer in stride2.layers[1:]]
    for a, b in zip(stride1.get_weights(), stride2.get_weights()):
        np.testing.assert_array_equal(a, b)
    strides = {layer.name: layer.strides for layer in stride1.layers
               if layer.name.startswith("conv5_block1_") and hasattr(layer, "strides")}
    assert set(strides.values()) == {(1, 1)}
    assert stride2.get_layer("conv5_block1_1_conv").strides == (2, 2)

    # Up to conv5's first (1x1) conv the two networks agree; there the stride-2 output is
    # exactly the stride-1 output at even positions.
    images = np.random.default_rng(1).normal(size=(2, 64, 32, 3)).astype(np.float32)
    for name in ("conv4_block6_out", "conv5_block1_1_conv", "conv5_block1_0_conv"):
        probe1 = keras.Model(stride1.input, stride1.get_layer(name).output)
        probe2 = keras.Model(stride2.input, stride2.get_layer(name).output)
        out1, out2 = np.asarray(probe1(images)), np.asarray(probe2(images))
        if name == "conv4_block6_out":
            np.testing.assert_array_equal(out1, out2)
        else:
            assert out1.shape[1:3] == (4, 2) and out2.shape[1:3] == (2, 1)
            np.testing.assert_allclose(out1[:, ::2, ::2], out2, rtol=1e-5, atol=1e-5)


def test_resnet50_rejects_other_strides():
    with pytest.raises(ValueError, match="last_stride"):
        resnet50(input_shape=(64, 32, 3), last_stride=3)


def test_mobilenet_v2_shape_and_params():
    model = BACKBONES["mobilenet_v2"](input_shape=(64, 32, 3))
    images = np.zeros((2, 64, 32, 3), np.float32)
    assert model(images).shape == (2, 2, 1, 1280)
    assert model.count_params() == MOBILENET_V2_NO_TOP_PARAMS


@pytest.mark.parametrize("width", [4, 16])
def test_tiny_shape_and_params(width):
    model = BACKBONES["tiny"](input_shape=(32, 16, 3), width=width)
    images = np.zeros((3, 32, 16, 3), np.float32)
    assert model(images).shape == (3, 4, 2, 4 * width)
    # Three bias-free 3x3 convs (3 -> w -> 2w -> 4w), each followed by a 4-vector BN.
    convs = 9 * (3 * width + width * 2 * width + 2 * width * 4 * width)
    bns = 4 * (width + 2 * width + 4 * width)
    assert model.count_params() == convs + bns


def test_tiny_weights_file(tmp_path):
    first = BACKBONES["tiny"](input_shape=(16, 16, 3), width=4)
    path = str(tmp_path / "tiny.weights.h5")
    first.save_weights(path)
    second = BACKBONES["tiny"](input_shape=(16, 16, 3), weights=path, width=4)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_mobilenet_v2_with_converted_torch_weights(shared, tmp_path):
    from tf_reid.models import torch_weights

    converted = torch_weights.mobilenet_v2_symmetric_padding((64, 32, 3))
    converted.set_weights(torch_weights.keras_mobilenet_v2_weights(
        torch_weights.load_legacy_state_dict(shared / "weights/mobilenetv2_imagenet_pytorch.pt")))
    path = str(tmp_path / "mobilenet_v2.weights.h5")
    converted.save_weights(path)
    model = backbones.BACKBONES["mobilenet_v2"]((64, 32, 3), weights=path, torch_padding=True)
    x = np.random.default_rng(0).normal(size=(2, 64, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(x).numpy(), converted(x).numpy())
    with pytest.raises(ValueError, match="converted PyTorch weights"):
        backbones.mobilenet_v2((64, 32, 3), weights="imagenet", torch_padding=True)
