"""The integer-counts encoding: 0/1 contributions summed as they are under Skellam shares.

Exact sums without noise (property test over sizes and rings), the planned noise variance
(never less than z²·m in total over the guaranteed shares), refusals of anything that is not
a capped 0/1 vector, ring sizing, and the event the plan states (and the ledger re-states
when fewer shares arrive)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dp import DistributedSkellamCountsEvent
from dp.distributed import PresampledNoise, decode, encode, encode_many
from dp.errors import DPValueError, PlanningError
from dp.ledger import charged_event
from dp.planning import DistributedDPPlan, counts_wrap_probability_bound, plan_distributed_counts
from dp.rng import SimulationRng

pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")


def make_plan(**overrides: object) -> DistributedDPPlan:
    kwargs: dict[str, object] = dict(
        dimension=40,
        max_ones=5,
        expected_contributors=30,
        min_contributors=25,
        max_contributors=45,
        noise_multiplier=2.0,
        bits=20,
    )
    kwargs.update(overrides)
    return plan_distributed_counts(**kwargs)  # type: ignore[arg-type]


def capped_rows(rng: np.random.Generator, n: int, d: int, m: int) -> np.ndarray:
    rows = np.zeros((n, d))
    for i in range(n):
        rows[i, rng.choice(d, size=int(rng.integers(0, m + 1)), replace=False)] = 1.0
    return rows


def ring_sum(ring: np.ndarray, plan: DistributedDPPlan) -> np.ndarray:
    return (ring.astype(np.uint64).sum(axis=0) % np.uint64(plan.modulus)).astype(np.uint64)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40),
    d=st.integers(1, 64),
    m=st.integers(1, 8),
    bits=st.integers(12, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_noiseless_counts_decode_to_the_exact_sum(
    n: int, d: int, m: int, bits: int, seed: int
) -> None:
    m = min(m, d)
    plan = make_plan(
        dimension=d,
        max_ones=m,
        expected_contributors=n,
        min_contributors=n,
        max_contributors=n,
        noise_multiplier=0.0,
        bits=bits,
    )
    rows = capped_rows(np.random.default_rng(seed), n, d, m)
    ring, event = encode_many(rows, plan, rotation_seed=0, rng=SimulationRng(seed))
    assert ring.shape == (n, d)
    values, report = decode(ring_sum(ring, plan), plan, rotation_seed=0, num_contributors=n)
    np.testing.assert_array_equal(values, rows.sum(axis=0))
    assert report.meets_plan
    assert event.type_name == "NonPrivate"


def test_plan_is_unrotated_and_states_the_counts_event() -> None:
    plan = make_plan()
    assert plan.encoding == "counts" and plan.max_ones == 5
    assert plan.padded_dimension == plan.dimension == 40 and plan.gamma == 1.0
    assert plan.l2_inflation == 1.0 and plan.quantization_error_bound(30) == 0.0
    # shares are rounded up: the guaranteed total is never below (z·√m)²
    assert plan.local_variance * plan.min_contributors >= (2.0 * math.sqrt(5)) ** 2
    assert plan.effective_noise_multiplier >= 2.0 * (1 - 1e-12)
    event = plan.event(secure=True)
    assert event == DistributedSkellamCountsEvent(
        max_ones=5,
        local_variance=event.local_variance,
        dimension=40,
        min_contributors=25,
        expected_contributors=30,
        secure=True,
    )
    assert event.local_variance <= float(plan.local_variance)
    assert "integer counts" in plan.summary()


def test_noise_variance_of_the_sum_is_the_planned_one() -> None:
    plan = make_plan(dimension=20_000, noise_multiplier=1.5)
    ring, _ = encode_many(np.zeros((30, 20_000)), plan, rotation_seed=0, rng=SimulationRng(3))
    values, report = decode(ring_sum(ring, plan), plan, rotation_seed=0, num_contributors=30)
    expected = float(plan.local_variance) * 30
    assert report.realized_noise_std == pytest.approx(math.sqrt(expected))
    # sample variance of 20,000 draws: relative standard error ≈ √(2/20000) = 1 %
    assert np.var(values) == pytest.approx(expected, rel=0.05)
    assert abs(float(np.mean(values))) < 5 * math.sqrt(expected / 20_000)


def test_single_encode_matches_and_presampled_noise_is_accepted() -> None:
    plan = make_plan(noise_multiplier=0.0)
    row = capped_rows(np.random.default_rng(1), 1, 40, 5)[0]
    values, _ = encode(row, plan, rotation_seed=7)
    np.testing.assert_array_equal(values.astype(np.int64), row.astype(np.int64))
    noisy_plan = make_plan()
    share = PresampledNoise(noisy_plan, SimulationRng(5))
    noisy, _ = encode(row, noisy_plan, rotation_seed=7, rng=SimulationRng(6), noise=share)
    assert noisy.shape == (40,)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.full((2, 40), 0.5), "only 0 and 1"),
        (np.full((2, 40), -1.0), "only 0 and 1"),
        (np.full((2, 40), np.nan), "non-finite"),
        (np.eye(40)[:2] * 2.0, "only 0 and 1"),
        (np.ones((2, 40)), "holds 40 ones, the plan allows 5"),
    ],
)
def test_anything_but_capped_zero_one_rows_is_refused(bad: np.ndarray, message: str) -> None:
    plan = make_plan()
    with pytest.raises(DPValueError, match=message):
        encode_many(bad, plan, rotation_seed=0)
    with pytest.raises(DPValueError, match=message):
        encode(bad[0], plan, rotation_seed=0)


def test_wrong_shapes_and_bad_parameters_are_refused() -> None:
    plan = make_plan()
    with pytest.raises(DPValueError, match="shape"):
        encode_many(np.zeros((2, 41)), plan, rotation_seed=0)
    with pytest.raises(DPValueError, match="elements"):
        encode(np.zeros(39), plan, rotation_seed=0)
    with pytest.raises(DPValueError):
        make_plan(max_ones=0)
    with pytest.raises(DPValueError):
        make_plan(min_contributors=31)
    with pytest.raises(DPValueError):
        make_plan(noise_multiplier=-1.0)


def test_a_ring_that_cannot_hold_the_counts_is_refused() -> None:
    with pytest.raises(PlanningError, match="cannot hold counts of 300"):
        make_plan(expected_contributors=200, min_contributors=150, max_contributors=300, bits=9)
    assert (
        counts_wrap_probability_bound(
            dimension=10, max_contributors=1 << 10, noise_variance=1.0, bits=11
        )
        == 1.0
    )
    loose = counts_wrap_probability_bound(
        dimension=10, max_contributors=100, noise_variance=40_000.0, bits=10
    )
    wider = counts_wrap_probability_bound(
        dimension=10, max_contributors=100, noise_variance=40_000.0, bits=11
    )
    assert 0.0 <= wider < loose <= 1.0


def test_fewer_shares_than_planned_are_charged_as_such() -> None:
    event = make_plan().event(secure=True)
    assert isinstance(event, DistributedSkellamCountsEvent)
    charged = charged_event(event, "released", 20)
    assert isinstance(charged, DistributedSkellamCountsEvent)
    assert charged.min_contributors == 20
    assert charged_event(event, "released", 28) == event
