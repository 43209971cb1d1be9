"""Tests for tf_reid.evaluation.protocols: hand-worked cases and slow loop references."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tf_reid.evaluation.conftest import features, reference_single_gallery_shot
from tests.tf_reid.evaluation.references import reference_evaluate
from tf_reid.evaluation import matching, protocols
from tf_reid.evaluation.features_file import SplitFeatures
from tf_reid.evaluation.metrics import evaluate_rank
from tf_reid.evaluation.protocols import (evaluate_single_gallery_shot, pool_multi_query,
                                          pool_tracklets)


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
    ref_cmc, ref_ap, evaluated = reference_single_gallery_shot(*problem, max_rank=10, repeats=7,
                                                               seed=seed)
    np.testing.assert_allclose(cmc, ref_cmc, rtol=0, atol=1e-12)
    assert mean_ap == pytest.approx(ref_ap, abs=1e-12)
    details = evaluate_single_gallery_shot(*problem, max_rank=10, repeats=7, seed=seed,
                                           return_details=True)
    np.testing.assert_array_equal(details["cmc"], cmc)
    # One true match at rank r: AP = INP = 1 / r.
    assert details["mAP"] == details["mINP"] == mean_ap
    assert details["num_evaluated"] == evaluated
    assert details["num_skipped"] == len(problem[1]) - evaluated


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


def test_only_cuhk03_classic_is_single_gallery_shot():
    classic = {"dataset": "cuhk03", "protocol": {"protocol": "classic", "split_index": 3}}
    assert protocols.single_gallery_shot(classic) == {"repeats": 10, "seed": 0}
    for manifest in ({"dataset": "cuhk03", "protocol": {"protocol": "new"}},
                     {"dataset": "market1501", "protocol": {}},
                     {"dataset": "synthetic", "protocol": {"protocol": "single-query"}}):
        assert protocols.single_gallery_shot(manifest) is None


def test_score_follows_the_protocol(hand_built):
    query, gallery = hand_built
    distmat = np.abs(query.global_[:, :1] - gallery.global_[:, 0][None, :])
    ids = (query.pids, gallery.pids, query.camids, gallery.camids)
    multi = protocols.score(distmat, query, gallery, 10)
    np.testing.assert_array_equal(multi["cmc"], evaluate_rank(distmat, *ids, max_rank=10)[0])
    # Per repeat one image of each pid is sampled. q0 (x=0, pid 1; g0 is junk): g2 (2) is first
    # if pid 2's sample is g4 (3), else second behind g1 (1); g3 (4) is second (behind g1 or
    # g4, ahead of g5). q1 (x=3.1, pid 2): g4 (0.1) is first; g1 (2.1) is third behind pid 1's
    # sample (0.9 or 1.1) and g5 (1.9). q2 has no match left and is skipped.
    sgs = protocols.score(distmat, query, gallery, 10, {"repeats": 6, "seed": 4})
    ref_cmc, ref_ap, evaluated = reference_single_gallery_shot(distmat, *ids, max_rank=10,
                                                               repeats=6, seed=4)
    assert evaluated == 2 and sgs["num_skipped"] == 1
    np.testing.assert_allclose(sgs["cmc"], ref_cmc, rtol=0, atol=1e-12)
    assert sgs["cmc"][1] >= 0.5 and sgs["cmc"][2] == 1.0  # q0 always within rank 2
    assert sgs["mAP"] == pytest.approx(ref_ap, abs=1e-12)


def frames(global_, tracklets, pids, camids, local=None) -> SplitFeatures:
    """SplitFeatures of video frames f0, f1, ... (frame i of the whole list)."""
    n = len(tracklets)
    return SplitFeatures(np.asarray(global_), None if local is None else np.asarray(local),
                         np.asarray(pids), np.asarray(camids),
                         np.array([f"f{i}" for i in range(n)]), np.asarray(tracklets),
                         np.arange(n, dtype=np.int64))


def reference_pool(values, tracklets, method):
    """The slow obvious twin: a dict of frame lists keyed by tracklet, in insertion order.

    Returns (pooled values, the first frame of each tracklet, the tracklet ids)."""
    members = {}
    for i, t in enumerate(tracklets):
        members.setdefault(t, []).append(i)
    reduce = np.mean if method == "mean" else np.max
    pooled = np.stack([reduce(values[idx], axis=0) for idx in members.values()])
    return pooled, [idx[0] for idx in members.values()], np.array(list(members))


def test_pool_tracklets_hand_worked():
    # Frames of tracklet 9 (pid 1, cam 0) and 4 (pid 2, cam 3), interleaved: 9 appears first,
    # though 4 < 9. Local stripes [[0, 1]], [[4, 5]] for 9; [[2, 3]], [[6, 7]] for 4.
    split = frames([[1.0, 0.0], [0.0, 4.0], [3.0, 2.0], [2.0, 6.0]], [9, 4, 9, 4],
                   [1, 2, 1, 2], [0, 3, 0, 3], local=np.arange(8.0).reshape(4, 1, 2))
    got = pool_tracklets(split)
    np.testing.assert_array_equal(got.global_, [[2.0, 1.0], [1.0, 5.0]])
    np.testing.assert_array_equal(got.local, [[[2.0, 3.0]], [[4.0, 5.0]]])
    assert got.pids.tolist() == [1, 2] and got.camids.tolist() == [0, 3]
    assert got.tracklets.tolist() == [9, 4] and got.frames.tolist() == [-1, -1]
    assert got.paths.tolist() == ["f0", "f1"]  # each tracklet's first frame
    pooled_max = pool_tracklets(split, method="max")
    np.testing.assert_array_equal(pooled_max.global_, [[3.0, 2.0], [2.0, 6.0]])
    np.testing.assert_array_equal(pooled_max.local, [[[4.0, 5.0]], [[6.0, 7.0]]])
    assert pool_tracklets(frames(split.global_, [9, 4, 9, 4], [1, 2, 1, 2],
                                 [0, 3, 0, 3])).local is None


@pytest.mark.parametrize("method", ["mean", "max"])
def test_pool_tracklets_matches_loop_reference(method):
    rng = np.random.default_rng(1)
    num_tracklets, num_frames = 15, 200
    t_pids = rng.integers(0, 5, num_tracklets)
    t_camids = rng.integers(0, 6, num_tracklets)
    tracklet_ids = rng.permutation(1000)[:num_tracklets]
    which = rng.integers(0, num_tracklets, num_frames)
    split = frames(rng.normal(size=(num_frames, 8)).astype(np.float32), tracklet_ids[which],
                   t_pids[which], t_camids[which],
                   local=rng.normal(size=(num_frames, 3, 4)).astype(np.float32))
    got = pool_tracklets(split, method=method)
    pooled, first, ids = reference_pool(split.global_, split.tracklets, method)
    np.testing.assert_allclose(got.global_, pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.local, reference_pool(split.local, split.tracklets, method)[0],
                               rtol=1e-5, atol=1e-6)
    assert got.global_.dtype == got.local.dtype == np.float32
    np.testing.assert_array_equal(got.tracklets, ids)
    for field in ("pids", "camids", "paths"):
        np.testing.assert_array_equal(getattr(got, field), getattr(split, field)[first])


def test_pool_tracklets_integer_features_pooled_as_float():
    pooled = pool_tracklets(frames(np.array([[1], [2]]), [0, 0], [5, 5], [1, 1])).global_
    assert pooled.dtype == np.float64
    np.testing.assert_array_equal(pooled, [[1.5]])


@pytest.mark.parametrize("field", ["pid", "camid"])
def test_pool_tracklets_mismatch_raises(field):
    pids, camids = np.array([1, 2, 1]), np.array([0, 0, 0])
    if field == "pid":
        pids[2] = 3
    else:
        camids[2] = 4
    with pytest.raises(ValueError, match=f"tracklet 0 has frames with different {field}s"):
        pool_tracklets(frames(np.zeros((3, 2)), [0, 1, 0], pids, camids))


def test_pool_tracklets_bad_arguments_raise():
    with pytest.raises(ValueError, match="method"):
        pool_tracklets(frames(np.zeros((1, 2)), [0], [0], [0]), method="median")
    with pytest.raises(ValueError, match="no tracklet"):
        pool_tracklets(features([[0, 0]], pids=[1], camids=[0]))
    with pytest.raises(ValueError, match="no frames"):
        pool_tracklets(frames(np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0, np.int64),
                              np.zeros(0, np.int64)))


def test_pool_multi_query_hand_worked():
    # Query 0 (pid 1, cam 0) has two images of its pid and camera, [3, 4] and [0, 2], and one of
    # its pid in camera 1 (not pooled); query 1 (pid 2, cam 0) has one; query 2 (pid 3, cam 1)
    # none: it keeps its own feature. Each is L2-normalised first: [0.6, 0.8] and [0, 1].
    query = features([[1, 1], [0, 5], [2, 0]], pids=[1, 2, 3], camids=[0, 0, 1])
    multi = features([[3, 4], [9, 9], [0, 2], [0, 7], [2, 2]], pids=[1, 1, 1, 2, 3],
                     camids=[0, 1, 0, 0, 0])
    pooled, sizes = pool_multi_query(query, multi)
    np.testing.assert_allclose(pooled.global_, [[0.3, 0.9], [0, 1], [1, 0]], atol=1e-7)
    assert sizes.tolist() == [2, 1, 0]
    assert pooled.global_.dtype == np.float32 and pooled.local is None
    for field in ("pids", "camids", "paths", "tracklets", "frames"):
        np.testing.assert_array_equal(getattr(pooled, field), getattr(query, field))
    pooled_max, _ = pool_multi_query(query, multi, "max")
    np.testing.assert_allclose(pooled_max.global_, [[0.6, 1], [0, 1], [1, 0]], atol=1e-7)
    # Raw features without normalisation (and the query alone stays raw).
    raw, _ = pool_multi_query(query, multi, normalize=False)
    np.testing.assert_allclose(raw.global_, [[1.5, 3], [0, 7], [2, 0]], atol=1e-7)


def reference_multi_query(query, multi, method, normalize):
    """The slow obvious twin of `pool_multi_query`: one query at a time, its images found by a
    loop over the multi-query split. Returns (global [Q, D], local [Q, h, c] or None, sizes)."""
    def unit(v):
        return v / max(np.sqrt(np.sum(v * v)), 1e-12)

    reduce = np.mean if method == "mean" else np.max
    globals_, locals_, sizes = [], [], []
    for q in range(len(query)):
        rows = [m for m in range(len(multi)) if multi.pids[m] == query.pids[q]
                and multi.camids[m] == query.camids[q]]
        split, own = (multi, rows) if rows else (query, [q])
        globals_.append(reduce([unit(split.global_[i].astype(np.float64)) if normalize
                                else split.global_[i] for i in own], axis=0))
        if query.local is not None:
            locals_.append(reduce([[unit(stripe.astype(np.float64)) for stripe in split.local[i]]
                                   for i in own], axis=0))
        sizes.append(len(rows))
    return (np.array(globals_), None if query.local is None else np.array(locals_),
            np.array(sizes))


def loop_euclidean(a, b):
    """Euclidean distances of L2-normalised rows, one pair at a time, in float64."""
    a = [x / np.linalg.norm(x) for x in np.asarray(a, np.float64)]
    b = [y / np.linalg.norm(y) for y in np.asarray(b, np.float64)]
    return np.array([[np.sqrt(np.sum((x - y) ** 2)) for y in b] for x in a])


def multi_query_problem(seed):
    """Features of 30 queries, 60 gallery and 90 multi-query images over 6 pids x 3 cameras,
    float32 with stripes; some queries' (pid, camid) have no multi-query image."""
    rng = np.random.default_rng(seed)

    def split(n, pids, camids):
        return SplitFeatures(rng.normal(size=(n, 8)).astype(np.float32),
                             rng.normal(size=(n, 3, 4)).astype(np.float32), pids, camids,
                             np.array([f"{i}.jpg" for i in range(n)]), np.full(n, -1, np.int64),
                             np.full(n, -1, np.int64))

    query = split(30, rng.integers(0, 6, 30), rng.integers(0, 3, 30))
    multi_pids, multi_camids = rng.integers(0, 6, 90), rng.integers(0, 3, 90)
    multi_camids[multi_pids == query.pids[0]] = (query.camids[0] + 1) % 3  # q0 has none
    gallery = split(60, rng.integers(0, 6, 60), rng.integers(0, 3, 60))
    return query, gallery, split(90, multi_pids, multi_camids)


