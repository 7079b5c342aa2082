"""Plan a distributed-DP round before training: granularity γ, norm bound, noise shares,
wrap-around probability and the ε inflation from discretization.

The pipeline (see :mod:`dp.distributed`) maps a clipped float update x (‖x‖₂ ≤ c) to
integers x̃ = round(R·x/γ) with ‖x̃‖₂ ≤ Δ₂ (conditional randomized rounding, Kairouz, Liu,
Steinke 2021), adds integer noise and reduces mod 2^b. The planner:

* calibrates the *central* noise in integer units to σ = z·c/γ (the float mechanism's
  z·c), split into shares of variance σ²/n_min so the sum over any n_min honest survivors
  already carries it (shares are rounded *up* to exact rationals). Under SecAgg n_min must
  be the fewest honest survivors the *protocol* lets a server release, t − n_C
  (:func:`worst_case_contributors`), not the expected survivors: a server that keeps about t
  survivors would otherwise release a sum with a fraction of the planned noise. The price is
  extra noise whenever more survive: :meth:`DistributedDPPlan.extra_noise_factor`;
* picks the finest γ for which a rigorous bound on the probability that any coordinate of
  the aggregate leaves [−2^(b−1), 2^(b−1)) is at most ``wrap_target`` (honest clients);
* reports Δ₂ from Kairouz et al. (the integer L2 sensitivity the encoder enforces), the
  inflation Δ₂/(c/γ) — the factor by which discretization weakens the noise multiplier —
  and raises :class:`~dp.errors.PlanningError` when wrap-around is likely or the
  inflation exceeds ``max_l2_inflation``.

**Wrap bound.** With public random signs independent of the data, coordinate j of the
signal R·Σx_i/γ is a Rademacher sum with variance proxy ‖Σx_i‖²/(dγ²) ≤ n²c²/(dγ²); each
client's rounding error lies in an interval of length 1 (proxy 1/4); the discrete Gaussian
N_Z(0, s²) is s²-subgaussian (Canonne et al. 2020) and Skellam with variance μ has log-mgf
μ(cosh θ − 1). A Chernoff bound per coordinate, doubled for both tails and multiplied by
the padded dimension (union bound), gives the reported probability. The rounding term
treats rounding as independent; conditional rounding's resampling (rare, probability
≲ β) is ignored there.

**Integer counts** (:func:`plan_distributed_counts`). When every contribution already is a
0/1 vector with at most m ones (e.g. capped popularity), there is nothing to rotate or
round: the counts are summed as they are under symmetric Skellam shares, whose sum is again
an exact symmetric Skellam. The event (:class:`~dp.events.DistributedSkellamCountsEvent`)
then has an exact privacy loss (m unit shifts) instead of the rotated path's RDP bound and
sensitivity inflation; the wrap bound is the Skellam Chernoff tail beyond 2^(b−1) − n_max.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from dp.errors import DPValueError, PlanningError
from dp.events import (
    DistributedDiscreteGaussianEvent,
    DistributedSkellamCountsEvent,
    DistributedSkellamEvent,
    NonPrivateEvent,
    PoissonSampledEvent,
    PrivacyEvent,
    QuantizationInfo,
)
from dp.rotation import padded_dimension
from dp.samplers import float_at_most, rational_at_least, sqrt_at_most

__all__ = [
    "DEFAULT_BETA",
    "DistributedDPPlan",
    "Encoding",
    "Mechanism",
    "counts_wrap_probability_bound",
    "kairouz_l2_bound",
    "plan_distributed_counts",
    "plan_distributed_dp",
    "worst_case_contributors",
    "wrap_probability_bound",
]

Mechanism = Literal["ddg", "skellam"]
Encoding = Literal["rotated", "counts"]
DEFAULT_BETA = math.exp(-0.5)
_MAX_BITS = 62  # integer intermediate values must fit in int64
_MAX_SQUARED_NORM = 2**62


@dataclass(frozen=True)
class DistributedDPPlan:
    """Everything a client needs to encode and the server needs to decode and account.

    ``local_variance`` is the exact rational per-client noise variance in integer units (the
    discrete Gaussian's σ² or the Skellam's μ); ``l2_bound_sq`` is the integer bound the
    encoder enforces on ‖x̃‖₂²; ``l2_sensitivity`` = √l2_bound_sq rounded up.
    """

    mechanism: Mechanism
    dimension: int
    padded_dimension: int
    clip_norm: float
    noise_multiplier: float
    bits: int
    expected_contributors: int
    min_contributors: int
    max_contributors: int
    gamma: float
    beta: float
    l2_bound_sq: int
    l2_sensitivity: float
    l1_sensitivity: float
    local_variance: Fraction
    wrap_probability: float
    l2_inflation: float
    sampling_probability: float | None = None
    encoding: Encoding = "rotated"

    @property
    def max_ones(self) -> int | None:
        """For a counts plan, the most ones one contribution may hold (else ``None``)."""
        return self.l2_bound_sq if self.encoding == "counts" else None

    @property
    def modulus(self) -> int:
        """The ring size 2^bits."""
        return 1 << self.bits

    @property
    def central_variance(self) -> Fraction:
        """Noise variance (integer units) of a sum over exactly ``min_contributors`` shares."""
        return self.local_variance * self.min_contributors

    @property
    def effective_noise_multiplier(self) -> float:
        """Central noise std over the integer sensitivity Δ₂: what the accountant sees
        (≈ z / l2_inflation)."""
        return sqrt_at_most(self.central_variance) / self.l2_sensitivity

    def extra_noise_factor(self, contributors: int) -> float:
        """Noise std of a sum of ``contributors`` shares over the calibrated std (that of
        ``min_contributors`` shares): √(contributors / min_contributors), the cost of sizing
        the plan for the worst case (≥ 1 whenever more than the minimum survive)."""
        return math.sqrt(max(contributors, 0) / self.min_contributors)

    def quantization_error_bound(self, num_contributors: int) -> float:
        """Worst-case L2 distance between the decoded noiseless sum and the clipped float
        sum: every rounding error is below 1 in each of the padded coordinates (counts are
        not rounded at all)."""
        if self.encoding == "counts":
            return 0.0
        return self.gamma * num_contributors * math.sqrt(self.padded_dimension)

    def summary(self) -> str:
        """A human-readable account of the plan (what to check before training)."""
        factor = self.extra_noise_factor(self.expected_contributors)
        extra = (
            f"noise sized for {self.min_contributors} honest shares: a sum of the expected "
            f"{self.expected_contributors} carries {factor:.3g}x the calibrated noise std"
        )
        if self.encoding == "counts":
            return "\n".join(
                [
                    f"distributed SKELLAM on integer counts: d={self.dimension}, ring "
                    f"2^{self.bits}, at most {self.l2_bound_sq} ones per contribution",
                    f"contributors: min {self.min_contributors}, expected "
                    f"{self.expected_contributors}, ring sized for {self.max_contributors}",
                    f"noise multiplier z={self.noise_multiplier:g} on L2 sensitivity "
                    f"{self.l2_sensitivity:.6g} (no rotation, no rounding, no inflation)",
                    f"per-client noise variance {float(self.local_variance):.6g}",
                    extra,
                    f"wrap-around probability <= {self.wrap_probability:.3g} per round",
                ]
            )
        return "\n".join(
            [
                f"distributed {self.mechanism.upper()}: d={self.dimension} "
                f"(padded {self.padded_dimension}), ring 2^{self.bits}",
                f"contributors: min {self.min_contributors}, expected "
                f"{self.expected_contributors}, ring sized for {self.max_contributors}",
                f"granularity gamma={self.gamma:.6g}, clip c={self.clip_norm:g} -> "
                f"c/gamma={self.clip_norm / self.gamma:.6g}",
                f"integer L2 sensitivity {self.l2_sensitivity:.6g} (inflation "
                f"{self.l2_inflation:.6f}), L1 {self.l1_sensitivity:.6g}",
                f"noise multiplier z={self.noise_multiplier:g} -> effective "
                f"{self.effective_noise_multiplier:.6f} on the integer sensitivity",
                f"per-client noise variance {float(self.local_variance):.6g} (integer units)",
                extra,
                f"wrap-around probability <= {self.wrap_probability:.3g} per round",
            ]
        )

    def event(self, *, secure: bool) -> PrivacyEvent:
        """The privacy event of one round run with this plan (a pure function of the plan)."""
        if self.local_variance == 0:
            return NonPrivateEvent()
        inner: PrivacyEvent
        if self.encoding == "counts":
            inner = DistributedSkellamCountsEvent(
                max_ones=self.l2_bound_sq,
                local_variance=float_at_most(self.local_variance),
                dimension=self.dimension,
                min_contributors=self.min_contributors,
                expected_contributors=self.expected_contributors,
                secure=secure,
            )
            if self.sampling_probability is not None:
                return PoissonSampledEvent(self.sampling_probability, inner)
            return inner
        quant = QuantizationInfo(
            clip_norm=self.clip_norm,
            gamma=self.gamma,
            beta=self.beta,
            bits=self.bits,
            rotation="hadamard",
            padded_dimension=self.padded_dimension,
        )
        if self.mechanism == "ddg":
            inner = DistributedDiscreteGaussianEvent(
                l2_sensitivity=self.l2_sensitivity,
                l1_sensitivity=self.l1_sensitivity,
                local_sigma=sqrt_at_most(self.local_variance),
                dimension=self.padded_dimension,
                min_contributors=self.min_contributors,
                expected_contributors=self.expected_contributors,
                secure=secure,
                quantization=quant,
            )
        else:
            inner = DistributedSkellamEvent(
                l2_sensitivity=self.l2_sensitivity,
                l1_sensitivity=self.l1_sensitivity,
                local_variance=float_at_most(self.local_variance),
                dimension=self.padded_dimension,
                min_contributors=self.min_contributors,
                expected_contributors=self.expected_contributors,
                secure=secure,
                quantization=quant,
            )
        if self.sampling_probability is not None:
            return PoissonSampledEvent(sampling_probability=self.sampling_probability, event=inner)
        return inner


def worst_case_contributors(threshold: int, corrupt: int, survivors_bound: int) -> int:
    """The ``min_contributors`` a plan must use under secure aggregation with threshold
    ``threshold`` and ``corrupt`` assumed-corrupt clients: the server may release any sum of
    t survivors, n_C of which add no honest noise, so min(t − n_C, ``survivors_bound``)
    (at least 1; ``survivors_bound`` is the statistical bound on survivors, e.g.
    E(1 − p) − 4σ, which binds when dropouts leave fewer than t − n_C)."""
    t = _check_int("threshold", threshold, 1)
    c = _check_int("corrupt", corrupt, 0)
    bound = _check_int("survivors_bound", survivors_bound, 1)
    return max(1, min(t - c, bound))


def kairouz_l2_bound(scaled_clip: float, dimension: int, beta: float) -> float:
    """Δ₂ of conditional randomized rounding (Kairouz, Liu, Steinke 2021):
    Δ₂² = min{(c/γ + √d)², c²/γ² + d/4 + √(2 ln(1/β))·(c/γ + √d/2)}."""
    root_d = math.sqrt(dimension)
    crude = (scaled_clip + root_d) ** 2
    if beta <= 0.0:
        return math.sqrt(crude)
    tight = (
        scaled_clip**2
        + dimension / 4.0
        + math.sqrt(2.0 * math.log(1.0 / beta)) * (scaled_clip + root_d / 2.0)
    )
    return math.sqrt(min(crude, tight))


def wrap_probability_bound(
    *,
    padded_dim: int,
    num_contributors: int,
    scaled_clip: float,
    noise_variance: float,
    mechanism: Mechanism,
    bits: int,
) -> float:
    """Upper bound on P(some coordinate of the honest aggregate leaves the centred ring).

    ``scaled_clip`` is c/γ, ``noise_variance`` the total noise variance per coordinate in
    integer units for ``num_contributors`` shares.
    """
    n = num_contributors
    subgaussian = n * n * scaled_clip**2 / padded_dim + n / 4.0
    skellam_var = 0.0
    if mechanism == "ddg":
        subgaussian += noise_variance
    else:
        skellam_var = noise_variance
    return _chernoff_union(padded_dim, float(1 << (bits - 1)), subgaussian, skellam_var)


def counts_wrap_probability_bound(
    *, dimension: int, max_contributors: int, noise_variance: float, bits: int
) -> float:
    """P(some coordinate of a counts sum leaves the centred ring): the counts lie in
    [0, n_max], so only a Skellam excursion beyond 2^(b−1) − n_max can wrap."""
    room = float(1 << (bits - 1)) - max_contributors
    if room <= 0:
        return 1.0
    return _chernoff_union(dimension, room, 0.0, noise_variance)


def _chernoff_union(dimension: int, half: float, subgaussian: float, skellam_var: float) -> float:
    """2·d·min_θ exp(−θ·half + log-mgf(θ)) for a variance proxy plus a Skellam variance."""

    def log_tail(theta: float) -> float:
        value = -theta * half + subgaussian * theta * theta / 2.0
        if skellam_var:
            value += skellam_var * math.expm1(math.log(math.cosh(theta)))
        return value

    # Chernoff: minimize the convex log-tail over θ > 0 by golden-section search on log θ.
    lo, hi = math.log(1e-12), math.log(50.0)
    phi = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(200):
        a = hi - phi * (hi - lo)
        b = lo + phi * (hi - lo)
        if log_tail(math.exp(a)) < log_tail(math.exp(b)):
            hi = b
        else:
            lo = a
    best = min(log_tail(math.exp(lo)), log_tail(math.exp(hi)), 0.0)
    return min(1.0, 2.0 * dimension * math.exp(best))


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DPValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_float(name: str, value: object, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DPValueError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or v < 0.0 or (positive and v == 0.0):
        raise DPValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}")
    return v


def _check_release(
    dimension: int,
    expected_contributors: int,
    min_contributors: int,
    max_contributors: int | None,
    noise_multiplier: float,
    bits: int,
) -> tuple[int, int, int, int, float, int]:
    """The checks every plan shares: (d, n_expected, n_min, n_max, z, bits)."""
    d = _check_int("dimension", dimension, 1)
    n_exp = _check_int("expected_contributors", expected_contributors, 1)
    n_min = _check_int("min_contributors", min_contributors, 1)
    n_max = (
        n_exp if max_contributors is None else _check_int("max_contributors", max_contributors, 1)
    )
    if not n_min <= n_exp <= n_max:
        raise DPValueError("need min_contributors <= expected_contributors <= max_contributors")
    z = _check_float("noise_multiplier", noise_multiplier, positive=False)
    b = _check_int("bits", bits, 2)
    if b > _MAX_BITS:
        raise DPValueError(f"bits must be <= {_MAX_BITS}")
    return d, n_exp, n_min, n_max, z, b


def plan_distributed_dp(
    *,
    dimension: int,
    expected_contributors: int,
    min_contributors: int,
    clip_norm: float,
    noise_multiplier: float,
    bits: int,
    mechanism: Mechanism = "ddg",
    beta: float = DEFAULT_BETA,
    wrap_target: float = 1e-9,
    max_contributors: int | None = None,
    max_l2_inflation: float | None = None,
    sampling_probability: float | None = None,
    max_denominator: int = 1 << 20,
) -> DistributedDPPlan:
    """Choose γ and the norm bound for a distributed DDG/Skellam round, or refuse.

    ``min_contributors`` is the number of honest noise shares guaranteed in any released
    sum (e.g. the SecAgg threshold minus assumed corruptions); ``max_contributors``
    (default: ``expected_contributors``) sizes the ring. ``noise_multiplier`` = 0 plans a
    noiseless (non-private) round whose event is :class:`~dp.events.NonPrivateEvent`.
    """
    d, n_exp, n_min, n_max, z, b = _check_release(
        dimension, expected_contributors, min_contributors, max_contributors, noise_multiplier, bits
    )
    c = _check_float("clip_norm", clip_norm, positive=True)
    if mechanism not in ("ddg", "skellam"):
        raise DPValueError(f"mechanism must be 'ddg' or 'skellam', got {mechanism!r}")
    if not 0.0 <= beta < 1.0:
        raise DPValueError("beta must be in [0, 1)")
    if not 0.0 < wrap_target < 1.0:
        raise DPValueError("wrap_target must be in (0, 1)")
    if sampling_probability is not None and not 0.0 < sampling_probability <= 1.0:
        raise DPValueError("sampling_probability must be in (0, 1]")
    d_pad = padded_dimension(d)

    def noise_var(gamma: float) -> Fraction:
        if z == 0.0:
            return Fraction(0)
        sigma_int = z * c / gamma
        return rational_at_least(Fraction(sigma_int) ** 2 / n_min, max_denominator)

    def wrap(gamma: float) -> float:
        local = noise_var(gamma)
        return wrap_probability_bound(
            padded_dim=d_pad,
            num_contributors=n_max,
            scaled_clip=c / gamma,
            noise_variance=float(local * n_max),
            mechanism=mechanism,
            bits=b,
        )

    # The bound falls as γ grows (everything but the rounding term shrinks); search the
    # smallest γ meeting the target on a log scale.
    hi = c * 1e6
    if wrap(hi) > wrap_target:
        raise PlanningError(
            f"{b} bits cannot hold the sum of {n_max} contributors (rounding alone makes "
            f"wrap-around probability exceed {wrap_target:g}); use more bits"
        )
    # Finer γ than this would overflow int64 in ‖x̃‖² (and gains nothing: by then the
    # discretization inflation is ~1 + 2^-30).
    lo = c / (math.sqrt(_MAX_SQUARED_NORM) * (1.0 - 2.0**-20) - math.sqrt(d_pad) - 2.0)
    if lo <= 0.0 or lo >= hi:
        raise PlanningError(f"dimension {d} is too large for int64 norm checks")
    if wrap(lo) <= wrap_target:
        hi = lo
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        if wrap(mid) <= wrap_target:
            hi = mid
        else:
            lo = mid
    gamma = hi
    scaled_clip = c / gamma
    delta2 = kairouz_l2_bound(scaled_clip, d_pad, beta)
    if (scaled_clip + math.sqrt(d_pad)) ** 2 >= _MAX_SQUARED_NORM:  # pragma: no cover
        raise PlanningError("the integer norm would not fit int64")
    l2_bound_sq = math.floor(delta2 * delta2)
    l2_sensitivity = math.nextafter(math.sqrt(l2_bound_sq), math.inf)
    l1_sensitivity = math.nextafter(
        min(math.sqrt(d_pad) * l2_sensitivity, float(l2_bound_sq)), math.inf
    )
    inflation = l2_sensitivity / scaled_clip
    if max_l2_inflation is not None and inflation > max_l2_inflation:
        raise PlanningError(
            f"{b} bits: holding the sum of {n_max} contributors of {d} coordinates needs a "
            f"granularity that inflates the L2 sensitivity by {inflation:.4f} > "
            f"{max_l2_inflation} (more noise for the same ε); use more bits or a larger clip"
        )
    return DistributedDPPlan(
        mechanism=mechanism,
        dimension=d,
        padded_dimension=d_pad,
        clip_norm=c,
        noise_multiplier=z,
        bits=b,
        expected_contributors=n_exp,
        min_contributors=n_min,
        max_contributors=n_max,
        gamma=gamma,
        beta=beta,
        l2_bound_sq=l2_bound_sq,
        l2_sensitivity=l2_sensitivity,
        l1_sensitivity=l1_sensitivity,
        local_variance=noise_var(gamma),
        wrap_probability=wrap(gamma),
        l2_inflation=inflation,
        sampling_probability=sampling_probability,
    )


def plan_distributed_counts(
    *,
    dimension: int,
    max_ones: int,
    expected_contributors: int,
    min_contributors: int,
    noise_multiplier: float,
    bits: int,
    wrap_target: float = 1e-9,
    max_contributors: int | None = None,
    sampling_probability: float | None = None,
    max_denominator: int = 1 << 20,
) -> DistributedDPPlan:
    """Plan a distributed Skellam release of integer counts, or refuse.

    Every contribution must be a 0/1 vector of length ``dimension`` with at most
    ``max_ones`` ones (the encoder checks it). The central noise is Skellam of variance
    (z·√max_ones)² per coordinate, split into rational shares (rounded up) over
    ``min_contributors``; raises :class:`~dp.errors.PlanningError` when ``bits`` cannot
    hold ``max_contributors`` full counts plus the noise with probability ≥ 1 − wrap_target.
    """
    d, n_exp, n_min, n_max, z, b = _check_release(
        dimension, expected_contributors, min_contributors, max_contributors, noise_multiplier, bits
    )
    m = _check_int("max_ones", max_ones, 1)
    if not 0.0 < wrap_target < 1.0:
        raise DPValueError("wrap_target must be in (0, 1)")
    if sampling_probability is not None and not 0.0 < sampling_probability <= 1.0:
        raise DPValueError("sampling_probability must be in (0, 1]")
    local = (
        Fraction(0)
        if z == 0.0
        else rational_at_least(Fraction(z) ** 2 * m / n_min, max_denominator)
    )
    wrap = counts_wrap_probability_bound(
        dimension=d, max_contributors=n_max, noise_variance=float(local * n_max), bits=b
    )
    if wrap > wrap_target:
        raise PlanningError(
            f"{b} bits cannot hold counts of {n_max} contributors plus their noise "
            f"(wrap-around probability {wrap:.3g} > {wrap_target:g}); use more bits"
        )
    sensitivity = math.sqrt(m)
    return DistributedDPPlan(
        mechanism="skellam",
        dimension=d,
        padded_dimension=d,
        clip_norm=sensitivity,
        noise_multiplier=z,
        bits=b,
        expected_contributors=n_exp,
        min_contributors=n_min,
        max_contributors=n_max,
        gamma=1.0,
        beta=0.0,
        l2_bound_sq=m,
        l2_sensitivity=math.nextafter(sensitivity, math.inf),
        l1_sensitivity=float(m),
        local_variance=local,
        wrap_probability=wrap,
        l2_inflation=1.0,
        sampling_probability=sampling_probability,
        encoding="counts",
    )
