"""The distributed-DP planner: Kairouz et al.'s norm bound, wrap-around bound, refusals,
noise shares sized for the minimum number of survivors, and events."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

import dp
from dp.errors import DPValueError, PlanningError
from dp.planning import kairouz_l2_bound, plan_distributed_dp, wrap_probability_bound


def base(**overrides: object) -> dp.DistributedDPPlan:
    kwargs: dict[str, object] = dict(
        dimension=2**16,
        expected_contributors=100,
        min_contributors=80,
        clip_norm=1.0,
        noise_multiplier=1.0,
        bits=20,
    )
    kwargs.update(overrides)
    return plan_distributed_dp(**kwargs)  # type: ignore[arg-type]


def test_kairouz_bound_formula() -> None:
    c, d, beta = 1000.0, 1024, math.exp(-0.5)
    tight = c**2 + d / 4 + math.sqrt(2 * 0.5) * (c + math.sqrt(d) / 2)
    assert kairouz_l2_bound(c, d, beta) == pytest.approx(math.sqrt(min((c + 32) ** 2, tight)))
    assert kairouz_l2_bound(c, d, 0.0) == pytest.approx(c + 32)
    # For tiny c/γ, small d and small β the crude bound (c/γ + √d) wins.
    assert kairouz_l2_bound(0.1, 4, 1e-30) == pytest.approx(0.1 + 2)
    assert kairouz_l2_bound(0.1, d, beta) < 0.1 + 32


def test_plan_is_consistent() -> None:
    plan = base()
    assert plan.padded_dimension == 2**16
    assert plan.wrap_probability <= 1e-9
    assert plan.l2_bound_sq == math.floor(
        kairouz_l2_bound(plan.clip_norm / plan.gamma, plan.padded_dimension, plan.beta) ** 2
    )
    assert plan.l2_sensitivity**2 >= plan.l2_bound_sq
    assert plan.l2_inflation == pytest.approx(plan.l2_sensitivity * plan.gamma / plan.clip_norm)
    # Shares: n_min shares carry at least the planned central noise z·c/γ, barely more.
    target = Fraction(plan.noise_multiplier * plan.clip_norm / plan.gamma) ** 2
    assert target <= plan.central_variance <= target * (1 + Fraction(1, 10**9)) + 80
    assert plan.effective_noise_multiplier == pytest.approx(1.0 / plan.l2_inflation, rel=1e-6)


def test_more_bits_less_inflation_and_finer_gamma() -> None:
    plans = [base(bits=b) for b in (12, 16, 20, 24)]
    inflations = [p.l2_inflation for p in plans]
    gammas = [p.gamma for p in plans]
    assert inflations == sorted(inflations, reverse=True)
    assert gammas == sorted(gammas, reverse=True)
    assert inflations[-1] < 1.0001 < inflations[0]


def test_low_bits_are_refused() -> None:
    with pytest.raises(PlanningError):
        base(bits=6)  # 100 clients' rounding errors alone overflow 6 bits
    assert base(bits=8).l2_inflation > 4  # feasible but useless: the plan says so
    with pytest.raises(PlanningError):
        base(bits=8, max_l2_inflation=2.0)
    with pytest.raises(PlanningError):
        base(bits=14, max_l2_inflation=1.01)


def test_wrap_bound_is_a_true_upper_bound_for_gaussian_sums() -> None:
    """The Chernoff bound must dominate the exact Gaussian tail it relaxes."""
    var = 1e6
    for bits in (14, 16):
        bound = wrap_probability_bound(
            padded_dim=1,
            num_contributors=1,
            scaled_clip=0.0,
            noise_variance=var,
            mechanism="ddg",
            bits=bits,
        )
        exact = 2 * stats.norm.sf(2 ** (bits - 1), scale=math.sqrt(var + 0.25))
        assert exact <= bound <= 1.0
    skellam = wrap_probability_bound(
        padded_dim=1,
        num_contributors=1,
        scaled_clip=0.0,
        noise_variance=var,
        mechanism="skellam",
        bits=14,
    )
    exact = 2 * stats.skellam.sf(2**13 - 1, var / 2, var / 2)
    assert exact <= skellam


def test_wrap_bound_empirically_for_skellam_plan() -> None:
    plan = base(mechanism="skellam", dimension=1000, bits=16)
    assert plan.wrap_probability <= 1e-9
    assert isinstance(plan.event(secure=True), dp.DistributedSkellamEvent)


def test_events_state_integer_quantities() -> None:
    plan = base(sampling_probability=0.01)
    event = plan.event(secure=True)
    assert isinstance(event, dp.PoissonSampledEvent)
    inner = event.event
    assert isinstance(inner, dp.DistributedDiscreteGaussianEvent)
    assert inner.min_contributors == 80 and inner.expected_contributors == 100
    assert inner.local_sigma**2 <= plan.local_variance
    assert inner.dimension == plan.padded_dimension
    assert inner.quantization is not None and inner.quantization.gamma == plan.gamma
    assert dp.event_from_json(event.to_json()) == event
    skellam = base(mechanism="skellam").event(secure=False)
    assert isinstance(skellam, dp.DistributedSkellamEvent)
    assert skellam.local_variance <= base(mechanism="skellam").local_variance
    assert not skellam.secure


@pytest.mark.parametrize(
    "bad",
    [
        {"dimension": 0},
        {"min_contributors": 101},
        {"max_contributors": 50},
        {"clip_norm": 0.0},
        {"clip_norm": float("inf")},
        {"noise_multiplier": -1.0},
        {"bits": 63},
        {"bits": True},
        {"mechanism": "gauss"},
        {"beta": 1.0},
        {"wrap_target": 0.0},
        {"sampling_probability": 0.0},
    ],
)
def test_bad_settings_raise(bad: dict[str, object]) -> None:
    with pytest.raises(DPValueError):
        base(**bad)


def test_dropout_sized_shares() -> None:
    """Shares are σ²/n_min: the n_min-survivor sum has the planned variance, and fewer
    survivors (reported by the decoder) have less."""
    plan = base(dimension=1000)
    per_share = plan.local_variance
    assert per_share * plan.min_contributors == plan.central_variance
    ratio = float(per_share * 60 / plan.central_variance)
    assert ratio == pytest.approx(60 / 80)
    assert np.isfinite(plan.quantization_error_bound(100))


def test_summary_reports_wrap_and_inflation() -> None:
    text = base().summary()
    assert "wrap-around probability <= 1e-09" in text
    assert "inflation 1.0000" in text and "min 80" in text
