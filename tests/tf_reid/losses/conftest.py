"""Shared by the loss tests."""

from __future__ import annotations

import numpy as np


def stripes(seed: int, n: int, h: int, c: int, dtype=np.float32) -> np.ndarray:
    """[n, h, c] standard-normal stripe features."""
    return np.random.default_rng(seed).normal(size=(n, h, c)).astype(dtype)
