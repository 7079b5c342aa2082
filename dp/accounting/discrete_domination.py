"""Gaussian dominating pairs for integer vectors released under discrete noise (pure functions).

A distributed discrete Gaussian or Skellam release adds, to an integer vector x of integer L2
norm ≤ Δ₂, independent noise Z of one symmetric log-concave law p on ℤ per coordinate (a
discrete Gaussian of the summed variance, up to a proven mixture remainder, or an exact
Skellam). This module computes a number μ₁ and a mass η such that for every admissible
integer shift x and every α ≥ 0

    H_α(x + Z ‖ Z)  ≤  H_α(N(μ₁·Δ₂, 1) ‖ N(0, 1)) + η                              (★)

(H_α the hockey-stick divergence), i.e. the release is dominated, up to an additive η, by a
continuous Gaussian mechanism of noise multiplier 1/(μ₁Δ₂). The argument (written out with
references in ``docs/accounting.md``, section "Sampled distributed discrete releases"):

1. **One coordinate, one tradeoff vertex at a time.** p is log-concave, so the likelihood
   ratio of (p(·−k), p) is monotone and the optimal tests are thresholds. With
   g(m) = Φ⁻¹(P(Z ≤ m)), the threshold test at t lies below the Gaussian pair of mean μ
   exactly when g(t−1) − g(t−1−k) ≤ μ. Hence the shift-k pair is dominated by N(μ_k, 1)
   with μ_k = sup_m g(m+k) − g(m) ≤ k·μ₁, μ₁ := sup_m g(m+1) − g(m) (a telescoping sum).
2. **Product.** The coordinates are independent and Gaussian pairs compose exactly:
   ⊗ N(μ_{k_i}) = N(√Σμ_{k_i}²) and Σ μ_{k_i}² ≤ μ₁² Σ k_i² ≤ μ₁² Δ₂² (Dong, Roth, Su 2022,
   tensorization; Zhu, Dong, Wang 2022, Thm 10 for dominating pairs).
3. **Tails.** μ₁ is the maximum over m ∈ [−M−1, M] only; thresholds beyond cost at most
   P(Z ≥ M + 1 − k_max) each coordinate, added to η (for every α, see the doc).
4. **Sum of discrete Gaussians.** n shares of N_ℤ(0, σ²) are not a discrete Gaussian, but
   (Poisson summation, as in Kairouz, Liu, Steinke 2021 §4) their law is ≥ e^{−Λ}·N_ℤ(0, nσ²)
   pointwise, so it is the mixture e^{−Λ}·N_ℤ(0, nσ²) + (1 − e^{−Λ})·r; joint convexity of
   H_α charges (1 − e^{−Λ}) per shifted coordinate to η.

μ₁ is computed with outward rounding: every probability is bounded from the correct side
(log-concavity gives chord lower bounds on tail sums; Chernoff bounds cover what is cut) and
every increment g(m+1) − g(m) is bounded above by p(m+1)/φ(g(m+1)) (mean value theorem
on Φ̄⁻¹) or by the difference of outward-rounded quantiles. Small noise scales are computed
point by point; large ones on blocks whose widths keep the blocking overhead near 0.3 %.

Why hand-written: no library has a privacy loss distribution for sums of discrete Gaussians
or for the multidimensional Skellam; dp_accounting's PLDs cover one-dimensional pmfs, whose
worst case over the integer shifts of bounded L2 norm is not a one-dimensional question.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy import special

from dp.errors import DPValueError, UnsupportedEventError

FloatArray = NDArray[np.float64]

# Per-coordinate mass of the thresholds left unverified (charged to δ, per shifted
# coordinate and per use); tiny, so the interval checked is ≈ 12 noise standard deviations.
TAIL_MASS = 1e-32
# Block widths: the bound's overhead in a block is ≈ 2·tol (0.5 %) plus e^{x/s} (Mills).
BLOCK_TOLERANCE = 2.5e-3
# Multiplicative safety margins for floating-point error (documented in the module doc).
_P_MARGIN = 1e-10
_MU_MARGIN = 1e-9
_EPS = float(np.finfo(np.float64).eps)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
# Skellam pmfs come from scipy's exponentially scaled Bessel function, accurate to ≤ 1.3e-11
# relative (60-digit quadrature of (1/π)∫₀^π e^{μ(cos θ−1)} cos kθ dθ, in the tests) up to
# this variance; it returns NaN from 10¹⁰ on.
MAX_SKELLAM_VARIANCE = 1e9


@dataclass(frozen=True)
class NoiseLaw:
    """A symmetric log-concave law on ℤ: log pmf at j ≥ 0, a log tail bound, its scale."""

    name: str
    scale: float  # standard deviation (or its bound): sets the grid of the computation
    log_pmf: Callable[[FloatArray], FloatArray]
    log_tail: Callable[[float], float]  # log of an upper bound on P(Z ≥ t), t > 0
    pmf_relative_error: float
    dense_points: int  # up to this many points the bound is computed point by point


# ---------------------------------------------------------------------------- noise laws
def discrete_gaussian_log_norm(variance: float) -> float:
    """log Σ_z exp(−z²/(2v)): by Poisson summation √(2πv)·(1 + 2Σ_{j≥1} e^{−2π²vj²})."""
    if variance >= 0.25:
        j = np.arange(1, 8, dtype=np.float64)
        theta = 1.0 + 2.0 * float(np.exp(-2.0 * math.pi**2 * variance * j * j).sum())
        return 0.5 * math.log(2 * math.pi * variance) + math.log(theta)
    z = np.arange(1, 64, dtype=np.float64)
    return math.log(1.0 + 2.0 * float(np.exp(-z * z / (2.0 * variance)).sum()))


def discrete_gaussian_law(variance: float) -> NoiseLaw:
    """N_ℤ(0, v): p(z) ∝ exp(−z²/(2v)); P(Z ≥ t) ≤ exp(−t²/(2v)) (its MGF is at most the
    Gaussian's, Canonne, Kamath, Steinke 2020, Cor. 9)."""
    log_norm = discrete_gaussian_log_norm(variance)

    def log_pmf(j: FloatArray) -> FloatArray:
        out: FloatArray = -(j * j) / (2.0 * variance) - log_norm
        return out

    return NoiseLaw(
        name="discrete Gaussian",
        scale=math.sqrt(variance),
        log_pmf=log_pmf,
        log_tail=lambda t: -(t * t) / (2.0 * variance),
        pmf_relative_error=1e-13,
        dense_points=1 << 16,
    )


def skellam_log_tail(variance: float, k: float) -> float:
    """log of the Chernoff bound on P(X ≥ k) for symmetric Skellam X of variance μ, k ≥ 0:
    E e^{tX} = exp(μ(cosh t − 1)), optimal t = asinh(k/μ)."""
    x = k / variance
    return variance * (x * x / (math.sqrt(1.0 + x * x) + 1.0)) - k * math.asinh(x)


def skellam_law(variance: float) -> NoiseLaw:
    """Symmetric Skellam of variance μ (Poisson(μ/2) − Poisson(μ/2)): e^{−μ} I_|k|(μ)."""
    if not variance <= MAX_SKELLAM_VARIANCE:
        raise DPValueError(
            f"Skellam variance {variance:g} exceeds {MAX_SKELLAM_VARIANCE:g}, where the "
            "Bessel function evaluation is no longer certified"
        )

    def log_pmf(j: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore"):
            out: FloatArray = np.log(special.ive(j, variance))
        return out

    return NoiseLaw(
        name="Skellam",
        scale=math.sqrt(variance),
        log_pmf=log_pmf,
        log_tail=lambda t: skellam_log_tail(variance, t),
        pmf_relative_error=1e-9,  # measured ≤ 1.3e-11 against 60-digit quadrature
        dense_points=1 << 16,
    )


def ddg_mixture_log_ratio(local_sigma: float, n: int) -> float:
    """Λ with P(Σ_{i≤n} X_i = z) ≥ e^{−Λ}·N_ℤ(0, nσ²)(z) for all z, X_i iid N_ℤ(0, σ²).

    Adding one share to a sum of k−1 (induction): X ~ N_ℤ(0,a), Y ~ N_ℤ(0,b) give
    P(X+Y=z) = K·N_ℤ(0,a+b)(z)·Θ(z), where Θ is a Jacobi theta sum equal, by Poisson
    summation, to 1 + 2Σ_j e^{−2π²vj²}cos(2πjc_z) ∈ [1−ω, 1+ω] (v = ab/(a+b),
    ω = 2Σ_{j≥1} e^{−2π²vj²}); normalisation forces K ∈ [1/(1+ω), 1/(1−ω)], so the ratio is
    within [(1−ω)/(1+ω), (1+ω)/(1−ω)]. Summing the log ratios over k = 2..n gives Λ (the
    terms are those of Kairouz, Liu, Steinke 2021's τ). ∞ when some ω ≥ 1.
    """
    if n <= 1:
        return 0.0
    # terms decrease in k (v_k grows): the first 1000 exactly, every later one bounded by
    # the 1000th (an upper bound on Λ at bounded memory)
    exact = min(n, 1001)
    k = np.arange(2, exact + 1, dtype=np.float64)
    v = local_sigma**2 * (k - 1.0) / k
    # 60 terms: where ω < 1 (2π²v > 0.69) the omitted rest is below e^{−2500}; where it is
    # not, the partial sum alone already reaches 1
    j = np.arange(1, 61, dtype=np.float64)
    omega = 2.0 * np.exp(-2.0 * math.pi**2 * np.outer(v, j * j)).sum(axis=1)
    if float(omega.max()) >= 1.0:
        return math.inf
    terms = np.log1p(omega) - np.log1p(-omega)
    return float(np.sum(terms)) + (n - exact) * float(terms[-1])


# ---------------------------------------------------------------------- the certificate
@dataclass(frozen=True)
class UnitShiftBound:
    """μ₁ (per unit of integer shift) and the per-coordinate tail mass left unverified."""

    unit_mu: float
    tail_mass: float
    checked_up_to: int
    points: int


def _overshoot(scale: float) -> int:
    """How far past the checked range the tail sums run, so that the tail they omit is a
    negligible fraction of the tails that are used (there, P(Z ≥ m) falls by e^{−15/s}
    per step)."""
    return math.ceil(4.0 * scale) + 16


def _phi(x: FloatArray) -> FloatArray:
    out: FloatArray = np.exp(-0.5 * x * x - _LOG_SQRT_2PI)
    return out


def _dense_bound(law: NoiseLaw, m_max: int) -> tuple[float, int]:
    """max over m ∈ [−1, m_max] of an upper bound on g(m+1) − g(m), point by point (in log
    space: tails far below the float range stay exact)."""
    j_max = m_max + 2 + _overshoot(law.scale)
    tail_cut = law.log_tail(float(j_max + 1))
    j = np.arange(0, j_max + 1, dtype=np.float64)
    lp = law.log_pmf(j)
    if np.isnan(lp).any():
        raise DPValueError(f"{law.name} pmf could not be evaluated on the certified range")
    slack = math.log1p(law.pmf_relative_error + _P_MARGIN)
    # log suffix[i] = log Σ_{i ≤ j ≤ j_max} p(j): a lower bound on log P(Z ≥ i)
    log_suffix = np.logaddexp.accumulate(lp[::-1])[::-1]
    rel = (j_max + 4) * _EPS + law.pmf_relative_error + _P_MARGIN
    log_r_lo = log_suffix + math.log1p(-rel)
    log_r_hi = np.logaddexp(log_suffix, tail_cut) + math.log1p(rel)
    # g(m) = Φ⁻¹(P(Z ≤ m)) = −Φ⁻¹(P(Z ≥ m+1)) for m ≥ 0
    g_hi = -special.ndtri_exp(log_r_lo[1:])  # upper bounds on g(0..j_max−1)
    g_lo = -special.ndtri_exp(np.minimum(log_r_hi[1:], -math.log(2.0)))  # lower bounds
    m = np.arange(0, m_max + 1)  # the cumulative sums run further: accurate tails here
    upper = g_hi[m + 1]
    with np.errstate(invalid="ignore", over="ignore"):
        err = 1e-14 * (1.0 + np.abs(upper))
        diff = upper - g_lo[m] + err
        mills = np.exp(lp[m + 1] + slack + 0.5 * upper * upper + _LOG_SQRT_2PI)
    inc = np.fmin(np.where(np.isnan(diff), np.inf, diff), np.where(np.isnan(mills), np.inf, mills))
    # m = −1: g(0) − g(−1) = 2 g(0) (symmetry), and ≤ p(0)/φ(g(0))
    p0_hi = math.exp(float(lp[0]) + slack)
    g0 = float(-special.ndtri(max((1.0 - p0_hi) / 2.0, 0.0)))
    center = min(2.0 * g0 + 1e-15, p0_hi * math.exp(0.5 * g0 * g0 + _LOG_SQRT_2PI))
    return max(float(inc.max()), center), int(j.size)


def _block_edges(scale: float, last: int, coarse_from: int) -> NDArray[np.int64]:
    """Integers 0 = a_0 < … < a_L = last with widths ≈ tol·s / max(a/s, 1) up to
    ``coarse_from`` and s/64 beyond (there the segments only feed tail sums)."""
    tol = BLOCK_TOLERANCE
    x_last = coarse_from / scale
    # cumulative edge count N(x) = x/tol for x ≤ 1, (1 + (x² − 1)/2)/tol beyond
    n_total = (x_last if x_last <= 1 else 1.0 + (x_last * x_last - 1.0) / 2.0) / tol
    counts = np.arange(0, math.ceil(n_total) + 2, dtype=np.float64) * tol
    x = np.where(counts <= 1.0, counts, np.sqrt(np.maximum(2.0 * counts - 1.0, 1.0)))
    raw = np.floor(x * scale).astype(np.int64)  # non-decreasing: drop repeats in one pass
    edges = raw[np.concatenate([[True], raw[1:] != raw[:-1]])]
    edges = edges[edges < coarse_from]
    if edges[0] != 0:
        edges = np.concatenate([[0], edges])
    step = max(1, math.floor(scale / 64))
    beyond = np.arange(coarse_from, last + step, step, dtype=np.int64)
    return np.concatenate([edges, beyond])


def _block_bound(law: NoiseLaw, m_max: int) -> tuple[float, int]:
    """max over m ∈ [−1, m_max] of an upper bound on g(m+1) − g(m), block by block.

    For m+1 ∈ [a_i, a_{i+1} − 1]: g(m+1) − g(m) ≤ p(m+1)/φ(g(m+1)) ≤ p(a_i)/φ(ĝ), ĝ the
    quantile of a lower bound on P(Z ≥ a_{i+1}); tail sums are bounded below segment by
    segment by the chord of the concave log pmf (a geometric series).
    """
    last = m_max + 2 + _overshoot(law.scale)
    edges = _block_edges(law.scale, last, m_max + 2)
    a = edges.astype(np.float64)
    lp = law.log_pmf(a)
    if not np.all(np.isfinite(lp)):
        raise DPValueError(f"{law.name} pmf could not be evaluated on the certified range")
    width = np.diff(a)
    slope = np.diff(lp) / width  # log r of each segment's chord (≤ 0)
    p_left = np.exp(lp[:-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        geometric = np.where(slope < 0, np.expm1(width * slope) / np.expm1(slope), width)
    segment = p_left * geometric  # ≤ Σ_{a_i ≤ j < a_{i+1}} p(j) (chord below log p)
    rel = 4 * (a.size + 4) * _EPS + law.pmf_relative_error + _P_MARGIN
    tail_lo = np.cumsum(segment[::-1])[::-1] * (1.0 - rel)  # ≤ P(Z ≥ a_i)
    # block i needs P(Z ≥ a_{i+1}); only blocks starting at or below m_max + 1 matter, the
    # segments beyond only make their tails accurate
    used = int(np.searchsorted(a, m_max + 1, side="right"))
    right = tail_lo[1 : used + 1]
    g_hat = -special.ndtri(np.minimum(right, 0.5))
    p_hi = p_left[:used] * (1.0 + law.pmf_relative_error + _P_MARGIN)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        inc = p_hi / _phi(g_hat)
    inc = np.where(np.isnan(inc), np.inf, inc)
    return float(inc.max()), int(a.size)


@lru_cache(maxsize=512)
def _unit_shift_bound_cached(kind: str, parameter: float, max_shift: int) -> UnitShiftBound:
    law = discrete_gaussian_law(parameter) if kind == "dg" else skellam_law(parameter)
    # K: P(Z ≥ K) ≤ TAIL_MASS; then M = k_max + K − 1 (thresholds beyond are charged)
    target = math.log(TAIL_MASS)
    k_tail = max(2, math.ceil(law.scale * math.sqrt(-2.0 * target)))
    while law.log_tail(float(k_tail)) > target:
        k_tail = math.ceil(k_tail * 1.1) + 1
    m_max = max_shift + k_tail - 1
    if m_max + 3 <= law.dense_points:
        mu, points = _dense_bound(law, m_max)
    else:
        mu, points = _block_bound(law, m_max)
    tail = math.exp(law.log_tail(float(m_max + 1 - max_shift)))
    return UnitShiftBound(mu * (1.0 + _MU_MARGIN), tail, m_max, points)


def unit_shift_bound(kind: str, parameter: float, max_shift: int) -> UnitShiftBound:
    """μ₁ and the tail mass for ``kind`` ``"dg"`` (N_ℤ(0, parameter)) or ``"skellam"``
    (symmetric Skellam of variance ``parameter``), for shifts of at most ``max_shift`` in
    one coordinate (see the module docstring)."""
    if kind not in ("dg", "skellam"):
        raise DPValueError(f"unknown noise kind {kind!r}")
    if not (math.isfinite(parameter) and parameter > 0):
        raise DPValueError(f"noise variance must be positive and finite, got {parameter!r}")
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 1:
        raise DPValueError(f"max_shift must be a positive int, got {max_shift!r}")
    return _unit_shift_bound_cached(kind, float(parameter), max_shift)


@dataclass(frozen=True)
class GaussianDomination:
    """(★) for one release: the dominating Gaussian's noise multiplier and the extra δ."""

    noise_multiplier: float  # 1/(μ₁·Δ₂)
    extra_delta: float  # η: per use, already multiplied by the shifted coordinates
    unit_mu: float
    noise_scale: float
    l2_bound: float


def dominate(
    *,
    kind: str,
    variance: float,
    l2_sensitivity: float,
    l1_sensitivity: float,
    dimension: int,
    mixture_log_ratio: float = 0.0,
    max_coordinate: int | None = None,
) -> GaussianDomination:
    """The Gaussian domination (★) of integer shifts with ‖x‖₂ ≤ Δ₂, ‖x‖₁ ≤ Δ₁ in
    ``dimension`` coordinates under noise ``kind``/``variance`` per coordinate;
    ``mixture_log_ratio`` is Λ of :func:`ddg_mixture_log_ratio` (0 for an exact law);
    ``max_coordinate`` caps |x_i| when the encoder guarantees less (0/1 counts: 1)."""
    if not (math.isfinite(l2_sensitivity) and l2_sensitivity > 0):
        raise DPValueError(f"l2_sensitivity must be positive, got {l2_sensitivity!r}")

    # an integer coordinate of a vector of L2 norm ≤ Δ₂ (L1 ≤ Δ₁) is at most ⌊min(Δ₂, Δ₁)⌋
    def at_most(value: float) -> int:
        return math.floor(value * (1 + 1e-15)) if math.isfinite(value) else dimension

    max_shift = max(1, at_most(min(l2_sensitivity, l1_sensitivity)))
    if max_coordinate is not None:
        max_shift = min(max_shift, max_coordinate)
    # nonzero integer coordinates: each adds ≥ 1 to ‖x‖₂² and to ‖x‖₁
    shifted = max(1, min(dimension, at_most(l2_sensitivity**2), at_most(l1_sensitivity)))
    bound = unit_shift_bound(kind, variance, max_shift)
    if not math.isfinite(bound.unit_mu):
        raise UnsupportedEventError(
            f"noise variance {variance:g} is too small for a Gaussian domination (the lattice "
            "dominates); use the RDP accountant"
        )
    mixture = -math.expm1(-mixture_log_ratio) if math.isfinite(mixture_log_ratio) else 1.0
    eta = shifted * (bound.tail_mass + mixture)
    return GaussianDomination(
        noise_multiplier=1.0 / (bound.unit_mu * l2_sensitivity),
        extra_delta=min(eta, 1.0),
        unit_mu=bound.unit_mu,
        noise_scale=math.sqrt(variance),
        l2_bound=l2_sensitivity,
    )