@pytest.mark.parametrize("method", ["mean", "max"])
@pytest.mark.parametrize("seed", [0, 1])
def test_pool_multi_query_matches_loop_reference(method, seed):
    query, gallery, multi = multi_query_problem(seed)
    pooled, sizes = pool_multi_query(query, multi, method)
    want_global, want_local, want_sizes = reference_multi_query(query, multi, method, True)
    np.testing.assert_array_equal(sizes, want_sizes)
    assert sizes[0] == 0 and (sizes > 0).sum() > 10
    np.testing.assert_allclose(pooled.global_, want_global, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled.local, want_local, rtol=1e-5, atol=1e-6)
    assert pooled.global_.dtype == pooled.local.dtype == np.float32

    # Ranked once per pooled query with the usual junk rule: the library's distances and
    # evaluate_rank against a loop distance matrix and the per-query reference.
    ids = (query.pids, gallery.pids, query.camids, gallery.camids)
    reference = loop_euclidean(want_global, gallery.global_)
    fast = matching.distances(pooled, gallery, ["global"])["global"]
    np.testing.assert_allclose(fast, reference, atol=1e-5)
    cmc, mean_ap, mean_inp, evaluated, _ = reference_evaluate(reference, *ids, 10, "standard")
    got = evaluate_rank(fast, *ids, max_rank=10, return_details=True)
    np.testing.assert_allclose(got["cmc"], cmc, atol=1e-12)
    assert (got["mAP"], got["mINP"], got["num_evaluated"]) == \
        pytest.approx((mean_ap, mean_inp, evaluated), abs=1e-9)


