"""Privacy loss distributions of Poisson-subsampled Gaussians, composed by FFT (pure functions).

Why hand-written: dp-accounting's PLD is the tightness reference but is a dev dependency here
and costs 0.7-9.5 s and up to 2.5 GB per query at T = 10^4 (``research/dp.md`` §3); its
``pessimistic_estimate=False`` output is not a valid lower bound. This module computes a
**certified bracket** [ε_lower, ε_upper] in tens of milliseconds by choosing the grid from
the problem (σ, q, T, δ) instead of using one fixed interval.

Method, for each neighbouring direction ("remove": P = (1−q)N(0,σ²) + qN(1,σ²) vs
Q = N(0,σ²); "add": the pair swapped; δ is the max of the two, as for add-or-remove-one):

1. **Upper (pessimistic) single-step PLD** by *connect-the-dots* (Doroshenko, Ghazi, Kamath,
   Kumar, Manurangsi, PETS 2022): on the grid ε_j = j·h the discrete PLD whose hockey-stick
   curve δ'(ε) equals the exact δ(ε_j) at every grid point and is linear in e^ε between them.
   δ is convex in e^ε, so δ' ≥ δ everywhere: the discrete pair dominates the true pair.
   Mass beyond the top grid point becomes "infinite loss" mass (pessimistic); mass below the
   bottom point is rounded up onto it.
2. **Lower single-step PLD**: the connect-the-dots masses are exactly the binned pair (bins
   [ε_j, ε_{j+1}), a post-processing of the true pair, hence dominated by it) with each bin
   split onto its two end points preserving its P- and Q-mass. The split moves each loss
   by a conditionally-mean-zero amount in an interval of length h plus a bias ≤ h²/8
   (Hoeffding's lemma), so after T steps (Azuma-Hoeffding)
   δ_true(ε) ≥ δ_split(ε + T·h²/8 + a) − exp(−2a²/(T·h²)). The lower PLD drops the mass
   below the bottom grid point and rounds the top tail down onto the top grid point.
3. **Composition** by one FFT per phase raised to the phase's step count, on a window of the
   composed loss whose outside mass is bounded by a Chernoff bound computed from the exact
   discrete moment generating function; that mass (which may alias into the window) is added
   to δ for the upper bound and subtracted for the lower bound. FFT round-off is measured by
   the negative masses it produces and charged the same way.
4. **ε from δ** exactly on the discrete PLD (piecewise closed form between grid points).

The grid interval h is chosen from the per-step privacy-loss spread so that the
discretization error is far below the tolerance, then checked a posteriori by a
Richardson-style comparison with the 2h grid and refined if needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy import fft as sp_fft
from scipy import special

from dp.accounting.base import validate_delta
from dp.errors import DPValueError

FloatArray = NDArray[np.float64]

# Largest FFT length tried before the grid is coarsened (memory: a few arrays of this size).
MAX_FFT_POINTS = 1 << 19
# Fractions of δ consumed by the tail approximations (all charged to δ, never ignored): the
# single-step truncation (spread over the T steps) and each side of the composition window.
_TAIL_FRACTION = 1e-8
_WINDOW_FRACTION = 5e-5
_LOWER_REFINEMENT = 4
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(80)


@dataclass(frozen=True)
class GaussianPhase:
    """``steps`` compositions of a Poisson-subsampled Gaussian (rate q, noise multiplier σ)."""

    sampling_rate: float
    noise_multiplier: float
    steps: int


@dataclass(frozen=True)
class PldBracket:
    """A certified ε bracket and how it was computed."""

    epsilon_lower: float
    epsilon_upper: float
    delta: float
    value_discretization_interval: float
    fft_points: int
    error_estimate: float


# ----------------------------------------------------------------------- single-step losses
def _log_delta_remove(eps: FloatArray, q: float, sigma: float) -> FloatArray:
    """log δ(ε) of P = (1−q)N(0,σ²)+qN(1,σ²) vs Q = N(0,σ²), for ε > log(1−q)."""
    s2 = sigma * sigma
    # e^ε − (1−q) = q·e^u with u = (2x−1)/(2σ²); computed without cancellation.
    u = eps if q >= 1.0 else _log_exp_minus(eps, q) - math.log(q)
    x = s2 * u + 0.5
    log_a = special.log_ndtr(-(x - 1.0) / sigma)
    log_b = u + special.log_ndtr(-x / sigma)
    base = 0.0 if q >= 1.0 else math.log(q)
    return _log_diff(log_a, log_b) + base


def _log_delta_add(eps: FloatArray, q: float, sigma: float) -> FloatArray:
    """log δ(ε) of P = N(0,σ²) vs Q = (1−q)N(0,σ²)+qN(1,σ²), for ε < −log(1−q)."""
    s2 = sigma * sigma
    # e^{−ε} − (1−q) = q·e^u
    u = _log_exp_minus(-eps, q) - math.log(q)
    x = s2 * u + 0.5
    log_a = u + special.log_ndtr(x / sigma)
    log_b = special.log_ndtr((x - 1.0) / sigma)
    return _log_diff(log_a, log_b) + math.log(q) + eps


def _log_exp_minus(t: FloatArray, q: float) -> FloatArray:
    """log(e^t − (1−q)), −inf where it is ≤ 0 (the edge of the loss support)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = math.log1p(-q) - t  # log((1−q)e^{−t})
        far = t + np.log1p(-np.exp(np.minimum(ratio, 0.0)))
        near = np.log(np.maximum(np.expm1(t) + q, 0.0))
    return np.where(ratio < -0.7, far, near)


