"""The trusted-server (central) Gaussian path: lattice outputs, noise level, exact shift,
and the discrete Laplace mechanism."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dp
from dp.central import central_gaussian, central_granularity
from dp.errors import DPValueError
from dp.rng import SimulationRng

pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")


def test_outputs_lie_on_the_lattice_and_noise_has_the_planned_scale() -> None:
    x = np.random.default_rng(0).normal(size=20_000)
    y, event = central_gaussian(x, l2_sensitivity=1.0, noise_multiplier=2.0, rng=SimulationRng(1))
    gamma = central_granularity(1.0, x.size)
    assert math.frexp(gamma)[0] == 0.5  # a power of two
    lattice = y / gamma
    assert np.array_equal(lattice, np.round(lattice))  # no porous low-order bits
    assert np.std(y - x) == pytest.approx(2.0, rel=0.03)
    assert event.sigma * gamma == pytest.approx(2.0, rel=1e-6)
    assert event.l2_sensitivity * gamma == pytest.approx(1.0, rel=2**-10 + 1e-9)
    assert event.l2_sensitivity >= 1.0 / gamma + math.sqrt(x.size)
    assert event.dimension == x.size and event.secure is False


def test_exact_shift_on_the_lattice() -> None:
    """With one noise stream, outputs differ exactly by the lattice rounding of the inputs."""
    gamma = 2.0**-12
    x = np.random.default_rng(1).normal(size=1000)
    x2 = x + np.random.default_rng(2).normal(scale=0.01, size=1000)
    a, _ = central_gaussian(
        x, l2_sensitivity=1.0, noise_multiplier=1.0, granularity=gamma, rng=SimulationRng(4)
    )
    b, _ = central_gaussian(
        x2, l2_sensitivity=1.0, noise_multiplier=1.0, granularity=gamma, rng=SimulationRng(4)
    )
    assert np.array_equal((a - b) / gamma, np.rint(x / gamma) - np.rint(x2 / gamma))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"l2_sensitivity": 0.0, "noise_multiplier": 1.0},
        {"l2_sensitivity": 1.0, "noise_multiplier": -1.0},
        {"l2_sensitivity": 1.0, "noise_multiplier": 1.0, "granularity": 0.3},
        {"l2_sensitivity": 1.0, "noise_multiplier": 1.0, "granularity": 2.0**-60},
    ],
)
def test_bad_central_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(DPValueError):
        central_gaussian(np.full(4, 1e6), rng=SimulationRng(0), **kwargs)


def test_central_rejects_non_finite() -> None:
    with pytest.raises(dp.NonFiniteUpdateError):
        central_gaussian([np.nan], l2_sensitivity=1.0, noise_multiplier=1.0)


def test_discrete_laplace_mechanism_event_and_validation() -> None:
    out, event = dp.discrete_laplace_mechanism(
        np.arange(5), l1_sensitivity=2, scale=4, rng=SimulationRng(0)
    )
    assert out.dtype == np.int64 and event == dp.DiscreteLaplaceEvent(
        l1_sensitivity=2.0, scale=4.0, secure=False
    )
    with pytest.raises(DPValueError):
        dp.discrete_laplace_mechanism(np.ones(3), l1_sensitivity=1, scale=1)
