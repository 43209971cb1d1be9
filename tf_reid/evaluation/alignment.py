"""One pair's alignment: the element distances of two images' stripes and their shortest path.

Zhang et al. 2017, "AlignedReID: Surpassing Human-Level Performance in Person
Re-Identification" (arXiv:1711.08184), Sec. 3.1 and Figs. 2-3: the local distance of two images
is the length of the shortest right/down path from (0, 0) to (M-1, L-1) through the matrix of
element distances d_ij = tanh(||f_i - g_j|| / 2) between their stripes, and the path's cells
are the stripe pairs the images are aligned by. `tf_reid.losses` computes only the length, in
batches and in XLA (`tf_reid.losses.wavefront` keeps the choices for its gradient, not the
cells); this NumPy twin also returns the cells, for pictures (`tools.visualize_alignment`).

Ties go to the cell above, as in `tf_reid.losses.wavefront` (S(i-1, j) <= S(i, j-1)): on a
matrix with equal candidate paths both return the same path.
"""

from __future__ import annotations

import numpy as np


def element_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Stripe-to-stripe distances tanh(||x_i - y_j||_2 / 2) of one pair of images.

    The difference form, in float64: no cancellation, so equal stripes are exactly 0 apart.

    Args:
      x: [M, C] stripes of the first image.
      y: [L, C] stripes of the second image; L may differ from M.

    Returns:
      [M, L] float64 in [0, 1); in [0, tanh(1)] for L2-normalised stripes.

    Reference: arXiv:1711.08184, Sec. 3.1 (d_ij = (e^||f_i - g_j|| - 1) / (e^||f_i - g_j|| + 1)).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected [M, C] and [L, C] stripes, got {x.shape} and {y.shape}")
    return np.tanh(np.linalg.norm(x[:, None, :] - y[None, :, :], axis=-1) / 2)


def shortest_path(d: np.ndarray) -> tuple[float, list[tuple[int, int]]]:
    """The shortest right/down path through `d` from (0, 0) to (M-1, L-1), and its cells.

    S(i, j) = d_ij + min(S(i-1, j), S(i, j-1)), S(0, 0) = d_00, then traced back from
    (M-1, L-1). Ties go to the cell above, as in `tf_reid.losses.wavefront`.

    Args:
      d: [M, L] cell costs (any real values), M, L >= 1.

    Returns:
      (S(M-1, L-1), the path's M+L-1 cells (i, j) in order from (0, 0) to (M-1, L-1)). The
      length, the sum of d over the cells, is accumulated in float64 (or d's dtype if wider).

    Reference: arXiv:1711.08184, Sec. 3.1.
    """
    d = np.asarray(d)
    if d.ndim != 2 or 0 in d.shape:
        raise ValueError(f"expected an [M, L] matrix with M, L >= 1, got shape {d.shape}")
    rows, cols = d.shape
    s = np.empty(d.shape, np.result_type(d, np.float64))
    s[0] = np.cumsum(d[0])
    s[:, 0] = np.cumsum(d[:, 0])
    from_above = np.zeros(d.shape, bool)
    from_above[1:, 0] = True
    for i in range(1, rows):
        for j in range(1, cols):
            from_above[i, j] = s[i - 1, j] <= s[i, j - 1]
            s[i, j] = d[i, j] + (s[i - 1, j] if from_above[i, j] else s[i, j - 1])
    path = [(rows - 1, cols - 1)]
    i, j = path[0]
    while (i, j) != (0, 0):
        i, j = (i - 1, j) if from_above[i, j] else (i, j - 1)
        path.append((i, j))
    return float(s[-1, -1]), path[::-1]
