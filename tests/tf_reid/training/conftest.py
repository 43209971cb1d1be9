"""Shared by the training tests (and the subprocesses they start): a tiny batch and students."""

from __future__ import annotations

import keras
import numpy as np

from tf_reid.models.aligned_reid import AlignedReID
from tf_reid.training import objective

LABELS = np.array([0, 0, 1, 1, 2, 2, 3, 3])
WEIGHTS = objective.LossWeights(mutual_id=0.5, mutual_metric=0.2)  # large enough to matter


def images(seed=0, shape=(8, 16, 8, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def students(n, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    kwargs = {"backbone": "tiny", "input_shape": (16, 8, 3), **kwargs}
    return [AlignedReID(4, name=f"s{i}", **kwargs) for i in range(n)]
