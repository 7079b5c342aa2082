"""The batched cohort encoder against the per-client one: same output for a single row and
the same generator, integer norm bound per row, the same distribution for many rows,
typed errors, and the same privacy event."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import dp
from dp.distributed import conditional_round_rows, decode, encode, encode_many, ring_dtype
from dp.errors import DPError, DPValueError, NonFiniteUpdateError
from dp.planning import DistributedDPPlan, plan_distributed_dp
from dp.rng import SecureRng, SimulationRng
from dp.rotation import rotate

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


def lift(ring: np.ndarray, plan: DistributedDPPlan) -> np.ndarray:
    values = ring.astype(np.int64)
    values[values >= plan.modulus // 2] -= plan.modulus
    return values


def tight(plan: DistributedDPPlan) -> DistributedDPPlan:
    """The plan with a norm bound just above the clip radius, so that rounding retries
    (and, at few attempts, the truncation fallback) are frequent."""
    radius_sq = int((plan.clip_norm / plan.gamma) ** 2)
    return dataclasses.replace(plan, l2_bound_sq=radius_sq + plan.padded_dimension // 8)


@pytest.mark.parametrize("mechanism", ["ddg", "skellam"])
def test_shapes_dtypes_and_single_row_equals_encode(mechanism: str) -> None:
    plan = make_plan(mechanism=mechanism)
    rows = np.random.default_rng(1).normal(size=(7, plan.dimension))
    ring, event = encode_many(rows, plan, rotation_seed=4, rng=SimulationRng(2))
    assert ring.shape == (7, plan.padded_dimension)
    assert ring.dtype == ring_dtype(plan.bits) == np.uint32
    assert int(ring.max()) < plan.modulus
    # One row consumes the generator exactly as encode does: bit-for-bit equal.
    for seed in range(3):
        single, _ = encode_many(rows[:1], plan, rotation_seed=4, rng=SimulationRng(seed))
        alone, _ = encode(rows[0], plan, rotation_seed=4, rng=SimulationRng(seed))
        assert np.array_equal(single[0], alone)
    assert event == encode(rows[0], plan, rotation_seed=4, rng=SimulationRng(2))[1]


def test_wide_ring_uses_uint64() -> None:
    plan = make_plan(bits=40, dimension=20)
    ring, _ = encode_many(np.ones((3, 20)), plan, rotation_seed=1, rng=SimulationRng(1))
    assert ring.dtype == np.uint64 and int(ring.max()) < plan.modulus


def test_event_matches_encode_for_secure_and_simulation_generators() -> None:
    plan = make_plan()
    rows = np.ones((2, plan.dimension))
    secure_event = encode_many(rows, plan, rotation_seed=1, rng=SecureRng())[1]
    assert secure_event == encode(rows[0], plan, rotation_seed=1, rng=SecureRng())[1]
    assert secure_event == plan.event(secure=True)
    assert encode_many(rows, plan, rotation_seed=1)[1] == secure_event  # default is secure
    sim_event = encode_many(rows, plan, rotation_seed=1, rng=SimulationRng(1))[1]
    assert sim_event == plan.event(secure=False) != secure_event


def test_integer_norm_bound_per_row_with_retries_and_fallback() -> None:
    """D5 per row, checked in Python integers on the noiseless output, with a bound tight
    enough that rows retry and, with 2 attempts, some fall back to truncation."""
    plan = tight(make_plan(bits=14, wrap_target=1e-2, noise_multiplier=0.0))
    rows = np.random.default_rng(3).normal(size=(60, plan.dimension)) * 10  # all clipped
    for attempts in (100, 2):
        ring, _ = encode_many(
            rows, plan, rotation_seed=5, rng=SimulationRng(attempts), max_rounding_attempts=attempts
        )
        for row in lift(ring, plan).tolist():
            assert sum(v * v for v in row) <= plan.l2_bound_sq
    pad = plan.padded_dimension - plan.dimension
    scaled = rotate(
        np.pad(rows / np.linalg.norm(rows, axis=1, keepdims=True), ((0, 0), (0, pad))),
        5,
        (1 - 1e-9) / plan.gamma,
    )
    _, used, fallback = conditional_round_rows(scaled, plan.l2_bound_sq, SimulationRng(1), 2)
    assert bool(np.any(used > 1))
    assert bool(np.any(fallback)) and bool(np.all(used[fallback] == 2))


def test_same_distribution_as_encode_noise_off() -> None:
    """Under a tight bound (so the conditioning matters) the per-coordinate mean and
    variance of the rounded rows match a loop over encode within sampling error."""
    plan = tight(make_plan(dimension=30, bits=14, wrap_target=1e-2, noise_multiplier=0.0))
    update = np.random.default_rng(5).normal(size=plan.dimension) * 10
    n = 3000
    batched = lift(
        encode_many(np.tile(update, (n, 1)), plan, rotation_seed=2, rng=SimulationRng(6))[0],
        plan,
    ).astype(np.float64)
    rng = SimulationRng(7)
    looped = np.array(
        [lift(encode(update, plan, rotation_seed=2, rng=rng)[0], plan) for _ in range(n)],
        dtype=np.float64,
    )
    # Each coordinate takes two adjacent values: variance ≤ 1/4, so the difference of two
    # means has std ≤ √(2·0.25/n) ≈ 0.013; 6σ over 32 coordinates is a safe margin.
    assert np.max(np.abs(batched.mean(0) - looped.mean(0))) < 6 * np.sqrt(0.5 / n)
    assert np.max(np.abs(batched.var(0) - looped.var(0))) < 0.05
    norms_b, norms_l = (np.einsum("ij,ij->i", x, x) for x in (batched, looped))
    assert abs(norms_b.mean() - norms_l.mean()) < 6 * max(norms_b.std(), 1.0) / np.sqrt(n)
    # Both honour the bound on every row.
    assert norms_b.max() <= plan.l2_bound_sq and norms_l.max() <= plan.l2_bound_sq


@pytest.mark.parametrize("mechanism", ["ddg", "skellam"])
def test_noise_share_level_matches_encode(mechanism: str) -> None:
    plan = make_plan(dimension=1000, mechanism=mechanism, noise_multiplier=0.5)
    zeros = np.zeros((8, plan.dimension))
    batched = lift(encode_many(zeros, plan, rotation_seed=1, rng=SimulationRng(3))[0], plan)
    rng = SimulationRng(4)
    looped = np.array([lift(encode(z, plan, rotation_seed=1, rng=rng)[0], plan) for z in zeros])
    variance = float(plan.local_variance)
    assert batched.var() == pytest.approx(variance, rel=0.05)
    assert looped.var() == pytest.approx(variance, rel=0.05)
    assert abs(batched.mean()) < 5 * np.sqrt(variance / batched.size)


def test_decoded_sum_within_quantization_bound() -> None:
    n = 10
    plan = make_plan(noise_multiplier=0.0, bits=24)
    rows = np.random.default_rng(4).normal(size=(n, plan.dimension)) * 0.05
    rows[0] *= 100  # clipped
    ring, _ = encode_many(rows, plan, rotation_seed=5, rng=SimulationRng(9))
    total = np.bitwise_and(ring.astype(np.uint64).sum(axis=0), np.uint64(plan.modulus - 1))
    decoded, _ = decode(total, plan, rotation_seed=5, num_contributors=n)
    true = sum(dp.clip_l2(u, 1.0).values for u in rows)
    assert float(np.linalg.norm(decoded - true)) <= plan.quantization_error_bound(n)


def test_bad_input_is_a_typed_error() -> None:
    plan = make_plan()
    good = np.zeros((2, plan.dimension))
    with pytest.raises(DPValueError, match="shape"):
        encode_many(np.zeros(plan.dimension), plan, rotation_seed=1)
    with pytest.raises(DPValueError, match="shape"):
        encode_many(np.zeros((2, plan.dimension + 1)), plan, rotation_seed=1)
    with pytest.raises(DPValueError):
        encode_many([["a"] * plan.dimension], plan, rotation_seed=1)
    bad = good.copy()
    bad[1, 3] = np.nan
    with pytest.raises(NonFiniteUpdateError):
        encode_many(bad, plan, rotation_seed=1)
    with pytest.raises(DPValueError):
        encode_many(good, plan, rotation_seed=1, max_rounding_attempts=0)
    with pytest.raises(DPValueError):
        conditional_round_rows(np.full((2, 4), 2.0**40), 2**61, SimulationRng(1), 2)
    with pytest.raises(DPValueError):
        conditional_round_rows(np.ones(4), 10, SimulationRng(1), 2)
    with pytest.raises(DPError):
        conditional_round_rows(np.full((2, 16), 10.5), 10, SimulationRng(1), 2)
    empty, _ = encode_many(np.zeros((0, plan.dimension)), plan, rotation_seed=1)
    assert empty.shape == (0, plan.padded_dimension)
