"""Batch-hard triplet loss (TriHard) on global distances, and AlignedReID's local TriHard.

Mining is a masked argmax/argmin over the whole [B, B] distance matrix, so every shape is static
and XLA compiles it; no boolean_mask, no map_fn.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

PairDistance = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def hard_example_indices(dist: tf.Tensor, pids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The hardest positive and hardest negative of every anchor in a batch.

    The hardest positive of anchor a is the other sample of a's identity farthest from it; the
    hardest negative is the sample of another identity nearest to it. Ties go to the lowest index.
    The anchor is never its own positive unless it is the only sample of its identity; then
    (and only then) pos_index[a] = a. PK batches (K >= 2) never hit that case. Likewise a batch of
    a single identity has no negatives and gets neg_index[a] = a. Either way the indices stay
    valid, so gathering with them never fails, but the triplet they make is degenerate.

    Args:
        dist: [B, B] distances, dist[a, j] between anchor a and sample j. Only the rows are read,
            so it need not be symmetric, and its diagonal is never used for mining.
        pids: [B] identity labels (any dtype tf.equal compares).

    Returns:
        (pos_index, neg_index): two [B] int32 index vectors into the batch.

    Reference: Hermans et al. 2017, "In Defense of the Triplet Loss for Person
    Re-Identification" (arXiv:1703.07737), batch hard.
    """
    dist = tf.convert_to_tensor(dist)
    pids = tf.convert_to_tensor(pids)
    anchors = tf.range(tf.shape(dist)[0], dtype=tf.int32)
    same = tf.equal(pids[:, tf.newaxis], pids[tf.newaxis, :])
    is_self = tf.equal(anchors[:, tf.newaxis], anchors[tf.newaxis, :])
    positive = same & ~is_self
    negative = ~same
    # Non-candidates get -inf/+inf so they lose every argmax/argmin; unlike `dist + big * mask`
    # this leaves the candidates' values untouched whatever their scale.
    inf = tf.constant(np.inf, dist.dtype)
    hardest_positive = tf.argmax(tf.where(positive, dist, -inf), axis=1, output_type=tf.int32)
    hardest_negative = tf.argmin(tf.where(negative, dist, inf), axis=1, output_type=tf.int32)
    pos_index = tf.where(tf.reduce_any(positive, axis=1), hardest_positive, anchors)
    neg_index = tf.where(tf.reduce_any(negative, axis=1), hardest_negative, anchors)
    return pos_index, neg_index


def _triplet(d_ap: tf.Tensor, d_an: tf.Tensor, margin: float, soft_margin: bool) -> tf.Tensor:
    """max(d_ap - d_an + margin, 0), or the soft margin ln(1 + exp(d_ap - d_an))."""
    if soft_margin:
        return tf.nn.softplus(d_ap - d_an)
    return tf.nn.relu(d_ap - d_an + tf.cast(margin, d_ap.dtype))


def batch_hard_triplet(dist: tf.Tensor, pids: tf.Tensor, margin: float = 0.3,
                       soft_margin: bool = False) -> tf.Tensor:
    """Batch-hard triplet loss of every anchor.

    Each anchor a is paired with its hardest positive p and hardest negative n
    (`hard_example_indices`) and contributes max(d(a, p) - d(a, n) + margin, 0), or with
    `soft_margin` softplus(d(a, p) - d(a, n)) = ln(1 + exp(d(a, p) - d(a, n))), which ignores
    `margin`. Gradients reach `dist` only at the two mined entries of each row.

    Args:
        dist: [B, B] distances (e.g. `pairwise_distance(features, features)`).
        pids: [B] identity labels.
        margin: the hinge margin (AlignedReID and Hermans et al. use 0.3 on unnormalised
            ResNet-50 features).
        soft_margin: use the soft-margin form instead of the hinge.

    Returns:
        [B] per-anchor losses; average them with `tf.nn.compute_average_loss`.

    Reference: Hermans et al. 2017, "In Defense of the Triplet Loss for Person
    Re-Identification" (arXiv:1703.07737), Eq. 5 and the soft margin of Sec. 3; the TriHard loss
    of Zhang et al. 2017, "AlignedReID" (arXiv:1711.08184).
    """
    dist = tf.convert_to_tensor(dist)
    pos_index, neg_index = hard_example_indices(dist, pids)
    d_ap = tf.gather(dist, pos_index, batch_dims=1)
    d_an = tf.gather(dist, neg_index, batch_dims=1)
    return _triplet(d_ap, d_an, margin, soft_margin)


def local_trihard(global_dist: tf.Tensor, local: tf.Tensor, pids: tf.Tensor,
                  margin: float = 0.3, pair_distance: PairDistance | None = None,
                  soft_margin: bool = False) -> tf.Tensor:
    """AlignedReID's local-branch triplet loss: pairs mined on global distances, scored locally.

    For each anchor a the hardest positive p and negative n are chosen by `global_dist` (as in
    `batch_hard_triplet`), and the loss is the triplet loss on the local distances of exactly
    those pairs: max(pair_distance(local_a, local_p) - pair_distance(local_a, local_n) + margin,
    0). Only 2B local distances are computed instead of B^2. The mined indices are integers, so
    no gradient reaches `global_dist`; gradients flow through the local distances into `local`.

    Args:
        global_dist: [B, B] distances of the global features, used for mining only.
        local: [B, H, C] local features, H horizontal stripes of C channels.
        pids: [B] identity labels.
        margin: the hinge margin.
        pair_distance: maps two [N, H, C] stacks of local features to [N] distances between
            corresponding samples; defaults to `tf_reid.losses.aligned.aligned_distance`, the
            shortest-path aligned distance.
        soft_margin: use softplus(d_ap - d_an) instead of the hinge, as `batch_hard_triplet`.

    Returns:
        [B] per-anchor losses.

    Reference: Zhang et al. 2017, "AlignedReID: Surpassing Human-Level Performance in Person
    Re-Identification" (arXiv:1711.08184): hard samples for both branches' TriHard losses are
    mined with the global distance only.
    """
    if pair_distance is None:
        # Imported here so mining and the global loss do not depend on the aligned module.
        from tf_reid.losses.aligned import aligned_distance as pair_distance
    local = tf.convert_to_tensor(local)
    pos_index, neg_index = hard_example_indices(global_dist, pids)
    d_ap = pair_distance(local, tf.gather(local, pos_index))
    d_an = pair_distance(local, tf.gather(local, neg_index))
    return _triplet(d_ap, d_an, margin, soft_margin)
