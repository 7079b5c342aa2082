"""The "discrete-pld" backend: tight PLD accounting of (Poisson-subsampled) discrete releases.

Covers the distributed discrete Gaussian (:class:`~dp.events.DistributedDiscreteGaussianEvent`,
Kairouz, Liu, Steinke 2021), distributed Skellam vectors and counts
(:class:`~dp.events.DistributedSkellamEvent`, :class:`~dp.events.DistributedSkellamCountsEvent`,
Agarwal, Kairouz, Liu 2021), the central :class:`~dp.events.DiscreteGaussianEvent`, and
Gaussian events, alone or Poisson-sampled, composed in any mix.

Each discrete leaf is replaced by the continuous Gaussian mechanism that dominates it up to
an additive δ-mass η (:mod:`dp.accounting.discrete_domination`: a proven pointwise bound on
the hockey-stick curve for every integer shift of bounded L2 norm, not an approximation).
Dominating pairs survive Poisson subsampling (Zhu, Dong, Wang 2022, Thm 11) and adaptive
composition (ibid., Thm 10); the additive masses add up (one per use, see
``docs/accounting.md``). The composition of the dominating subsampled Gaussians is then
evaluated by the certified PLD of :mod:`dp.accounting.pld_analysis` (connect-the-dots,
Doroshenko et al. 2022) at δ − Σ η, so the answer is a proven upper bound under add- and
remove-one adjacency (both directions are computed; the larger is reported).

The lower end of the bracket is reported as 0: the dominating Gaussian's own lower bound is
not a lower bound for the discrete mechanism.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dp.accounting.base import CachedBracketAccountant, SampledMechanism
from dp.accounting.discrete_domination import (
    MAX_SKELLAM_VARIANCE,
    GaussianDomination,
    ddg_mixture_log_ratio,
    dominate,
)
from dp.accounting.pld_analysis import GaussianPhase, gaussian_pld_bracket
from dp.errors import DPValueError, UnsupportedEventError
from dp.events import (
    DiscreteGaussianEvent,
    DistributedDiscreteGaussianEvent,
    DistributedSkellamCountsEvent,
    DistributedSkellamEvent,
    GaussianEvent,
    PrivacyEvent,
)

# Largest additive δ-mass accepted per use of one leaf: the backend refuses noise so small
# that (★) would charge more (the sum of few discrete Gaussians with σ < 2, say), and the
# auto backend then answers with RDP.
MAX_EXTRA_DELTA_PER_USE = 1e-15


def _positive(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, float | int) or not math.isfinite(value):
        raise DPValueError(f"{what} must be a finite number, got {value!r}")
    if value <= 0:
        raise DPValueError(f"{what} must be positive, got {value!r}")
    return float(value)


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DPValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def leaf_domination(event: PrivacyEvent) -> GaussianDomination:
    """The dominating Gaussian (noise multiplier, extra δ per use) of one unsampled leaf."""
    if isinstance(event, GaussianEvent):
        z = _positive(event.noise_multiplier, "noise_multiplier")
        return GaussianDomination(z, 0.0, 1.0 / z, z, 1.0)
    if isinstance(event, DiscreteGaussianEvent):
        sigma = _positive(event.sigma, "sigma")
        return dominate(
            kind="dg",
            variance=sigma * sigma,
            l2_sensitivity=_positive(event.l2_sensitivity, "l2_sensitivity"),
            l1_sensitivity=math.inf,
            dimension=_count(event.dimension, "dimension"),
        )
    if isinstance(event, DistributedDiscreteGaussianEvent):
        # n = the honest shares every released sum is guaranteed to hold (never the
        # expected count); more shares are independent extra noise, a post-processing
        sigma = _positive(event.local_sigma, "local_sigma")
        n = _count(event.min_contributors, "min_contributors")
        return dominate(
            kind="dg",
            variance=n * sigma * sigma,
            l2_sensitivity=_positive(event.l2_sensitivity, "l2_sensitivity"),
            l1_sensitivity=_positive(event.l1_sensitivity, "l1_sensitivity"),
            dimension=_count(event.dimension, "dimension"),
            mixture_log_ratio=ddg_mixture_log_ratio(sigma, n),
        )
    if isinstance(event, DistributedSkellamEvent | DistributedSkellamCountsEvent):
        # a sum of independent symmetric Skellams is exactly a symmetric Skellam
        var = _positive(event.local_variance, "local_variance")
        n = _count(event.min_contributors, "min_contributors")
        total = n * var
        if total > MAX_SKELLAM_VARIANCE:
            raise UnsupportedEventError(
                f"the discrete-pld accountant certifies Skellam variances up to "
                f"{MAX_SKELLAM_VARIANCE:g} (got {total:g}); use the RDP accountant"
            )
        if isinstance(event, DistributedSkellamCountsEvent):
            ones = _count(event.max_ones, "max_ones")
            return dominate(
                kind="skellam",
                variance=total,
                l2_sensitivity=math.sqrt(ones),
                l1_sensitivity=float(ones),
                dimension=_count(event.dimension, "dimension"),
                max_coordinate=1,  # 0/1 contributions: every coordinate moves by ≤ 1
            )
        return dominate(
            kind="skellam",
            variance=total,
            l2_sensitivity=_positive(event.l2_sensitivity, "l2_sensitivity"),
            l1_sensitivity=_positive(event.l1_sensitivity, "l1_sensitivity"),
            dimension=_count(event.dimension, "dimension"),
        )
    raise UnsupportedEventError(
        f"the discrete-pld accountant does not support {event.type_name} events; "
        "use the RDP accountant"
    )


def mechanism_domination(mechanism: SampledMechanism) -> GaussianDomination:
    """All leaves on one sample as one dominating Gaussian: noise multipliers combine as
    σ⁻² = Σ σ_i⁻² (Gaussian pairs compose exactly), the extra masses add up."""
    inv = 0.0
    extra = 0.0
    for leaf, count in mechanism.leaves:
        dom = leaf_domination(leaf)
        if dom.extra_delta > MAX_EXTRA_DELTA_PER_USE:
            raise UnsupportedEventError(
                f"{leaf.type_name}: the noise is too small for the discrete-pld accountant "
                f"(its Gaussian domination would charge δ {dom.extra_delta:.2g} per use); "
                "use the RDP accountant"
            )
        inv += count / dom.noise_multiplier**2
        extra += count * dom.extra_delta
    sigma = 1.0 / math.sqrt(inv)
    return GaussianDomination(sigma, extra, 1.0 / sigma, sigma, 1.0)


@dataclass(frozen=True)
class DiscretePldBracket:
    """The answer with how it was computed."""

    epsilon_lower: float
    epsilon_upper: float
    extra_delta: float
    smallest_noise_multiplier: float
    value_discretization_interval: float
    fft_points: int


class DiscretePldAccountant(CachedBracketAccountant[DiscretePldBracket]):
    """PLD accountant for Poisson-sampled or unsampled discrete (and Gaussian) releases,
    through proven Gaussian dominating pairs; every answer is an upper bound."""

    name = "discrete-pld"

    def __init__(
        self, *, relative_tolerance: float = 1e-3, absolute_tolerance: float = 1e-3
    ) -> None:
        super().__init__()
        self._rtol = relative_tolerance
        self._atol = absolute_tolerance
        self._dominations: dict[SampledMechanism, GaussianDomination] = {}

    def _domination(self, mechanism: SampledMechanism) -> GaussianDomination:
        dom = self._dominations.get(mechanism)
        if dom is None:
            dom = self._dominations[mechanism] = mechanism_domination(mechanism)
        return dom

    def _check(self, mechanism: SampledMechanism) -> None:
        self._domination(mechanism)

    def phases(self) -> tuple[list[GaussianPhase], float]:
        """The dominating composition as (q, σ, steps) phases, and the total extra δ."""
        merged: dict[tuple[float, float], int] = {}
        extra = 0.0
        for mech, count in self._mechanisms.items():
            dom = self._domination(mech)
            key = (mech.sampling_rate, dom.noise_multiplier)
            merged[key] = merged.get(key, 0) + count
            extra += count * dom.extra_delta
        return [GaussianPhase(q, s, n) for (q, s), n in sorted(merged.items())], extra

    def _compute_bracket(self, delta: float, want_lower: bool) -> DiscretePldBracket:
        phases, extra = self.phases()
        if extra >= 0.5 * delta:
            raise DPValueError(
                f"δ={delta:g} is too small for the discrete-pld accountant: its Gaussian "
                f"domination already charges {extra:.3g}; use the RDP accountant"
            )
        pld = gaussian_pld_bracket(
            phases,
            delta - extra,
            relative_tolerance=self._rtol,
            absolute_tolerance=self._atol,
            want_lower=False,
        )
        return DiscretePldBracket(
            epsilon_lower=0.0,
            epsilon_upper=pld.epsilon_upper,
            extra_delta=extra,
            smallest_noise_multiplier=min(ph.noise_multiplier for ph in phases),
            value_discretization_interval=pld.value_discretization_interval,
            fft_points=pld.fft_points,
        )

    def _bracket_detail(self, bracket: DiscretePldBracket) -> str:
        return (
            "Gaussian-dominated PLD of the discrete releases (smallest dominating noise "
            f"multiplier {bracket.smallest_noise_multiplier:.6g}, extra δ "
            f"{bracket.extra_delta:.2g}), connect-the-dots, value interval "
            f"{bracket.value_discretization_interval:.3g}; lower end not certified"
        )
