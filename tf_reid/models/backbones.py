"""Backbones: a plain dict registry of functions building feature-map extractors.

Every entry is `fn(input_shape=(256, 128, 3), weights=None, **options) -> keras.Model` mapping a
normalised float32 image batch [B, H, W, 3] (`augment.normalize` output) to a feature map
[B, h, w, C]. `weights` is None (random init), "imagenet" (Keras' published weights, downloaded)
or the path of a weights file saved from the same backbone.
"""

from __future__ import annotations

from typing import Callable

import keras

from tf_reid.models import torch_weights

# The two layers of ResNet50's conv5 stage that carry its stride 2: the projection shortcut and
# the first 1x1 conv of block 1 (Keras puts the stride on the 1x1, as Caffe's ResNet does).
_RESNET50_STRIDED = ("conv5_block1_0_conv", "conv5_block1_1_conv")


def resnet50(input_shape: tuple[int, int, int] = (256, 128, 3), weights: str | None = None,
             last_stride: int = 1) -> keras.Model:
    """ResNet50 without its top: [B, H, W, 3] -> [B, H/16, W/16, 2048] (last_stride=1) or
    [B, H/32, W/32, 2048] (last_stride=2).

    Keras does not expose the last stage's stride, so for last_stride=1 the stock network is
    cloned with conv5's two strided convs rebuilt at stride 1 and all weights copied over;
    a stride changes no parameter shape (Luo et al. 2019, "Bag of Tricks", arXiv 1903.07071).

    Args:
      input_shape: (H, W, 3).
      weights: None, "imagenet" or a weights-file path, loaded into the stock network.
      last_stride: 1 or 2, the stride of the conv5_x stage.

    Returns:
      A functional keras.Model named "resnet50".
    """
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
    stock = keras.applications.ResNet50(include_top=False, weights=weights,
                                        input_shape=tuple(input_shape))
    if last_stride == 2:
        return stock

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if layer.name in _RESNET50_STRIDED:
            config["strides"] = (1, 1)
        return layer.__class__.from_config(config)

    model = keras.models.clone_model(stock, clone_function=clone_layer)
    model.set_weights(stock.get_weights())
    return model


def mobilenet_v2(input_shape: tuple[int, int, int] = (256, 128, 3),
                 weights: str | None = None, torch_padding: bool = False) -> keras.Model:
    """MobileNetV2 (alpha 1.0) without its top: [B, H, W, 3] -> [B, H/32, W/32, 1280].

    With "imagenet" weights and a non-square input Keras warns that it loads the 224x224
    weights; the convolutions do not depend on the input size, so that is fine.

    Args:
      input_shape: (H, W, 3).
      weights: None, "imagenet" or a weights-file path.
      torch_padding: PyTorch's symmetric stride-2 padding and BN epsilon, for weights converted
        by `tools.convert_torch_weights` (then `weights` must be None or that file).

    Returns:
      A functional keras.Model.
    """
    if torch_padding:
        if weights == "imagenet":
            raise ValueError("torch_padding=True takes converted PyTorch weights (a file), "
                             "not Keras' 'imagenet'")
        model = torch_weights.mobilenet_v2_symmetric_padding(tuple(input_shape))
        if weights is not None:
            model.load_weights(weights)
        return model
    return keras.applications.MobileNetV2(include_top=False, weights=weights, alpha=1.0,
                                          input_shape=tuple(input_shape))


def tiny(input_shape: tuple[int, int, int] = (256, 128, 3), weights: str | None = None,
         width: int = 16) -> keras.Model:
    """Three stride-2 conv/BN/ReLU blocks, for fast tests: [B, H, W, 3] -> [B, H/8, W/8, 4*width].

    Args:
      input_shape: (H, W, 3), H and W multiples of 8.
      weights: None or a weights-file path ("imagenet" has no meaning here).
      width: channels of the first block; they double at each block.

    Returns:
      A functional keras.Model named "tiny".
    """
    if weights == "imagenet":
        raise ValueError("the tiny backbone has no ImageNet weights")
    inputs = keras.Input(tuple(input_shape))
    x = inputs
    for i, channels in enumerate((width, 2 * width, 4 * width)):
        x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", use_bias=False,
                                name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    model = keras.Model(inputs, x, name="tiny")
    if weights is not None:
        model.load_weights(weights)
    return model


BACKBONES: dict[str, Callable[..., keras.Model]] = {
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
    "tiny": tiny,
}
