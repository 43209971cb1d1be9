"""Tests for tf_reid.evaluation.metrics: hand-worked protocols and a per-query loop reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tests.tf_reid.evaluation.references import reference_evaluate
from tf_reid.evaluation.metrics import chance_level, evaluate_rank


# Gallery of the hand-worked protocol case:   index: pid, cam
#   g0: pid 1, cam 1   junk for q0 (same pid, same camera)
#   g1: pid 1, cam 2   match for q0
#   g2: pid 0, cam 2   distractor: just another non-matching pid
#   g3: pid 2, cam 1   match for q2
#   g4: pid 1, cam 3   match for q0
#   g5: pid 3, cam 2   same pid and camera as q1 -> junk, so q1 has no match and is skipped
G_PIDS = np.array([1, 1, 0, 2, 1, 3])
G_CAMIDS = np.array([1, 2, 2, 1, 3, 2])
Q_PIDS = np.array([1, 3, 2])
Q_CAMIDS = np.array([1, 2, 3])
DISTMAT = np.array(
    [
        # q0 sorted: g0(junk) g2 g4* g3 g1* g5 -> after junk removal g2 g4* g3 g1* g5:
        # hits at ranks 2 and 4.
        [0.1, 0.5, 0.2, 0.4, 0.3, 0.6],
        # q1: its only same-pid item g5 is junk -> skipped.
        [0.3, 0.2, 0.1, 0.4, 0.5, 0.6],
        # q2 sorted: g3* g2 g5 g4 g1 g0 -> hit at rank 1.
        [0.9, 0.8, 0.1, 0.05, 0.7, 0.6],
    ]
)


def test_hand_worked_protocol():
    details = evaluate_rank(DISTMAT, Q_PIDS, G_PIDS, Q_CAMIDS, G_CAMIDS, max_rank=5, return_details=True)
    # Evaluated: q0 (first match at rank 2) and q2 (rank 1); cmc = [1/2, 2/2, 1, 1, 1].
    np.testing.assert_allclose(details["cmc"], [0.5, 1.0, 1.0, 1.0, 1.0], rtol=0, atol=1e-12)
    # AP(q0) = (1/2 + 2/4) / 2 = 0.5; AP(q2) = 1/1 = 1; mAP = 0.75.
    np.testing.assert_allclose(details["ap"], [0.5, np.nan, 1.0], rtol=0, atol=1e-12)
    assert details["mAP"] == pytest.approx(0.75, abs=1e-12)
    # INP(q0) = 2 matches / last match at rank 4 = 0.5; INP(q2) = 1/1; mINP = 0.75.
    assert details["mINP"] == pytest.approx(0.75, abs=1e-12)
    np.testing.assert_allclose(details["inp"], [0.5, np.nan, 1.0], rtol=0, atol=1e-12)
    assert details["num_evaluated"] == 2
    assert details["num_skipped"] == 1

    cmc, mean_ap = evaluate_rank(DISTMAT, Q_PIDS, G_PIDS, Q_CAMIDS, G_CAMIDS, max_rank=5)
    assert cmc.shape == (5,) and cmc.dtype == np.float64
    assert isinstance(mean_ap, float) and mean_ap == pytest.approx(0.75, abs=1e-12)


def test_hand_worked_protocol_trapezoid():
    # q0, hits at ranks 2 and 4 of 2 matches (P(r) = precision over the first r items):
    #   hit 1: (P(1) + P(2)) / 2 = (0/1 + 1/2) / 2 = 1/4
    #   hit 2: (P(3) + P(4)) / 2 = (1/3 + 2/4) / 2 = 5/12
    #   AP = (1/4 + 5/12) / 2 = 1/3.  q2: (P(0)=1 + P(1)=1) / 2 = 1.  mAP = (1/3 + 1) / 2 = 2/3.
    details = evaluate_rank(
        DISTMAT, Q_PIDS, G_PIDS, Q_CAMIDS, G_CAMIDS, max_rank=5, ap_mode="trapezoid",
        return_details=True,
    )
    np.testing.assert_allclose(details["ap"], [1 / 3, np.nan, 1.0], rtol=0, atol=1e-12)
    assert details["mAP"] == pytest.approx(2 / 3, abs=1e-12)
    # CMC and mINP do not depend on the AP mode.
    np.testing.assert_allclose(details["cmc"], [0.5, 1.0, 1.0, 1.0, 1.0], rtol=0, atol=1e-12)
    assert details["mINP"] == pytest.approx(0.75, abs=1e-12)


def test_cmc_padded_when_gallery_shorter_than_max_rank():
    # 6 gallery items (5 after q0's junk) but max_rank 8: the last value, 1.0, repeats.
    cmc, _ = evaluate_rank(DISTMAT, Q_PIDS, G_PIDS, Q_CAMIDS, G_CAMIDS, max_rank=8)
    np.testing.assert_allclose(cmc, [0.5] + [1.0] * 7, rtol=0, atol=1e-12)


def test_standard_and_trapezoid_ap_single_query():
    # One query (pid 1, cam 0); gallery ranked by distance: match, other, match, other.
    # Two matches, hits at ranks 1 and 3.
    distmat = np.array([[0.1, 0.2, 0.3, 0.4]])
    q_pids, q_camids = np.array([1]), np.array([0])
    g_pids, g_camids = np.array([1, 2, 1, 3]), np.array([1, 1, 1, 1])
    # standard: (1/1 + 2/3) / 2 = 5/6 = 0.8333.
    _, ap = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=4)
    assert ap == pytest.approx(5 / 6, abs=1e-12)
    # trapezoid (compute_AP.m updates old_precision at every position, so before the second
    # hit it is P(2) = 1/2, not the previous hit's precision 1):
    #   hit 1 at rank 1: (1/2) * (old 1 + 1/1) / 2 = 1/2
    #   hit 2 at rank 3: (1/2) * (1/2 + 2/3) / 2 = (1/2) * (7/12) = 7/24
    #   AP = 12/24 + 7/24 = 19/24 = 0.791667.
    _, ap = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=4, ap_mode="trapezoid")
    assert ap == pytest.approx(19 / 24, abs=1e-12)


def test_minp_hand_worked():
    # q0 (pid 1): matches at ranks 1, 2, 5 -> INP = 3 / 5 = 0.6.
    # q1 (pid 2): one match, at rank 2 -> INP = 1 / 2 = 0.5.    mINP = 0.55.
    g_pids = np.array([1, 1, 2, 3, 1])
    g_camids = np.array([1, 1, 1, 1, 1])
    distmat = np.array(
        [
            [0.1, 0.2, 0.3, 0.4, 0.5],  # ranking g0* g1* g2 g3 g4*
            [0.5, 0.1, 0.2, 0.3, 0.4],  # ranking g1 g2* g3 g4 g0
        ]
    )
    details = evaluate_rank(
        distmat, np.array([1, 2]), g_pids, np.array([0, 0]), g_camids, max_rank=5,
        return_details=True,
    )
    np.testing.assert_allclose(details["inp"], [0.6, 0.5], rtol=0, atol=1e-12)
    assert details["mINP"] == pytest.approx(0.55, abs=1e-12)
    # Also: AP(q0) = (1/1 + 2/2 + 3/5) / 3 = 13/15; AP(q1) = 1/2.
    np.testing.assert_allclose(details["ap"], [13 / 15, 0.5], rtol=0, atol=1e-12)


@pytest.mark.parametrize("block", [1, 7, 1024])
@pytest.mark.parametrize("ap_mode", ["standard", "trapezoid"])
@pytest.mark.parametrize("max_rank", [20, 200])
def test_matches_per_query_loop_reference(block, ap_mode, max_rank):
    rng = np.random.default_rng(block * 31 + max_rank)
    num_q, num_g = 40, 150
    distmat = rng.random((num_q, num_g))  # continuous: no ties
    q_pids, g_pids = rng.integers(0, 15, num_q), rng.integers(0, 15, num_g)
    q_camids, g_camids = rng.integers(0, 4, num_q), rng.integers(0, 4, num_g)
    # Make some queries skipped: give them a pid whose only gallery images share their camera.
    g_pids[:3], g_camids[:3] = 99, 2
    q_pids[:2], q_camids[:2] = 99, 2

    details = evaluate_rank(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, ap_mode=ap_mode,
        block=block, return_details=True,
    )
    cmc, mean_ap, mean_inp, num_evaluated, per_query_ap = reference_evaluate(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank, ap_mode
    )
    np.testing.assert_allclose(details["cmc"], cmc, rtol=0, atol=1e-10)
    assert details["mAP"] == pytest.approx(mean_ap, abs=1e-10)
    assert details["mINP"] == pytest.approx(mean_inp, abs=1e-10)
    assert details["num_evaluated"] == num_evaluated
    assert details["num_skipped"] == num_q - num_evaluated >= 2
    np.testing.assert_allclose(details["ap"], per_query_ap, rtol=0, atol=1e-10)


@pytest.mark.parametrize("block", [1, 7, 1024])
@pytest.mark.parametrize("ap_mode", ["standard", "trapezoid"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_exact_ties_match_per_query_loop_reference(block, ap_mode, dtype):
    # Integer-valued distances in [-2, 2]: most distances tie, so ranks depend on the tie order
    # (gallery index first, as in the reference's stable sort), junk included. Floats also get
    # -0.0 next to 0.0, which a stable sort treats as equal.
    rng = np.random.default_rng(11)
    num_q, num_g = 30, 120
    distmat = rng.integers(-2, 3, (num_q, num_g)).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        distmat[rng.random((num_q, num_g)) < 0.2] = -0.0
        negative_zero = np.signbit(distmat[distmat == 0])
        assert negative_zero.any() and not negative_zero.all()
    q_pids, g_pids = rng.integers(0, 8, num_q), rng.integers(0, 8, num_g)
    q_camids, g_camids = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)

    details = evaluate_rank(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank=30, ap_mode=ap_mode, block=block,
        return_details=True,
    )
    cmc, mean_ap, mean_inp, num_evaluated, per_query_ap = reference_evaluate(
        distmat, q_pids, g_pids, q_camids, g_camids, 30, ap_mode
    )
    np.testing.assert_allclose(details["cmc"], cmc, rtol=0, atol=1e-10)
    assert details["mAP"] == pytest.approx(mean_ap, abs=1e-10)
    assert details["mINP"] == pytest.approx(mean_inp, abs=1e-10)
    assert details["num_evaluated"] == num_evaluated
    np.testing.assert_allclose(details["ap"], per_query_ap, rtol=0, atol=1e-10)


def test_ties_broken_by_gallery_index():
    # All distances equal: the ranking is the gallery order. Query pid 1, camera 0; g0 is junk
    # (same pid and camera), matches g2 and g4 -> after junk removal g1 g2* g3 g4*: ranks 2, 4.
    g_pids = np.array([1, 5, 1, 6, 1])
    g_camids = np.array([0, 1, 1, 1, 2])
    details = evaluate_rank(
        np.zeros((1, 5), np.float32), np.array([1]), g_pids, np.array([0]), g_camids, max_rank=4,
        return_details=True,
    )
    np.testing.assert_allclose(details["cmc"], [0, 1, 1, 1], rtol=0, atol=1e-12)
    # AP = (1/2 + 2/4) / 2 = 0.5; INP = 2 / 4.
    assert details["mAP"] == pytest.approx(0.5, abs=1e-12)
    assert details["mINP"] == pytest.approx(0.5, abs=1e-12)


def test_nan_distances_rank_last_in_gallery_order():
    # Query pid 1, camera 0. As a stable argsort orders them: g3 (0.5) g2 (inf) then the NaNs
    # in gallery order g0 g1* g4 (g1 and g3 are the matches) -> hits at ranks 1 and 4.
    distmat = np.array([[np.nan, np.nan, np.inf, 0.5, -np.nan]], np.float32)
    g_pids = np.array([2, 1, 3, 1, 4])
    details = evaluate_rank(
        distmat, np.array([1]), g_pids, np.array([0]), np.array([1, 1, 1, 1, 1]), max_rank=5,
        return_details=True,
    )
    # AP = (1/1 + 2/4) / 2 = 0.75; INP = 2 / 4 = 0.5.
    assert details["mAP"] == pytest.approx(0.75, abs=1e-12)
    assert details["mINP"] == pytest.approx(0.5, abs=1e-12)
    np.testing.assert_allclose(details["cmc"], [1.0] * 5, rtol=0, atol=1e-12)


def test_float32_distmat_and_lists_accepted():
    cmc, mean_ap = evaluate_rank(
        DISTMAT.astype(np.float32).tolist(), Q_PIDS.tolist(), G_PIDS.tolist(),
        Q_CAMIDS.tolist(), G_CAMIDS.tolist(), max_rank=5,
    )
    np.testing.assert_allclose(cmc, [0.5, 1.0, 1.0, 1.0, 1.0], rtol=0, atol=1e-12)
    assert mean_ap == pytest.approx(0.75, abs=1e-12)


def test_all_queries_skipped_raises():
    # Both queries' only matches are in their own camera.
    with pytest.raises(ValueError, match="no query has a gallery match after removing same-camera"):
        evaluate_rank(
            np.zeros((2, 3)), np.array([1, 2]), np.array([1, 2, 3]),
            np.array([0, 1]), np.array([0, 1, 1]),
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(distmat=np.zeros(6)), "distmat must be 2-D"),
        (dict(q_pids=np.zeros(2)), "q_pids must have shape"),
        (dict(q_camids=np.zeros((3, 1))), "q_camids must have shape"),
        (dict(g_pids=np.zeros(5)), "g_pids must have shape"),
        (dict(g_camids=np.zeros(7)), "g_camids must have shape"),
        (dict(max_rank=0), "max_rank must be a positive integer"),
        (dict(block=0), "block must be a positive integer"),
        (dict(block=2.5), "block must be a positive integer"),
        (dict(ap_mode="interpolated"), "ap_mode must be one of"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    args = dict(
        distmat=DISTMAT, q_pids=Q_PIDS, g_pids=G_PIDS, q_camids=Q_CAMIDS, g_camids=G_CAMIDS,
        max_rank=5,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        evaluate_rank(**args)


def test_chance_level_hand_worked():
    # One query, gallery [match, non-match, same-camera junk]: n = 2 valid items, m = 1.
    # Rankings (match first) and (match second) are equally likely: rank-1 1/2, AP (1 + 1/2)/2.
    chance = chance_level(np.array([1]), np.array([1, 2, 1]), np.array([0]), np.array([1, 1, 0]))
    assert chance == {"rank1": 0.5, "mAP": 0.75, "num_query": 1}


def test_chance_level_is_the_mean_over_every_ranking():
    # The expectation taken literally: evaluate_rank over all 7! orderings of the gallery.
    q_pids, q_camids = np.array([1, 2, 3, 9]), np.array([0, 1, 1, 0])  # pid 9: skipped
    g_pids = np.array([1, 1, 2, 1, 3, 4, 2])
    g_camids = np.array([1, 2, 0, 0, 0, 1, 1])  # g3 is junk for query 0, g6 for query 1
    rank1, mean_ap = [], []
    for order in itertools.permutations(range(len(g_pids))):
        distmat = np.tile(np.argsort(order).astype(np.float64), (len(q_pids), 1))
        cmc, m_ap = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=1)
        rank1.append(cmc[0])
        mean_ap.append(m_ap)
    chance = chance_level(q_pids, g_pids, q_camids, g_camids)
    assert chance["num_query"] == 3
    assert chance["rank1"] == pytest.approx(np.mean(rank1), abs=1e-12)
    assert chance["mAP"] == pytest.approx(np.mean(mean_ap), abs=1e-12)


def test_chance_level_without_matches_raises():
    with pytest.raises(ValueError, match="no query has a gallery match"):
        chance_level(np.array([1]), np.array([1, 2]), np.array([0]), np.array([0, 1]))
