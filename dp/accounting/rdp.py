"""The RDP backend: fast, conservative, and the only one covering the discrete mechanisms.

Each distinct sampled mechanism's per-use RDP curve is computed once (cached) and scaled by
its count; ε comes from the Balle et al. 2020 conversion over :data:`ORDERS`. RDP is looser
than a PLD for the subsampled Gaussian (up to 1.8× at q = 0.001, ``research/dp.md`` §3), so
the function API defaults to the PLD backend and uses this one for DDG / Skellam / discrete
Laplace events and as the independent cross-check in ``privagg audit``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np

from dp.accounting import rdp_analysis as ra
from dp.accounting.base import Accountant, EpsilonBracket, SampledMechanism
from dp.errors import DPValueError, UnsupportedEventError
from dp.events import (
    DiscreteGaussianEvent,
    DiscreteLaplaceEvent,
    DistributedDiscreteGaussianEvent,
    DistributedSkellamCountsEvent,
    DistributedSkellamEvent,
    GaussianEvent,
    PrivacyEvent,
)

Curve = Callable[[ra.FloatArray], ra.FloatArray]


class RdpOrderWarning(UserWarning):
    """The optimal RDP order is at the edge of the order grid: ε may be loose (not wrong)."""


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


def leaf_curve(event: PrivacyEvent) -> Curve:
    """The RDP curve (as a function of the orders) of one unsampled leaf event."""
    if isinstance(event, GaussianEvent):
        sigma = _positive(event.noise_multiplier, "noise_multiplier")
        return lambda orders: ra.gaussian_rdp(sigma, 1.0, orders)
    if isinstance(event, DiscreteGaussianEvent):
        sens = _positive(event.l2_sensitivity, "l2_sensitivity")
        sigma = _positive(event.sigma, "sigma")
        return lambda orders: ra.gaussian_rdp(sigma, sens, orders)
    if isinstance(event, DiscreteLaplaceEvent):
        eps0 = _positive(event.l1_sensitivity, "l1_sensitivity") / _positive(event.scale, "scale")
        return lambda orders: ra.pure_dp_rdp(eps0, orders)
    if isinstance(event, DistributedDiscreteGaussianEvent):
        # n is the number of honest contributions every released sum is guaranteed to contain
        # (never the expected count): dropouts and corrupt clients cannot push it lower.
        d2 = _positive(event.l2_sensitivity, "l2_sensitivity")
        d1 = _positive(event.l1_sensitivity, "l1_sensitivity")
        sigma = _positive(event.local_sigma, "local_sigma")
        dim = _count(event.dimension, "dimension")
        n = _count(event.min_contributors, "min_contributors")
        return lambda orders: ra.ddg_sum_rdp(
            l2_sensitivity=d2,
            l1_sensitivity=d1,
            local_sigma=sigma,
            dimension=dim,
            n=n,
            orders=orders,
        )
    if isinstance(event, DistributedSkellamEvent):
        d2 = _positive(event.l2_sensitivity, "l2_sensitivity")
        d1 = _positive(event.l1_sensitivity, "l1_sensitivity")
        var = _positive(event.local_variance, "local_variance")
        _count(event.dimension, "dimension")
        n = _count(event.min_contributors, "min_contributors")
        return lambda orders: ra.skellam_rdp(
            l2_sensitivity=d2, l1_sensitivity=d1, variance=n * var, orders=orders
        )
    if isinstance(event, DistributedSkellamCountsEvent):
        # integer counts, no rotation/rounding: Δ₂ = √m, Δ₁ = m (AKL21 with the exact
        # sensitivities); the PLD backend "skellam-pld" is tight for unsampled uses
        _count(event.max_ones, "max_ones")
        d2, d1 = event.l2_sensitivity, event.l1_sensitivity
        var = _positive(event.local_variance, "local_variance")
        _count(event.dimension, "dimension")
        n = _count(event.min_contributors, "min_contributors")
        return lambda orders: ra.skellam_rdp(
            l2_sensitivity=d2, l1_sensitivity=d1, variance=n * var, orders=orders
        )
    raise UnsupportedEventError(f"the RDP accountant does not support {event.type_name} events")


def gaussian_noise_multiplier(mechanism: SampledMechanism) -> float | None:
    """Effective σ if every leaf is a (continuous) Gaussian on the same sample, else None.

    k Gaussians of σ_i on the same sample are one Gaussian with σ⁻² = Σ σ_i⁻² (the outputs
    are a sufficient statistic of each other), as in dp-accounting.
    """
    inv = 0.0
    for leaf, count in mechanism.leaves:
        if not isinstance(leaf, GaussianEvent):
            return None
        inv += count / _positive(leaf.noise_multiplier, "noise_multiplier") ** 2
    return 1.0 / math.sqrt(inv)


def mechanism_rdp(mechanism: SampledMechanism) -> ra.FloatArray:
    """Per-use RDP curve of a sampled mechanism on :data:`ORDERS`."""
    q = mechanism.sampling_rate
    sigma = gaussian_noise_multiplier(mechanism)
    if sigma is not None:
        return ra.sampled_gaussian_rdp(q, sigma)
    curves = [(leaf_curve(leaf), count) for leaf, count in mechanism.leaves]
    if q >= 1.0:
        return sum((c * f(ra.ORDERS) for f, c in curves), np.zeros_like(ra.ORDERS))
    base = sum((c * f(ra.INTEGER_ORDERS) for f, c in curves), np.zeros_like(ra.INTEGER_ORDERS))
    return ra.poisson_subsampled_rdp(base, q)


class RdpAccountant(Accountant):
    """Rényi-DP accountant over :data:`dp.accounting.rdp_analysis.ORDERS`."""

    name = "rdp"

    def __init__(self) -> None:
        super().__init__()
        self._curves: dict[SampledMechanism, ra.FloatArray] = {}

    def _check(self, mechanism: SampledMechanism) -> None:
        if gaussian_noise_multiplier(mechanism) is None:
            for leaf, _ in mechanism.leaves:
                leaf_curve(leaf)

    def rdp(self) -> ra.FloatArray:
        """The composed RDP curve on :data:`ORDERS` (∞ if anything was non-private)."""
        if self.is_non_private:
            return np.full_like(ra.ORDERS, np.inf)
        total = np.zeros_like(ra.ORDERS)
        for mech, count in self._mechanisms.items():
            curve = self._curves.get(mech)
            if curve is None:
                curve = self._curves[mech] = mechanism_rdp(mech)
            total = total + count * curve
        return total

    def get_epsilon_and_order(self, delta: float, *, warn: bool = True) -> tuple[float, float]:
        """(ε, optimal order); warns with :class:`RdpOrderWarning` at the grid's edge."""
        trivial = self._trivial(delta)
        if trivial is not None:
            return trivial.epsilon_upper, math.nan
        eps, order = ra.rdp_to_epsilon(self.rdp(), delta)
        if warn and order in (float(ra.ORDERS[0]), float(ra.ORDERS[-1])) and eps > 0:
            warnings.warn(
                f"the optimal RDP order is {order:g}, at the edge of the order grid: ε={eps:.6g} "
                "is valid but may be loose",
                RdpOrderWarning,
                stacklevel=2,
            )
        return eps, order

    def get_epsilon_bracket(self, delta: float) -> EpsilonBracket:
        eps, order = self.get_epsilon_and_order(delta, warn=False)
        detail = "" if math.isnan(order) else f"optimal order {order:g}"
        # RDP gives an upper bound only; its lower end is 0 (nothing certified from below).
        return EpsilonBracket(0.0 if eps > 0 else eps, eps, delta, self.name, detail)

    def get_epsilon(self, delta: float) -> float:
        """The ε at ``delta`` (warns with :class:`RdpOrderWarning` at the order grid's edge)."""
        return self.get_epsilon_and_order(delta, warn=True)[0]
