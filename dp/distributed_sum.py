"""Distributed DP as a private sum: every device adds its own noise share.

:class:`DistributedDpSum` (a :class:`dp.private_sum.PrivateSum`) encodes each device's
clipped update with the distributed-DP plan (rotation, scaling, conditional rounding, a
discrete Gaussian or Skellam share, mod 2^b; 0/1 count uploads use the exact Skellam
counts plan), hands the ring rows to its inner ring sum, decodes the total once and
charges the noise shares that really reached it (:func:`dp.ledger.charged_event`).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from dp.cohort import Dropouts
from dp.distributed import decode, encode_many, ring_dtype
from dp.errors import DPValueError, PlanningError
from dp.events import PrivacyEvent
from dp.ledger import charged_event
from dp.planning import DistributedDPPlan, plan_distributed_counts, plan_distributed_dp
from dp.private_sum import (
    FloatArray,
    PrivateRelease,
    RingArray,
    RingSum,
    Timer,
    UpdateSource,
    aborted_release,
    block_source,
    checked_block,
)
from dp.rng import NoiseRng, SecureRng, SimulationRng

__all__ = [
    "MAX_L2_INFLATION",
    "DistributedDpSum",
    "Planner",
    "noise_share_bounds",
    "plan_release",
]

MAX_L2_INFLATION = 1.25
"""A ring too narrow for the sum forces a granularity whose rounding inflates the L2
sensitivity; past this factor :meth:`DistributedDpSum.check_ring` refuses the width."""


def _rotation_seed(seed: int, round_index: int) -> int:
    """The public rotation seed of a round (the recommender channel's convention)."""
    return (seed << 20) ^ round_index


def noise_share_bounds(expected: int, *, dropout: float, population: int | None) -> tuple[int, int]:
    """(noise shares the survivors guarantee statistically, most contributors the ring must
    hold); :meth:`DistributedDpSum.plan` also caps the first by the inner stage's floor.

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


def plan_release(
    dimension: int,
    clip_norm: float,
    noise_multiplier: float,
    expected: int,
    count_cap: int | None,
    *,
    min_contributors: int,
    max_contributors: int,
    bits: int,
    mechanism: Literal["ddg", "skellam"],
) -> DistributedDPPlan:
    """The plan of one release for the given noise-share bounds: the exact counts plan when
    ``count_cap`` is given (0/1 uploads with at most that many ones, clip √count_cap) and
    the noise fits the ring, else the rotated plan (which scales the noise down)."""
    if count_cap is not None:
        try:
            return plan_distributed_counts(
                dimension=dimension,
                max_ones=count_cap,
                expected_contributors=expected,
                min_contributors=min_contributors,
                max_contributors=max_contributors,
                noise_multiplier=noise_multiplier,
                bits=bits,
            )
        except PlanningError:
            pass  # the noise alone overflows the ring: the rotated plan scales it
    return plan_distributed_dp(
        dimension=dimension,
        expected_contributors=expected,
        min_contributors=min_contributors,
        max_contributors=max_contributors,
        clip_norm=clip_norm,
        noise_multiplier=noise_multiplier,
        bits=bits,
        mechanism=mechanism,
    )


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
    timer: Timer | None = None
    simulation_seed: int | None = None

    def _rng(self, lo: int, hi: int) -> NoiseRng:
        if self.rng is not None:
            return self.rng
        if self.simulation_seed is None:
            return SecureRng()
        label = f"privagg/private-sum/{self.simulation_seed}/{lo}/{hi}".encode()
        return SimulationRng(int.from_bytes(hashlib.sha256(label).digest()[:7], "little"))

    def __call__(self, lo: int, hi: int) -> RingArray:
        block = checked_block(self.updates, lo, hi, self.dimension)
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
        # the server may release any sum the inner stage allows, not only the expected one
        n_min = max(1, min(n_min, self.inner.min_honest_contributions(expected, self.bits)))
        if counts:
            assert count_cap is not None
            if not math.isclose(clip_norm, math.sqrt(count_cap)):
                raise DPValueError("a counts release must have clip_norm = √count_cap")
        plan = plan_release(
            dimension,
            clip_norm,
            noise_multiplier,
            expected,
            count_cap if counts else None,
            min_contributors=n_min,
            max_contributors=n_max,
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
        fn, n, dim = block_source(updates, dimension, cohort_size)
        plan = self.plan(dim, clip_norm, noise_multiplier, expected_contributors, count_cap)
        planned = plan.event(secure=self.rng.secure)
        if n > plan.max_contributors:
            return aborted_release(
                n, planned, f"{n} devices exceed the ring plan ({plan.max_contributors})"
            )
        rotation_seed = _rotation_seed(self.seed, round_index)
        timer = Timer()
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
            return aborted_release(
                n, planned, ring.aborted or "nobody's input reached the sum", ring
            )
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
