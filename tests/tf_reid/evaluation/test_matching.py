"""Query x gallery distances: global and aligned local matrices against slow loop twins."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tf_reid.losses.references import reference_distance_matrix
from tests.tf_reid.evaluation.conftest import features
from tests.tf_reid.evaluation.references import re_ranking_dense
from tf_reid.evaluation.matching import (
    DISTANCES,
    VARIANTS,
    combined_distances,
    distances,
    global_distances,
    l2_normalize,
    local_distances,
)


def _features(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def loop_global(query: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """[Q, G] Euclidean distances, one pair at a time, in float64."""
    out = np.zeros((len(query), len(gallery)))
    for i, q in enumerate(query.astype(np.float64)):
        for j, g in enumerate(gallery.astype(np.float64)):
            out[i, j] = np.sqrt(np.sum((q - g) ** 2))
    return out


def loop_local(query: np.ndarray, gallery: np.ndarray, normalize: bool) -> np.ndarray:
    """[Q, G] aligned distances, one pair at a time; stripes divided by their norms if asked."""
    if normalize:
        query = query / np.linalg.norm(query, axis=-1, keepdims=True)
        gallery = gallery / np.linalg.norm(gallery, axis=-1, keepdims=True)
    return reference_distance_matrix(query, gallery)


# --- global ---------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [1, 3, 7, 1024])
def test_global_matches_loop(block):
    # 7 queries: blocks of 3 leave a last block of 1.
    query, gallery = _features(0, 7, 5), _features(1, 11, 5)
    dist = global_distances(query, gallery, normalize=False, block=block)
    assert dist.shape == (7, 11) and dist.dtype == np.float32
    np.testing.assert_allclose(dist, loop_global(query, gallery), rtol=1e-5, atol=1e-5)


def test_global_normalized_matches_loop_on_unit_vectors():
    query, gallery = _features(2, 6, 8), _features(3, 9, 8)
    unit_q = query / np.linalg.norm(query, axis=1, keepdims=True)
    unit_g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    np.testing.assert_allclose(global_distances(query, gallery, normalize=True, block=4),
                               loop_global(unit_q, unit_g), atol=1e-5)


def test_global_normalized_ignores_scale_and_is_the_cosine_chord():
    query, gallery = _features(4, 5, 6), _features(5, 8, 6)
    scales_q = np.random.default_rng(6).uniform(0.1, 10, size=(5, 1)).astype(np.float32)
    scales_g = np.random.default_rng(7).uniform(0.1, 10, size=(8, 1)).astype(np.float32)
    dist = global_distances(query, gallery, normalize=True)
    np.testing.assert_allclose(
        global_distances(query * scales_q, gallery * scales_g, normalize=True), dist, atol=1e-5)
    cosine = (query @ gallery.T) / np.outer(np.linalg.norm(query, axis=1),
                                             np.linalg.norm(gallery, axis=1))
    np.testing.assert_allclose(dist, np.sqrt(2 - 2 * cosine), atol=1e-5)
    assert dist.min() >= 0 and dist.max() <= 2 + 1e-6
    # Unnormalised, scale matters.
    assert not np.allclose(global_distances(query * scales_q, gallery, normalize=False),
                           global_distances(query, gallery, normalize=False))


def test_identical_features_are_at_distance_zero():
    feats = _features(8, 4, 16)
    assert np.abs(np.diag(global_distances(feats, feats, normalize=False))).max() < 1e-2
    assert np.abs(np.diag(global_distances(feats, feats, normalize=True))).max() < 1e-3


def test_l2_normalize_keeps_zero_vectors_and_gives_unit_norms():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])
    stripes = _features(9, 3, 4, 5)
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(stripes), axis=-1), 1, rtol=1e-6)


# --- local ----------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("block,tile", [(3, (64, 256)), (2, (1, 5)), (7, (3, 4)), (4, (2, 1))])
def test_local_matches_nested_loop_dp(block, tile, normalize):
    # 7 queries x 6 gallery, 4 stripes of 3 channels; blocks of 3, 2 or 4 do not divide 7 (the
    # last call overlaps the one before), and tiles of 3 x 4 or 2 x 1 images do not divide the
    # calls' rows or the gallery (the last tile overlaps too).
    query, gallery = _features(10, 7, 4, 3), _features(11, 6, 4, 3)
    dist = local_distances(query, gallery, block=block, normalize=normalize, tile=tile)
    assert dist.shape == (7, 6) and dist.dtype == np.float32
    np.testing.assert_allclose(dist, loop_local(query, gallery, normalize), atol=1e-5)


def test_local_different_stripe_counts_match_nested_loop_dp():
    query, gallery = _features(12, 5, 3, 4), _features(13, 4, 6, 4)
    np.testing.assert_allclose(local_distances(query, gallery, block=2),
                               loop_local(query, gallery, normalize=True), atol=1e-5)


def test_local_normalized_ignores_stripe_scale_and_is_bounded():
    query, gallery = _features(14, 4, 5, 6), _features(15, 6, 5, 6)
    scales = np.random.default_rng(16).uniform(0.1, 10, size=(4, 5, 1)).astype(np.float32)
    dist = local_distances(query, gallery, block=3)
    np.testing.assert_allclose(local_distances(query * scales, gallery, block=3), dist,
                               atol=1e-5)
    # Unit stripes are at most 2 apart: each of the 2H-1 cells on the path is <= tanh(1).
    assert dist.min() >= 0 and dist.max() <= (2 * 5 - 1) * np.tanh(1.0) + 1e-5
    assert not np.allclose(local_distances(query * scales, gallery, normalize=False),
                           local_distances(query, gallery, normalize=False), atol=1e-3)


def test_local_empty_sides():
    assert local_distances(np.zeros((0, 4, 3), np.float32), _features(17, 5, 4, 3)).shape == (0, 5)
    assert local_distances(_features(18, 2, 4, 3), np.zeros((0, 4, 3), np.float32)).shape == (2, 0)


# --- combined and registry ------------------------------------------------------------------


@pytest.mark.parametrize("weight", [1.0, 0.5, 0.0])
def test_combined_is_the_weighted_sum(weight):
    global_dist, local_dist = _features(19, 3, 4), _features(20, 3, 4)
    out = combined_distances(global_dist, local_dist, local_weight=weight)
    assert out.dtype == np.float32
    expected = [[global_dist[i, j] + weight * local_dist[i, j] for j in range(4)]
                for i in range(3)]
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_registry_names_and_global_plus_local():
    assert list(DISTANCES) == ["global", "global+local"]
    assert VARIANTS == ("global", "global+rerank", "global+local", "global+local+rerank")
    # Query and gallery of one size: the aligned distances of q x g, q x q and g x g are one
    # XLA program.
    query = features(_features(21, 5, 8), _features(22, 5, 4, 3), pids=range(5), camids=[0] * 5)
    gallery = features(_features(23, 5, 8), _features(24, 5, 4, 3), pids=range(5),
                       camids=[1] * 5)
    unit_q = query.global_ / np.linalg.norm(query.global_, axis=1, keepdims=True)
    unit_g = gallery.global_ / np.linalg.norm(gallery.global_, axis=1, keepdims=True)
    want_global = loop_global(unit_q, unit_g)
    want_local = loop_local(query.local, gallery.local, True)
    np.testing.assert_allclose(DISTANCES["global"](query, gallery, True, 0.5), want_global,
                               atol=1e-5)
    np.testing.assert_allclose(DISTANCES["global+local"](query, gallery, True, 0.5),
                               want_global + 0.5 * want_local, atol=1e-5)
    raw = DISTANCES["global"](query, gallery, False, 0.5)
    np.testing.assert_allclose(raw, loop_global(query.global_, gallery.global_), atol=1e-5)

    got = distances(query, gallery, ["global+local", "global"], rerank=True, normalize=False,
                    local_weight=0.5, k1=3, k2=2)
    assert list(got) == list(VARIANTS)
    np.testing.assert_allclose(got["global"], raw, atol=1e-6)
    # Re-ranked against the dense release on the same matrices (the global one computes its
    # distances from the features).
    for name in DISTANCES:
        pairwise = DISTANCES[name]
        dense = re_ranking_dense(
            got[name], pairwise(query, query, False, 0.5), pairwise(gallery, gallery, False, 0.5),
            k1=3, k2=2, lambda_value=0.3)
        np.testing.assert_allclose(got[name + "+rerank"], dense, atol=1e-5)
    assert list(distances(query, gallery, ["global"])) == ["global"]
    with pytest.raises(ValueError, match="unknown distance"):
        distances(query, gallery, ["local"])


def test_rejects_bad_shapes_and_blocks():
    with pytest.raises(ValueError, match="block"):
        global_distances(_features(25, 2, 3), _features(26, 2, 3), normalize=False, block=0)
    with pytest.raises(ValueError, match=r"\[Q, D\]"):
        global_distances(_features(27, 2, 3), _features(28, 2, 4), normalize=False)
    with pytest.raises(ValueError, match=r"\[Q, H, C\]"):
        local_distances(_features(29, 2, 3), _features(30, 2, 3))
    with pytest.raises(ValueError, match="one shape"):
        combined_distances(np.zeros((2, 3)), np.zeros((3, 2)))
