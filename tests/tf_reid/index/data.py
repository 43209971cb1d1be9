"""Small galleries for the index tests: random unit vectors and well-separated identities."""

from __future__ import annotations

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    """[n, dim] isotropic random unit vectors (no ties in their distances, almost surely)."""
    return unit(np.random.default_rng(seed).standard_normal((n, dim)))


def identities(num_ids: int, per_id: int, dim: int, noise: float, seed: int,
               num_queries: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Crops of `num_ids` identities: unit(centre + noise * N(0, I / dim)).

    Returns:
      gallery [num_ids * per_id, dim], gallery pids, queries [num_queries, dim] (fresh crops of
      identities 0, 1, ...), query pids.
    """
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((num_ids, dim)))
    g_pids = np.repeat(np.arange(num_ids), per_id)
    gallery = unit(centres[g_pids] + noise * rng.standard_normal((len(g_pids), dim)) / dim ** .5)
    q_pids = np.arange(num_queries) % num_ids
    queries = unit(centres[q_pids] + noise * rng.standard_normal((num_queries, dim)) / dim ** .5)
    return gallery, g_pids, queries, q_pids


def brute_force(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The slow obvious top-k: every distance in float64 by a loop over queries, full argsort."""
    distances, indices = [], []
    for q in queries.astype(np.float64):
        d = np.sqrt(((gallery.astype(np.float64) - q) ** 2).sum(axis=1))
        order = np.argsort(d)[:k]
        distances.append(d[order])
        indices.append(order)
    return np.array(distances), np.array(indices)
