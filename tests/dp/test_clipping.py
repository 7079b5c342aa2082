"""Clipping (checklist D4): the exact norm of the output is ≤ C for any finite input,
including huge values and subnormals; NaN/Inf are rejected; adaptive clipping."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dp
from dp.clipping import AdaptiveClipping, clip_l2, l2_norm
from dp.errors import DPValueError, NonFiniteUpdateError
from dp.rng import SimulationRng

FINITE = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True)
EXTREME = st.sampled_from([1.7976931348623157e308, -1e308, 5e-324, -5e-324, 2.2e-308, 0.0])


def exact_norm_sq(values: np.ndarray) -> Fraction:
    return sum((Fraction(float(v)) ** 2 for v in values.ravel()), Fraction(0))


@settings(max_examples=300, deadline=None)
@given(
    values=hnp.arrays(np.float64, st.integers(1, 40), elements=st.one_of(FINITE, EXTREME)),
    clip=st.one_of(st.floats(1e-100, 1e100), st.sampled_from([1.0, 1e-200, 1e300])),
)
def test_clip_exact_norm_never_exceeds_clip(values: np.ndarray, clip: float) -> None:
    result = clip_l2(values, clip)
    assert np.isfinite(result.values).all()
    assert exact_norm_sq(result.values) <= Fraction(clip) ** 2
    assert result.values.shape == values.shape
    if not result.clipped:
        assert np.array_equal(result.values, values)
    else:
        # Direction is kept: the result is a non-negative multiple of the input.
        assert np.all(np.sign(result.values) * np.sign(values) >= 0)


def test_clip_keeps_inside_and_scales_outside() -> None:
    inside = np.array([0.3, 0.4])
    assert not clip_l2(inside, 1.0).clipped
    outside = clip_l2(np.array([3.0, 4.0]), 1.0)
    assert outside.clipped and outside.norm == 5.0
    assert math.isclose(float(np.linalg.norm(outside.values)), 1.0, rel_tol=1e-12)
    assert np.allclose(outside.values, [0.6, 0.8])


def test_clip_of_huge_values_keeps_direction() -> None:
    huge = np.array([1e308, 1e308, -1e308])
    result = clip_l2(huge, 2.0)
    assert np.allclose(result.values, 2.0 / math.sqrt(3) * np.array([1, 1, -1]), rtol=1e-12)
    assert math.isinf(result.norm) or result.norm > 1e308


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_updates_are_rejected(bad: float) -> None:
    with pytest.raises(NonFiniteUpdateError) as info:
        clip_l2(np.array([1.0, bad, 2.0]), 1.0)
    assert "1 non-finite" in str(info.value)
    with pytest.raises(NonFiniteUpdateError):
        l2_norm([bad])


@pytest.mark.parametrize("clip", [0.0, -1.0, np.nan, np.inf, 1e-300, True, "1"])
def test_bad_clip_norm_rejected(clip: object) -> None:
    with pytest.raises(DPValueError):
        clip_l2(np.ones(3), clip)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [["a", "b"], np.array([1 + 1j]), [[1.0], [1.0, 2.0]]])
def test_non_numeric_updates_rejected(bad: object) -> None:
    with pytest.raises(DPValueError):
        clip_l2(bad, 1.0)


def test_torch_tensor_input_is_accepted() -> None:
    torch = pytest.importorskip("torch")
    result = clip_l2(torch.ones(4) * 10, 1.0)
    assert result.clipped and result.values.dtype == np.float64


@pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")
def test_adaptive_clipping_tracks_the_median() -> None:
    ada = AdaptiveClipping(
        target_quantile=0.5, learning_rate=0.2, count_stddev=2.0, expected_clients=200
    )
    rng = SimulationRng(21)
    data = np.random.default_rng(0)
    clip = 0.01
    for _ in range(300):
        norms = data.lognormal(mean=0.0, sigma=0.5, size=200)  # median norm 1.0
        bits = np.array([ada.indicator(float(v), clip) for v in norms])
        count, event = ada.noisy_count(bits, rng)
        clip = ada.update(clip, count)
    assert 0.85 < clip < 1.15
    assert event == dp.DiscreteGaussianEvent(
        l2_sensitivity=1.0, sigma=2.0, dimension=1, secure=False
    )


@pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")
def test_adaptive_clipping_distributed_share_and_noise_split() -> None:
    ada = AdaptiveClipping(count_stddev=10.0, expected_clients=100)
    share, event = ada.indicator_share(0.5, 1.0, min_contributors=80, rng=SimulationRng(2))
    assert isinstance(share, int)
    assert event.min_contributors == 80 and event.dimension == 1
    assert event.local_sigma**2 * 80 <= 100.0 + 1e-9
    assert event.local_sigma**2 * 80 >= 100.0 - 1e-3
    z = ada.value_noise_multiplier(1.0)
    assert math.isclose(z**-2 + 10.0**-2, 1.0)
    with pytest.raises(DPValueError):
        AdaptiveClipping(count_stddev=0.5).value_noise_multiplier(1.0)
    with pytest.raises(DPValueError):
        ada.noisy_count(np.array([0, 2]), SimulationRng(1))
    with pytest.raises(DPValueError):
        AdaptiveClipping(target_quantile=1.0)
