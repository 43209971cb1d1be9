"""AlignedReID: a backbone with a global branch (ID + metric) and a local, horizontal-stripe branch.

Zhang et al. 2017, "AlignedReID: Surpassing Human-Level Performance in Person
Re-Identification", arXiv 1711.08184, Fig. 2: the feature map [B, h, w, C] is pooled over the
whole map into the global feature, and over each row (horizontal stripe) into h local features
reduced by a 1x1 conv. The BN-neck between the global feature and the classifier follows
Luo et al. 2019, "Bag of Tricks and A Strong Baseline for Deep Person Re-identification",
arXiv 1903.07071 (BN with a frozen zero bias; the triplet loss uses the pre-BN feature).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tf_reid.data import augment
from tf_reid.models.backbones import BACKBONES
from tf_reid.models.batch_norm import batch_norms, with_fused_batch_norm

POOLINGS = ("mean", "max")


def pool(x: tf.Tensor, axis: int | tuple[int, ...], kind: str) -> tf.Tensor:
    """Mean or max over `axis`: the pooling both branches share."""
    if kind == "mean":
        return keras.ops.mean(x, axis=axis)
    if kind == "max":
        return keras.ops.max(x, axis=axis)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {kind!r}")


@keras.saving.register_keras_serializable(package="tf_reid")
class AlignedReID(keras.Model):
    """AlignedReID network: images -> {"global", "neck", "local", "logits"}.

    Args:
      num_classes: training identities, the classifier's width.
      backbone: a key of `BACKBONES`.
      backbone_options: keyword arguments of the backbone function (weights, last_stride, ...).
      input_shape: (H, W, 3) of the images.
      embedding_dim: None keeps the pooled C channels as the global feature; an int adds a
        Dense projection to that width.
      bn_neck: put a BatchNormalization (center=False) between the global feature and the
        classifier.
      local_channels: channels of each local (stripe) feature.
      local_pooling: "mean" or "max" over the width of each stripe.
      global_pooling: "mean" or "max" over the whole feature map.
      bn_momentum: momentum of every BatchNormalization's moving statistics, the backbone's
        included (Keras' convention: moving = m * moving + (1 - m) * batch). 0.9 is PyTorch's
        momentum=0.1, what ReID recipes fine-tune with; Keras' MobileNetV2 ships 0.999, which
        after a fine-tune of a few hundred steps leaves the inference statistics mostly
        ImageNet's (measured on CUHK03: test rank-1 13% as trained, 37% once the statistics
        were recomputed; see BUILD.md).
      fused_batch_norm: the backbone's BatchNormalization layers train with TensorFlow's fused
        kernel (`batch_norm.FusedBatchNormalization`: same function and variables, a fraction
        of the time on the CPU); False keeps Keras' own layers.
      local_branch: build the stripe branch and return "local"; False (a baseline, trained
        without the local TriHard) leaves it out: no variables that nothing trains.
    """

    def __init__(self, num_classes: int, backbone: str = "resnet50",
                 backbone_options: dict[str, Any] | None = None,
                 input_shape: tuple[int, int, int] = (256, 128, 3),
                 embedding_dim: int | None = None, bn_neck: bool = True,
                 local_channels: int = 128, local_pooling: str = "max",
                 global_pooling: str = "mean", bn_momentum: float = 0.9,
                 fused_batch_norm: bool = True, local_branch: bool = True, **kwargs):
        kwargs.setdefault("name", "aligned_reid")
        super().__init__(**kwargs)
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
        for name, kind in (("local_pooling", local_pooling), ("global_pooling", global_pooling)):
            if kind not in POOLINGS:
                raise ValueError(f"{name} must be one of {POOLINGS}, got {kind!r}")
        self.num_classes = num_classes
        self.backbone_name = backbone
        self.backbone_options = dict(backbone_options or {})
        self.image_shape = tuple(input_shape)
        self.embedding_dim = embedding_dim
        self.use_bn_neck = bn_neck
        self.local_channels = local_channels
        self.local_pooling = local_pooling
        self.global_pooling = global_pooling
        self.bn_momentum = bn_momentum
        self.local_branch = local_branch

        self.fused_batch_norm = fused_batch_norm
        self.backbone = BACKBONES[backbone](input_shape=self.image_shape, **self.backbone_options)
        if fused_batch_norm:
            with_fused_batch_norm(self.backbone)
        for layer in batch_norms(self.backbone):
            layer.momentum = bn_momentum
        self.embedding = (keras.layers.Dense(embedding_dim, name="embedding")
                          if embedding_dim is not None else None)
        # Bag of Tricks freezes the neck's bias at zero; without a shift it simply has none.
        self.bn_neck = (keras.layers.BatchNormalization(center=False, momentum=bn_momentum,
                                                        name="bn_neck") if bn_neck else None)
        self.classifier = keras.layers.Dense(num_classes, use_bias=False, name="classifier")
        # A 1x1 conv on [B, h, 1, C] is a Dense on the channel axis of [B, h, C].
        self.local_conv = (keras.layers.Dense(local_channels, name="local_conv")
                           if local_branch else None)
        self.local_bn = (keras.layers.BatchNormalization(momentum=bn_momentum, name="local_bn")
                         if local_branch else None)
        self.build((None, *self.image_shape))

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Creates every variable, so weights exist (and set_weights works) before a call."""
        _, h, _, channels = self.backbone.output.shape
        global_dim = channels
        if self.embedding is not None:
            self.embedding.build((None, channels))
            global_dim = self.embedding_dim
        if self.bn_neck is not None:
            self.bn_neck.build((None, global_dim))
        self.classifier.build((None, global_dim))
        if self.local_branch:
            self.local_conv.build((None, h, channels))
            self.local_bn.build((None, h, self.local_channels))

    def call(self, images: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        """Forward pass.

        Args:
          images: [B, H, W, 3] uint8 or float, RGB in [0, 255] (not normalised).
          training: batch statistics in every BatchNormalization (and their moving averages
            updated) when True; nothing else depends on it.

        Returns:
          {"global": [B, D] pre-BN global feature (metric learning),
           "neck": [B, D] the same after the BN-neck (the classifier's input; the global
           feature itself without a neck),
           "local": [B, h, local_channels] stripe features (aligned distance; only with the
           local branch), "logits": [B, num_classes]}.
        """
        x = augment.normalize(keras.ops.cast(images, "float32"))
        feature_map = self.backbone(x, training=training)  # [B, h, w, C]

        global_feature = pool(feature_map, (1, 2), self.global_pooling)  # [B, C]
        if self.embedding is not None:
            global_feature = self.embedding(global_feature)  # [B, D]
        neck = global_feature
        if self.bn_neck is not None:
            neck = self.bn_neck(neck, training=training)
        logits = self.classifier(neck)
        if not self.local_branch:
            return {"global": global_feature, "neck": neck, "logits": logits}

        local = pool(feature_map, 2, self.local_pooling)  # [B, h, C]
        local = self.local_conv(local)
        local = keras.ops.relu(self.local_bn(local, training=training))
        return {"global": global_feature, "neck": neck, "local": local, "logits": logits}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes,
            "backbone": self.backbone_name,
            # The starting weights are not architecture: a rebuilt model gets its weights loaded
            # afterwards, and re-fetching "imagenet" would fail offline.
            "backbone_options": {k: v for k, v in self.backbone_options.items() if k != "weights"},
            "input_shape": list(self.image_shape),
            "embedding_dim": self.embedding_dim,
            "bn_neck": self.use_bn_neck,
            "local_channels": self.local_channels,
            "local_pooling": self.local_pooling,
            "global_pooling": self.global_pooling,
            "bn_momentum": self.bn_momentum,
            "fused_batch_norm": self.fused_batch_norm,
            "local_branch": self.local_branch,
        })
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "AlignedReID":
        return cls(**config)
