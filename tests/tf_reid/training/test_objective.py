"""The objective's composition: which terms exist, peer averaging, the L2 penalty."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_reid.losses import metric
from tf_reid.training import objective


def outputs(seed, batch=8, classes=4, stripes=3):
    rng = np.random.default_rng(seed)
    return {"global": tf.constant(rng.normal(size=(batch, 5)), tf.float32),
            "local": tf.constant(rng.normal(size=(batch, stripes, 6)), tf.float32),
            "logits": tf.constant(rng.normal(size=(batch, classes)), tf.float32)}


LABELS = tf.constant([0, 0, 1, 1, 2, 2, 3, 3])


def test_zero_weights_leave_terms_out():
    terms, dist = objective.student_terms(outputs(0), LABELS, objective.LossWeights(local_triplet=0))
    assert set(terms) == {"id", "global_triplet", "d_ap", "d_an"}
    assert dist.shape == (8, 8)
    terms, _ = objective.student_terms(outputs(0), LABELS, objective.LossWeights())
    assert set(terms) == {"id", "global_triplet", "local_triplet", "d_ap", "d_an"}


def test_the_chosen_metric_loss_is_the_global_term():
    o = outputs(2)
    base, dist = objective.student_terms(o, LABELS, objective.LossWeights())
    for name, loss in metric.METRIC_LOSSES.items():
        terms, _ = objective.student_terms(o, LABELS, objective.LossWeights(metric_loss=name,
                                                                            margin=0.7))
        np.testing.assert_allclose(terms["global_triplet"], loss(dist, LABELS, 0.7), rtol=1e-6,
                                   err_msg=name)
        # The local term stays TriHard on the aligned distance, whatever the global loss.
        np.testing.assert_allclose(terms["local_triplet"], base["local_triplet"], rtol=1e-6)


def test_a_normalised_metric_term_is_the_loss_on_unit_features_and_ignores_scale():
    o = outputs(3)
    g = o["global"].numpy()
    unit = g / np.linalg.norm(g, axis=1, keepdims=True)
    d = np.sqrt(((unit[:, None] - unit[None]) ** 2).sum(-1))  # the slow obvious distance
    weights = objective.LossWeights(metric_loss="msml", metric_normalize=True)
    terms, dist = objective.student_terms(o, LABELS, weights)
    np.testing.assert_allclose(terms["global_triplet"],
                               metric.margin_sample_mining(tf.constant(d), LABELS, 0.3),
                               atol=1e-5)
    # Scaling every feature leaves the term unchanged, while the distance matrix scales with it.
    scaled = {**o, "global": o["global"] * 0.1}
    terms_scaled, dist_scaled = objective.student_terms(scaled, LABELS, weights)
    np.testing.assert_allclose(terms_scaled["global_triplet"], terms["global_triplet"], atol=1e-5)
    off = ~np.eye(8, dtype=bool)  # the diagonal's "zero" is rounding (see pairwise_distance)
    np.testing.assert_allclose(dist_scaled.numpy()[off], 0.1 * dist.numpy()[off], rtol=1e-4)


def test_hardest_distances_are_the_row_extremes():
    o = outputs(1)
    terms, dist = objective.student_terms(o, LABELS, objective.LossWeights())
    g = o["global"].numpy()
    d = np.sqrt(((g[:, None] - g[None]) ** 2).sum(-1))
    labels = LABELS.numpy()
    for a in range(8):
        same = labels == labels[a]
        same[a] = False
        assert np.isclose(terms["d_ap"][a], d[a][same].max(), atol=1e-5)
        assert np.isclose(terms["d_an"][a], d[a][labels != labels[a]].min(), atol=1e-5)


def test_weighted_sum_uses_the_weights_and_skips_statistics():
    w = objective.LossWeights(id=2.0, global_triplet=0.5, local_triplet=3.0)
    terms = {"id": tf.constant([1.0, 2.0]), "global_triplet": tf.constant([4.0, 0.0]),
             "local_triplet": tf.constant([1.0, 1.0]), "d_ap": tf.constant([100.0, 100.0])}
    np.testing.assert_allclose(objective.weighted_sum(terms, w), [2 + 2 + 3, 4 + 0 + 3])


def test_mutual_terms_average_over_peers():
    outs = [outputs(s) for s in range(3)]
    logits = [o["logits"] for o in outs]
    dists = [objective.student_terms(o, LABELS, objective.LossWeights())[1] for o in outs]
    terms = objective.mutual_terms(0, logits, dists, objective.LossWeights())

    def kl(p_logits, q_logits):  # KL(softmax(p) || softmax(q)) per row, by hand
        p = np.exp(p_logits) / np.exp(p_logits).sum(-1, keepdims=True)
        q = np.exp(q_logits) / np.exp(q_logits).sum(-1, keepdims=True)
        return (p * np.log(p / q)).sum(-1)

    l = [x.numpy() for x in logits]
    d = [x.numpy() for x in dists]
    np.testing.assert_allclose(terms["mutual_id"], (kl(l[1], l[0]) + kl(l[2], l[0])) / 2, rtol=1e-5)
    np.testing.assert_allclose(terms["mutual_metric"],
                               (((d[0] - d[1]) ** 2).mean(1) + ((d[0] - d[2]) ** 2).mean(1)) / 2,
                               rtol=1e-5)


def test_l2_penalty_decays_kernels_only():
    kernel = tf.Variable([[1.0, 2.0], [3.0, -1.0]])
    bias = tf.Variable([5.0, 5.0])
    np.testing.assert_allclose(objective.l2_penalty([kernel, bias], 0.1), 0.5 * 0.1 * 15.0)
    assert float(objective.l2_penalty([kernel, bias], 0.0)) == 0.0
