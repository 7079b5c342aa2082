"""The distributed-DP pipeline against a plain modular sum: end to end (noise on and off),
noise level (D2), exact shift (D3), integer norm bound (D5), wrap-around rate (D6),
dropout-aware noise and decoder refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dp
from dp.distributed import conditional_round, decode, encode, encode_with_report, noise_share
from dp.errors import DPError, DPValueError, InsufficientNoiseError
from dp.planning import DistributedDPPlan, plan_distributed_dp
from dp.rng import SimulationRng
from dp.rotation import fwht, inverse_rotate, rotate, rotation_signs

pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")


def make_plan(**overrides: object) -> DistributedDPPlan:
    kwargs: dict[str, object] = dict(
        dimension=300,
        expected_contributors=12,
        min_contributors=10,
        clip_norm=1.0,
        noise_multiplier=1.0,
        bits=20,
    )
    kwargs.update(overrides)
    return plan_distributed_dp(**kwargs)  # type: ignore[arg-type]


def modular_sum(vectors: list[np.ndarray], bits: int) -> np.ndarray:
    total = np.zeros_like(vectors[0])
    for v in vectors:
        total = (total + v) & np.uint64((1 << bits) - 1)
    return total


def client_updates(n: int, d: int, seed: int = 0) -> list[np.ndarray]:
    data = np.random.default_rng(seed)
    return [data.normal(scale=0.2, size=d) for _ in range(n)]


# ----------------------------------------------------------------------------- rotation


def test_rotation_is_orthonormal_and_inverts() -> None:
    x = np.random.default_rng(1).normal(size=256)
    y = rotate(x, 42)
    assert np.isclose(np.linalg.norm(y), np.linalg.norm(x))
    assert np.allclose(inverse_rotate(y, 42), x)
    assert not np.allclose(inverse_rotate(y, 43), x)
    h = fwht(np.eye(8))
    assert np.array_equal(h @ h, 8 * np.eye(8))
    assert np.array_equal(rotation_signs(b"\x05", 16), rotation_signs(5, 16))
    with pytest.raises(DPValueError):
        fwht(np.ones(6))


def test_rotation_flattens_a_spike() -> None:
    spike = np.zeros(1024)
    spike[3] = 1.0
    assert np.allclose(np.abs(rotate(spike, 0)), 1 / 32)


# ---------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("mechanism", ["ddg", "skellam"])
def test_end_to_end_noise_matches_plan(mechanism: str) -> None:
    n, d = 12, 300
    plan = make_plan(mechanism=mechanism, noise_multiplier=2.0)
    rng = SimulationRng(7)
    updates = client_updates(n, d)
    encoded = [encode(u, plan, rotation_seed=99, rng=rng)[0] for u in updates]
    total, report = decode(
        modular_sum(encoded, plan.bits), plan, rotation_seed=99, num_contributors=n
    )
    true = sum(dp.clip_l2(u, 1.0).values for u in updates)
    error = total - true
    # Noise per coordinate: realized σ = γ·√(n·local variance) ≈ z·c·√(n / n_min).
    expected = 2.0 * np.sqrt(n / 10)
    assert report.realized_noise_std == pytest.approx(expected, rel=1e-3)
    assert report.planned_noise_std == pytest.approx(2.0, rel=1e-3)
    assert np.std(error) == pytest.approx(report.realized_noise_std, rel=0.12)
    assert abs(np.mean(error)) < 4 * report.realized_noise_std / np.sqrt(d)


def test_noise_level_of_zero_updates() -> None:
    """D2: with zero updates the decoded aggregate is pure noise of the reported std."""
    n, d = 20, 4096
    plan = make_plan(
        dimension=d, expected_contributors=n, min_contributors=16, noise_multiplier=0.5
    )
    rng = SimulationRng(8)
    encoded = [encode(np.zeros(d), plan, rotation_seed=3, rng=rng)[0] for _ in range(n)]
    total, report = decode(
        modular_sum(encoded, plan.bits), plan, rotation_seed=3, num_contributors=n
    )
    assert np.std(total) == pytest.approx(report.realized_noise_std, rel=0.05)


def test_noiseless_sum_within_quantization_bound() -> None:
    n, d = 10, 300
    plan = make_plan(noise_multiplier=0.0, bits=24)
    assert plan.event(secure=True) == dp.NonPrivateEvent()
    rng = SimulationRng(9)
    updates = client_updates(n, d, seed=4)
    updates[0] = updates[0] * 100  # one client far outside the ball: clipped
    encoded = [encode(u, plan, rotation_seed=5, rng=rng)[0] for u in updates]
    total, _ = decode(modular_sum(encoded, plan.bits), plan, rotation_seed=5, num_contributors=n)
    true = sum(dp.clip_l2(u, 1.0).values for u in updates)
    err = float(np.linalg.norm(total - true))
    assert err <= plan.quantization_error_bound(n)
    # Randomized rounding errors add in quadrature: typically far below the worst case.
    assert err <= 3 * plan.gamma * np.sqrt(n * plan.padded_dimension / 4)


def test_decoder_reports_dropouts_and_refuses_too_few_shares() -> None:
    plan = make_plan()
    rng = SimulationRng(10)
    survivors = [encode(u, plan, rotation_seed=1, rng=rng)[0] for u in client_updates(9, 300)]
    aggregate = modular_sum(survivors, plan.bits)
    with pytest.raises(InsufficientNoiseError):
        decode(aggregate, plan, rotation_seed=1, num_contributors=9)
    _, report = decode(aggregate, plan, rotation_seed=1, num_contributors=9, strict=False)
    assert not report.meets_plan
    assert report.realized_noise_std < report.planned_noise_std
    assert report.realized_noise_std == pytest.approx(np.sqrt(9 / 10), rel=1e-3)


@pytest.mark.parametrize(
    "aggregate",
    [
        np.zeros(100, dtype=np.uint64),
        np.full(512, 1 << 20, dtype=np.uint64),
        np.zeros(512),
        -np.ones(512, dtype=np.int64),
    ],
)
def test_decoder_rejects_malformed_aggregates(aggregate: np.ndarray) -> None:
    with pytest.raises(DPValueError):
        decode(aggregate, make_plan(), rotation_seed=1, num_contributors=12)


def test_encoder_rejects_wrong_dimension_and_non_finite() -> None:
    plan = make_plan()
    with pytest.raises(DPValueError):
        encode(np.ones(299), plan, rotation_seed=1, rng=SimulationRng(0))
    with pytest.raises(dp.NonFiniteUpdateError):
        encode(np.full(300, np.nan), plan, rotation_seed=1, rng=SimulationRng(0))


# ---------------------------------------------------------------------------- exactness


def test_exact_shift_with_the_same_noise_stream() -> None:
    """D3: with one noise stream, output(x) − output(x′) = x̃ − x̃′ exactly in integers,
    and the noise is bit-identical: nothing of the float input leaks past the rounding."""
    plan = make_plan()
    x = client_updates(1, 300, seed=1)[0]
    x2 = client_updates(1, 300, seed=2)[0]
    out1 = encode_with_report(x, plan, rotation_seed=4, rng=SimulationRng(77))
    out2 = encode_with_report(x2, plan, rotation_seed=4, rng=SimulationRng(77))
    assert out1.report.rounding_attempts == out2.report.rounding_attempts == 1

    def rounded(u: np.ndarray) -> np.ndarray:
        scaled = rotate(np.pad(dp.clip_l2(u, 1.0).values, (0, 212)), 4) / plan.gamma
        return conditional_round(scaled, plan.l2_bound_sq, SimulationRng(77), 1)[0]

    m = plan.modulus
    shift = (out1.values.astype(np.int64) - out2.values.astype(np.int64)) % m
    assert np.array_equal(shift, (rounded(x) - rounded(x2)) % m)
    # And the pipeline is exactly rounding + a noise share from the continuing stream.
    stream = SimulationRng(77)
    scaled = rotate(np.pad(dp.clip_l2(x, 1.0).values, (0, 212)), 4) / plan.gamma
    base = conditional_round(scaled, plan.l2_bound_sq, stream, 1)[0]
    assert np.array_equal(out1.values, ((base + noise_share(plan, stream)) % m).astype(np.uint64))


def test_integer_mechanism_exact_shift() -> None:
    x = np.arange(-50, 50)
    x2 = x + np.random.default_rng(0).integers(-3, 4, size=100)
    a, _ = dp.discrete_laplace_mechanism(x, l1_sensitivity=1, scale=4, rng=SimulationRng(5))
    b, _ = dp.discrete_laplace_mechanism(x2, l1_sensitivity=1, scale=4, rng=SimulationRng(5))
    assert np.array_equal(a - b, x - x2)


# ------------------------------------------------------------------------- norm bound


@settings(max_examples=40, deadline=None)
@given(
    values=hnp.arrays(np.float64, 300, elements=st.floats(-1e6, 1e6, allow_subnormal=True)),
    scale=st.sampled_from([1.0, 1e-3, 1e3]),
    seed=st.integers(0, 2**32),
)
def test_encoded_integer_norm_within_stated_bound(
    values: np.ndarray, scale: float, seed: int
) -> None:
    """D5 over arbitrary inputs: the rounded vector's squared norm is ≤ the bound, which
    is ≤ the event's l2_sensitivity²."""
    plan = make_plan(bits=16, wrap_target=1e-3)
    out = encode_with_report(values * scale, plan, rotation_seed=seed, rng=SimulationRng(seed))
    event = out.event
    assert isinstance(event, dp.DistributedDiscreteGaussianEvent)
    assert out.report.squared_norm <= plan.l2_bound_sq <= event.l2_sensitivity**2
    assert event.l1_sensitivity >= min(
        np.sqrt(plan.padded_dimension) * event.l2_sensitivity, plan.l2_bound_sq
    )