def _log_diff(log_a: FloatArray, log_b: FloatArray) -> FloatArray:
    """log(e^a − e^b), −inf where b ≥ a."""
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.minimum(log_b - log_a, 0.0)
        out = log_a + np.log(-np.expm1(gap))
    return np.where(log_b >= log_a, -np.inf, out)


def _loss_support(q: float, sigma: float, direction: str) -> tuple[float, float]:
    """The open interval the privacy loss lives in."""
    if q >= 1.0:
        return -math.inf, math.inf
    if direction == "remove":
        return math.log1p(-q), math.inf
    return -math.inf, -math.log1p(-q)


def _log_delta(eps: FloatArray, q: float, sigma: float, direction: str) -> FloatArray:
    lo, hi = _loss_support(q, sigma, direction)
    eps = np.asarray(eps, dtype=np.float64)
    out = np.full(eps.shape, -np.inf)
    if direction == "remove":
        inside = eps > lo
        out[inside] = _log_delta_remove(eps[inside], q, sigma)
        # Below the support every outcome counts: δ(ε) = 1 − e^ε (exact).
        below = ~inside
        out[below] = np.log(-np.expm1(eps[below])) if np.any(below) else out[below]
    else:
        inside = eps < hi
        out[inside] = _log_delta_add(eps[inside], q, sigma)
    return out


def _loss_samples(q: float, sigma: float, direction: str) -> tuple[FloatArray, FloatArray]:
    """Gauss-Hermite nodes/weights of the privacy loss under P (for moments only)."""
    w = _GH_WEIGHTS / _GH_WEIGHTS.sum()
    s2 = sigma * sigma
    if q >= 1.0:
        x = 1.0 + sigma * _GH_NODES
        return (2 * x - 1) / (2 * s2), w
    if direction == "remove":
        xs = np.concatenate([sigma * _GH_NODES, 1.0 + sigma * _GH_NODES])
        ws = np.concatenate([(1 - q) * w, q * w])
        sign = 1.0
    else:
        xs, ws, sign = sigma * _GH_NODES, w, -1.0
    loss = sign * np.logaddexp(math.log1p(-q), math.log(q) + (2 * xs - 1) / (2 * s2))
    return loss, ws


