"""Contracts of the composition layer, shared by every carrier and every kind.

Every ``RingSum`` carrier (SecAgg full graph, SecAgg+, groups, the sharded in-process
executor, Ray, and the unprotected plain sum) must: return the exact modular sum of the
rows of exactly the devices it reports as included; leave out a device that vanished
before sending its masked input and keep one lost while unmasking; report an abort as
plain data (no exception, no total); meter bytes and seconds. Every private-sum kind
(distributed, central, none) over every carrier must: release the sum of the included
updates up to its noise and quantization, charge the event of the noise that really
reached it (nothing when aborted), and calibrate to a noise that meets the target ε.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import secagg
from dp import make_accountant
from dp.cohort import FixedDrops, FullCohort, PoissonCohort, SeededDropouts, StratifiedCohort
from dp.distributed_sum import DistributedDpSum, noise_share_bounds
from dp.events import (
    DistributedDiscreteGaussianEvent,
    NonPrivateEvent,
    NoOpEvent,
    PoissonSampledEvent,
    PrivacyEvent,
    StratifiedPoissonSampledEvent,
)
from dp.noiseless_sum import CentralDpSum, NoDpSum
from dp.private_sum import PrivateSum, RingSum, calibrate
from dp.rng import SecureRng, SimulationRng
from protocols.secagg_sum import PlainRingSum, SecAggSum, group_bounds
from recsys.executors import LocalExecutor

HAVE_RAY = importlib.util.find_spec("ray") is not None
pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")

CarrierFactory = Callable[[], RingSum]
CARRIERS: dict[str, CarrierFactory] = {
    "secagg_full": lambda: SecAggSum("full", dropout_rate=0.2, seed=1),
    "secagg_plus": lambda: SecAggSum("plus", dropout_rate=0.2, seed=1),
    "secagg_groups": lambda: SecAggSum("plus", dropout_rate=0.2, group_size=7, seed=1),
    "sharded_local": lambda: SecAggSum(
        "full", dropout_rate=0.2, group_size=9, seed=1, carrier=LocalExecutor(shard_size=4)
    ),
    "plain": lambda: PlainRingSum(group_size=8),
}


@pytest.fixture(params=[*sorted(CARRIERS), "sharded_ray"])
def carrier(request: pytest.FixtureRequest) -> Iterator[RingSum]:
    if request.param == "sharded_ray":
        if not HAVE_RAY:
            pytest.skip("Ray is not installed (pip install 'privagg[ray]')")
        request.getfixturevalue("ray_runtime")
        from recsys.executors import RayExecutor

        executor = RayExecutor(num_actors=2, shard_size=4)
        try:
            yield SecAggSum("full", dropout_rate=0.2, group_size=9, seed=1, carrier=executor)
        finally:
            executor.close()
        return
    yield CARRIERS[request.param]()


def _ring(n: int, d: int, bits: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return secagg.to_ring(rng.integers(0, 1 << bits, size=(n, d), dtype=np.uint64), bits)


class _Rows:
    """Picklable rows of a fixed ring matrix (a remote carrier pickles them)."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = matrix

    def __call__(self, lo: int, hi: int) -> np.ndarray:
        return self.matrix[lo:hi]


# --------------------------------------------------------------------------- RingSum
def test_ring_sum_is_the_exact_sum_of_the_included_rows(carrier: RingSum) -> None:
    n, d, bits = 20, 6, 32
    rows = _ring(n, d, bits, 3)
    drops = FixedDrops({"mask": [2, 11], "unmask": [5, 16]})
    out = carrier(_Rows(rows), cohort_size=n, bits=bits, length=d, round_index=4, dropouts=drops)
    assert out.aborted is None and out.total is not None
    assert list(out.included) == sorted(set(out.included))
    assert set(out.included) == set(range(n)) - {2, 11}  # the late ones stay in the sum
    expected = secagg.ring_sum(rows[list(out.included)], bits)
    assert np.array_equal(np.asarray(out.total).astype(np.uint64), expected.astype(np.uint64))
    assert out.bytes_up >= 0 and out.bytes_down >= 0 and out.seconds >= 0
    assert out.device_seconds >= 0


