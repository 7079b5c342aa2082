"""Who is in a release: cohort samplers (which wrap a release's event, in one place) and
seeded dropout simulation.

A cohort sampler both draws the cohort and states what the draw does to the privacy
event: :class:`PoissonCohort` (every device joins independently with probability q)
wraps an event in :class:`~dp.events.PoissonSampledEvent`, :class:`StratifiedCohort`
(device i joins with its own stratum's probability) in
:class:`~dp.events.StratifiedPoissonSampledEvent`; :class:`FullCohort` (everyone, e.g. a
one-shot release) leaves it as it is. A private sum never wraps events itself, so the
sampling amplification is applied exactly once, by the object that did the sampling.
Cohort draws use a ``dp`` noise generator (:class:`~dp.rng.SecureRng` by default): who is
sampled is part of the privacy guarantee.

:class:`SeededDropouts` simulates devices that vanish, per block of a cohort, as a drop
plan (SecAgg stage name -> block positions): who drops out is not a secret, so a seeded
numpy generator is the right tool (and keeps simulations reproducible).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from dp.errors import DPValueError
from dp.events import (
    NonPrivateEvent,
    NoOpEvent,
    PoissonSampledEvent,
    PrivacyEvent,
    StratifiedPoissonSampledEvent,
)
from dp.rng import NoiseRng, SecureRng
from dp.samplers import bernoulli

__all__ = [
    "Cohort",
    "DropPlan",
    "Dropouts",
    "FixedDrops",
    "FullCohort",
    "PoissonCohort",
    "SeededDropouts",
    "StratifiedCohort",
]

BoolArray = NDArray[np.bool_]
FloatArray = NDArray[np.float64]
_TOP53 = np.uint64(11)

DropPlan = Mapping[str, Sequence[int]]
"""SecAgg stage name -> positions of the devices that vanish just before sending that
stage's message: ``"mask"`` (before the masked input: left out of the sum) or ``"unmask"``
(after it: still in the sum, its mask is recovered), or any earlier stage."""


class Cohort(Protocol):
    """A cohort sampler: draws who takes part and wraps a release's event accordingly."""

    def sample(self, population: int) -> BoolArray:
        """Inclusion mask over devices ``0..population-1``."""
        ...

    def wrap(self, event: PrivacyEvent) -> PrivacyEvent:
        """The event of a release on a cohort drawn by this sampler."""
        ...

    def expected(self, population: int) -> float:
        """Expected cohort size."""
        ...


@dataclass(frozen=True)
class FullCohort:
    """Every device of the population (no sampling, no amplification)."""

    def sample(self, population: int) -> BoolArray:
        return np.ones(_population(population), dtype=bool)

    def wrap(self, event: PrivacyEvent) -> PrivacyEvent:
        return event

    def expected(self, population: int) -> float:
        return float(_population(population))


@dataclass(frozen=True)
class PoissonCohort:
    """Poisson sampling: each device joins independently with probability ``rate``.

    The draw compares a 53-bit uniform from ``rng`` with ``rate`` (the same draw as the
    recommender's channel, so seeded simulations are unchanged).
    """

    rate: float
    rng: NoiseRng = field(default_factory=SecureRng, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 1:
            raise DPValueError(f"sampling rate must lie in (0, 1], got {self.rate!r}")

    def sample(self, population: int) -> BoolArray:
        n = _population(population)
        uniform = (self.rng.words(n) >> _TOP53).astype(np.float64) * 2.0**-53
        chosen: BoolArray = uniform < self.rate
        return chosen

    def wrap(self, event: PrivacyEvent) -> PrivacyEvent:
        if self.rate >= 1.0 or _unsampled(event):
            return event
        return PoissonSampledEvent(self.rate, event)

    def expected(self, population: int) -> float:
        return self.rate * _population(population)


@dataclass(frozen=True)
class StratifiedCohort:
    """Heterogeneous Poisson sampling: device i joins with probability
    ``rates[strata[i]]`` (exact Bernoulli draws). The event is read at the worst stratum
    (see :class:`~dp.events.StratifiedPoissonSampledEvent`); the rates must depend on
    public or already released quantities only."""

    rates: tuple[float, ...]
    strata: tuple[int, ...]
    rng: NoiseRng = field(default_factory=SecureRng, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.rates or any(not 0 <= q <= 1 for q in self.rates):
            raise DPValueError("stratum rates must be a non-empty tuple of values in [0, 1]")
        if any(not 0 <= s < len(self.rates) for s in self.strata):
            raise DPValueError("every stratum index must name one of the rates")

    def probabilities(self) -> FloatArray:
        """Each device's inclusion probability."""
        return np.asarray(self.rates, dtype=np.float64)[np.asarray(self.strata, dtype=np.int64)]

    def sample(self, population: int) -> BoolArray:
        if _population(population) != len(self.strata):
            raise DPValueError(f"{len(self.strata)} strata given for {population} devices")
        return bernoulli(self.probabilities(), self.rng)

    def wrap(self, event: PrivacyEvent) -> PrivacyEvent:
        if _unsampled(event):
            return event
        return StratifiedPoissonSampledEvent(tuple(float(q) for q in self.rates), event)

    def expected(self, population: int) -> float:
        return float(self.probabilities().sum())


def _unsampled(event: PrivacyEvent) -> bool:
    """Events sampling cannot change: nothing released, or no privacy to amplify."""
    return isinstance(event, NonPrivateEvent | NoOpEvent)


def _population(population: int) -> int:
    if isinstance(population, bool) or not isinstance(population, int | np.integer):
        raise DPValueError(f"population must be an int, got {population!r}")
    if population < 0:
        raise DPValueError(f"population must be non-negative, got {population}")
    return int(population)


# --------------------------------------------------------------------------- dropouts
class Dropouts(Protocol):
    """The drop plan of one block ``lo..hi-1`` of a cohort (positions re-based to 0)."""

    def __call__(self, lo: int, hi: int) -> dict[str, list[int]]: ...


@dataclass
class SeededDropouts:
    """Each device vanishes with probability ``rate``; half of those before sending the
    masked input (left out), half while unmasking (kept in the sum, mask recovered).

    One generator for the whole run (seeded by ``seed``): blocks are drawn in the order they
    are asked for, as the recommender's channel draws them.
    """

    rate: float
    seed: int
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.rate < 1:
            raise DPValueError(f"dropout rate must lie in [0, 1), got {self.rate!r}")
        self._rng = np.random.default_rng([self.seed, 0xD0])

    def __call__(self, lo: int, hi: int) -> dict[str, list[int]]:
        if self.rate <= 0:
            return {"mask": [], "unmask": []}
        gone = np.flatnonzero(self._rng.random(hi - lo) < self.rate)
        late = self._rng.random(len(gone)) < 0.5
        return {"mask": gone[~late].tolist(), "unmask": gone[late].tolist()}


@dataclass(frozen=True)
class FixedDrops:
    """A given cohort-wide drop plan (e.g. a device simulator's deadline misses)."""

    plan: DropPlan

    def __call__(self, lo: int, hi: int) -> dict[str, list[int]]:
        return {
            stage: sorted(int(i) - lo for i in ids if lo <= int(i) < hi)
            for stage, ids in self.plan.items()
        }
