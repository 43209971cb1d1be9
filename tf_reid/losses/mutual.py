"""Mutual learning losses: each student matches the other's class posteriors and distances.

In mutual learning every student is trained towards the others' current outputs, which are held
constant for that step (AlignedReID's zero-gradient function ZG, here `tf.stop_gradient`): each
student gets its own losses with itself as `logits`/`dist` and a peer as the target.
"""

from __future__ import annotations

import tensorflow as tf

# Loss weights of the two mutual terms relative to the ID and triplet losses (AlignedReID).
MUTUAL_WEIGHTS = {"classification": 0.01, "metric": 0.001}


def classification_mutual_loss(logits: tf.Tensor, target_logits: tf.Tensor) -> tf.Tensor:
    """KL(p_target || p) per sample, with the target distribution held constant.

    Computed from log-softmax on both sides, sum_c p_t,c (log p_t,c - log p_c), so it is finite
    for any finite logits (p_t,c underflowing to 0 contributes 0 * finite = 0).

    Args:
        logits: [B, C] this student's class scores; gradients flow into them.
        target_logits: [B, C] the peer's class scores; no gradient flows into them.

    Returns:
        [B] per-sample KL divergences (>= 0, 0 where the two posteriors agree).

    Reference: Zhang et al. 2018, "Deep Mutual Learning" (arXiv:1706.00384), Eq. 1-2; the
    classification mutual loss of Zhang et al. 2017, "AlignedReID" (arXiv:1711.08184).
    """
    logits = tf.convert_to_tensor(logits)
    target_log_probs = tf.stop_gradient(tf.nn.log_softmax(target_logits, axis=-1))
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    return tf.reduce_sum(tf.exp(target_log_probs) * (target_log_probs - log_probs), axis=-1)


def metric_mutual_loss(dist: tf.Tensor, target_dist: tf.Tensor) -> tf.Tensor:
    """Per-anchor mean squared difference between two students' batch distance matrices.

    Row a gives (1/B) sum_j (D1[a, j] - ZG(D2)[a, j])^2; summing the B values and dividing by B
    gives AlignedReID's (1/B^2) sum_{a,j} (D1 - ZG(D2))^2, which is what
    `tf.nn.compute_average_loss(per_anchor, global_batch_size=B)` does on one replica.

    Args:
        dist: [B, B] this student's distances over the batch; gradients flow into them.
        target_dist: [B, B] the peer's distances over the same batch; no gradient flows into them.

    Returns:
        [B] per-anchor losses.

    Reference: Zhang et al. 2017, "AlignedReID: Surpassing Human-Level Performance in Person
    Re-Identification" (arXiv:1711.08184), Eq. 3 (metric mutual loss).
    """
    dist = tf.convert_to_tensor(dist)
    target = tf.stop_gradient(tf.convert_to_tensor(target_dist, dtype=dist.dtype))
    return tf.reduce_mean(tf.square(dist - target), axis=-1)
