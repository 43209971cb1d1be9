"""Tests for tf_reid.evaluation.protocols: hand-worked cases and slow loop references."""

from __future__ import annotations

import numpy as np
import pytest

from tf_reid.evaluation.metrics import evaluate_rank
from tf_reid.evaluation.protocols import evaluate_single_gallery_shot, pool_tracklets


def reference_single_gallery_shot(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, repeats, seed):
    """The slow obvious twin: one query and one repeat at a time, same random keys as the fast one.

    Per repeat it draws one uniform key per (query, gallery item) — the fast version's draw for
    fewer than 256 queries — and samples, per pid, the non-junk item with the smallest key.
    """
    rng = np.random.default_rng(seed)
    num_q, num_g = distmat.shape
    keys = [rng.random((num_q, num_g)) for _ in range(repeats)]
    cmc_sum, ap_sum, evaluated = np.zeros(max_rank), 0.0, 0
    for q in range(num_q):
        valid = [g for g in range(num_g) if not (g_pids[g] == q_pids[q] and g_camids[g] == q_camids[q])]
        if not any(g_pids[g] == q_pids[q] for g in valid):
            continue
        evaluated += 1
        for r in range(repeats):
            sampled = []
            for pid in sorted({g_pids[g] for g in valid}):
                items = [g for g in valid if g_pids[g] == pid]
                sampled.append(min(items, key=lambda g: keys[r][q, g]))
            ranked = sorted(sampled, key=lambda g: (distmat[q, g], g))
            rank = 1 + next(i for i, g in enumerate(ranked) if g_pids[g] == q_pids[q])
            cmc_sum += np.arange(1, max_rank + 1) >= rank
            ap_sum += 1.0 / rank
    return cmc_sum / (evaluated * repeats), ap_sum / (evaluated * repeats)


def random_problem(seed, num_q=12, num_g=40, num_pids=8, num_cams=3):
    rng = np.random.default_rng(seed)
    return (
        rng.random((num_q, num_g)),
        rng.integers(0, num_pids, num_q),
        rng.integers(0, num_pids, num_g),
        rng.integers(0, num_cams, num_q),
        rng.integers(0, num_cams, num_g),
    )


def test_sgs_hand_worked_probabilities():
    # Query pid 1 (cam 0). Gallery: pid 1 at 0.2 and 0.6, pid 2 at 0.4 and 0.8.
    # Sampled (match, other): 0.2 always rank 1; 0.6 vs 0.4 rank 2, 0.6 vs 0.8 rank 1.
    # So P(rank 1) = 3/4, P(rank <= 2) = 1, AP = 3/4 * 1 + 1/4 * 1/2 = 7/8.
    distmat = np.array([[0.2, 0.6, 0.4, 0.8]])
    cmc, mean_ap = evaluate_single_gallery_shot(
        distmat, np.array([1]), np.array([1, 1, 2, 2]), np.array([0]), np.array([1, 1, 1, 1]),
        max_rank=3, repeats=4000, seed=3,
    )
    np.testing.assert_allclose(cmc, [0.75, 1.0, 1.0], atol=0.03)
    assert cmc[1] == cmc[2] == 1.0
    assert mean_ap == pytest.approx(0.875, abs=0.015)


def test_sgs_junk_removed_before_sampling():
    # The 0.1 item shares pid and camera with the query: junk, never sampled. The only valid
    # match (0.5) is behind pid 2's single image (0.3): rank 2 in every repeat.
    distmat = np.array([[0.1, 0.5, 0.3]])
    cmc, mean_ap = evaluate_single_gallery_shot(
        distmat, np.array([1]), np.array([1, 1, 2]), np.array([0]), np.array([0, 1, 1]),
        max_rank=3, repeats=5,
    )
    np.testing.assert_array_equal(cmc, [0.0, 1.0, 1.0])
    assert mean_ap == 0.5


