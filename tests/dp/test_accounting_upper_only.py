"""The ε query skips the certified lower end and answers the bracket's upper end exactly."""

from __future__ import annotations

import pytest

import dp
from dp.accounting.auto import AutoAccountant
from dp.accounting.pld import PldAccountant
from dp.calibrate import sampled_gaussian_event


@pytest.mark.parametrize(
    ("q", "sigma", "steps", "delta"),
    [(0.001, 1.0, 10_000, 1e-6), (0.01, 0.8, 1000, 1e-5), (1.0, 2.0, 50, 1e-5)],
)
@pytest.mark.parametrize("backend", [PldAccountant, AutoAccountant])
def test_query_equals_bracket_upper_end(
    backend: type[PldAccountant | AutoAccountant], q: float, sigma: float, steps: int, delta: float
) -> None:
    fast = backend().compose(sampled_gaussian_event(sigma, q), steps)
    eps = fast.get_epsilon(delta)
    full = backend().compose(sampled_gaussian_event(sigma, q), steps).get_epsilon_bracket(delta)
    assert eps == full.epsilon_upper
    assert 0.0 < full.epsilon_lower <= eps
    # after an upper-only query the bracket still carries its certified lower end
    assert fast.get_epsilon_bracket(delta).epsilon_lower == full.epsilon_lower


def test_calibration_search_uses_the_same_upper_end() -> None:
    sigma = dp.calibrate_noise(target_epsilon=1.0, delta=1e-5, sampling_rate=0.01, steps=1000)
    eps = dp.epsilon(noise_multiplier=sigma, sampling_rate=0.01, steps=1000, delta=1e-5)
    assert eps <= 1.0
    assert (
        eps
        == dp.epsilon_bracket(
            noise_multiplier=sigma, sampling_rate=0.01, steps=1000, delta=1e-5
        ).epsilon_upper
    )
