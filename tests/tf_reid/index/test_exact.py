"""The blocked NumPy top-k against a full argsort, and recall@k on hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tf_reid.index.data import brute_force, random_unit
from tf_reid.index import exact


@pytest.mark.parametrize("block", [None, 1, 7])
def test_exact_topk_equals_argsort(block):
    gallery, queries = random_unit(300, 16, seed=0), random_unit(20, 16, seed=1)
    distances, indices = exact.exact_topk(queries, gallery, 10, block=block)
    want_d, want_i = brute_force(queries, gallery, 10)
    np.testing.assert_array_equal(indices, want_i)
    np.testing.assert_allclose(distances, want_d, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_euclidean_distances_equal_a_loop_of_norms(dtype):
    # More rows than one step of the row-wise sums (256), unnormalised features.
    rng = np.random.default_rng(4)
    queries, gallery = (rng.normal(size=(n, 24)).astype(dtype) for n in (300, 40))
    want = np.array([[np.linalg.norm(q.astype(np.float64) - g) for g in gallery.astype(np.float64)]
                     for q in queries])
    got = exact.euclidean_distances(queries, gallery)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12)
    # Squared norms passed in give the same result; a point's distance to itself is ~0.
    np.testing.assert_array_equal(
        exact.euclidean_distances(queries, gallery, exact.squared_norms(gallery)), got)
    np.testing.assert_array_equal(exact.squared_norms(gallery), (gallery * gallery).sum(axis=1))
    assert np.abs(np.diag(exact.euclidean_distances(gallery, gallery))).max() < 1e-2


def test_exact_topk_k_equals_gallery_size():
    gallery, queries = random_unit(6, 4, seed=2), random_unit(3, 4, seed=3)
    _, indices = exact.exact_topk(queries, gallery, 6)
    np.testing.assert_array_equal(indices, brute_force(queries, gallery, 6)[1])


def test_smallest_k_breaks_ties_by_column():
    values, columns = exact.smallest_k(np.array([[3.0, 1.0, 1.0, 2.0], [0.0, 5.0, 0.0, 0.0]]), 2)
    np.testing.assert_array_equal(columns, [[1, 2], [0, 2]])
    np.testing.assert_array_equal(values, [[1, 1], [0, 0]])


def test_exact_topk_rejects_bad_k_and_shapes():
    gallery = random_unit(5, 4, seed=0)
    with pytest.raises(ValueError, match="k must be in 1..5"):
        exact.exact_topk(gallery, gallery, 6)
    with pytest.raises(ValueError, match="expected"):
        exact.exact_topk(gallery[:, :3], gallery, 1)


def test_recall_at_k():
    # Query 0 finds 2 of its 3 true neighbours (3 and 1), query 1 all 3 in another order,
    # query 2 none (-1 = nothing found): (2 + 3 + 0) / 9.
    found = np.array([[1, 2, 3], [7, 8, 9], [-1, -1, 5]])
    truth = np.array([[3, 4, 1], [9, 7, 8], [0, 1, 2]])
    assert exact.recall_at_k(found, truth) == pytest.approx(5 / 9)