def test_ring_sum_reports_an_abort_as_data(carrier: RingSum) -> None:
    n, d, bits = 12, 4, 32
    rows = _ring(n, d, bits, 4)
    drops = FixedDrops({"mask": list(range(n - 1))})  # one survivor: below any threshold
    out = carrier(_Rows(rows), cohort_size=n, bits=bits, length=d, round_index=0, dropouts=drops)
    if isinstance(carrier, PlainRingSum):  # no threshold: the lone survivor is summed
        assert out.included == (n - 1,)
        return
    assert out.total is None and out.included == ()
    assert out.aborted is not None and "abort" in out.aborted
    lone = carrier(_Rows(rows[:1]), cohort_size=1, bits=bits, length=d, round_index=0)
    assert lone.total is None and lone.aborted is not None


def test_in_process_secagg_meters_real_wire_bytes() -> None:
    n, d, bits = 10, 8, 32
    out = SecAggSum("full")(
        _Rows(_ring(n, d, bits, 5)), cohort_size=n, bits=bits, length=d, round_index=0
    )
    # every device uploads at least its masked input (d ring elements of 4 bytes)
    assert out.bytes_up > n * d * 4 and out.bytes_down > 0
    plain = PlainRingSum()(
        _Rows(_ring(n, d, bits, 5)), cohort_size=n, bits=bits, length=d, round_index=0
    )
    assert plain.bytes_up == n * d * 4 and "speed comparison only" in plain.note


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(2, 16),
    bits=st.sampled_from([8, 20, 32, 40]),
    group=st.integers(2, 9),
    late=st.sets(st.integers(0, 15), max_size=3),
    seed=st.integers(0, 2**16),
)
def test_secagg_sum_property(n: int, bits: int, group: int, late: set[int], seed: int) -> None:
    rows = _ring(n, 3, bits, seed)
    lost = sorted(i for i in late if i < n)
    out = SecAggSum("full", group_size=group)(
        _Rows(rows),
        cohort_size=n,
        bits=bits,
        length=3,
        round_index=seed,
        dropouts=FixedDrops({"unmask": lost}),
    )
    # a group aborts when its unmasking survivors fall below t = ⌊size/2⌋ + 1
    short = any(
        (hi - lo) - sum(lo <= i < hi for i in lost) < (hi - lo) // 2 + 1
        for lo, hi in group_bounds(n, group)
    )
    if short:
        assert out.total is None and out.aborted is not None
        return
    assert out.included == tuple(range(n))  # lost while unmasking: still in the sum
    assert out.total is not None
    assert np.array_equal(
        np.asarray(out.total).astype(np.uint64), secagg.ring_sum(rows, bits).astype(np.uint64)
    )


def test_group_bounds_cover_the_cohort_without_a_lone_device() -> None:
    for n in range(2, 40):
        for size in range(2, 12):
            bounds = group_bounds(n, size)
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
            assert all(hi - lo >= 2 for lo, hi in bounds)


# --------------------------------------------------------------------------- private sums
KindFactory = Callable[[RingSum, Any], PrivateSum]
KINDS: dict[str, KindFactory] = {
    "distributed_ddg": lambda inner, rng: DistributedDpSum(inner, dropout=0.2, rng=rng),
    "distributed_skellam": lambda inner, rng: DistributedDpSum(
        inner, mechanism="skellam", dropout=0.2, rng=rng
    ),
    "central": lambda inner, rng: CentralDpSum(inner, rng=rng),
    "none": lambda inner, rng: NoDpSum(inner, rng=rng),
}
LOCAL_CARRIERS = ("secagg_full", "secagg_groups", "plain")


def _updates(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d))
    out: np.ndarray = x / np.maximum(1.0, np.linalg.norm(x, axis=1, keepdims=True))
    return out


def _kind(kind: str, carrier_name: str, rng: Any = None) -> PrivateSum:
    return KINDS[kind](CARRIERS[carrier_name](), rng if rng is not None else SimulationRng(7))


