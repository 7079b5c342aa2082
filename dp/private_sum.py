"""The private sum as a stage over an injected inner ring sum.

In the spirit of TFF's ``DistributedDpSumFactory(inner_agg_factory=...)``: a private sum
turns a cohort's float updates into one released sum and the privacy event that sum
charges, and it delegates the only part it cannot do itself (summing ring vectors so that
nobody sees an individual one) to an inner :class:`RingSum`. The inner sum is a structural
protocol over plain data (ring rows in; total, included positions, abort reason, bytes and
seconds out), so ``dp`` imports nothing of ``protocols``: ``protocols.SecAggSum`` (SecAgg /
SecAgg+, groups, metering) satisfies it, and so does a plain modular sum.

Kinds (each returns a :class:`PrivateRelease` with its charged event):

* :class:`DistributedDpSum`: every device encodes its clipped update with the distributed
  DP plan (rotation, scaling, conditional rounding, a discrete Gaussian or Skellam noise
  share, mod 2^b; 0/1 count uploads use the exact Skellam counts plan); the inner sum adds
  the ring rows; the release is decoded and charged with the noise shares that actually
  reached it (:func:`dp.ledger.charged_event`).
* :class:`CentralDpSum`: devices quantize without noise, a trusted server adds exact
  discrete Gaussian noise to the decoded sum (:func:`dp.central.central_gaussian`).
* :class:`NoDpSum`: the exact (quantized) sum; the event is non-private (ε = ∞).

Events are *unsampled*: the cohort sampler that drew the cohort wraps them
(:mod:`dp.cohort`), once. :func:`calibrate` is the one noise calibration for any kind and
any sampler. An update goes down once (device: clip, encode, ring row) and comes back
once (server: ring total, decode).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from dp.accounting import make_accountant
from dp.central import central_gaussian
from dp.cohort import Cohort, Dropouts
from dp.distributed import decode, encode_many, ring_dtype
from dp.errors import DPValueError, PlanningError
from dp.events import NonPrivateEvent, NoOpEvent, PrivacyEvent, SelfComposedEvent
from dp.ledger import charged_event
from dp.planning import DistributedDPPlan, plan_distributed_counts, plan_distributed_dp
from dp.rng import NoiseRng, SecureRng, SimulationRng

__all__ = [
    "CentralDpSum",
    "DistributedDpSum",
    "NoDpSum",
    "Planner",
    "PrivateRelease",
    "PrivateSum",
    "RingOutcome",
    "RingRows",
    "RingSum",
    "RingTotal",
    "UpdateSource",
    "calibrate",
    "noise_share_bounds",
]

FloatArray = NDArray[np.float64]
RingArray = NDArray[np.unsignedinteger[Any]]
_TOP53 = np.uint64(11)

RingRows = Callable[[int, int], RingArray]
"""``(lo, hi) -> ring rows`` of cohort positions ``lo..hi-1`` (ring dtype of the width)."""

UpdateSource = FloatArray | Callable[[int, int], FloatArray]
"""The (n × D) update matrix, or ``(lo, hi) -> updates`` of cohort positions lo..hi-1 (so a
large cohort is computed, encoded and summed block by block)."""

# Noiseless fixed point of the central and non-private kinds: 2^-20 of a clip norm per
# step keeps rounding far below any DP noise; the ring is sized so the sum cannot wrap.
_PLAIN_STEPS_PER_CLIP = float(1 << 20)
MAX_L2_INFLATION = 1.25
"""A ring too narrow for the sum forces a granularity whose rounding inflates the L2
sensitivity; past this factor :meth:`DistributedDpSum.check_ring` refuses the width."""


# --------------------------------------------------------------------------- the port
class RingOutcome(Protocol):
    """What an inner ring sum returns, as plain data (read-only attributes).

    ``total`` is the exact sum mod 2^bits of the rows of ``included`` (cohort positions),
    or ``None`` when the sum aborted (``aborted`` says why; nothing was released).
    ``device_seconds`` is the time spent computing rows where the carrier ran them.
    """

    @property
    def total(self) -> RingArray | None: ...
    @property
    def included(self) -> tuple[int, ...]: ...
    @property
    def aborted(self) -> str | None: ...
    @property
    def bytes_up(self) -> int: ...
    @property
    def bytes_down(self) -> int: ...
    @property
    def seconds(self) -> float: ...
    @property
    def device_seconds(self) -> float: ...
    @property
    def note(self) -> str: ...


@dataclass(frozen=True, eq=False)
class RingTotal:
    """A plain :class:`RingOutcome` (what ``dp`` itself builds, e.g. for an abort)."""

    total: RingArray | None
    included: tuple[int, ...]
    aborted: str | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    seconds: float = 0.0
    device_seconds: float = 0.0
    note: str = ""


class RingSum(Protocol):
    """A sum of ring vectors in which nobody sees an individual one (the inner stage).

    ``rows(lo, hi)`` gives the ring rows of positions ``lo..hi-1`` of a cohort of
    ``cohort_size``; ``dropouts(lo, hi)`` the devices of that block that vanish (a drop
    plan, positions re-based to the block). A carrier that runs ``rows`` on other hosts
    says so with ``remote``: the rows function is then pickled and must carry its own
    noise generator.
    """

    @property
    def remote(self) -> bool: ...

    def __call__(
        self,
        rows: RingRows,
        *,
        cohort_size: int,
        bits: int,
        length: int,
        round_index: int,
        dropouts: Dropouts | None = None,
    ) -> RingOutcome: ...


# --------------------------------------------------------------------------- releases
@dataclass(frozen=True, eq=False)
class PrivateRelease:
    """One private sum as the server sees it: the decoded (noisy) sum and what it cost.

    ``event`` is the charged event (the noise that really reached the sum; ``NoOpEvent``
    when aborted), ``planned_event`` the one planned; both unsampled (the cohort sampler
    wraps them). ``total`` is ``None`` when the inner sum aborted.
    """

    total: FloatArray | None
    included: tuple[int, ...]
    cohort_size: int
    event: PrivacyEvent
    planned_event: PrivacyEvent
    ring: RingOutcome = field(repr=False)
    noise_std: float = 0.0
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0
    note: str = ""

    @property
    def aborted(self) -> str | None:
        """Why nothing was released, or ``None``."""
        return self.ring.aborted

    @property
    def dropped(self) -> int:
        return self.cohort_size - len(self.included)


class PrivateSum(Protocol):
    """A private sum of clipped float updates (one kind of release)."""

    def planned_event(
        self, dimension: int, clip_norm: float, noise_multiplier: float, expected: int
    ) -> PrivacyEvent: ...

    def release(
        self,
        updates: UpdateSource,
        *,
        clip_norm: float,
        noise_multiplier: float,
        expected_contributors: int,
        round_index: int,
        dimension: int | None = None,
        cohort_size: int | None = None,
        count_cap: int | None = None,
        dropouts: Dropouts | None = None,
    ) -> PrivateRelease: ...


def _source(
    updates: UpdateSource, dimension: int | None, cohort_size: int | None
) -> tuple[Callable[[int, int], FloatArray], int, int]:
    """(block function, cohort size, dimension) of an update source."""
    if callable(updates):
        if cohort_size is None or dimension is None:
            raise DPValueError("cohort_size and dimension are required with an update function")
        return updates, int(cohort_size), int(dimension)
    matrix = np.asarray(updates, dtype=np.float64)
    if matrix.ndim != 2:
        raise DPValueError(f"updates must be an (n × D) matrix, got shape {matrix.shape}")
    return _MatrixBlocks(matrix), matrix.shape[0], matrix.shape[1]


@dataclass(frozen=True)
class _MatrixBlocks:
    matrix: FloatArray

    def __call__(self, lo: int, hi: int) -> FloatArray:
        return self.matrix[lo:hi]


def _block(fn: Callable[[int, int], FloatArray], lo: int, hi: int, dim: int) -> FloatArray:
    block = np.asarray(fn(lo, hi), dtype=np.float64)
    if block.shape != (hi - lo, dim):
        raise DPValueError(f"updates of devices {lo}..{hi} have shape {block.shape}")
    if not np.all(np.isfinite(block)):
        raise DPValueError(f"updates of devices {lo}..{hi} hold non-finite values")
    return block


@dataclass
class _Timer:
    seconds: float = 0.0


def _rotation_seed(seed: int, round_index: int) -> int:
    """The public rotation seed of a round (the recommender channel's convention)."""
    return (seed << 20) ^ round_index


def noise_share_bounds(expected: int, *, dropout: float, population: int | None) -> tuple[int, int]:
    """(noise shares the plan guarantees, most contributors the ring must hold).

    Survivors of a Poisson cohort are Binomial(N, q(1 − p)) with q = expected / N: the
    plan guarantees their mean minus 4 standard deviations (variance E(1 − p)(1 − q(1 − p)),
    which also bounds stratified sampling of the same mean rate, by Jensen); the charged
    event is re-stated if fewer arrive. The ring holds the mean plus 6 standard deviations.
    """
    q = 1.0 if population is None else min(1.0, expected / max(population, 1))
    variance = expected * (1.0 - dropout) * (1.0 - q * (1.0 - dropout))
    survivors = expected * (1.0 - dropout) - 4.0 * math.sqrt(variance)
    n_min = max(1, min(expected, math.floor(survivors)))
    return n_min, expected + math.ceil(6 * math.sqrt(expected)) + 8


# --------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class _EncodeRows:
    """Ring rows of a distributed-DP release: clip is the caller's, encoding happens here.

    ``rng`` is the noise stream of an in-process carrier; a remote carrier gets
    ``rng=None`` and each block draws from a fresh ``SecureRng`` on its host (or, in a
    seeded simulation, from a generator keyed by (seed, block)).
    """

    updates: Callable[[int, int], FloatArray]
    plan: DistributedDPPlan
    rotation_seed: int
    dimension: int
    rng: NoiseRng | None = None
    timer: _Timer | None = None
    simulation_seed: int | None = None

    def _rng(self, lo: int, hi: int) -> NoiseRng:
        if self.rng is not None:
            return self.rng
        if self.simulation_seed is None:
            return SecureRng()
        label = f"privagg/private-sum/{self.simulation_seed}/{lo}/{hi}".encode()
        return SimulationRng(int.from_bytes(hashlib.sha256(label).digest()[:7], "little"))

    def __call__(self, lo: int, hi: int) -> RingArray:
        block = _block(self.updates, lo, hi, self.dimension)
        t0 = time.perf_counter()
        encoded, _ = encode_many(
            block, self.plan, rotation_seed=self.rotation_seed, rng=self._rng(lo, hi)
        )
        ring: RingArray = encoded.astype(ring_dtype(self.plan.bits))
        if self.timer is not None:
            self.timer.seconds += time.perf_counter() - t0
        return ring


Planner = Callable[[int, float, float, int, int | None], DistributedDPPlan]
"""``(dimension, clip_norm, noise_multiplier, expected, count_cap) -> plan``."""


class DistributedDpSum:
    """Distributed DP over an inner ring sum: devices add their own noise shares.

    ``dropout`` and ``population`` size the noise shares (:func:`noise_share_bounds`), or
    ``planner`` replaces the whole planning (a caller that owns its plans, e.g. the
    recommender's channel, so there is one plan per release and one sizing rule);
    ``seed`` fixes the public per-round rotation; ``rng`` is the devices' noise generator
    (``SecureRng`` by default; a ``SimulationRng`` makes runs reproducible and marks every
    event ``secure=False``).
    """

    def __init__(
        self,
        inner: RingSum,
        *,
        bits: int = 32,
        mechanism: Literal["ddg", "skellam"] = "ddg",
        dropout: float = 0.0,
        population: int | None = None,
        seed: int = 0,
        rng: NoiseRng | None = None,
        planner: Planner | None = None,
    ) -> None:
        if mechanism not in ("ddg", "skellam"):
            raise DPValueError(f"mechanism must be 'ddg' or 'skellam', got {mechanism!r}")
        if not 0 <= dropout < 1:
            raise DPValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        self.inner = inner
        self.bits = bits
        self.mechanism = mechanism
        self.dropout = dropout
        self.population = population
        self.seed = seed
        self.rng: NoiseRng = rng if rng is not None else SecureRng()
        self._plans: dict[tuple[Any, ...], DistributedDPPlan] = {}
        self._planner = planner

    def counts_encoding(self, count_cap: int | None, expected: int) -> bool:
        """Whether 0/1 uploads with at most ``count_cap`` ones use the exact counts plan:
        whenever every possible contributor's counts fit in a quarter of the ring."""
        _, n_max = noise_share_bounds(expected, dropout=self.dropout, population=self.population)
        return count_cap is not None and n_max < 2 ** (self.bits - 2)

    def plan(
        self,
        dimension: int,
        clip_norm: float,
        noise_multiplier: float,
        expected: int,
        count_cap: int | None = None,
    ) -> DistributedDPPlan:
        """The distributed-DP plan of a release (cached: identical rounds share one)."""
        if self._planner is not None:
            return self._planner(dimension, clip_norm, noise_multiplier, expected, count_cap)
        counts = self.counts_encoding(count_cap, expected)
        key = (dimension, clip_norm, noise_multiplier, expected, count_cap if counts else None)
        if key in self._plans:
            return self._plans[key]
        n_min, n_max = noise_share_bounds(
            expected, dropout=self.dropout, population=self.population
        )
        plan: DistributedDPPlan | None = None
        if counts:
            assert count_cap is not None
            if not math.isclose(clip_norm, math.sqrt(count_cap)):
                raise DPValueError("a counts release must have clip_norm = √count_cap")
            try:
                plan = plan_distributed_counts(
                    dimension=dimension,
                    max_ones=count_cap,
                    expected_contributors=expected,
                    min_contributors=n_min,
                    max_contributors=n_max,
                    noise_multiplier=noise_multiplier,
                    bits=self.bits,
                )
            except PlanningError:
                plan = None  # the noise alone overflows the ring: the rotated plan scales it
        if plan is None:
            plan = plan_distributed_dp(
                dimension=dimension,
                expected_contributors=expected,
                min_contributors=n_min,
                max_contributors=n_max,
                clip_norm=clip_norm,
                noise_multiplier=noise_multiplier,
                bits=self.bits,
                mechanism=self.mechanism,
            )
        self._plans[key] = plan
        return plan

    def check_ring(
        self,
        dimension: int,
        clip_norm: float,
        noise_multiplier: float,
        expected: int,
        count_cap: int | None = None,
    ) -> None:
        """Refuse (:class:`PlanningError`) a ring whose granularity inflates the L2
        sensitivity by more than :data:`MAX_L2_INFLATION`."""
        plan = self.plan(dimension, clip_norm, noise_multiplier, expected, count_cap)
        if plan.l2_inflation > MAX_L2_INFLATION:
            raise PlanningError(
                f"{plan.bits} bits: holding the sum of {plan.max_contributors} contributors of "
                f"{dimension} coordinates (noise multiplier {noise_multiplier:.3g}) inflates "
                f"the L2 sensitivity by {plan.l2_inflation:.3f} > {MAX_L2_INFLATION}; "
                "use more bits"
            )

    def planned_event(
        self,
        dimension: int,
        clip_norm: float,
        noise_multiplier: float,
        expected: int,
        count_cap: int | None = None,
    ) -> PrivacyEvent:
        plan = self.plan(dimension, clip_norm, noise_multiplier, expected, count_cap)
        return plan.event(secure=self.rng.secure)

    def release(
        self,
        updates: UpdateSource,
        *,
        clip_norm: float,
        noise_multiplier: float,
        expected_contributors: int,
        round_index: int,
        dimension: int | None = None,
        cohort_size: int | None = None,
        count_cap: int | None = None,
        dropouts: Dropouts | None = None,
    ) -> PrivateRelease:
        """Encode, sum with the inner ring sum, decode and charge one release."""
        fn, n, dim = _source(updates, dimension, cohort_size)
        plan = self.plan(dim, clip_norm, noise_multiplier, expected_contributors, count_cap)
        planned = plan.event(secure=self.rng.secure)
        if n > plan.max_contributors:
            return _aborted(
                n, planned, f"{n} devices exceed the ring plan ({plan.max_contributors})"
            )
        rotation_seed = _rotation_seed(self.seed, round_index)
        timer = _Timer()
        remote = self.inner.remote
        rows = _EncodeRows(
            fn,
            plan,
            rotation_seed,
            dim,
            rng=None if remote else self.rng,
            timer=None if remote else timer,
            simulation_seed=None if self.rng.secure else (self.seed << 20) ^ round_index,
        )
        ring = self.inner(
            rows,
            cohort_size=n,
            bits=plan.bits,
            length=plan.padded_dimension,
            round_index=round_index,
            dropouts=dropouts,
        )
        if ring.total is None or not ring.included:
            return _aborted(n, planned, ring.aborted or "nobody's input reached the sum", ring)
        t0 = time.perf_counter()
        included = len(ring.included)
        values, report = decode(
            ring.total, plan, rotation_seed=rotation_seed, num_contributors=included, strict=False
        )
        # Fewer noise shares than planned: charge what the aggregate really contains.
        charged = charged_event(planned, "released", included)
        note = ring.note + ("" if report.meets_plan else "; fewer noise shares than planned")
        return PrivateRelease(
            total=values,
            included=ring.included,
            cohort_size=n,
            event=charged,
            planned_event=planned,
            ring=ring,
            noise_std=plan.gamma * math.sqrt(float(plan.local_variance) * included),
            encode_seconds=timer.seconds + ring.device_seconds,
            decode_seconds=time.perf_counter() - t0,
            note=note,
        )


def _aborted(
    n: int, planned: PrivacyEvent, why: str, ring: RingOutcome | None = None
) -> PrivateRelease:
    """Nothing released: charged nothing (the planned event is kept for the record)."""
    if ring is None or ring.aborted is None:
        ring = RingTotal(
            None,
            (),
            aborted=why,
            bytes_up=0 if ring is None else ring.bytes_up,
            bytes_down=0 if ring is None else ring.bytes_down,
            seconds=0.0 if ring is None else ring.seconds,
        )
    return PrivateRelease(None, (), n, NoOpEvent(), planned, ring, note=why)


# --------------------------------------------------------------------------- noiseless kinds
def plain_bits(cohort_size: int) -> int:
    """Ring width of the noiseless fixed point: the sum of the cohort cannot wrap."""
    return min(62, (max(cohort_size, 1) * (int(_PLAIN_STEPS_PER_CLIP) + 1)).bit_length() + 2)


@dataclass(frozen=True)
class _QuantizeRows:
    """Noiseless fixed point with unbiased randomized rounding (rows already clipped)."""

    updates: Callable[[int, int], FloatArray]
    clip_norm: float
    bits: int
    dimension: int
    rng: NoiseRng
    timer: _Timer

    def __call__(self, lo: int, hi: int) -> RingArray:
        block = _block(self.updates, lo, hi, self.dimension)
        t0 = time.perf_counter()
        # the sensitivity rests on L2-clipped rows: refuse (never silently reshape) others
        norms = np.linalg.norm(block, axis=1)
        if norms.size and float(norms.max()) > self.clip_norm * (1.0 + 1e-9):
            raise DPValueError(
                f"an update of devices {lo}..{hi} has L2 norm {float(norms.max()):.6g} > "
                f"clip_norm {self.clip_norm:g}: clip the updates first"
            )
        scaled = np.clip(block, -self.clip_norm, self.clip_norm) * (
            _PLAIN_STEPS_PER_CLIP / self.clip_norm
        )
        floor = np.floor(scaled)
        uniform = (self.rng.words(scaled.size) >> _TOP53).astype(np.float64) * 2.0**-53
        ints = floor.astype(np.int64) + (uniform.reshape(scaled.shape) < scaled - floor)
        ring: RingArray = np.bitwise_and(ints, (1 << self.bits) - 1).astype(ring_dtype(self.bits))
        self.timer.seconds += time.perf_counter() - t0
        return ring


class _PlainSum:
    """The shared part of the central and non-private kinds: quantize, sum, lift."""

    def __init__(self, inner: RingSum, *, rng: NoiseRng | None = None) -> None:
        if inner.remote:
            raise DPValueError("the noiseless kinds quantize in this process: use a local sum")
        self.inner = inner
        self.rng: NoiseRng = rng if rng is not None else SecureRng()

    def _noisy(
        self, values: FloatArray, clip_norm: float, noise_multiplier: float
    ) -> tuple[FloatArray, PrivacyEvent, float]:
        raise NotImplementedError

    def release(
        self,
        updates: UpdateSource,
        *,
        clip_norm: float,
        noise_multiplier: float,
        expected_contributors: int,
        round_index: int,
        dimension: int | None = None,
        cohort_size: int | None = None,
        count_cap: int | None = None,
        dropouts: Dropouts | None = None,
    ) -> PrivateRelease:
        """Quantize, sum with the inner ring sum, lift and (central) add noise."""
        if not (clip_norm > 0 and math.isfinite(clip_norm)):
            raise DPValueError(f"clip_norm must be positive and finite, got {clip_norm!r}")
        fn, n, dim = _source(updates, dimension, cohort_size)
        planned = self.planned_event(dim, clip_norm, noise_multiplier, expected_contributors)
        bits = plain_bits(n)
        timer = _Timer()
        rows = _QuantizeRows(fn, clip_norm, bits, dim, self.rng, timer)
        ring = self.inner(
            rows,
            cohort_size=n,
            bits=bits,
            length=dim,
            round_index=round_index,
            dropouts=dropouts,
        )
        if ring.total is None or not ring.included:
            return _aborted(n, planned, ring.aborted or "nobody's input reached the sum", ring)
        t0 = time.perf_counter()
        lifted = ring.total.astype(np.int64)
        lifted[lifted >= 1 << (bits - 1)] -= 1 << bits
        exact = lifted.astype(np.float64) / (_PLAIN_STEPS_PER_CLIP / clip_norm)
        values, event, noise_std = self._noisy(exact, clip_norm, noise_multiplier)
        return PrivateRelease(
            total=values,
            included=ring.included,
            cohort_size=n,
            event=event,
            planned_event=planned,
            ring=ring,
            noise_std=noise_std,
            encode_seconds=timer.seconds,
            decode_seconds=time.perf_counter() - t0,
            note=ring.note,
        )

    def planned_event(
        self, dimension: int, clip_norm: float, noise_multiplier: float, expected: int
    ) -> PrivacyEvent:
        raise NotImplementedError


class CentralDpSum(_PlainSum):
    """A trusted server adds exact discrete Gaussian noise of std z·c to the exact sum
    (lattice + discrete Gaussian: not porous). The inner sum still hides the updates."""

    def planned_event(
        self, dimension: int, clip_norm: float, noise_multiplier: float, expected: int
    ) -> PrivacyEvent:
        # the central event depends only on (Δ, z, d): probe it on zeros
        _, probe = central_gaussian(
            np.zeros(dimension),
            l2_sensitivity=clip_norm,
            noise_multiplier=noise_multiplier,
            rng=SecureRng(),
        )
        return dataclasses.replace(probe, secure=self.rng.secure)

    def _noisy(
        self, values: FloatArray, clip_norm: float, noise_multiplier: float
    ) -> tuple[FloatArray, PrivacyEvent, float]:
        noisy, event = central_gaussian(
            values, l2_sensitivity=clip_norm, noise_multiplier=noise_multiplier, rng=self.rng
        )
        return noisy, event, noise_multiplier * clip_norm


class NoDpSum(_PlainSum):
    """The exact (quantized) sum: no noise, the event is non-private (ε = ∞)."""

    def planned_event(
        self, dimension: int, clip_norm: float, noise_multiplier: float, expected: int
    ) -> PrivacyEvent:
        return NonPrivateEvent()

    def _noisy(
        self, values: FloatArray, clip_norm: float, noise_multiplier: float
    ) -> tuple[FloatArray, PrivacyEvent, float]:
        return values, NonPrivateEvent(), 0.0


# --------------------------------------------------------------------------- calibration
def _epsilon(events: Sequence[PrivacyEvent], delta: float) -> float:
    if any(isinstance(e, NonPrivateEvent) for e in events):
        return math.inf
    accountant = make_accountant("auto")
    for event in events:
        accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def calibrate(
    private_sum: PrivateSum,
    cohort: Cohort,
    *,
    target_epsilon: float,
    delta: float,
    rounds: int,
    dimension: int,
    clip_norm: float,
    expected: int,
    fixed: Sequence[PrivacyEvent] = (),
    lo: float = 0.05,
    hi: float = 5000.0,
) -> float:
    """The smallest noise multiplier z (to 0.2 %) at which ``rounds`` releases of
    ``private_sum`` on cohorts of ``cohort`` (plus the ``fixed`` events) stay within
    ``target_epsilon`` at ``delta`` (``dp``'s auto accountant, add-or-remove-one).

    One search for every kind and sampler: the event of a round is the kind's planned
    event wrapped by the sampler; ε is decreasing in z.
    """
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise DPValueError(f"target_epsilon must be positive and finite, got {target_epsilon!r}")
    if rounds < 1:
        raise DPValueError("rounds must be at least 1")

    def eps(z: float) -> float:
        event = cohort.wrap(private_sum.planned_event(dimension, clip_norm, z, expected))
        return _epsilon([*fixed, SelfComposedEvent(event, rounds)], delta)

    if eps(hi) > target_epsilon:
        raise DPValueError(f"cannot reach ε = {target_epsilon:g} with noise multiplier ≤ {hi:g}")
    if eps(lo) <= target_epsilon:
        return lo
    while hi / lo > 1.002:
        mid = math.sqrt(lo * hi)
        if eps(mid) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi
