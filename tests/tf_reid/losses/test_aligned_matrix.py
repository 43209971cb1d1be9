"""The forward-only retrieval matrix: tiles, the tanh-free unit path, the nested-loop DP twin."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.tf_reid.losses.references import reference_distance_matrix
from tests.tf_reid.losses.conftest import stripes
from tf_reid.losses.aligned import aligned_distance
from tf_reid.losses.aligned_matrix import aligned_distance_matrix_forward, unit_tanh_half_sqrt


def scaled_to_norm(x: np.ndarray, norm: float) -> np.ndarray:
    """x with every stripe rescaled to the given L2 norm over its channels."""
    return x * (norm / np.linalg.norm(x, axis=-1, keepdims=True))


def test_unit_tanh_half_sqrt_matches_tanh_on_its_interval():
    # Unit stripes: squared distances from 0 (equal) to 4 (opposite), plus the headroom.
    s = np.concatenate([np.linspace(0.0, 4.0625, 100_003), [0.0, 1e-12, 1e-6, 2.0, 4.0]])
    got = unit_tanh_half_sqrt(tf.constant(s, tf.float32)).numpy().astype(np.float64)
    s32 = s.astype(np.float32).astype(np.float64)  # the input the function actually sees
    # float32 tanh values below 0.8 are spaced 6e-8 apart; allow a few such steps.
    np.testing.assert_allclose(got, np.tanh(np.sqrt(s32) / 2), rtol=0, atol=2.5e-7)
    assert got[-1] == pytest.approx(np.tanh(1.0), abs=2.5e-7)
    # Rounding can make an expanded squared distance slightly negative: it counts as 0.
    assert unit_tanh_half_sqrt(tf.constant([-1e-6, -0.0], tf.float32)).numpy().tolist() == [0, 0]


@pytest.mark.parametrize("rows, cols", [(4, 4), (8, 8), (3, 6), (6, 1)])
@pytest.mark.parametrize("tiles", [(64, 256), (2, 3), (1, 1), (4, 8)])
@pytest.mark.parametrize("norm", [None, 1.0])
def test_forward_matrix_matches_nested_loop_dp(rows, cols, tiles, norm):
    # 7 x 11 images: tiles of 2 x 3 or 4 x 8 leave last tiles that overlap the one before.
    # norm None: raw normal stripes (tf.tanh); 1.0: unit stripes (the tanh-free path).
    query, gallery = stripes(60, 7, rows, 5), stripes(61, 11, cols, 5)
    if norm is not None:
        query, gallery = scaled_to_norm(query, norm), scaled_to_norm(gallery, norm)
    dist = aligned_distance_matrix_forward(query, gallery, *tiles)
    assert dist.shape == (7, 11) and dist.dtype == tf.float32
    np.testing.assert_allclose(dist.numpy(), reference_distance_matrix(query, gallery), rtol=1e-6,
                               atol=1e-5)


def test_forward_matrix_is_the_training_pair_distance():
    # Unit stripes, as in retrieval, 8 x 128 as the benchmark's; a gallery longer than a tile.
    # Pair (p, q) of the matrix is aligned_distance on the stacked pair p*300 + q.
    query = scaled_to_norm(stripes(62, 9, 8, 128), 1.0)
    gallery = scaled_to_norm(stripes(63, 300, 8, 128), 1.0)
    pairs = aligned_distance(np.repeat(query, 300, axis=0), np.tile(gallery, (9, 1, 1)))
    np.testing.assert_allclose(aligned_distance_matrix_forward(query, gallery, 4, 64).numpy(),
                               pairs.numpy().reshape(9, 300), atol=2e-6)


@pytest.mark.parametrize("norm", [1.0038, 1.0041, 1.5])
def test_forward_matrix_either_side_of_the_unit_norm_bound(norm):
    # Squared norms up to 1 + 1/128 (norms up to 1.0038) take the tanh-free path, above it tf.tanh;
    # both must match the loops. Opposite stripes give the largest squared distance, 4 norm^2.
    query = scaled_to_norm(stripes(68, 5, 6, 16), norm)
    gallery = np.concatenate([-query, scaled_to_norm(stripes(69, 9, 6, 16), norm)])
    np.testing.assert_allclose(aligned_distance_matrix_forward(query, gallery, 2, 4).numpy(),
                               reference_distance_matrix(query, gallery), rtol=1e-6, atol=1e-5)


def test_forward_matrix_of_one_query_and_empty_sides():
    x, y = stripes(64, 1, 5, 4), stripes(67, 20, 5, 4)
    np.testing.assert_allclose(aligned_distance_matrix_forward(x, y, 8, 8).numpy(),
                               reference_distance_matrix(x, y), rtol=1e-6, atol=1e-5)
    assert aligned_distance_matrix_forward(x[:0], y).shape == (0, 20)
    assert aligned_distance_matrix_forward(x, y[:0]).shape == (1, 0)


def test_forward_matrix_rejects_bad_arguments():
    x = stripes(65, 2, 3, 4)
    with pytest.raises(ValueError, match="query_tile"):
        aligned_distance_matrix_forward(x, x, query_tile=0)
    with pytest.raises(ValueError, match=r"\[P, M, C\]"):
        aligned_distance_matrix_forward(x, stripes(66, 2, 3, 5))
