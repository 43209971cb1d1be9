"""Identity (ID) classification loss: softmax cross-entropy with label smoothing."""

from __future__ import annotations

import tensorflow as tf


def id_loss(labels: tf.Tensor, logits: tf.Tensor, label_smoothing: float = 0.0) -> tf.Tensor:
    """Softmax cross-entropy of every sample against a label-smoothed one-hot target.

    The target is (1 - eps) * one_hot(label) + eps / C, so the true class gets 1 - eps + eps / C
    and every other class eps / C; eps = 0 is plain cross-entropy.

    Args:
        labels: [B] integer class indices in [0, C) (training pids, relabelled 0..C-1).
        logits: [B, C] unnormalised class scores.
        label_smoothing: eps in [0, 1]; the ReID "bag of tricks" uses 0.1.

    Returns:
        [B] per-sample losses.

    Reference: Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision"
    (arXiv:1512.00567), Sec. 7; Luo et al. 2019, "Bag of Tricks and A Strong Baseline for Deep
    Person Re-identification" (arXiv:1903.07071).
    """
    logits = tf.convert_to_tensor(logits)
    num_classes = tf.shape(logits)[-1]
    eps = tf.cast(label_smoothing, logits.dtype)
    target = tf.one_hot(labels, num_classes, dtype=logits.dtype)
    target = (1.0 - eps) * target + eps / tf.cast(num_classes, logits.dtype)
    return tf.nn.softmax_cross_entropy_with_logits(labels=target, logits=logits)