@pytest.mark.parametrize("kind", ["spike", "flat", "half", "almost"])
def test_conditional_rounding_boundary_inputs(kind: str) -> None:
    """Adversarial post-scaling vectors on the clip sphere whose rounding is most likely to
    exceed the bound, with retries, then with the truncation fallback forced."""
    plan = make_plan(bits=14, wrap_target=1e-2)
    d = plan.padded_dimension
    radius = plan.clip_norm / plan.gamma
    if kind == "spike":
        scaled = np.zeros(d)
        scaled[0] = radius
    elif kind == "flat":
        scaled = np.full(d, radius / np.sqrt(d))
    elif kind == "half":  # every fractional part is 1/2: maximal rounding variance
        base = np.floor(radius / np.sqrt(d))
        scaled = np.full(d, base + 0.5)
        scaled *= radius / np.linalg.norm(scaled)
    else:  # fractional parts just below 1: rounding up is almost certain
        scaled = np.full(d, np.floor(radius / np.sqrt(d)) - 1e-9)
    rounded, attempts, fallback = conditional_round(scaled, plan.l2_bound_sq, SimulationRng(1), 100)
    assert int(rounded @ rounded) <= plan.l2_bound_sq
    assert attempts >= 1 and not fallback
    # A bound only the truncated vector meets forces retries to fail, then the fallback.
    tight = int(np.trunc(scaled) @ np.trunc(scaled))
    rounded, attempts, fallback = conditional_round(scaled, tight, SimulationRng(1), 3)
    assert fallback == (kind != "spike")  # a single fractional coordinate can round down
    if fallback:
        assert attempts == 3 and np.array_equal(rounded, np.trunc(scaled).astype(np.int64))
    assert int(rounded @ rounded) <= tight


