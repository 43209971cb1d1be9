"""Hand-worked retrieval metrics of every distance, under both protocols, and the table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.tf_reid.evaluation.conftest import features, reference_single_gallery_shot
from tests.tf_reid.evaluation.references import re_ranking_dense
from tf_reid.evaluation import metrics, report

KEYS = {"rank1", "rank5", "rank10", "mAP", "mINP", "num_query", "skipped_queries"}


def test_evaluate_features_hand_worked(hand_built):
    query, gallery = hand_built
    got = report.evaluate_features(query, gallery, local=True, normalize=False, local_weight=2.0)
    assert list(got) == ["global", "global+local"]
    # Global. q0 ranks (junk g0 removed) g1 x, g2 hit, g4 x, g3 hit, g5 x: hits at 2 and 4,
    # AP (1/2 + 2/4) / 2 = 0.5, INP 2/4. q1 ranks g4 hit (0.1), g3 (0.9), g2 (1.1), g5 (1.9),
    # g1 hit (2.1), g0 (3.1): AP (1/1 + 2/5) / 2 = 0.7, INP 2/5.
    assert got["global"] == pytest.approx({
        "rank1": 0.5, "rank5": 1.0, "rank10": 1.0, "mAP": (0.5 + 0.7) / 2,
        "mINP": (0.5 + 0.4) / 2, "num_query": 3, "skipped_queries": 1})
    # Global + 2 x local: only g1 (stripe B) moves, by 2 tanh(sqrt(2) / 2) = 1.2178. q0: g2 hit
    # (2), g4 (3), g1 (3.22), g3 hit (4): AP (1 + 2/4) / 2, INP 2/4. q1: g4 hit, g3, g2, g5,
    # g0 (3.1), g1 hit (3.32): AP (1 + 2/6) / 2, INP 2/6.
    assert 2 * math.tanh(math.sqrt(2) / 2) == pytest.approx(1.2178, abs=1e-4)
    assert got["global+local"] == pytest.approx({
        "rank1": 1.0, "rank5": 1.0, "rank10": 1.0, "mAP": (0.75 + 2 / 3) / 2,
        "mINP": (0.5 + 1 / 3) / 2, "num_query": 3, "skipped_queries": 1})
    assert all(type(v) in (int, float) for row in got.values() for v in row.values())
    assert all(set(row) == KEYS for row in got.values())


def test_single_gallery_shot_scores_every_distance_on_the_same_samples(hand_built):
    query, gallery = hand_built
    settings = {"repeats": 5, "seed": 3}
    got = report.evaluate_features(query, gallery, local=True, normalize=False, local_weight=2.0,
                                   single_gallery_shot=settings)
    # The distances of test_evaluate_features_hand_worked: |x_q - x_g|, plus 2 tanh(sqrt(2)/2)
    # for g1 under global + local.
    global_dist = np.abs(query.global_[:, :1] - gallery.global_[:, 0][None, :]).astype(np.float64)
    combined = global_dist.copy()
    combined[:, 1] += 2 * math.tanh(math.sqrt(2) / 2)
    ids = (query.pids, gallery.pids, query.camids, gallery.camids)
    for name, dist in (("global", global_dist), ("global+local", combined)):
        cmc, mean_ap, evaluated = reference_single_gallery_shot(dist, *ids, 50, **settings)
        assert evaluated == 2
        assert got[name] == pytest.approx({
            "rank1": cmc[0], "rank5": cmc[4], "rank10": cmc[9], "mAP": mean_ap,
            "mINP": mean_ap, "num_query": 3, "skipped_queries": 1}, abs=1e-12)


def test_normalized_global_distances_compare_directions():
    # Normalised, [1, 0] and [10, 1] are close in direction; raw, [1, 0] is nearer [0, 1].
    query = features([[1, 0]], pids=[1], camids=[0])
    gallery = features([[10, 1], [0, 1]], pids=[1, 2], camids=[1, 1])
    assert report.evaluate_features(query, gallery)["global"]["rank1"] == 1.0
    assert report.evaluate_features(query, gallery, normalize=False)["global"]["rank1"] == 0.0


def dense_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([[np.linalg.norm(x - y) for y in b] for x in a], np.float32)


def test_rerank_matches_the_dense_release(hand_built):
    query, gallery = hand_built
    got = report.evaluate_features(query, gallery, rerank=True, normalize=False, k1=3, k2=2)
    assert list(got) == ["global", "global+rerank"]
    q, g = query.global_, gallery.global_
    dist = re_ranking_dense(dense_euclidean(q, g), dense_euclidean(q, q),
                                      dense_euclidean(g, g), k1=3, k2=2, lambda_value=0.3)
    cmc, mean_ap = metrics.evaluate_rank(dist, query.pids, gallery.pids, query.camids,
                                         gallery.camids)
    assert got["global+rerank"]["rank1"] == pytest.approx(cmc[0])
    assert got["global+rerank"]["mAP"] == pytest.approx(mean_ap)


def test_global_plus_local_needs_local_features(hand_built):
    query, gallery = hand_built
    query = features(query.global_, None, query.pids, query.camids)
    with pytest.raises(ValueError, match="local features"):
        report.evaluate_features(query, gallery, local=True)


def test_metrics_table_in_percent():
    row = {"rank1": 0.5, "rank5": 0.75, "rank10": 1.0, "mAP": 0.6, "mINP": 0.45,
           "num_query": 3, "skipped_queries": 1}
    lines = report.metrics_table({"global": row})
    assert lines[0].split() == ["distance", "rank-1", "rank-5", "rank-10", "mAP", "mINP"]
    assert lines[1].split() == ["global", "50.00", "75.00", "100.00", "60.00", "45.00"]
    assert lines[2] == "queries: 3, skipped (no cross-camera match): 1"
