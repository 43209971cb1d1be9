"""One pair's element distances and shortest path, by hand, against the slow DP and against the
library's aligned distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tests.tf_reid.losses.references import reference_element_distances, reference_path
from tf_reid.evaluation.alignment import element_distances, shortest_path
from tf_reid.evaluation.matching import l2_normalize, local_distances
from tf_reid.losses.aligned import aligned_distance
from tf_reid.losses.wavefront import path_cells, wavefront


def cells_matrix(path: list[tuple[int, int]], shape: tuple[int, int]) -> np.ndarray:
    """The 0/1 [M, L] indicator of `path`'s cells (as `reference_path` returns them)."""
    out = np.zeros(shape)
    for i, j in path:
        out[i, j] = 1
    return out


def test_shortest_path_on_a_hand_worked_square_matrix_with_a_tie():
    d = np.array([[1.0, 2.0, 3.0],
                  [1.0, 5.0, 1.0],
                  [4.0, 1.0, 1.0]])
    # S row by row: row 0 = 1, 3, 6; row 1 = 2, 5 + min(3, 2) = 7, 1 + min(6, 7) = 7;
    # row 2 = 6, 1 + min(7, 6) = 7, 1 + min(S(1,2) = 7, S(2,1) = 7) = 8, a tie: both the path
    # along the top and right edges (1+2+3+1+1) and the one down the left and along the bottom
    # (1+1+4+1+1) are 8 long. Ties go to the cell above, so the trace from (2, 2) goes up to
    # (1, 2), up again (6 < 7) to (0, 2), then left to (0, 0).
    total, path = shortest_path(d)
    assert total == 8.0
    assert path == [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2)]


def test_shortest_path_on_a_hand_worked_2x4_matrix():
    d = np.array([[0.5, 0.1, 0.1, 0.9],
                  [0.2, 0.8, 0.7, 0.1]])
    # Row 0: 0.5, 0.6, 0.7, 1.6. Row 1: 0.7, 0.8 + min(0.6, 0.7) = 1.4, 0.7 + min(0.7, 1.4) =
    # 1.4, 0.1 + min(1.6, 1.4) = 1.5. Back from (1, 3): left (1.4 < 1.6) to (1, 2), up
    # (0.7 < 1.4) to (0, 2), then left along row 0: 0.5 + 0.1 + 0.1 + 0.7 + 0.1 = 1.5.
    total, path = shortest_path(d)
    assert total == pytest.approx(1.5, abs=1e-12)
    assert path == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 3)]
    # A single row or column has one path, through every cell.
    assert shortest_path(d[:1]) == (pytest.approx(1.6), [(0, 0), (0, 1), (0, 2), (0, 3)])
    assert shortest_path(d[:, 3:]) == (pytest.approx(1.0), [(0, 0), (1, 0)])


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (5, 1), (4, 4), (3, 7), (8, 8)])
def test_shortest_path_equals_the_slow_dp(shape):
    rng = np.random.default_rng(sum(shape))
    # Uniform values (no ties) and small integers (many ties: the tie rule decides the path).
    for d in (rng.uniform(size=shape), rng.integers(0, 3, size=shape).astype(np.float64)):
        total, path = shortest_path(d)
        want_total, want_cells = reference_path(d)
        assert total == pytest.approx(want_total, rel=1e-12, abs=1e-12)
        np.testing.assert_array_equal(cells_matrix(path, shape), want_cells)
        assert len(path) == sum(shape) - 1
        assert all(abs(a - c) + abs(b - e) == 1 for (a, b), (c, e) in zip(path, path[1:]))
        assert total == pytest.approx(sum(d[i, j] for i, j in path), abs=1e-12)


def test_ties_go_where_the_library_wavefront_sends_them():
    # The gradient of the training loss runs along `path_cells`; the picture must show that path.
    rng = np.random.default_rng(7)
    d = rng.integers(0, 2, size=(6, 6, 5)).astype(np.float32)
    _, from_above = wavefront(tf.constant(d))
    library = path_cells(from_above, 5).numpy()
    for n in range(len(d)):
        np.testing.assert_array_equal(cells_matrix(shortest_path(d[n])[1], (6, 5)), library[n])


def test_element_distances_by_hand_and_against_the_paper_form():
    x = np.array([[0.0, 0.0], [3.0, 4.0]])
    y = np.array([[0.0, 0.0], [0.0, 4.0], [3.0, 4.0]])
    # ||x_1 - y_0|| = 5: (e^5 - 1) / (e^5 + 1) = tanh(2.5) = 0.98661...; ||x_0 - y_1|| = 4 and
    # ||x_1 - y_1|| = 3: tanh(2), tanh(1.5); equal stripes are exactly 0 apart.
    want = [[0.0, math.tanh(2.0), math.tanh(2.5)],
            [math.tanh(2.5), math.tanh(1.5), 0.0]]
    got = element_distances(x, y)
    assert got.shape == (2, 3) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
    assert math.tanh(2.5) == pytest.approx(0.9866142981514303)

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(3, 7))
    np.testing.assert_allclose(element_distances(a, b),
                               reference_element_distances(a[None], b[None])[0], rtol=1e-12)
    with pytest.raises(ValueError, match=r"\[M, C\] and \[L, C\]"):
        element_distances(a, b[:, :3])


def test_total_equals_the_library_aligned_distance():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(4, 6, 16)).astype(np.float32)
    y = rng.normal(size=(4, 5, 16)).astype(np.float32)
    want = aligned_distance(x, y).numpy()
    got = [shortest_path(element_distances(x[n], y[n]))[0] for n in range(4)]
    np.testing.assert_allclose(got, want, rtol=1e-5)

    # At test time: stripes L2-normalised over their channels, as `local_distances` does.
    want = local_distances(x, y)
    got = [[shortest_path(element_distances(l2_normalize(q), l2_normalize(g)))[0] for g in y]
           for q in x]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