def test_sgs_equals_evaluate_rank_with_one_image_per_pid():
    rng = np.random.default_rng(0)
    num_q, num_g = 30, 25
    g_pids = rng.permutation(num_g) + 100  # every gallery pid exactly once
    q_pids = rng.choice(g_pids, num_q)
    q_pids[:3] = 7  # pids absent from the gallery: skipped by both
    q_camids, g_camids = rng.integers(0, 2, num_q), rng.integers(0, 2, num_g)
    distmat = rng.random((num_q, num_g))
    distmat[0, :5] = distmat[0, 0]  # ties: both break them by gallery index
    cmc, mean_ap = evaluate_single_gallery_shot(
        distmat, q_pids, g_pids, q_camids, g_camids, max_rank=30, repeats=3, seed=9
    )
    ref_cmc, ref_ap = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=30)
    np.testing.assert_allclose(cmc, ref_cmc, rtol=0, atol=1e-12)
    assert mean_ap == pytest.approx(ref_ap, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sgs_matches_loop_reference(seed):
    problem = random_problem(seed)
    cmc, mean_ap = evaluate_single_gallery_shot(*problem, max_rank=10, repeats=7, seed=seed)
    ref_cmc, ref_ap = reference_single_gallery_shot(*problem, max_rank=10, repeats=7, seed=seed)
    np.testing.assert_allclose(cmc, ref_cmc, rtol=0, atol=1e-12)
    assert mean_ap == pytest.approx(ref_ap, abs=1e-12)


def test_sgs_deterministic_given_seed():
    problem = random_problem(5, num_q=20, num_g=60, num_pids=10)
    first = evaluate_single_gallery_shot(*problem, max_rank=10, repeats=5, seed=11)
    second = evaluate_single_gallery_shot(*problem, max_rank=10, repeats=5, seed=11)
    other = evaluate_single_gallery_shot(*problem, max_rank=10, repeats=5, seed=12)
    np.testing.assert_array_equal(first[0], second[0])
    assert first[1] == second[1]
    assert not (np.array_equal(first[0], other[0]) and first[1] == other[1])


def test_sgs_many_queries_span_blocks():
    # More than one internal block of queries; the result must still be a valid, padded CMC.
    problem = random_problem(4, num_q=600, num_g=50, num_pids=6)
    cmc, mean_ap = evaluate_single_gallery_shot(*problem, max_rank=10, repeats=2)
    assert np.all(np.diff(cmc) >= 0)
    assert cmc[-1] == 1.0  # at most 6 pids are sampled, so rank <= 6 always
    assert 0.0 < mean_ap <= 1.0


def test_sgs_no_match_raises():
    distmat = np.array([[0.1, 0.2]])
    with pytest.raises(ValueError, match="no query"):
        evaluate_single_gallery_shot(distmat, np.array([1]), np.array([1, 2]), np.array([0]), np.array([0, 1]))


@pytest.mark.parametrize("repeats", [0, -1, 1.5, True])
def test_sgs_bad_repeats_raises(repeats):
    distmat = np.array([[0.1, 0.2]])
    with pytest.raises(ValueError, match="repeats"):
        evaluate_single_gallery_shot(
            distmat, np.array([1]), np.array([1, 2]), np.array([0]), np.array([1, 1]), repeats=repeats
        )


def test_sgs_shape_mismatch_raises():
    with pytest.raises(ValueError, match="g_pids"):
        evaluate_single_gallery_shot(
            np.zeros((1, 2)), np.array([1]), np.array([1]), np.array([0]), np.array([1, 1])
        )


def reference_pool(features, tracklets, pids, camids, method):
    """The slow obvious twin: a dict of frame lists keyed by tracklet, in insertion order."""
    frames = {}
    for i, t in enumerate(tracklets):
        frames.setdefault(t, []).append(i)
    reduce = np.mean if method == "mean" else np.max
    pooled = np.stack([reduce(features[idx], axis=0) for idx in frames.values()])
    firsts = [idx[0] for idx in frames.values()]
    return pooled, pids[firsts], camids[firsts], np.array(list(frames))


def test_pool_tracklets_hand_worked():
    features = np.array([[1.0, 0.0], [0.0, 4.0], [3.0, 2.0], [2.0, 6.0]])
    tracklets = np.array([9, 4, 9, 4])  # 9 appears first, though 4 < 9
    pids = np.array([1, 2, 1, 2])
    camids = np.array([0, 3, 0, 3])
    pooled, t_pids, t_camids, t_ids = pool_tracklets(features, tracklets, pids, camids)
    np.testing.assert_array_equal(pooled, [[2.0, 1.0], [1.0, 5.0]])
    np.testing.assert_array_equal(t_pids, [1, 2])
    np.testing.assert_array_equal(t_camids, [0, 3])
    np.testing.assert_array_equal(t_ids, [9, 4])
    pooled_max, *_ = pool_tracklets(features, tracklets, pids, camids, method="max")
    np.testing.assert_array_equal(pooled_max, [[3.0, 2.0], [2.0, 6.0]])


@pytest.mark.parametrize("method", ["mean", "max"])
def test_pool_tracklets_matches_loop_reference(method):
    rng = np.random.default_rng(1)
    num_tracklets, num_frames = 15, 200
    t_pids = rng.integers(0, 5, num_tracklets)
    t_camids = rng.integers(0, 6, num_tracklets)
    tracklet_ids = rng.permutation(1000)[:num_tracklets]
    which = rng.integers(0, num_tracklets, num_frames)
    tracklets, pids, camids = tracklet_ids[which], t_pids[which], t_camids[which]
    features = rng.normal(size=(num_frames, 8)).astype(np.float32)
    got = pool_tracklets(features, tracklets, pids, camids, method=method)
    ref = reference_pool(features, tracklets, pids, camids, method)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-6)
    assert got[0].dtype == np.float32
    for g, r in zip(got[1:], ref[1:]):
        np.testing.assert_array_equal(g, r)


def test_pool_tracklets_integer_features_pooled_as_float():
    pooled, *_ = pool_tracklets(np.array([[1], [2]]), np.array([0, 0]), np.array([5, 5]), np.array([1, 1]))
    assert pooled.dtype == np.float64
    np.testing.assert_array_equal(pooled, [[1.5]])


@pytest.mark.parametrize("field", ["pid", "camid"])
def test_pool_tracklets_mismatch_raises(field):
    features = np.zeros((3, 2))
    tracklets = np.array([0, 1, 0])
    pids, camids = np.array([1, 2, 1]), np.array([0, 0, 0])
    if field == "pid":
        pids[2] = 3
    else:
        camids[2] = 4
    with pytest.raises(ValueError, match=f"tracklet 0 has frames with different {field}s"):
        pool_tracklets(features, tracklets, pids, camids)


def test_pool_tracklets_bad_arguments_raise():
    with pytest.raises(ValueError, match="method"):
        pool_tracklets(np.zeros((1, 2)), np.array([0]), np.array([0]), np.array([0]), method="median")
    with pytest.raises(ValueError, match="camids"):
        pool_tracklets(np.zeros((2, 2)), np.array([0, 0]), np.array([0, 0]), np.array([0]))
    with pytest.raises(ValueError, match="2-D"):
        pool_tracklets(np.zeros(2), np.array([0, 0]), np.array([0, 0]), np.array([0, 0]))
