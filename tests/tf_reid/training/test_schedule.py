"""The learning-rate schedule against hand-worked rates."""

from __future__ import annotations

import numpy as np
import pytest

from tf_reid.training import schedule


@pytest.mark.parametrize("step, expected", [
    (0, 1e-3), (99, 1e-3),          # epochs 0 .. 0.99
    (800, 1e-4), (1599, 1e-4),      # epoch 80 .. 159.99: one decay
    (1600, 1e-5), (5000, 1e-5),     # from epoch 160: two decays
])
def test_step_decay_at_epochs_80_and_160(step, expected):
    rate = schedule.learning_rate(step, 1e-3, steps_per_epoch=10, decay_epochs=(80, 160))
    np.testing.assert_allclose(float(rate), expected, rtol=1e-6)


def test_linear_warmup_from_the_factor_to_the_base():
    kwargs = dict(base=3e-4, steps_per_epoch=4, decay_epochs=(60, 120), warmup_epochs=10,
                  warmup_factor=0.1)
    # epoch 0: 0.1 * base; epoch 5 (step 20): half way, 0.55 * base; epoch 10 on: base.
    np.testing.assert_allclose(float(schedule.learning_rate(0, **kwargs)), 3e-5, rtol=1e-6)
    np.testing.assert_allclose(float(schedule.learning_rate(20, **kwargs)), 1.65e-4, rtol=1e-6)
    np.testing.assert_allclose(float(schedule.learning_rate(40, **kwargs)), 3e-4, rtol=1e-6)
    np.testing.assert_allclose(float(schedule.learning_rate(240, **kwargs)), 3e-5, rtol=1e-6)


def test_keras_schedule_round_trips_and_matches():
    s = schedule.EpochSchedule(1e-3, 7, (2, 4), 0.5, 1.0, 0.2)
    again = schedule.EpochSchedule(**s.get_config())
    for step in (0, 3, 7, 14, 27, 28, 100):
        assert float(s(step)) == float(again(step))
        np.testing.assert_allclose(float(s(step)), float(schedule.learning_rate(
            step, 1e-3, 7, (2, 4), 0.5, 1.0, 0.2)))
