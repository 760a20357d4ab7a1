"""diffusion/schedule.py: the noise schedules' endpoints, derivative, inverse and loss weight."""
import numpy as np
import pytest

from helpers import SCHEDULES


@pytest.mark.parametrize("schedule", SCHEDULES, ids=["cosine", "linear"])
def test_schedule_endpoints_and_derivative(schedule):
    assert schedule.alpha(0.0) > 0.999 and schedule.alpha(1.0) < 1e-9
    t = np.linspace(0.05, 0.95, 19)
    numeric = (schedule.alpha(t + 1e-6) - schedule.alpha(t - 1e-6)) / 2e-6
    np.testing.assert_allclose(schedule.dalpha(t), numeric, rtol=1e-6, atol=1e-8)
    assert np.all(np.diff(schedule.alpha(t)) < 0)                      # tokens only get masked as t grows
    np.testing.assert_allclose(schedule.time_at(schedule.mask_rate(t)), t, atol=1e-9)
    np.testing.assert_allclose(schedule.weight(t), -schedule.dalpha(t) / (1 - schedule.alpha(t)))
