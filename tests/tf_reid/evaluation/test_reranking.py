"""Tests for tf_reid.evaluation.reranking: low-memory re-ranking against the dense release twin."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tf_reid.evaluation.references import re_ranking_dense
from tf_reid.evaluation.reranking import re_ranking, re_ranking_features
from tf_reid.index.exact import euclidean_distances

NUM_Q, NUM_G, DIM = 30, 200, 16


def _features(seed: int, num_q: int = NUM_Q, num_g: int = NUM_G, dim: int = DIM):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(num_q, dim)).astype(np.float32)
    gallery = rng.normal(size=(num_g, dim)).astype(np.float32)
    return query, gallery


def _blocks(query, gallery):
    """(q_g, q_q, g_g) Euclidean distances, exactly symmetric as true distances are."""
    feats = np.concatenate([query, gallery])
    dist = euclidean_distances(feats, feats)
    dist = (dist + dist.T) / 2
    np.fill_diagonal(dist, 0.0)
    num_q = len(query)
    return dist[:num_q, num_q:], dist[:num_q, :num_q], dist[num_q:, num_q:]


@pytest.mark.parametrize(
    "k1,k2,lambda_value",
    [(20, 6, 0.3), (20, 1, 0.3), (5, 1, 0.0), (7, 3, 1.0), (3, 2, 0.5), (9, 4, 0.0)],
)
@pytest.mark.parametrize("block", [17, 64, 1024])
def test_low_memory_matches_dense(k1, k2, lambda_value, block):
    q_g, q_q, g_g = _blocks(*_features(seed=k1 * 10 + k2))
    dense = re_ranking_dense(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lambda_value)
    low = re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lambda_value, block=block)
    assert low.shape == dense.shape == (NUM_Q, NUM_G)
    assert low.dtype == np.float32
    np.testing.assert_allclose(low, dense, rtol=0, atol=1e-5)


def test_float64_inputs_match_dense():
    q_g, q_q, g_g = (d.astype(np.float64) for d in _blocks(*_features(seed=3)))
    dense = re_ranking_dense(q_g, q_q, g_g)
    low = re_ranking(q_g, q_q, g_g, block=50)
    np.testing.assert_allclose(low, dense, rtol=0, atol=1e-5)


def test_gallery_distances_may_be_a_memmap(tmp_path):
    q_g, q_q, g_g = _blocks(*_features(seed=4))
    path = tmp_path / "g_g.f32"
    on_disk = np.memmap(path, dtype=np.float32, mode="w+", shape=g_g.shape)
    on_disk[:] = g_g
    on_disk.flush()
    read_only = np.memmap(path, dtype=np.float32, mode="r", shape=g_g.shape)
    low = re_ranking(q_g, q_q, read_only, block=33)
    np.testing.assert_allclose(low, re_ranking_dense(q_g, q_q, g_g), rtol=0, atol=1e-5)


@pytest.mark.parametrize("block", [16, 1024])
def test_features_match_distances(block):
    query, gallery = _features(seed=5)
    feats = np.concatenate([query, gallery])
    dist = euclidean_distances(feats, feats)
    q_g, q_q, g_g = dist[:NUM_Q, NUM_Q:], dist[:NUM_Q, :NUM_Q], dist[NUM_Q:, NUM_Q:]
    from_features = re_ranking_features(query, gallery, k1=10, k2=3, block=block)
    np.testing.assert_allclose(
        from_features, re_ranking(q_g, q_q, g_g, k1=10, k2=3), rtol=0, atol=1e-5
    )
    np.testing.assert_allclose(
        from_features, re_ranking_dense(q_g, q_q, g_g, k1=10, k2=3), rtol=0, atol=1e-5
    )


def test_lambda_one_is_normalised_squared_distance():
    q_g, q_q, g_g = _blocks(*_features(seed=6))
    squared_rows = np.concatenate([q_q, q_g], axis=1).astype(np.float64) ** 2
    expected = squared_rows[:, NUM_Q:] / squared_rows.max(axis=1, keepdims=True)
    for fn in (re_ranking, re_ranking_dense):
        np.testing.assert_allclose(fn(q_g, q_q, g_g, lambda_value=1.0), expected, atol=1e-6)


def test_two_clusters_keep_same_cluster_gallery_closer():
    # Two tight clusters far apart on a line; query 0 in cluster A, query 1 in cluster B.
    rng = np.random.default_rng(7)
    centres = np.array([[0.0, 0.0], [10.0, 0.0]], dtype=np.float32)
    gallery = np.concatenate(
        [centres[0] + 0.1 * rng.normal(size=(6, 2)), centres[1] + 0.1 * rng.normal(size=(6, 2))]
    ).astype(np.float32)
    query = (centres + 0.1 * rng.normal(size=(2, 2))).astype(np.float32)
    q_g, q_q, g_g = _blocks(query, gallery)
    for fn in (re_ranking, re_ranking_dense):
        dist = fn(q_g, q_q, g_g, k1=4, k2=2, lambda_value=0.3)
        assert dist.shape == (2, 12)
        # Every same-cluster gallery item is closer than every other-cluster one.
        assert dist[0, :6].max() < dist[0, 6:].min()
        assert dist[1, 6:].max() < dist[1, :6].min()
        # Different-cluster items share no k-reciprocal neighbour: Jaccard distance 1.
        row_max = (np.concatenate([q_q[0], q_g[0]]) ** 2).max()
        np.testing.assert_allclose(dist[0, 6:], 0.7 + 0.3 * q_g[0, 6:] ** 2 / row_max, atol=1e-6)


def test_rejects_bad_shapes_and_arguments():
    q_g, q_q, g_g = _blocks(*_features(seed=8, num_q=3, num_g=5))
    with pytest.raises(ValueError, match="g_g"):
        re_ranking(q_g, q_q, g_g[:4, :4])
    with pytest.raises(ValueError, match="lambda"):
        re_ranking(q_g, q_q, g_g, lambda_value=1.5)
    with pytest.raises(ValueError, match="block"):
        re_ranking(q_g, q_q, g_g, block=0)


@pytest.mark.parametrize("block", [13, 1024])
def test_many_exact_ties_match_dense(block):
    """Integer features on a small grid tie constantly: the partial sorts must fall back to
    the dense algorithm's (stable) order at every tie across the k-th neighbour."""
    rng = np.random.default_rng(11)
    query = rng.integers(0, 3, size=(25, 4)).astype(np.float32)
    gallery = rng.integers(0, 3, size=(120, 4)).astype(np.float32)
    q_g, q_q, g_g = _blocks(query, gallery)
    assert len(np.unique(g_g)) < 20, "the data is tie-heavy"
    dense = re_ranking_dense(q_g, q_q, g_g, k1=6, k2=3, lambda_value=0.3)
    low = re_ranking(q_g, q_q, g_g, k1=6, k2=3, lambda_value=0.3, block=block)
    np.testing.assert_allclose(low, dense, rtol=0, atol=1e-5)


def test_blocks_wider_than_one_partial_sort_match_dense():
    """760 rows in blocks of 1024 over 2 workers: each worker's 380 rows go through the partial
    sort in pieces; the result equals the dense release and does not depend on the workers."""
    q_g, q_q, g_g = _blocks(*_features(seed=12, num_q=60, num_g=700))
    dense = re_ranking_dense(q_g, q_q, g_g)
    two = re_ranking(q_g, q_q, g_g, block=1024, workers=2)
    np.testing.assert_allclose(two, dense, rtol=0, atol=1e-5)
    assert np.array_equal(two, re_ranking(q_g, q_q, g_g, block=1024, workers=1))
    assert np.array_equal(two, re_ranking(q_g, q_q, g_g, block=100, workers=3))
    with pytest.raises(ValueError, match="workers"):
        re_ranking(q_g, q_q, g_g, workers=0)
