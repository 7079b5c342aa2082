"""Exact (PLD) accounting for integer counts released under symmetric Skellam noise.

Why hand-written: no library ships a Skellam privacy loss distribution (dp_accounting has
Gaussian, Laplace and their discrete versions; the published Skellam analysis, Agarwal,
Kairouz, Liu 2021, is an RDP bound). What *is* generic is the machinery that turns two
probability mass functions into a discretized PLD, composes it by FFT and reads ε off it:
that is dp_accounting's ``from_two_probability_mass_functions`` / ``self_compose`` /
``get_epsilon_for_delta``, reused here. This module only supplies the Skellam pmf, its
certified truncation, and the choice of the grid. dp-accounting is imported lazily: without
it this backend refuses every event (so ``"auto"`` answers with RDP).

The theorem (see ``docs/accounting.md``): a :class:`~dp.events.DistributedSkellamCountsEvent`
releases integer counts plus symmetric Skellam noise of variance μ ≥ ``min_contributors ·
local_variance`` per coordinate (independent symmetric Skellams sum to a symmetric Skellam;
extra shares are post-processing), and a neighbour (add/remove one user) moves at most
``max_ones`` coordinates by exactly ±1. The coordinates are independent, so the privacy
loss is the ``max_ones``-fold composition of the unit-shift pair P = Sk(μ), Q = Sk(μ) + 1
(fewer shifted coordinates is a post-processing of more, and a shift by −1 has the same
PLD by the Skellam's symmetry, which also makes PLD(P‖Q) = PLD(Q‖P)).

Certification:

- **Upper** (dp_accounting's pessimistic estimate): every loss is rounded *up* to the grid
  (log-masses of Q nudged up by 1e-12 so float error in the loss cannot round it down);
  the Skellam support is cut at ±K where the Chernoff bound P(|X| > K) ≤ 1e-30, and that
  truncated mass of Q is added explicitly as a sentinel outcome present only in Q, i.e. as
  infinite loss (dp_accounting silently drops an outcome absent from both dicts, which
  would not be an upper bound). The outcome K + 1 of Q (absent from P) is infinite loss too.
- **Lower** (optimistic estimate): losses rounded *down*, the truncated mass and Q's
  outcome K + 1 dropped. δ(ε) = Σ_o Q(o)(1 − e^{ε−L(o)})₊ is increasing in every loss and
  in every mass, and composition adds independent losses, so both are one-sided.
- dp_accounting's composition truncates ≤ 1e-15 of tail mass per operation (charged to
  infinite loss, so it can only *raise* the lower end) and the FFT has round-off: both are
  absorbed by reading the upper end at δ − 1e-12 and the lower end at δ + 1e-12.

The upper and lower PLDs differ by at most one grid step h per unit shift, so
ε_upper − ε_lower ≤ N·h for N composed shifts; h is a power of two chosen from a coarse
first pass so that the gap is ≤ ``relative_gap``·ε + ``absolute_gap``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import special

from dp.accounting.base import CachedBracketAccountant, SampledMechanism, validate_delta
from dp.errors import DPValueError, UnsupportedEventError
from dp.events import DistributedSkellamCountsEvent

# Chernoff bound on the Skellam mass cut off (both sides together), per unit shift.
SUPPORT_TAIL = 1e-30
# Allowance in δ for dp_accounting's per-operation tail truncation and FFT round-off.
DELTA_SLACK = 1e-12
# Tail mass dp_accounting may truncate per composition (charged as infinite loss).
_TRUNCATION = 1e-15
_LOG_NUDGE = 1e-12
# Beyond this variance the unit-shift loss is so concentrated that dp_accounting's tail
# truncation empties the PLD (an IndexError inside dp_accounting at μ ≈ 10⁹); ε there is
# at most 0.0095 for 300 shifts (δ = 1e-4), so such phases are evaluated at this variance.
MAX_VARIANCE = 1e7
# Largest single-step grid (points) before the interval is coarsened; the answer stays valid.
MAX_STEP_POINTS = 1 << 20
_COARSE_GAP = 0.05


@dataclass(frozen=True)
class SkellamPhase:
    """``shifts`` unit shifts, each against symmetric Skellam noise of variance ``variance``."""

    variance: float
    shifts: int


@dataclass(frozen=True)
class SkellamPldBracket:
    """The bracket with how it was computed."""

    epsilon_lower: float
    epsilon_upper: float
    value_discretization_interval: float
    shifts: int
    support_half_widths: tuple[int, ...]


def _dp_accounting_pld() -> Any:
    try:
        from dp_accounting.pld import privacy_loss_distribution
    except ImportError as exc:  # pragma: no cover - dp-accounting is installed with privagg
        raise UnsupportedEventError(
            "the skellam-pld accountant needs the dp-accounting package "
            "(pip install dp-accounting); use the RDP accountant otherwise"
        ) from exc
    return privacy_loss_distribution


def log_skellam_tail_bound(variance: float, k: float) -> float:
    """log of the Chernoff bound on P(X ≥ k), X symmetric Skellam of variance μ (k ≥ 0).

    E e^{tX} = exp(μ(cosh t − 1)); at t = asinh(k/μ) the bound is
    exp(μ(√(1 + (k/μ)²) − 1) − k·asinh(k/μ)).
    """
    x = k / variance
    return variance * (x * x / (math.sqrt(1.0 + x * x) + 1.0)) - k * math.asinh(x)


@lru_cache(maxsize=256)
def support_half_width(variance: float, tail: float = SUPPORT_TAIL) -> int:
    """The smallest K ≥ 1 with the (Chernoff) bound on P(|X| > K) at most ``tail``."""
    target = math.log(tail) - math.log(2.0)
    lo, hi = 1, max(2, math.ceil(math.sqrt(2.0 * variance * -target)))
    while log_skellam_tail_bound(variance, hi + 1) > target:
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if log_skellam_tail_bound(variance, mid + 1) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def skellam_log_pmf(variance: float, k: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """log P(X = k) for symmetric Skellam X of variance μ: e^{−μ} I_{|k|}(μ), computed as
    log(ive(|k|, μ)) (the exponentially scaled Bessel function: no overflow)."""
    with np.errstate(divide="ignore"):
        out: np.ndarray[Any, Any] = np.log(special.ive(np.abs(k), variance))
    return out


@lru_cache(maxsize=64)
def unit_shift_pld(
    variance: float, interval: float, pessimistic: bool, tail: float = SUPPORT_TAIL
) -> Any:
    """dp_accounting PLD of Sk(μ) + 1 (upper) against Sk(μ) (lower), certified one-sided;
    the support is cut where the Chernoff bound on the cut-off mass is ``tail``."""
    pld_module = _dp_accounting_pld()
    half = support_half_width(variance, tail)
    k = np.arange(-half, half + 1)
    log_p = skellam_log_pmf(variance, k)
    lower = dict(zip(k.tolist(), log_p.tolist(), strict=True))
    nudge = _LOG_NUDGE if pessimistic else -_LOG_NUDGE
    upper: dict[Any, float] = dict(zip((k + 1).tolist(), (log_p + nudge).tolist(), strict=True))
    if pessimistic:
        # the cut-off mass of Q, as an outcome P never has: infinite privacy loss
        upper["tail"] = math.log(2.0) + log_skellam_tail_bound(variance, half + 1)
    else:
        del upper[half + 1]  # not in P: dropping it keeps the lower end a lower bound
    return pld_module.from_two_probability_mass_functions(
        lower,
        upper,
        pessimistic_estimate=pessimistic,
        value_discretization_interval=interval,
        symmetric=True,
    )


@lru_cache(maxsize=64)
def composed_pld(variance: float, shifts: int, interval: float, pessimistic: bool) -> Any:
    """The unit-shift PLD composed ``shifts`` times (cached per (μ, shifts, grid))."""
    one = unit_shift_pld(variance, interval, pessimistic)
    if shifts == 1:
        return one
    return one.self_compose(shifts, tail_mass_truncation=_TRUNCATION)


@lru_cache(maxsize=256)
def _loss_range(variance: float) -> float:
    half = support_half_width(variance)
    log_p = skellam_log_pmf(variance, np.arange(-half, half + 1))
    finite = log_p[np.isfinite(log_p)]
    loss = finite[:-1] - finite[1:]
    return float(loss.max() - loss.min()) if loss.size else 1.0


def _power_of_two_below(x: float) -> float:
    return float(2.0 ** math.floor(math.log2(x)))


def _interval(phases: Sequence[SkellamPhase], gap: float) -> float:
    """The power-of-two grid with N·h ≤ ``gap``, coarsened if a single step gets too large."""
    shifts = sum(p.shifts for p in phases)
    h = _power_of_two_below(gap / shifts)
    finest = max(_loss_range(p.variance) for p in phases) / MAX_STEP_POINTS
    while h < finest:
        h *= 2.0
    return h


def _epsilon(phases: Sequence[SkellamPhase], interval: float, delta: float, upper: bool) -> float:
    total: Any = None
    for p in phases:
        pld = composed_pld(p.variance, p.shifts, interval, upper)
        total = pld if total is None else total.compose(pld, tail_mass_truncation=_TRUNCATION)
    eps = total.get_epsilon_for_delta(delta - DELTA_SLACK if upper else delta + DELTA_SLACK)
    return max(0.0, float(eps))


def validate_phases(phases: Sequence[SkellamPhase]) -> None:
    """Raise :class:`DPValueError` for an empty list, a non-positive variance or shift count."""
    if not phases:
        raise DPValueError("at least one Skellam phase is required")
    for p in phases:
        if not (math.isfinite(p.variance) and p.variance > 0):
            raise DPValueError(f"Skellam variance must be finite and positive, got {p.variance}")
        if isinstance(p.shifts, bool) or not isinstance(p.shifts, int) or p.shifts < 1:
            raise DPValueError(f"shifts must be a positive int, got {p.shifts!r}")


def skellam_pld_bracket(
    phases: Sequence[SkellamPhase],
    delta: float,
    *,
    relative_gap: float = 2e-3,
    absolute_gap: float = 5e-4,
    want_lower: bool = True,
) -> SkellamPldBracket:
    """Certified [ε_lower, ε_upper] at ``delta`` for the composition of Skellam unit shifts.

    ``want_lower=False`` skips the optimistic PLD (ε_lower is then reported as 0). A phase
    with more variance than :data:`MAX_VARIANCE` is evaluated at that variance: still a
    valid upper end (Sk(μ) = Sk(μ') + an independent Sk(μ − μ'), a post-processing), and the
    lower end is then reported as 0.
    """
    validate_phases(phases)
    validate_delta(delta)
    if delta <= 2 * DELTA_SLACK:
        raise DPValueError(f"delta must exceed {2 * DELTA_SLACK:g} for the skellam-pld backend")
    clamped = any(p.variance > MAX_VARIANCE for p in phases)
    phases = sorted(
        (SkellamPhase(min(p.variance, MAX_VARIANCE), p.shifts) for p in phases),
        key=lambda p: p.variance,
    )
    shifts = sum(p.shifts for p in phases)
    coarse = _interval(phases, _COARSE_GAP)
    eps_coarse = _epsilon(phases, coarse, delta, True)
    floor = max(0.0, eps_coarse - shifts * coarse)  # a lower end of the coarse bracket
    h = min(coarse, _interval(phases, relative_gap * floor + absolute_gap))
    upper = eps_coarse if h == coarse else _epsilon(phases, h, delta, True)
    lower = min(upper, _epsilon(phases, h, delta, False)) if want_lower and not clamped else 0.0
    return SkellamPldBracket(
        epsilon_lower=lower,
        epsilon_upper=upper,
        value_discretization_interval=h,
        shifts=shifts,
        support_half_widths=tuple(support_half_width(p.variance) for p in phases),
    )


def _counts_leaf(event: object) -> DistributedSkellamCountsEvent:
    if not isinstance(event, DistributedSkellamCountsEvent):
        name = getattr(event, "type_name", type(event).__name__)
        raise UnsupportedEventError(
            f"the skellam-pld accountant supports DistributedSkellamCounts events only, not "
            f"{name}; use the RDP accountant for other mechanisms"
        )
    for value, what in ((event.max_ones, "max_ones"), (event.min_contributors, "min_contributors")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DPValueError(f"{what} must be a positive int, got {value!r}")
    if not (math.isfinite(event.local_variance) and event.local_variance > 0):
        raise DPValueError(f"local_variance must be positive, got {event.local_variance!r}")
    return event


class SkellamPldAccountant(CachedBracketAccountant[SkellamPldBracket]):
    """Exact PLD accountant for compositions of unsampled
    :class:`~dp.events.DistributedSkellamCountsEvent` (certified bracket)."""

    name = "skellam-pld"

    def __init__(self, *, relative_gap: float = 2e-3, absolute_gap: float = 5e-4) -> None:
        super().__init__()
        self._relative_gap = relative_gap
        self._absolute_gap = absolute_gap

    def _check(self, mechanism: SampledMechanism) -> None:
        if mechanism.sampling_rate != 1.0:
            raise UnsupportedEventError(
                "the skellam-pld accountant does not support Poisson sampling; "
                "use the RDP accountant"
            )
        for leaf, _ in mechanism.leaves:
            _counts_leaf(leaf)
        _dp_accounting_pld()

    def phases(self) -> list[SkellamPhase]:
        """The composition as (variance, unit shifts) phases, merged by equal variance."""
        merged: dict[float, int] = {}
        for mech, count in self._mechanisms.items():
            for leaf, leaf_count in mech.leaves:
                event = _counts_leaf(leaf)
                mu = event.total_variance
                merged[mu] = merged.get(mu, 0) + event.max_ones * leaf_count * count
        return [SkellamPhase(mu, n) for mu, n in sorted(merged.items())]

    def _compute_bracket(self, delta: float, want_lower: bool) -> SkellamPldBracket:
        return skellam_pld_bracket(
            self.phases(),
            delta,
            relative_gap=self._relative_gap,
            absolute_gap=self._absolute_gap,
            want_lower=want_lower,
        )

    def _bracket_detail(self, bracket: SkellamPldBracket) -> str:
        return (
            f"exact Skellam PLD (dp_accounting composition), {bracket.shifts} unit shifts, "
            f"value interval {bracket.value_discretization_interval:.3g}, support ±"
            f"{max(bracket.support_half_widths)}"
        )