def _solve_log_delta(target: float, q: float, sigma: float, direction: str, tol: float) -> float:
    """An ε with log δ(ε) ≤ target, at most ``tol`` above the smallest such ε (δ decreases
    in ε). Only a truncation point: the δ at the grid point actually used is exact."""
    _, hi = _loss_support(q, sigma, direction)
    if math.isfinite(hi):
        upper = hi
    else:
        upper = 1.0
        while float(_log_delta(np.array([upper]), q, sigma, direction)[0]) > target:
            upper *= 2.0
    lower = upper - 1.0
    while float(_log_delta(np.array([lower]), q, sigma, direction)[0]) <= target:
        lower = lower - 2.0 * (upper - lower)
        if lower < -1e6:
            return lower
    for _ in range(100):
        mid = 0.5 * (lower + upper)
        if float(_log_delta(np.array([mid]), q, sigma, direction)[0]) > target:
            lower = mid
        else:
            upper = mid
        if upper - lower < tol:
            break
    return upper


def _log_p_loss_below(eps: float, q: float, sigma: float, direction: str) -> float:
    """log P(L < ε) under P (lower tail mass, used to place the bottom grid point)."""
    s2 = sigma * sigma
    if q >= 1.0:
        x = s2 * eps + 0.5  # L < ε ⇔ x < x_ε with x ~ N(1, σ²)
        return float(special.log_ndtr((x - 1.0) / sigma))
    if direction == "remove":
        if eps <= math.log1p(-q):
            return -math.inf
        u = math.log(math.expm1(eps) + q) - math.log(q)
        x = s2 * u + 0.5
        return float(
            np.logaddexp(
                math.log1p(-q) + special.log_ndtr(x / sigma),
                math.log(q) + special.log_ndtr((x - 1.0) / sigma),
            )
        )
    if eps >= -math.log1p(-q):
        return 0.0
    u = math.log(math.expm1(-eps) + q) - math.log(q)
    x = s2 * u + 0.5  # L < ε ⇔ x > x_ε with x ~ N(0, σ²)
    return float(special.log_ndtr(-x / sigma))


def _bottom_point(target: float, q: float, sigma: float, direction: str, tol: float) -> float:
    lo, _ = _loss_support(q, sigma, direction)
    if math.isfinite(lo):
        return lo
    upper = 0.0
    lower = -1.0
    while _log_p_loss_below(lower, q, sigma, direction) > target:
        lower *= 2.0
    for _ in range(100):
        mid = 0.5 * (lower + upper)
        if _log_p_loss_below(mid, q, sigma, direction) > target:
            upper = mid
        else:
            lower = mid
        if upper - lower < tol:
            break
    return lower


# ------------------------------------------------------------------ discretized single step
@dataclass(frozen=True)
class _StepPmf:
    offset: int  # grid index of element 0 (value = (offset + j)·h)
    upper: FloatArray  # connect-the-dots masses (dominating)
    lower: FloatArray  # split-bin masses with tails dropped/rounded down (dominated)
    inf_mass: float  # upper PLD's mass at +∞


@lru_cache(maxsize=1024)
def _tail_points(
    q: float, sigma: float, direction: str, tail_log: float, tol: float
) -> tuple[float, float]:
    """(bottom, top) truncation points of one step's loss (cached across grid passes)."""
    return (
        _bottom_point(tail_log, q, sigma, direction, tol),
        _solve_log_delta(tail_log, q, sigma, direction, tol),
    )


def _step_pmf(
    q: float, sigma: float, direction: str, h: float, tail_log: float, tail_tol: float
) -> _StepPmf:
    bottom, top = _tail_points(q, sigma, direction, tail_log, tail_tol)
    j_top = math.ceil(top / h)
    j_bottom = math.floor(bottom / h)
    if j_top - j_bottom < 2:
        j_top = j_bottom + 2
    grid = np.arange(j_bottom, j_top + 1, dtype=np.float64) * h
    f = np.exp(_log_delta(grid, q, sigma, direction))
    diffs = f[:-1] - f[1:]  # Δ_j = f_j − f_{j+1} ≥ 0
    np.maximum(diffs, 0.0, out=diffs)
    up = 1.0 / -math.expm1(-h)  # 1/(1 − e^{−h})
    down = 1.0 / math.expm1(h)  # 1/(e^h − 1)
    masses = np.empty_like(f)
    masses[1:-1] = diffs[:-1] * up - diffs[1:] * down
    masses[-1] = diffs[-1] * up
    masses[0] = 1.0 - f[0] - diffs[0] * down
    np.maximum(masses, 0.0, out=masses)
    inf_mass = float(f[-1])

    lower = masses.copy()
    # Bottom: connect-the-dots rounded the mass below the bottom point up onto it; drop it.
    below = math.exp(_log_p_loss_below(float(grid[0]), q, sigma, direction))
    lower[0] = max(lower[0] - below, 0.0)
    # Top: the tail beyond the top point is a finite loss ≥ ε_top; round it down onto it.
    lower[-1] += inf_mass
    return _StepPmf(offset=j_bottom, upper=masses, lower=lower, inf_mass=inf_mass)