def test_pool_multi_query_raw_features_and_integers():
    query, _, multi = multi_query_problem(2)
    pooled, _ = pool_multi_query(query, multi, "mean", normalize=False)
    want_global, want_local, _ = reference_multi_query(query, multi, "mean", False)
    np.testing.assert_allclose(pooled.global_, want_global, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled.local, want_local, rtol=1e-5, atol=1e-6)  # always unit
    def ints(global_, pids):
        n = len(pids)
        return SplitFeatures(np.array(global_), None, np.array(pids), np.zeros(n, np.int64),
                             np.array([f"{i}.jpg" for i in range(n)]), np.full(n, -1),
                             np.full(n, -1))

    got, _ = pool_multi_query(ints([[1, 2]], [1]), ints([[2, 2], [1, 1]], [1, 1]),
                              normalize=False)
    assert got.global_.dtype == np.float64
    np.testing.assert_array_equal(got.global_, [[1.5, 1.5]])


def test_pool_multi_query_without_images_or_stripes():
    query, _, multi = multi_query_problem(3)
    empty = SplitFeatures(multi.global_[:0], None, multi.pids[:0], multi.camids[:0],
                          multi.paths[:0], multi.tracklets[:0], multi.frames[:0])
    pooled, sizes = pool_multi_query(query, empty)
    assert sizes.tolist() == [0] * len(query) and pooled.local is None  # no stripes to pool
    np.testing.assert_allclose(pooled.global_, matching.l2_normalize(query.global_), atol=1e-7)


def test_pool_multi_query_bad_arguments_raise():
    query, _, multi = multi_query_problem(4)
    with pytest.raises(ValueError, match="method"):
        pool_multi_query(query, multi, "median")
    narrow = SplitFeatures(multi.global_[:, :4], None, multi.pids, multi.camids, multi.paths,
                           multi.tracklets, multi.frames)
    with pytest.raises(ValueError, match="differ in width"):
        pool_multi_query(query, narrow)
    fewer = SplitFeatures(multi.global_, multi.local[:, :2], multi.pids, multi.camids,
                          multi.paths, multi.tracklets, multi.frames)
    with pytest.raises(ValueError, match="stripes differ in shape"):
        pool_multi_query(query, fewer)