def _epsilon(event: PrivacyEvent, delta: float = 1e-5) -> float:
    if isinstance(event, NonPrivateEvent):
        return math.inf
    accountant = make_accountant("auto")
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize("carrier_name", [*LOCAL_CARRIERS, "sharded_local"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_private_sum_releases_the_included_sum(kind: str, carrier_name: str) -> None:
    if carrier_name == "sharded_local" and not kind.startswith("distributed"):
        pytest.skip("the noiseless kinds quantize in this process (they refuse a remote sum)")
    n, d = 24, 10
    x = _updates(n, d, 1)
    private = _kind(kind, carrier_name)
    z = 0.0 if kind.startswith("distributed") else 1e-3
    drops = FixedDrops({"mask": [3, 17]})
    release = private.release(
        x,
        clip_norm=1.0,
        noise_multiplier=z,
        expected_contributors=n,
        round_index=2,
        dropouts=drops,
    )
    assert release.aborted is None and release.total is not None
    assert set(release.included) == set(range(n)) - {3, 17} and release.dropped == 2
    true = x[list(release.included)].sum(axis=0)
    error = float(np.linalg.norm(release.total - true))
    if isinstance(private, DistributedDpSum):
        plan = private.plan(d, 1.0, z, n)
        assert error <= plan.quantization_error_bound(len(release.included))
    else:
        assert error <= 1e-3 * math.sqrt(d) * 8 + 1e-4  # noise z·c plus 2^-20 rounding
    assert float(np.linalg.norm(true)) > 0.5  # not a vacuous comparison
    planned = private.planned_event(d, 1.0, z, n)
    assert release.planned_event == planned
    if kind == "none":
        assert isinstance(release.event, NonPrivateEvent)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_private_sum_charges_the_noise_that_reached_the_sum(kind: str) -> None:
    n, d = 20, 8
    inner = SecAggSum("full")
    private: PrivateSum
    if kind.startswith("distributed"):  # planned for no dropout: every share expected
        mechanism = "skellam" if kind.endswith("skellam") else "ddg"
        private = DistributedDpSum(inner, mechanism=mechanism, rng=SimulationRng(7))
    else:
        private = KINDS[kind](inner, SimulationRng(7))
    release = private.release(
        _updates(n, d, 2),
        clip_norm=1.0,
        noise_multiplier=1.0,
        expected_contributors=n,
        round_index=1,
        dropouts=FixedDrops({"mask": list(range(8))}),
    )
    assert release.total is not None and len(release.included) == 12
    if isinstance(private, DistributedDpSum):
        # planned for the worst sum SecAgg lets the server unmask (t − n_C = 11 of 20), not
        # for the 20 expected: 12 survivors carry at least the planned noise
        planned = release.planned_event
        assert planned.min_contributors == inner.min_honest_contributions(n, 32) == 11
        assert release.event.min_contributors == 11
        assert _epsilon(release.event) == _epsilon(planned)
        assert "fewer noise shares" not in release.note
        assert release.noise_std > 0
    elif kind == "central":
        assert release.event == release.planned_event and release.noise_std == 1.0
    if kind != "none":
        assert release.event.to_dict()["secure"] is False


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_an_aborted_private_sum_charges_nothing(kind: str) -> None:
    n, d = 10, 4
    private = _kind(kind, "secagg_full")
    release = private.release(
        _updates(n, d, 3),
        clip_norm=1.0,
        noise_multiplier=1.0,
        expected_contributors=n,
        round_index=1,
        dropouts=FixedDrops({"mask": list(range(9))}),
    )
    assert release.total is None and release.aborted is not None
    assert isinstance(release.event, NoOpEvent) and _epsilon(release.event) == 0.0
    assert release.included == () and release.dropped == n


@pytest.mark.parametrize("kind", ["distributed_ddg", "central"])
def test_secure_noise_by_default(kind: str) -> None:
    private = KINDS[kind](SecAggSum("full"), None)
    release = private.release(
        _updates(6, 4, 4),
        clip_norm=1.0,
        noise_multiplier=1.0,
        expected_contributors=6,
        round_index=0,
    )
    assert release.event.to_dict()["secure"] is True


def test_sharded_carriers_release_the_same_seeded_sum(request: pytest.FixtureRequest) -> None:
    """Where the devices run is invisible: Local shards (and Ray, if installed) release the
    same simulated aggregate for a seed."""
    x = _updates(22, 6, 5)
    outs = []
    carriers: list[Any] = [LocalExecutor(shard_size=4), LocalExecutor(shard_size=4)]
    if HAVE_RAY:
        request.getfixturevalue("ray_runtime")
        from recsys.executors import RayExecutor

        carriers[1] = RayExecutor(num_actors=2, shard_size=4)
    try:
        for c in carriers:
            inner = SecAggSum("full", group_size=9, seed=2, carrier=c)
            private = DistributedDpSum(inner, dropout=0.1, seed=2, rng=SimulationRng(3))
            release = private.release(
                x,
                clip_norm=1.0,
                noise_multiplier=1.0,
                expected_contributors=22,
                round_index=3,
                dropouts=SeededDropouts(0.1, 9),
            )
            assert release.total is not None
            outs.append((release.total.tobytes(), release.included))
    finally:
        for c in carriers:
            c.close()
    assert outs[0] == outs[1]


def test_noiseless_kinds_refuse_a_remote_sum() -> None:
    from dp.errors import DPValueError

    with pytest.raises(DPValueError):
        NoDpSum(SecAggSum(carrier=LocalExecutor()))


def test_bad_updates_are_refused_with_one_line() -> None:
    from dp.errors import DPValueError

    private = DistributedDpSum(SecAggSum("full"), rng=SimulationRng(1))
    bad = _updates(4, 3, 1)
    bad[1, 2] = math.nan
    for updates in (bad, np.zeros(5)):
        with pytest.raises(DPValueError):
            private.release(
                updates,
                clip_norm=1.0,
                noise_multiplier=1.0,
                expected_contributors=4,
                round_index=0,
            )
    with pytest.raises(DPValueError):
        private.release(
            lambda lo, hi: np.zeros((hi - lo, 3)),
            clip_norm=1.0,
            noise_multiplier=1.0,
            expected_contributors=4,
            round_index=0,
        )


@pytest.mark.parametrize("kind", ["central", "none"])
def test_noiseless_kinds_refuse_unclipped_rows(kind: str) -> None:
    """Their sensitivity rests on L2-clipped rows: a row beyond the clip norm is refused,
    never silently reshaped (the distributed kind clips on the device as it encodes)."""
    from dp.errors import DPValueError

    private = _kind(kind, "secagg_full")
    rows = _updates(6, 4, 2)
    rows[3] *= 5.0
    with pytest.raises(DPValueError, match="clip"):
        private.release(
            rows, clip_norm=1.0, noise_multiplier=1.0, expected_contributors=6, round_index=0
        )


# --------------------------------------------------------------------------- samplers
def test_cohort_samplers_wrap_events_once() -> None:
    inner = DistributedDiscreteGaussianEvent  # any event type would do; take a real one
    private = DistributedDpSum(SecAggSum("full"), rng=SimulationRng(1))
    event = private.planned_event(8, 1.0, 1.0, 20)
    assert isinstance(event, inner)
    assert FullCohort().wrap(event) is event
    assert PoissonCohort(1.0).wrap(event) is event
    assert PoissonCohort(0.25).wrap(event) == PoissonSampledEvent(0.25, event)
    strat = StratifiedCohort((0.1, 0.3), (0, 1, 1, 0))
    assert strat.wrap(event) == StratifiedPoissonSampledEvent((0.1, 0.3), event)
    for sampler in (PoissonCohort(0.5), strat):
        assert sampler.wrap(NonPrivateEvent()) == NonPrivateEvent()
        assert sampler.wrap(NoOpEvent()) == NoOpEvent()
    assert math.isclose(strat.expected(4), 0.8)


def test_poisson_cohort_samples_at_its_rate() -> None:
    sampler = PoissonCohort(0.3, SimulationRng(4))
    chosen = sampler.sample(20_000)
    assert abs(chosen.mean() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 20_000)
    assert isinstance(PoissonCohort(0.3).rng, SecureRng)  # secure by default
    strat = StratifiedCohort((0.0, 1.0), (0, 1) * 50, SimulationRng(5))
    assert strat.sample(100).tolist() == [False, True] * 50


def test_seeded_dropouts_are_reproducible_and_split_early_and_late() -> None:
    a, b = SeededDropouts(0.3, 1), SeededDropouts(0.3, 1)
    plans = [a(0, 200), a(200, 400)]
    assert plans == [b(0, 200), b(200, 400)]
    gone = len(plans[0]["mask"]) + len(plans[0]["unmask"])
    assert 30 < gone < 90 and plans[0]["mask"] and plans[0]["unmask"]


def test_noise_share_bounds_cover_the_survivors() -> None:
    n_min, n_max = noise_share_bounds(1000, dropout=0.1, population=4000)
    assert 780 < n_min < 900 < 1000 < n_max
    assert noise_share_bounds(1000, dropout=0.0, population=None)[0] == 1000


# --------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("kind", ["distributed_ddg", "distributed_skellam", "central"])
def test_calibration_meets_the_target(kind: str) -> None:
    private = _kind(kind, "secagg_full")
    cohort = PoissonCohort(0.1)
    z = calibrate(
        private,
        cohort,
        target_epsilon=4.0,
        delta=1e-5,
        rounds=5,
        dimension=16,
        clip_norm=1.0,
        expected=100,
    )
    from dp.events import SelfComposedEvent

    def eps(zz: float) -> float:
        event = cohort.wrap(private.planned_event(16, 1.0, zz, 100))
        return _epsilon(SelfComposedEvent(event, 5))

    assert eps(z) <= 4.0 < eps(z / 1.01)
