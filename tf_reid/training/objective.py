"""The AlignedReID training objective as per-example terms: ID, global and local TriHard, mutual.

Everything here is a pure function of model outputs and labels returning [B] per-example values
(or scalars for statistics), so the train step only weighs, averages and differentiates them.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import tensorflow as tf

from tf_reid.losses import identity, metric, mutual, triplet
from tf_reid.losses.distance import pairwise_distance

Outputs = dict[str, tf.Tensor]


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights and margins of the objective; a weight of 0 leaves that term out entirely.

    Defaults are AlignedReID's (arXiv 1711.08184, Sec. 4.1): ID + global TriHard + local TriHard,
    margin 0.3 for both, mutual terms 0.01 (KL) and 0.001 (metric) with two or more students.
    `local_triplet=0` is the global-only baseline (the local branch gets no training signal).
    `metric_loss` (a key of `metric.METRIC_LOSSES`) is the global metric term weighted by
    `global_triplet`, with `margin`; `soft_margin` applies to "trihard" only. The local term is
    always TriHard on the aligned distance, mined with the global distance, as in AlignedReID.
    `metric_normalize` computes the global metric term on L2-normalised features: a batch-level
    hinge such as MSML's is almost always active and otherwise falls as the features shrink.
    """
    id: float = 1.0
    global_triplet: float = 1.0
    local_triplet: float = 1.0
    mutual_id: float = mutual.MUTUAL_WEIGHTS["classification"]
    mutual_metric: float = mutual.MUTUAL_WEIGHTS["metric"]
    margin: float = 0.3
    local_margin: float = 0.3
    soft_margin: bool = False
    label_smoothing: float = 0.0
    metric_loss: str = "trihard"
    metric_normalize: bool = False


def student_terms(outputs: Outputs, labels: tf.Tensor, weights: LossWeights,
                  seed: tf.Tensor | None = None) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """One student's own loss terms and its batch distance matrix.

    Args:
      outputs: the model's {"global": [B, D], "local": [B, h, c], "logits": [B, C]} (any float
        dtype; computed in float32 here).
      labels: [B] identity labels of a PK batch.
      weights: which terms to compute (weight 0: not computed).
      seed: [2] integers for a metric loss that samples (`metric.SEEDED`); vary it per step.

    Returns:
      (terms, dist): terms maps "id", "global_triplet", "local_triplet" (those with a non-zero
      weight) to [B] per-example values, and "d_ap", "d_an" to [B] hardest positive/negative
      global distances; dist is the [B, B] global distance matrix (for mutual learning).
    """
    global_feature = tf.cast(outputs["global"], tf.float32)
    dist = pairwise_distance(global_feature, global_feature)
    pos, neg = triplet.hard_example_indices(dist, labels)
    terms = {"d_ap": tf.gather(dist, pos, batch_dims=1), "d_an": tf.gather(dist, neg, batch_dims=1)}
    if weights.id:
        terms["id"] = identity.id_loss(labels, tf.cast(outputs["logits"], tf.float32),
                                       weights.label_smoothing)
    if weights.global_triplet:
        metric_dist = dist
        if weights.metric_normalize:
            unit = tf.math.l2_normalize(global_feature, axis=-1)
            metric_dist = pairwise_distance(unit, unit)
        if weights.metric_loss == "trihard":
            terms["global_triplet"] = triplet.batch_hard_triplet(
                metric_dist, labels, weights.margin, weights.soft_margin)
        else:
            extra = {"seed": seed} if weights.metric_loss in metric.SEEDED else {}
            terms["global_triplet"] = metric.METRIC_LOSSES[weights.metric_loss](
                metric_dist, labels, weights.margin, **extra)
    if weights.local_triplet:
        terms["local_triplet"] = triplet.local_trihard(
            dist, tf.cast(outputs["local"], tf.float32), labels, weights.local_margin,
            soft_margin=weights.soft_margin)
    return terms, dist


def mutual_terms(index: int, logits: Sequence[tf.Tensor], dists: Sequence[tf.Tensor],
                 weights: LossWeights) -> dict[str, tf.Tensor]:
    """Student `index`'s mutual-learning terms against every peer, averaged over the peers.

    Deep Mutual Learning (arXiv 1706.00384) averages the KL to the N - 1 peers; the peers' sides
    carry no gradient (see `tf_reid.losses.mutual`), so each term trains student `index` only.

    Args:
      index: which student.
      logits: every student's [B, C] logits.
      dists: every student's [B, B] global distance matrix.
      weights: mutual_id / mutual_metric select the terms.

    Returns:
      {"mutual_id": [B], "mutual_metric": [B]} for the non-zero weights.
    """
    peers = [j for j in range(len(logits)) if j != index]
    terms = {}
    if weights.mutual_id:
        terms["mutual_id"] = tf.add_n([mutual.classification_mutual_loss(
            tf.cast(logits[index], tf.float32), tf.cast(logits[j], tf.float32))
            for j in peers]) / len(peers)
    if weights.mutual_metric:
        terms["mutual_metric"] = tf.add_n([mutual.metric_mutual_loss(dists[index], dists[j])
                                           for j in peers]) / len(peers)
    return terms


LOSS_TERMS = ("id", "global_triplet", "local_triplet", "mutual_id", "mutual_metric")


def weighted_sum(terms: dict[str, tf.Tensor], weights: LossWeights) -> tf.Tensor:
    """[B] sum over the loss terms present in `terms` of weight * term (statistics excluded)."""
    return tf.add_n([getattr(weights, name) * terms[name] for name in LOSS_TERMS if name in terms])


def average_loss(terms: dict[str, tf.Tensor], weights: LossWeights,
                 global_real: tf.Tensor, global_batch: tf.Tensor) -> tf.Tensor:
    """This replica's share of the global mean loss: sum of weight * term over its examples,
    divided by the global count of the examples the term covers.

    Every term covers the real images (`global_real` of them in the global batch) except
    "lsro", the ID loss of the generated ones (weighted by `weights.id`), so the ID term's mean
    runs over all `global_batch` images: (sum of real ID losses + sum of LSRO) / global_batch.
    Without "lsro", global_real equals global_batch and this is the plain average.
    """
    if "lsro" not in terms:
        return tf.nn.compute_average_loss(weighted_sum(terms, weights),
                                          global_batch_size=global_batch)
    identity_terms = weights.id * tf.concat([terms.get("id", tf.zeros([0])), terms["lsro"]], 0)
    others = {k: v for k, v in terms.items() if k != "id"}
    loss = tf.nn.compute_average_loss(identity_terms, global_batch_size=global_batch)
    if any(name in others for name in LOSS_TERMS):
        loss += tf.nn.compute_average_loss(weighted_sum(others, weights),
                                           global_batch_size=global_real)
    return loss


def l2_penalty(variables: Sequence[tf.Variable], weight_decay: float) -> tf.Tensor:
    """0.5 * weight_decay * sum ||w||^2 over the kernels (rank >= 2) of `variables`.

    Its gradient weight_decay * w is the coupled weight decay of PyTorch's Adam(weight_decay=...)
    that the AlignedReID reproductions train with; biases and BatchNorm scales are not decayed.
    """
    kernels = [tf.cast(v, tf.float32) for v in variables if len(v.shape) >= 2]
    if not weight_decay or not kernels:
        return tf.constant(0.0)
    return 0.5 * weight_decay * tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels])