def test_conditional_rounding_refuses_vectors_outside_the_ball() -> None:
    with pytest.raises(DPError):
        conditional_round(np.full(16, 10.5), 10, SimulationRng(1), 2)
    # Values whose int64 squared norm would overflow (and wrap) are refused up front.
    with pytest.raises(DPValueError):
        conditional_round(np.full(4, 2.0**40), 2**61, SimulationRng(1), 2)
    with pytest.raises(DPValueError):
        conditional_round(np.ones(4), 2**62, SimulationRng(1), 2)


def test_rounding_retries_happen_and_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = make_plan(bits=14, wrap_target=1e-2)
    # Shrink the bound to just above the clip radius so that retries are frequent.
    radius_sq = int((plan.clip_norm / plan.gamma) ** 2)
    import dataclasses

    tight = dataclasses.replace(plan, l2_bound_sq=radius_sq + plan.padded_dimension // 8)
    attempts = [
        encode_with_report(np.ones(300) * 10, tight, rotation_seed=s, rng=SimulationRng(s)).report
        for s in range(30)
    ]
    assert any(r.rounding_attempts > 1 for r in attempts)
    assert all(r.squared_norm <= tight.l2_bound_sq for r in attempts)


# ------------------------------------------------------------------------------- wrap


def test_wrap_rate_at_worst_input_within_planner_bound() -> None:
    """D6: all clients send the same maximal-norm vector (aligned: ‖Σx‖ = n·c). The
    observed wrap rate must be ≤ the planner's bound; at γ/8 wraps must be observed, so
    the detector works."""
    n, d, rounds = 8, 64, 300
    plan = plan_distributed_dp(
        dimension=d,
        expected_contributors=n,
        min_contributors=n,
        clip_norm=1.0,
        noise_multiplier=0.5,
        bits=10,
        wrap_target=0.05,
    )
    worst = np.zeros(d)
    worst[0] = 1.0
    import dataclasses

    def wrap_rate(p: DistributedDPPlan) -> float:
        rng = SimulationRng(123)
        wraps = 0
        for r in range(rounds):
            exact = np.zeros(p.padded_dimension, dtype=np.int64)
            for _ in range(n):
                ring = encode(worst, p, rotation_seed=r, rng=rng)[0].astype(np.int64)
                exact += np.where(ring >= p.modulus // 2, ring - p.modulus, ring)
            wraps += bool(np.any((exact < -p.modulus // 2) | (exact >= p.modulus // 2)))
        return wraps / rounds

    assert plan.wrap_probability <= 0.05
    assert wrap_rate(plan) <= plan.wrap_probability
    fine = dataclasses.replace(
        plan,
        gamma=plan.gamma / 8,
        local_variance=plan.local_variance * 64,
        l2_bound_sq=plan.l2_bound_sq * 64,
    )
    assert wrap_rate(fine) > 0.5
    # The rigorous bound is within a factor 2 of γ: at γ/2 wraps are already common.


# ------------------------------------------------------------------- presampled noise


def test_presampled_noise_is_single_use_and_plan_bound() -> None:
    import copy
    import pickle

    plan = make_plan()
    share = dp.PresampledNoise(plan, SimulationRng(1))
    assert share.secure is False and "unused" in repr(share)
    with pytest.raises(TypeError):
        pickle.dumps(share)
    with pytest.raises(TypeError):
        copy.deepcopy(share)
    other = make_plan(noise_multiplier=2.0)
    with pytest.raises(DPValueError):
        encode(np.ones(300), other, rotation_seed=1, rng=SimulationRng(2), noise=share)
    values, event = encode(np.ones(300), plan, rotation_seed=1, rng=SimulationRng(2), noise=share)
    assert values.dtype == np.uint32 and not event.secure  # type: ignore[attr-defined]
    with pytest.raises(DPError):
        encode(np.ones(300), plan, rotation_seed=1, rng=SimulationRng(2), noise=share)


def test_presampled_noise_gives_the_same_output_as_inline_noise() -> None:
    """Rounding draws from ``rng``, the noise from the presampled share: the output is
    rounding + share, exactly."""
    plan = make_plan()
    x = client_updates(1, 300, seed=3)[0]
    share = dp.PresampledNoise(plan, SimulationRng(5))
    expected_noise = noise_share(plan, SimulationRng(5))
    out = encode_with_report(x, plan, rotation_seed=2, rng=SimulationRng(6), noise=share)
    scaled = rotate(np.pad(dp.clip_l2(x, 1.0).values, (0, 212)), 2) / plan.gamma
    base = conditional_round(scaled, plan.l2_bound_sq, SimulationRng(6), 100)[0]
    assert np.array_equal(out.values, (base + expected_noise) % plan.modulus)


def test_secure_presampled_noise_with_secure_rounding_is_secure() -> None:
    plan = make_plan()
    share = dp.PresampledNoise(plan)
    _, event = encode(np.ones(300), plan, rotation_seed=1, noise=share)
    assert event.secure  # type: ignore[attr-defined]
    wide = make_plan(bits=40)
    values, _ = encode(np.ones(300), wide, rotation_seed=1)
    assert values.dtype == np.uint64 and int(values.max()) < 2**40