# -------------------------------------------------------------------------- composition
_MGF_TAIL_BLOCKS = 1024
_MGF_BULK_QUANTILE = 1e-7


def _coarse_support(pmf: _StepPmf, h: float, upper_tail: bool) -> tuple[FloatArray, FloatArray]:
    """A short list of (mass, value) whose MGF over-estimates the step's MGF on one side.

    The bulk (all but 1e-7 of the mass on each side) is kept point by point, because a
    rounding bias there would be multiplied by T; the sparse tails are merged into blocks
    valued at the end that over-estimates e^{λv} (block max for λ > 0, block min for λ < 0).
    The upper PLD's top-tail mass is counted at the top point so one bound serves both PLDs.
    """
    masses = pmf.upper.copy()
    masses[-1] += pmf.inf_mass
    cdf = np.cumsum(masses)
    total = float(cdf[-1])
    i_lo = int(np.searchsorted(cdf, _MGF_BULK_QUANTILE * total))
    i_hi = int(np.searchsorted(cdf, (1 - _MGF_BULK_QUANTILE) * total)) + 1
    out_m: list[FloatArray] = []
    out_i: list[NDArray[np.int64]] = []
    for a, b in ((0, i_lo), (i_hi, masses.size)):
        if b <= a:
            continue
        block = max(1, math.ceil((b - a) / _MGF_TAIL_BLOCKS))
        starts = np.arange(a, b, block)
        out_m.append(np.add.reduceat(masses[a:b], starts - a))
        out_i.append(np.minimum(starts + block - 1, b - 1) if upper_tail else starts)
    out_m.append(masses[i_lo:i_hi])
    out_i.append(np.arange(i_lo, i_hi))
    merged = np.concatenate(out_m)
    index = np.concatenate(out_i)
    keep = merged > 0
    return merged[keep], ((pmf.offset + index[keep]) * h).astype(np.float64)


