"""The metric losses of the ReID literature on a batch distance matrix, beside TriHard.

Each is a pure function `loss(dist: [B, B], pids: [B], margin) -> [B]` of per-anchor values whose
mean over the batch is the loss as its paper defines it (a batch-level loss gives every anchor
the same share), so the train step averages them as it averages TriHard. Masks are static-shape
`tf.where`s over the [B, B] (or [B, B, B]) matrix: XLA compiles them all.

`METRIC_LOSSES` is the registry `tf_reid.train --metric_loss` chooses from; "trihard" is
`triplet.batch_hard_triplet`, AlignedReID's.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from tf_reid.losses import triplet

MetricLoss = Callable[[tf.Tensor, tf.Tensor, float], tf.Tensor]


def _masks(dist: tf.Tensor, pids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """[B, B] booleans: positive pairs (same identity, not the same sample), negative pairs."""
    pids = tf.convert_to_tensor(pids)
    same = tf.equal(pids[:, tf.newaxis], pids[tf.newaxis, :])
    not_self = ~tf.eye(tf.shape(dist)[0], dtype=tf.bool)
    return same & not_self, ~same


def contrastive(dist: tf.Tensor, pids: tf.Tensor, margin: float = 0.3) -> tf.Tensor:
    """Contrastive loss over every pair of the batch, per anchor.

    A pair (i, j), i != j, costs d_ij^2 when i and j share an identity and max(margin - d_ij, 0)^2
    otherwise; anchor i's value is the mean over its B - 1 pairs, so the batch mean is the mean
    over all pairs.

    Args:
      dist: [B, B] distances.
      pids: [B] identity labels.
      margin: negatives farther than this cost nothing.

    Returns:
      [B] per-anchor losses.

    Reference: Hadsell, Chopra and LeCun 2006, "Dimensionality Reduction by Learning an
    Invariant Mapping" (the survey's Eq. 1.2).
    """
    dist = tf.convert_to_tensor(dist)
    positive, negative = _masks(dist, pids)
    hinge = tf.nn.relu(tf.cast(margin, dist.dtype) - dist)
    cost = tf.where(positive, tf.square(dist), tf.where(negative, tf.square(hinge), 0.0))
    return tf.reduce_sum(cost, axis=1) / tf.cast(tf.shape(dist)[0] - 1, dist.dtype)


def random_triplet(dist: tf.Tensor, pids: tf.Tensor, margin: float = 0.3,
                   seed: tf.Tensor | None = None) -> tf.Tensor:
    """Triplet loss with one random positive and one random negative per anchor.

    The unmined triplet loss the batch-hard one improved on: each candidate is equally likely,
    drawn with a stateless generator, so the same `seed` draws the same triplets (a resumed run
    repeats them) and the caller varies it per step.

    Args:
      dist: [B, B] distances.
      pids: [B] identity labels.
      margin: the hinge margin.
      seed: [2] integers (e.g. the step and the replica); None = [0, 0].

    Returns:
      [B] per-anchor losses max(d_ap - d_an + margin, 0).

    Reference: the triplet loss (the survey's Eq. 1.3; Schroff et al. 2015, "FaceNet",
    arXiv:1503.03832) with random sampling, Hermans et al. 2017's "batch random" baseline.
    """
    dist = tf.convert_to_tensor(dist)
    positive, negative = _masks(dist, pids)
    seed = tf.zeros([2], tf.int32) if seed is None else tf.cast(seed, tf.int32)
    anchors = tf.range(tf.shape(dist)[0], dtype=tf.int32)

    def draw(candidates: tf.Tensor, stream: int) -> tf.Tensor:
        # The argmax of i.i.d. uniform keys over the candidates is a uniform pick among them.
        keys = tf.random.stateless_uniform(tf.shape(dist), seed + tf.constant([0, stream * 7919]),
                                           alg="philox")  # the same bits under XLA
        picked = tf.argmax(tf.where(candidates, keys, -1.0), axis=1, output_type=tf.int32)
        return tf.where(tf.reduce_any(candidates, axis=1), picked, anchors)

    d_ap = tf.gather(dist, draw(positive, 1), batch_dims=1)
    d_an = tf.gather(dist, draw(negative, 2), batch_dims=1)
    return tf.nn.relu(d_ap - d_an + tf.cast(margin, dist.dtype))


def batch_all_triplet(dist: tf.Tensor, pids: tf.Tensor, margin: float = 0.3) -> tf.Tensor:
    """Triplet loss over every valid triplet of the batch, averaged over the active ones.

    Every (anchor a, positive p != a, negative n) costs max(d_ap - d_an + margin, 0); the loss is
    their sum divided by the number of triplets that cost more than zero (Hermans et al.'s
    "batch all", the BA_{!=0} variant). Anchor a's value is B x (its triplets' sum) / (active
    triplets of the batch), so the batch mean is that loss.

    Args:
      dist: [B, B] distances.
      pids: [B] identity labels.
      margin: the hinge margin.

    Returns:
      [B] per-anchor values (all 0 when no triplet is active).

    Reference: Hermans et al. 2017, "In Defense of the Triplet Loss for Person
    Re-Identification" (arXiv:1703.07737), batch all (the survey's Eq. 1.3 over all triplets).
    """
    dist = tf.convert_to_tensor(dist)
    positive, negative = _masks(dist, pids)
    valid = positive[:, :, tf.newaxis] & negative[:, tf.newaxis, :]  # [a, p, n]
    losses = tf.nn.relu(dist[:, :, tf.newaxis] - dist[:, tf.newaxis, :]
                        + tf.cast(margin, dist.dtype))
    losses = tf.where(valid, losses, 0.0)
    active = tf.reduce_sum(tf.cast(losses > 0, dist.dtype))
    batch = tf.cast(tf.shape(dist)[0], dist.dtype)
    return batch * tf.reduce_sum(losses, axis=[1, 2]) / tf.maximum(active, 1.0)


def quadruplet(dist: tf.Tensor, pids: tf.Tensor, margin: float = 0.3,
               second_margin: float | None = None) -> tf.Tensor:
    """Batch-hard quadruplet loss, per anchor.

    Anchor a with its hardest positive p and hardest negative n (as TriHard) costs
    max(d_ap - d_an + margin, 0) + max(d_ap - d_kl + second_margin, 0), where (k, l) is the
    nearest pair of samples of two different identities, neither of them a's: the second term
    pushes negative pairs that share nothing with the anchor beyond its positive distance, which
    enlarges the inter-class margin also between identities the anchor never meets.

    Args:
      dist: [B, B] distances.
      pids: [B] identity labels (at least three identities for the second term to be defined;
        with fewer it is 0).
      margin: the triplet term's margin (alpha_1).
      second_margin: the second term's (alpha_2); None = margin / 2 (the paper's 1.0 and 0.5).

    Returns:
      [B] per-anchor losses.

    Reference: Chen et al. 2017, "Beyond triplet loss: a deep quadruplet network for person
    re-identification" (arXiv:1704.01719), Eq. 4 with the hard-sample mining of its Sec. 3.3.
    """
    dist = tf.convert_to_tensor(dist)
    pids = tf.convert_to_tensor(pids)
    second_margin = margin / 2 if second_margin is None else second_margin
    pos_index, neg_index = triplet.hard_example_indices(dist, pids)
    d_ap = tf.gather(dist, pos_index, batch_dims=1)
    d_an = tf.gather(dist, neg_index, batch_dims=1)
    # Pairs (k, l) of two identities, both other than the anchor's: [a, k, l].
    _, negative = _masks(dist, pids)
    pair_ok = negative[tf.newaxis, :, :] & negative[:, :, tf.newaxis] & negative[:, tf.newaxis, :]
    inf = tf.constant(np.inf, dist.dtype)
    d_kl = tf.reduce_min(tf.where(pair_ok, dist[tf.newaxis, :, :], inf), axis=[1, 2])
    second = tf.where(tf.math.is_finite(d_kl),
                      tf.nn.relu(d_ap - d_kl + tf.cast(second_margin, dist.dtype)), 0.0)
    return tf.nn.relu(d_ap - d_an + tf.cast(margin, dist.dtype)) + second


def margin_sample_mining(dist: tf.Tensor, pids: tf.Tensor, margin: float = 0.3) -> tf.Tensor:
    """Margin sample mining loss (MSML): one hinge on the batch's hardest pairs.

    The loss is max(max_{same id} d - min_{different ids} d + margin, 0): the farthest positive
    pair and the nearest negative pair of the whole batch, whichever anchors they belong to.
    Every anchor carries the same value, so the batch mean is the loss; its gradient reaches the
    two pairs only.

    Args:
      dist: [B, B] distances.
      pids: [B] identity labels.
      margin: the hinge margin.

    Returns:
      [B], the batch's loss repeated.

    Reference: Xiao et al. 2017, "Margin Sample Mining Loss: A Deep Learning Based Method for
    Person Re-identification" (arXiv:1710.00478), Eq. 5.
    """
    dist = tf.convert_to_tensor(dist)
    positive, negative = _masks(dist, pids)
    inf = tf.constant(np.inf, dist.dtype)
    hardest_positive = tf.reduce_max(tf.where(positive, dist, -inf))
    hardest_negative = tf.reduce_min(tf.where(negative, dist, inf))
    loss = tf.nn.relu(hardest_positive - hardest_negative + tf.cast(margin, dist.dtype))
    loss = tf.where(tf.math.is_finite(loss), loss, 0.0)  # no positive or no negative pair
    return tf.fill(tf.shape(dist)[:1], loss)


# --metric_loss: name -> loss(dist [B, B], pids [B], margin) -> [B]; those in SEEDED also take
# seed=[2] integers (the train step passes its step and replica).
METRIC_LOSSES: dict[str, MetricLoss] = {
    "trihard": triplet.batch_hard_triplet,
    "random_triplet": random_triplet,
    "batch_all": batch_all_triplet,
    "contrastive": contrastive,
    "quadruplet": quadruplet,
    "msml": margin_sample_mining,
}
SEEDED = frozenset({"random_triplet"})
