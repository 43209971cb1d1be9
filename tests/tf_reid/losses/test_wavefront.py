"""The wavefront DP and its trace-back: hand-worked paths and a nested-loop DP twin."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.tf_reid.losses.references import reference_path, shortest_path


def path_and_cells(d, dtype=tf.float64):
    """(lengths, path indicator) of `wavefront` and `path_cells`, through `shortest_path`."""
    d = tf.constant(d, dtype)
    with tf.GradientTape() as tape:
        tape.watch(d)
        lengths = shortest_path(d)
    return lengths.numpy(), tape.gradient(lengths, d).numpy()


def test_hand_worked_3x3():
    d = [[0.1, 0.5, 0.1],
         [0.2, 0.1, 0.9],
         [0.4, 0.3, 0.2]]
    # The six right/down paths, each of 5 cells:
    #   RRDD .1+.5+.1+.9+.2 = 1.8   RDRD .1+.5+.1+.9+.2 = 1.8   RDDR .1+.5+.1+.3+.2 = 1.2
    #   DRRD .1+.2+.1+.9+.2 = 1.5   DRDR .1+.2+.1+.3+.2 = 0.9   DDRR .1+.2+.4+.3+.2 = 1.2
    # Shortest: down, right, down, right = 0.9. As the DP table S:
    #   .1  .6  .7
    #   .3  .4 1.3
    #   .7  .7  .9
    lengths, cells = path_and_cells([d])
    np.testing.assert_allclose(lengths, [0.9], atol=1e-12)
    np.testing.assert_array_equal(cells[0], [[1, 0, 0],
                                             [1, 1, 0],
                                             [0, 1, 1]])


def test_hand_worked_2x2_and_ties_come_from_above():
    # Right then down: .5 + .2 + .4 = 1.1; down then right: .5 + .1 + .4 = 1.0.
    lengths, cells = path_and_cells([[[0.5, 0.2], [0.1, 0.4]]])
    np.testing.assert_allclose(lengths, [1.0], atol=1e-12)
    np.testing.assert_array_equal(cells[0], [[1, 0], [1, 1]])
    # Both paths cost 0 + 1 + 0 = 1; (1, 1) takes its predecessor from above, (0, 1).
    lengths, cells = path_and_cells([[[0.0, 1.0], [1.0, 0.0]]])
    np.testing.assert_allclose(lengths, [1.0], atol=1e-12)
    np.testing.assert_array_equal(cells[0], [[1, 1], [0, 1]])


def test_one_stripe_is_the_single_cell():
    lengths, cells = path_and_cells([[[0.3]], [[2.0]]])
    np.testing.assert_allclose(lengths, [0.3, 2.0], atol=1e-12)
    np.testing.assert_array_equal(cells, [[[1]], [[1]]])


@pytest.mark.parametrize("h", [1, 2, 5, 8, 16])
@pytest.mark.parametrize("n", [1, 7, 100])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wavefront_matches_nested_loop_dp(h, n, dtype):
    d = np.random.default_rng(h * 1000 + n).uniform(size=(n, h, h)).astype(dtype)
    lengths, cells = path_and_cells(d, tf.as_dtype(dtype))
    expected = [reference_path(m) for m in d]
    np.testing.assert_allclose(lengths, [length for length, _ in expected], rtol=1e-5, atol=1e-5)
    # Same operations in the same dtype and order, so even near-ties resolve identically.
    np.testing.assert_array_equal(cells, np.stack([c for _, c in expected]))


def test_path_has_2h_minus_1_cells_including_both_corners():
    _, cells = path_and_cells(np.random.default_rng(3).uniform(size=(50, 6, 6)))
    np.testing.assert_array_equal(cells.sum(axis=(1, 2)), np.full(50, 11))
    np.testing.assert_array_equal(cells[:, 0, 0], 1)
    np.testing.assert_array_equal(cells[:, -1, -1], 1)


def test_empty_batch():
    lengths, cells = path_and_cells(np.zeros((0, 4, 4)))
    assert lengths.shape == (0,) and cells.shape == (0, 4, 4)
    lengths, cells = path_and_cells(np.zeros((0, 3, 5)))
    assert lengths.shape == (0,) and cells.shape == (0, 3, 5)


def test_hand_worked_2x3():
    d = [[0.1, 0.9, 0.2],
         [0.3, 0.1, 0.4]]
    # The three right/down paths, each of 2 + 3 - 1 = 4 cells:
    #   RRD .1+.9+.2+.4 = 1.6   RDR .1+.9+.1+.4 = 1.5   DRR .1+.3+.1+.4 = 0.9
    lengths, cells = path_and_cells([d])
    np.testing.assert_allclose(lengths, [0.9], atol=1e-12)
    np.testing.assert_array_equal(cells[0], [[1, 0, 0],
                                             [1, 1, 1]])
    # Transposed, the same path runs right then down: lengths do not depend on orientation.
    lengths, cells = path_and_cells([np.transpose(d)])
    np.testing.assert_allclose(lengths, [0.9], atol=1e-12)
    np.testing.assert_array_equal(cells[0], [[1, 1], [0, 1], [0, 1]])


def test_single_row_or_column_is_the_sum():
    d = np.random.default_rng(24).uniform(size=(4, 1, 5))
    for m in (d, np.transpose(d, [0, 2, 1])):
        lengths, cells = path_and_cells(m)
        np.testing.assert_allclose(lengths, m.sum(axis=(1, 2)), atol=1e-12)
        np.testing.assert_array_equal(cells, 1)


@pytest.mark.parametrize("rows, cols", [(1, 5), (5, 1), (3, 7), (7, 3), (8, 6), (2, 16)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_square_wavefront_matches_nested_loop_dp(rows, cols, dtype):
    rng = np.random.default_rng(rows * 100 + cols)
    n = int(rng.integers(1, 60))
    d = rng.uniform(size=(n, rows, cols)).astype(dtype)
    lengths, cells = path_and_cells(d, tf.as_dtype(dtype))
    expected = [reference_path(m) for m in d]
    np.testing.assert_allclose(lengths, [length for length, _ in expected], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cells, np.stack([c for _, c in expected]))
    np.testing.assert_array_equal(cells.sum(axis=(1, 2)), np.full(n, rows + cols - 1))