def _tail_index(
    steps: Sequence[tuple[_StepPmf, int]], h: float, log_eta: float, upper_tail: bool
) -> float:
    """A value beyond which the composed (finite) loss has mass ≤ e^{log_eta} (Chernoff)."""
    sign = 1.0 if upper_tail else -1.0
    masses_list, values_list, counts, sizes = [], [], [], []
    for pmf, count in steps:
        masses, values = _coarse_support(pmf, h, upper_tail)
        masses_list.append(masses)
        values_list.append(sign * values)
        counts.append(float(count))
        sizes.append(masses.size)
    # All phases in one array; per-phase sums by reduceat (one vectorized pass per λ).
    all_m = np.concatenate(masses_list)
    all_v = np.concatenate(values_list)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    weights = np.array(counts)

    def bound(log_lam: float) -> float:
        lam = math.exp(log_lam)
        exponent = lam * all_v
        tops = np.maximum.reduceat(exponent, starts)
        sums = np.add.reduceat(all_m * np.exp(exponent - np.repeat(tops, sizes)), starts)
        k = float(np.dot(weights, tops + np.log(sums)))
        return (k - log_eta) / lam

    # (K(λ) − log η)/λ is quasi-convex in λ: golden-section search on log λ.
    lo, hi = -12.0, 14.0
    phi = (math.sqrt(5) - 1) / 2
    a, b = hi - phi * (hi - lo), lo + phi * (hi - lo)
    fa, fb = bound(a), bound(b)
    for _ in range(30):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - phi * (hi - lo)
            fa = bound(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + phi * (hi - lo)
            fb = bound(b)
    best = min(fa, fb)
    return sign * best


@dataclass(frozen=True)
class _Composed:
    values_start: float  # loss value of element 0 (grid aligned)
    upper: FloatArray
    lower: FloatArray | None
    upper_extra: float  # mass to add to δ for the upper bound
    lower_extra: float  # mass to subtract from δ for the lower bound
    fft_points: int


def _compose(
    steps: Sequence[tuple[_StepPmf, int]], h: float, log_eta: float, want_lower: bool
) -> _Composed:
    top = _tail_index(steps, h, log_eta, upper_tail=True)
    bottom = _tail_index(steps, h, log_eta, upper_tail=False)
    j_lo = math.floor(bottom / h) - 1
    j_hi = math.ceil(top / h) + 1
    n = sp_fft.next_fast_len(j_hi - j_lo + 1, real=True)
    if n > MAX_FFT_POINTS:
        raise _GridTooFine(n)
    # Composed index J lands at position (J − j_lo) mod n: each step is placed at its own
    # index minus its share of j_lo, so the inverse FFT comes out already in window order.
    kinds = 2 if want_lower else 1
    # Π_i F_i^{T_i} accumulated as Σ T_i·log|F_i| and Σ T_i·arg F_i (+ cyclic shifts): one
    # exp at the end, zeros stay zeros, and no complex power per phase.
    log_mag = [np.zeros(n // 2 + 1) for _ in range(kinds)]
    angle = [np.zeros(n // 2 + 1) for _ in range(kinds)]
    finite_keep = 1.0
    total = sum(c for _, c in steps)
    remaining = j_lo
    total_rest = 0
    for i, (pmf, count) in enumerate(steps):
        share = remaining if i == len(steps) - 1 else (j_lo * count) // total
        remaining -= share
        # ``share`` is subtracted over ``count`` steps: share // count on each step, and the
        # remainder as one cyclic shift of the composed result.
        per_step, rest = divmod(share, count)
        total_rest += rest
        idx = (pmf.offset - per_step + np.arange(pmf.upper.size)) % n
        for kind, masses in enumerate((pmf.upper, pmf.lower)[:kinds]):
            spectrum = sp_fft.rfft(np.bincount(idx, weights=masses, minlength=n))
            with np.errstate(divide="ignore"):
                log_mag[kind] += count * np.log(np.abs(spectrum))
            angle[kind] += count * np.angle(spectrum)
        finite_keep *= (1.0 - pmf.inf_mass) ** count
    shift = 2.0 * np.pi * (total_rest % n) * np.arange(n // 2 + 1) / n
    spectra = [np.exp(m) * np.exp(1j * (a + shift)) for m, a in zip(log_mag, angle, strict=True)]
    outside = 2.0 * math.exp(log_eta)  # Chernoff bounds for both tails of the window
    composed = [sp_fft.irfft(spec, n) for spec in spectra]
    noises = []
    for arr in composed:
        # Round-off shows up as negative masses; charge twice their total as an allowance.
        noises.append(2.0 * float(-arr[arr < 0].sum()))
        np.maximum(arr, 0.0, out=arr)
    return _Composed(
        values_start=j_lo * h,
        upper=composed[0],
        lower=composed[1] if want_lower else None,
        upper_extra=(1.0 - finite_keep) + outside + noises[0],
        lower_extra=outside + (noises[1] if want_lower else 0.0),
        fft_points=n,
    )


class _GridTooFine(Exception):
    def __init__(self, points: int) -> None:
        super().__init__(points)
        self.points = points


def _epsilon_from_pmf(
    masses: FloatArray, start: float, h: float, delta: float, extra: float
) -> float:
    """Smallest ε ≥ 0 with Σ_v m_v (1 − e^{ε−v})_+ + extra ≤ δ (exact on the discrete PLD)."""
    if extra >= delta:
        return math.inf
    first = max(0, math.ceil(-start / h - 1e-9))  # only losses > 0 matter for ε ≥ 0
    m = masses[first:]
    if m.size == 0:
        return 0.0
    v0 = start + first * h
    s1 = np.cumsum(m[::-1])[::-1]  # S1[k] = Σ_{r≥k} m_r
    decay = math.exp(-h)
    # H[k] = Σ_{r≥k} m_r e^{−(r−k)h}: a stable first-order recursion, run in C by lfilter.
    # Imported here: scipy.signal costs ~0.5 s at import, and devices import dp but never
    # compute an ε.
    from scipy.signal import lfilter

    big_h = lfilter([1.0], [1.0, -decay], m[::-1])[::-1]
    g = np.append(decay * big_h[1:], 0.0)  # G[k] = Σ_{r>k} m_r e^{−(r−k)h}
    delta_at = np.append(s1[1:], 0.0) - g + extra  # δ(v_k)
    k = int(np.argmax(delta_at <= delta))  # exists: δ(v_last) = extra < δ
    if k == 0:
        rest = float(s1[0]) + extra - delta
        if rest <= 0 or big_h[0] <= 0:
            return 0.0
        return max(v0 + math.log(rest / float(big_h[0])), 0.0)
    rest = float(s1[k]) + extra - delta
    if rest <= 0 or g[k - 1] <= 0:
        return v0 + k * h
    return min(v0 + (k - 1) * h + math.log(rest / float(g[k - 1])), v0 + k * h)


def _loss_mean_var(phases: Sequence[GaussianPhase]) -> tuple[float, float, int]:
    mean = var = 0.0
    total = 0
    for ph in phases:
        loss, w = _loss_samples(ph.sampling_rate, ph.noise_multiplier, "remove")
        m = float(np.dot(w, loss))
        mean += ph.steps * m
        var += ph.steps * max(float(np.dot(w, (loss - m) ** 2)), 1e-300)
        total += ph.steps
    return mean, var, total


def _choose_interval(phases: Sequence[GaussianPhase], delta: float, tolerance: float) -> float:
    """Grid interval from the composed privacy-loss spread (see module docstring)."""
    _, var, total = _loss_mean_var(phases)
    z = math.sqrt(2 * math.log(1 / delta))
    # Splitting each step's loss over an interval h adds ≤ h²/4 variance per step, which
    # moves ε by about z·sd·T·h²/(8·var); and the split has a mean bias ≤ h²/8 per step.
    h_var = math.sqrt(8.0 * math.sqrt(var) * tolerance / (z * total))
    h_bias = math.sqrt(8.0 * tolerance / total)
    h = max(min(h_var, h_bias, 0.5), 1e-7)
    # Snap to a power of two: nearby queries then share one grid, on which ε is exactly
    # monotone in q, σ and T (dominance is preserved by the discretization).
    return float(2.0 ** round(math.log2(h)))


def _rough_epsilon(phases: Sequence[GaussianPhase], delta: float) -> float:
    mean, var, _ = _loss_mean_var(phases)
    return max(mean + math.sqrt(2 * math.log(1 / delta) * var), 0.0)


def _bracket_at(
    phases: Sequence[GaussianPhase], delta: float, h: float, want_lower: bool, tail_tol: float
) -> tuple[float, float, int]:
    """(ε_lower, ε_upper, FFT points) on the grid of interval h (max over directions)."""
    total = sum(ph.steps for ph in phases)
    tail_log = math.log(_TAIL_FRACTION * delta / total)
    log_eta = math.log(_WINDOW_FRACTION * delta)
    directions = ["remove"]
    if any(ph.sampling_rate < 1.0 for ph in phases):
        directions.append("add")
    eps_up = eps_low = 0.0
    points = 0
    for direction in directions:
        steps = []
        for ph in phases:
            d = direction if ph.sampling_rate < 1.0 else "remove"
            steps.append(
                (
                    _step_pmf(ph.sampling_rate, ph.noise_multiplier, d, h, tail_log, tail_tol),
                    ph.steps,
                )
            )
        comp = _compose(steps, h, log_eta, want_lower)
        points = max(points, comp.fft_points)
        up = _epsilon_from_pmf(comp.upper, comp.values_start, h, delta, comp.upper_extra)
        eps_up = max(eps_up, up)
        if comp.lower is None:
            continue
        bias = total * h * h / 8.0
        best_low = 0.0
        for frac in (0.9, 0.5, 0.25, 0.1, 0.03, 0.01, 1e-3):
            eta = frac * delta
            slack = h * math.sqrt(total * math.log(1.0 / eta) / 2.0)
            low = _epsilon_from_pmf(
                comp.lower, comp.values_start, h, delta + eta + comp.lower_extra, 0.0
            )
            best_low = max(best_low, low - bias - slack)
        eps_low = max(eps_low, best_low)
    return eps_low, eps_up, points


def validate_phases(phases: Sequence[GaussianPhase]) -> None:
    """Raise :class:`DPValueError` unless every phase is a valid subsampled Gaussian."""
    for ph in phases:
        q, sigma, steps = ph.sampling_rate, ph.noise_multiplier, ph.steps
        if not (isinstance(q, float | int) and 0.0 < q <= 1.0):
            raise DPValueError(f"sampling rate must be in (0, 1], got {q!r}")
        if not (isinstance(sigma, float | int) and math.isfinite(sigma) and sigma > 0):
            raise DPValueError(f"noise multiplier must be a positive finite number, got {sigma!r}")
        if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
            raise DPValueError(f"steps must be a non-negative integer, got {steps!r}")


def gaussian_pld_bracket(
    phases: Sequence[GaussianPhase],
    delta: float,
    *,
    relative_tolerance: float = 1e-3,
    absolute_tolerance: float = 1e-3,
    want_lower: bool = True,
) -> PldBracket:
    """Certified [ε_lower, ε_upper] for the composition of Poisson-subsampled Gaussians.

    ``ε_upper`` is a valid (ε, δ) guarantee (pessimistic discretization, every truncated or
    aliased mass charged to δ); ``ε_lower`` is a certified lower bound on the exact ε of the
    same composition. The grid interval is chosen so the estimated discretization error of
    ``ε_upper`` is at most ``absolute_tolerance + relative_tolerance·ε`` and verified
    against the twice-coarser grid (the estimate is reported in ``error_estimate``).
    With ``want_lower=False`` only ``ε_upper`` is computed (``ε_lower`` is reported as 0).
    """
    validate_delta(delta)
    validate_phases(phases)
    phases = [ph for ph in phases if ph.steps > 0]
    if not phases:
        return PldBracket(0.0, 0.0, delta, 0.0, 0, 0.0)

    def tol(eps: float) -> float:
        return absolute_tolerance + relative_tolerance * eps

    h = _choose_interval(phases, delta, tol(_rough_epsilon(phases, delta)))
    while True:
        try:
            coarse = _bracket_at(phases, delta, 2 * h, False, tail_tol=h)
            low, up, points = _bracket_at(phases, delta, h, False, tail_tol=h)
            break
        except _GridTooFine:
            h *= 2.0
    err = max(coarse[1] - up, 0.0) / 3.0  # error ∝ h² ⇒ ε(2h) − ε(h) ≈ 3·error(h)
    if err > tol(up) and math.isfinite(up):
        shrink = max(math.sqrt(tol(up) / err), 0.1)
        h_new = float(2.0 ** math.floor(math.log2(h * shrink)))
        try:
            low, up, points = _bracket_at(phases, delta, h_new, False, tail_tol=h)
            err *= (h_new / h) ** 2
            h = h_new
        except _GridTooFine:
            pass
    if want_lower and math.isfinite(up):
        # The lower bound's Azuma slack grows like h·√T: a 4× finer grid makes it 4× tighter
        # (the upper bound keeps its own grid, so ε is the same with or without a bracket).
        for refinement in (_LOWER_REFINEMENT, 2, 1):
            try:
                low, _, _ = _bracket_at(phases, delta, h / refinement, True, tail_tol=h)
                break
            except _GridTooFine:
                continue
    return PldBracket(
        epsilon_lower=min(low, up),
        epsilon_upper=up,
        delta=delta,
        value_discretization_interval=h,
        fft_points=points,
        error_estimate=err,
    )
