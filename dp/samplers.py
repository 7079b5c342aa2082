"""Exact, vectorized samplers for integer DP noise: discrete Laplace, discrete Gaussian,
Poisson and Skellam, driven by a :class:`~dp.rng.NoiseRng`.

**What "exact" means here.** Every output has exactly the stated distribution, given ideal
uniform bits. All randomness enters as comparisons "U < p" between a uniform real
U ∈ [0, 1), revealed 64 bits at a time, and a probability p = exp(Q) with Q known exactly
(rational) or to any precision. The fast path decides the comparison in float64 only when
the whole interval of U values consistent with the revealed bits lies on one side of a
*bracket* [p_lo, p_hi] that contains p; the bracket is 2^-40 relative wide, about 4000×
the error of numpy's ``exp``/``log`` (≤ a few ulp). The rare undecided comparisons (none
in 4·10^6 discrete Gaussian draws at σ = 10^4, about 2 per 10^6 at σ ≈ 3·10^5, as the
bracket grows with the scale) fall back to an exact lazy comparison: more bits of the same
U are drawn and p is recomputed with :mod:`decimal` (correctly rounded ``exp``/``ln``) at
growing precision, with rigorous error bounds, until the comparison is decided. No float ever
*becomes* an output, so there is no porous support (Mironov 2012).

**Which parameters are exact rationals.** The discrete Gaussian's σ², the discrete
Laplace scale, the Poisson mean and the Skellam variance are :class:`fractions.Fraction`
(ints and floats are converted exactly; a float is a dyadic rational). Denominators are
limited to :data:`MAX_DENOMINATOR`; :func:`rational_at_least` rounds a real parameter *up*
to such a fraction (more noise, never less). Mechanisms report the rational actually used
so that the accountant sees the actual σ.

**Algorithms.** Geometric: inverse CDF, G = ⌊−s·ln U⌋ with P(G ≥ k) = exp(−k/s).
Discrete Laplace(s): G₁ − G₂. Discrete Gaussian (Canonne–Kamath–Steinke 2020, Alg. 3):
propose Y ~ DLap(t), t = ⌊σ⌋ + 1, accept with probability exp(−(|Y| − σ²/t)² / (2σ²)).
Poisson(λ): rejection from a discrete Laplace centred at ⌊λ⌋ with scale ≈ √λ; the
envelope constant is maximized in closed form (the log-ratio is concave on each side).
Skellam(μ): Poisson(μ/2) − Poisson(μ/2), variance μ.

**Timing.** Sampling is batched: the run time depends on the number of rejections in a
batch of thousands of draws, not on any single value (the per-sample timing channel of Jin
et al. 2022). Clients should still sample noise before, not during, the upload window.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import MAX_EMAX, MIN_EMIN, ROUND_HALF_EVEN, Context, Decimal, getcontext, localcontext
from fractions import Fraction
from numbers import Rational

import numpy as np
import numpy.typing as npt

from dp.errors import DPValueError
from dp.rng import NoiseRng

__all__ = [
    "MAX_DENOMINATOR",
    "bernoulli",
    "discrete_gaussian",
    "discrete_laplace",
    "float_at_most",
    "geometric",
    "poisson",
    "rational_at_least",
    "skellam",
    "sqrt_at_most",
]

MAX_DENOMINATOR = 1 << 32
"""Largest denominator accepted for a rational sampler parameter."""

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
_QFn = Callable[[int], tuple[Decimal, Decimal]]

_BATCH = 1 << 15  # elements per vectorized pass: the working set stays in L2 cache
_ETA = 2.0**-40  # relative width of a float bracket around exp/log values
_TINY = 2.0**-1000  # absolute slack covering exp underflow
_MAX_FAST_ERR = 2.0**-10
_TWO_M52 = 2.0**-52
_TWO_M53 = 2.0**-53


# --------------------------------------------------------------------------- parameters


def _as_fraction(value: object, name: str) -> Fraction:
    if isinstance(value, bool):
        raise DPValueError(f"{name} must be a number, got a bool")
    if isinstance(value, Rational):
        frac = Fraction(int(value.numerator), int(value.denominator))
    elif isinstance(value, float | np.floating):
        if not math.isfinite(float(value)):
            raise DPValueError(f"{name} must be finite, got {value!r}")
        frac = Fraction(float(value))
    elif isinstance(value, np.integer):
        frac = Fraction(int(value))
    else:
        raise DPValueError(f"{name} must be an int, Fraction or float, got {type(value).__name__}")
    if frac.denominator > MAX_DENOMINATOR:
        raise DPValueError(
            f"{name} has denominator {frac.denominator} > {MAX_DENOMINATOR}; "
            "round it with rational_at_least() first"
        )
    return frac


def rational_at_least(value: float | Fraction, max_denominator: int = 1 << 20) -> Fraction:
    """The fraction ⌈value·D⌉ / D (reduced) with D = ``max_denominator``: the noise parameter
    a sampler can use exactly, never smaller than ``value``."""
    if isinstance(max_denominator, bool) or not 1 <= max_denominator <= MAX_DENOMINATOR:
        raise DPValueError(f"max_denominator must be in [1, {MAX_DENOMINATOR}]")
    if isinstance(value, float) and not math.isfinite(value):
        raise DPValueError(f"parameter must be finite, got {value!r}")
    exact = Fraction(value)
    return Fraction(math.ceil(exact * max_denominator), max_denominator)


def float_at_most(value: Fraction) -> float:
    """The largest float ≤ ``value`` (a conservative noise scale for an event)."""
    f = float(value)
    return f if Fraction(f) <= value else math.nextafter(f, -math.inf)


def sqrt_at_most(value: Fraction) -> float:
    """The largest float s with s² ≤ ``value``: a σ that never overstates the noise."""
    if value < 0:
        raise DPValueError("sqrt_at_most needs a non-negative value")
    s = math.sqrt(float(value))
    while s > 0.0 and Fraction(s) ** 2 > value:
        s = math.nextafter(s, 0.0)
    while Fraction(math.nextafter(s, math.inf)) ** 2 <= value:
        s = math.nextafter(s, math.inf)
    return s


def _check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or int(size) < 0:
        raise DPValueError(f"size must be a non-negative int, got {size!r}")
    return int(size)


# ------------------------------------------------------------------ exact slow path (rare)


def _context(prec: int) -> Context:
    return Context(prec=prec, rounding=ROUND_HALF_EVEN, Emin=MIN_EMIN, Emax=MAX_EMAX)


class _LazyUniform:
    """U ∈ [0, 1) known as ``num / 2^bits``-prefix; more bits are drawn on demand."""

    __slots__ = ("bits", "num", "rng")

    def __init__(self, word: int, rng: NoiseRng) -> None:
        self.num = word
        self.bits = 64
        self.rng = rng

    def bounds(self) -> tuple[Decimal, Decimal]:
        # num * 5^bits / 10^bits is exact in decimal with `bits` digits.
        ctx = _context(self.bits + 30)
        scale = 5**self.bits
        lo = Decimal(self.num * scale).scaleb(-self.bits, context=ctx)
        hi = Decimal((self.num + 1) * scale).scaleb(-self.bits, context=ctx)
        return lo, hi

    def refine(self) -> None:
        self.num = (self.num << 64) | self.rng.word()
        self.bits += 64


def _u_below_exp(u: _LazyUniform, q_fn: _QFn) -> bool:
    """Decide U < exp(Q) exactly; ``q_fn(prec)`` returns (Q̂, bound on |Q̂ − Q|)."""
    prec = 40
    while True:
        with localcontext(_context(prec)):
            q, err = q_fn(prec)
            slack = Decimal(10) ** (3 - prec)
            lo = (q - err).exp() * (1 - slack)
            hi = (q + err).exp() * (1 + slack)
        u_lo, u_hi = u.bounds()
        if u_hi <= lo:
            return True
        if u_lo >= hi:
            return False
        u.refine()
        prec += 30


def _rational_q(q: Fraction) -> _QFn:
    def q_fn(prec: int) -> tuple[Decimal, Decimal]:
        value = Decimal(q.numerator) / Decimal(q.denominator)
        return value, abs(value) * Decimal(10) ** (2 - prec) + Decimal(10) ** (-prec)

    return q_fn


def _exact_geometric(word: int, guess: int, scale: Fraction, rng: NoiseRng) -> int:
    """The G with exp(−(G+1)/s) < U ≤ exp(−G/s), searched from ``guess``."""
    u = _LazyUniform(word, rng)
    k = max(guess, 0)
    while True:
        if k > 0 and not _u_below_exp(u, _rational_q(-k / scale)):
            k -= 1  # U ≥ exp(−k/s): G < k
        elif _u_below_exp(u, _rational_q(-(k + 1) / scale)):
            k += 1  # U < exp(−(k+1)/s): G > k
        else:
            return k


# ------------------------------------------------------------------------- fast paths


_EXPONENT_ONE = np.uint64(0x3FF0000000000000)
_SHIFT = np.uint64(12)


def _uniform_lo(words: npt.NDArray[np.uint64]) -> FloatArray:
    """u_lo = m·2^-52 with m the top 52 bits of each word: U ∈ [u_lo, u_lo + 2^-52).

    Built by placing m in the mantissa of a float in [1, 2) and subtracting 1 (exact)."""
    ones: FloatArray = ((words >> _SHIFT) | _EXPONENT_ONE).view(np.float64)
    ones -= 1.0
    return ones


def _bernoulli_exp(
    q_hat: FloatArray,
    q_err: FloatArray,
    words: npt.NDArray[np.uint64],
    exact_q: Callable[[int], _QFn],
    rng: NoiseRng,
) -> npt.NDArray[np.bool_]:
    """Exact Bernoulli(exp(Q_i)) per element; ``q_hat`` ± ``q_err`` brackets Q_i and
    ``exact_q(i)`` gives Q_i to any precision for the rare undecided elements."""
    u_lo = _uniform_lo(words)
    u_hi = u_lo + _TWO_M52
    p = np.exp(q_hat)
    eta = _ETA + 2.0 * q_err
    accept = u_hi <= p * (1.0 - eta)
    reject = u_lo >= p * (1.0 + eta) + _TINY
    undecided = ~(accept | reject) | (q_err > _MAX_FAST_ERR)
    if undecided.any():
        for i in np.flatnonzero(undecided):
            accept[i] = _u_below_exp(_LazyUniform(int(words[i]), rng), exact_q(int(i)))
    return accept


def _geometric_batch(scale: Fraction, words: npt.NDArray[np.uint64], rng: NoiseRng) -> IntArray:
    u_lo = _uniform_lo(words)
    s = float(scale)
    x = np.log(u_lo + _TWO_M53)  # ln of the midpoint of U's interval (an exact float)
    x *= -s
    k = np.floor(x)
    frac = x - k
    # Decided when every U in the interval gives the same ⌊−s ln U⌋: |ln U − ln mid| ≤
    # 2^-53/u_lo, plus the relative float error of log and product (multiplied through
    # by u_lo to avoid a division).
    slack = (x + 1.0) * _ETA
    frac -= slack
    ok = frac * u_lo > _TWO_M52 * s
    frac += 2.0 * slack
    frac -= 1.0
    ok &= frac * u_lo < -_TWO_M52 * s
    out = k.astype(np.int64)
    if not ok.all():
        for i in np.flatnonzero(~ok):
            out[i] = _exact_geometric(int(words[i]), int(out[i]), scale, rng)
    return out


def geometric(scale: int | Fraction | float, size: int, rng: NoiseRng) -> IntArray:
    """Exact geometric variates on {0, 1, ...} with P(G ≥ k) = exp(−k/scale)."""
    s = _as_fraction(scale, "scale")
    if s <= 0:
        raise DPValueError(f"scale must be positive, got {scale!r}")
    n = _check_size(size)
    out = np.empty(n, dtype=np.int64)
    for start in range(0, n, _BATCH):
        stop = min(n, start + _BATCH)
        out[start:stop] = _geometric_batch(s, rng.words(stop - start), rng)
    return out


def discrete_laplace(scale: int | Fraction | float, size: int, rng: NoiseRng) -> IntArray:
    """Exact discrete Laplace: P(Y = y) ∝ exp(−|y| / scale) on the integers."""
    s = _as_fraction(scale, "scale")
    if s <= 0:
        raise DPValueError(f"scale must be positive, got {scale!r}")
    n = _check_size(size)
    out = np.empty(n, dtype=np.int64)
    for start in range(0, n, _BATCH):
        stop = min(n, start + _BATCH)
        words = rng.words(2 * (stop - start))
        half = stop - start
        out[start:stop] = _geometric_batch(s, words[:half], rng)
        out[start:stop] -= _geometric_batch(s, words[half:], rng)
    return out


# ----------------------------------------------------------------- discrete Gaussian


def _dg_batch(sigma2: Fraction, t: int, n: int, rng: NoiseRng) -> IntArray:
    scale = Fraction(t)
    words = rng.words(3 * n)
    y = _geometric_batch(scale, words[:n], rng)
    y -= _geometric_batch(scale, words[n : 2 * n], rng)
    a, b = sigma2.numerator, sigma2.denominator
    # Q = −(|y|·t·b − a)² / (2abt²). With S = |y|tb + a, the float error of Q̂ is at most
    # 3·2^-52·S²/(2abt²) + |Q̂|·2^-50 ≤ 2^-48·(|Q̂| + 1), using S² ≤ 2D² + 8a².
    diff = np.abs(y).astype(np.float64)
    diff *= float(t * b)
    diff -= float(a)
    q_hat = np.square(diff, out=diff)
    q_hat *= -1.0 / float(2 * a * b * t * t)
    q_err = 2.0**-48 * (1.0 - q_hat)

    def exact_q(i: int) -> _QFn:
        d = abs(int(y[i])) * t * b - a
        return _rational_q(Fraction(-d * d, 2 * a * b * t * t))

    keep = _bernoulli_exp(q_hat, q_err, words[2 * n :], exact_q, rng)
    return y[keep]


def discrete_gaussian(sigma_squared: int | Fraction | float, size: int, rng: NoiseRng) -> IntArray:
    """Exact discrete Gaussian N_Z(0, σ²): P(Y = y) ∝ exp(−y² / (2σ²)) (CKS20)."""
    sigma2 = _as_fraction(sigma_squared, "sigma_squared")
    if sigma2 <= 0:
        raise DPValueError(f"sigma_squared must be positive, got {sigma_squared!r}")
    n = _check_size(size)
    t = math.isqrt(sigma2.numerator * sigma2.denominator) // sigma2.denominator + 1
    return _fill(n, lambda m: _dg_batch(sigma2, t, m, rng))


def _fill(n: int, draw: Callable[[int], IntArray]) -> IntArray:
    """Concatenate accepted draws until ``n`` values exist (batch rejection sampling)."""
    out = np.empty(n, dtype=np.int64)
    filled = 0
    rate = 0.5
    while filled < n:
        want = min(_BATCH, int((n - filled) / rate * 1.05) + 64)
        got = draw(want)
        rate = max(0.05, len(got) / want)
        take = min(len(got), n - filled)
        out[filled : filled + take] = got[:take]
        filled += take
    return out


# -------------------------------------------------------------------- Poisson, Skellam

_LOG_FACT_TABLE = np.array([math.lgamma(k + 1.0) for k in range(32)])
_STIRLING_MIN = 32  # below this, ln k! comes from the table


def _log_factorial(k: FloatArray) -> FloatArray:
    """ln k! for integer-valued 0 ≤ k: a table below 32, Stirling's series above (the
    truncation error is < 1/(1680 (k+1)^7) < 2e-14, far inside the fast-path bracket)."""
    n = k + 1.0
    inv = 1.0 / n
    inv2 = inv * inv
    series = inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 / 1260.0))
    out: FloatArray = (n - 0.5) * np.log(n) - n + 0.5 * math.log(2.0 * math.pi) + series
    small = k < _STIRLING_MIN
    if small.any():
        out[small] = _LOG_FACT_TABLE[k[small].astype(np.int64)]
    return out


# Bernoulli numbers B_2 .. B_30 for Stirling's series of ln Γ in the exact slow path.
_BERNOULLI = [
    Fraction(1, 6), Fraction(-1, 30), Fraction(1, 42), Fraction(-1, 30), Fraction(5, 66),
    Fraction(-691, 2730), Fraction(7, 6), Fraction(-3617, 510), Fraction(43867, 798),
    Fraction(-174611, 330), Fraction(854513, 138), Fraction(-236364091, 2730),
    Fraction(8553103, 6), Fraction(-23749461029, 870), Fraction(8615841276005, 14322),
]  # fmt: skip
_STIRLING_TERMS = len(_BERNOULLI) - 1  # the last one bounds the remainder


def _stirling_remainder_digits(n: int) -> float:
    """−log10 of the bound on Stirling's remainder at n (the first omitted term)."""
    b = abs(_BERNOULLI[-1])
    j = len(_BERNOULLI)
    return -(math.log10(b / (2 * j * (2 * j - 1))) - (2 * j - 1) * math.log10(n))


def _decimal_pi() -> Decimal:
    """π to the current precision (the series recipe of the :mod:`decimal` docs)."""
    ctx = getcontext()
    ctx.prec += 2
    three = Decimal(3)
    last, t, total, n, na, d, da = Decimal(0), three, three, 1, 0, 0, 24
    while total != last:
        last = total
        n, na = n + na, na + 8
        d, da = d + da, da + 32
        t = (t * n) / d
        total += t
    ctx.prec -= 2
    return +total


def _log_gamma(n: int) -> tuple[Decimal, Decimal]:
    """ln Γ(n) by Stirling's series in the current context, and an error bound (the first
    omitted term, which bounds the remainder for real n > 0, plus rounding)."""
    nd = Decimal(n)
    total = (nd - Decimal("0.5")) * nd.ln() - nd + (2 * _decimal_pi()).ln() / 2
    size = abs(total) + nd
    power = nd
    for j, bern in enumerate(_BERNOULLI[:_STIRLING_TERMS], start=1):
        total += Decimal(bern.numerator) / (Decimal(bern.denominator * 2 * j * (2 * j - 1)) * power)
        power *= nd * nd
    bern = abs(_BERNOULLI[_STIRLING_TERMS])
    j = _STIRLING_TERMS + 1
    remainder = Decimal(bern.numerator) / (Decimal(bern.denominator * 2 * j * (2 * j - 1)) * power)
    rounding = size * (_STIRLING_TERMS + 8) * Decimal(10) ** (2 - getcontext().prec)
    return total, remainder + rounding


def _log_factorial_decimal(k: int) -> tuple[Decimal, Decimal]:
    """ln k! in the current context with an error bound: Stirling's series when k is large
    enough for the working precision, else the exact product 2·3·…·k (256 factors per
    rounded ``ln``)."""
    prec = getcontext().prec
    if k >= 1000 and _stirling_remainder_digits(k + 1) > prec + 5:
        return _log_gamma(k + 1)
    total = Decimal(0)
    calls = 0
    for start in range(2, k + 1, 256):
        total += Decimal(math.prod(range(start, min(k, start + 255) + 1))).ln()
        calls += 1
    return total, (abs(total) + 1) * (calls + 2) * Decimal(10) ** (2 - prec)


class _PoissonPlan:
    """Envelope for Poisson(λ) by rejection from λ₀ + DLap(s), λ₀ = ⌊λ⌋, s ≈ √λ.

    With r(k) = (k − λ₀) ln λ − ln(k!/λ₀!) + |k − λ₀| / s (the log of target/proposal up to
    a constant), a proposal k ≥ 0 is accepted with probability exp(r(k) − log_m). For
    large λ, r is evaluated as δ·log1p((λ−m)/m) − (n−½)·log1p(δ/m) + δ − Δseries + |δ|/s
    (n = k+1, m = λ₀+1, δ = k − λ₀): no term is much larger than δ, so float64 keeps
    ~1e-10 absolute accuracy even at λ = 10^9 (the naive form cancels terms of size k ln k).
    """

    def __init__(self, lam: Fraction) -> None:
        self.lam = lam
        self.center = math.floor(lam)
        self.scale = max(1, math.isqrt(self.center))
        self.m = self.center + 1
        self.log_lam = math.log(float(lam))
        self.log_ratio = math.log1p(float((lam - self.m) / self.m))  # ln(λ/m), λ/m ∈ (0, 1]
        self.log_fact_center = math.lgamma(self.center + 1.0)
        lam_f = float(lam)
        # r is concave on [0, λ₀] and on [λ₀, ∞): the maxima are at the integers around
        # λ·e^{±1/s}; neighbours cover float rounding of those points.
        right = max(self.center, math.ceil(lam_f * math.exp(1.0 / self.scale) - 1.0))
        left = min(self.center, max(0, math.floor(lam_f * math.exp(-1.0 / self.scale))))
        cands = {self.center, right - 1, right, right + 1, left - 1, left, left + 1}
        ks = np.array(sorted(k for k in cands if k >= 0), dtype=np.float64)
        values, errors = self.r_with_error(ks)
        self.log_m = float(np.max(values + 4.0 * errors)) + 2.0**-40

    def r_with_error(self, k: FloatArray) -> tuple[FloatArray, FloatArray]:
        """r(k) in float64 and a bound on its absolute error (8× the rounding analysis)."""
        delta = k - self.center
        dist = np.abs(delta) / self.scale
        if self.center < 4 * _STIRLING_MIN:
            log_fact = _log_factorial(k)
            r = delta * self.log_lam - (log_fact - self.log_fact_center) + dist
            size = np.abs(delta * self.log_lam) + log_fact + self.log_fact_center + dist
            return r, (size + 1.0) * 2.0**-46
        n = k + 1.0
        m = float(self.m)
        inv_n, inv_m = 1.0 / n, 1.0 / m
        series_n = inv_n * (1.0 / 12.0 - inv_n * inv_n * (1.0 / 360.0 - inv_n * inv_n / 1260.0))
        series_m = inv_m * (1.0 / 12.0 - inv_m * inv_m * (1.0 / 360.0 - inv_m * inv_m / 1260.0))
        t1 = delta * self.log_ratio
        t2 = (n - 0.5) * np.log1p(delta / m)
        r = t1 - t2 + delta - (series_n - series_m) + dist
        size = np.abs(t1) + np.abs(t2) + np.abs(delta) + dist + 1.0
        err = size * 2.0**-46
        small = k < _STIRLING_MIN  # Stirling's 3-term series is not accurate there
        if small.any():
            ks = k[small]
            log_fact = _log_factorial(ks)
            d = ks - self.center
            r[small] = d * self.log_lam - (log_fact - self.log_fact_center) + np.abs(d) / self.scale
            err[small] = (
                np.abs(d * self.log_lam) + log_fact + self.log_fact_center + 1.0
            ) * 2.0**-40
        return r, err

    def exact_q(self, k: int) -> _QFn:
        lam = self.lam
        log_m = Decimal(self.log_m)  # exact: a float is a dyadic rational
        delta = k - self.center

        def q_fn(prec: int) -> tuple[Decimal, Decimal]:
            ulp = Decimal(10) ** (2 - prec)
            lam_d = Decimal(lam.numerator) / Decimal(lam.denominator)
            log_lam = lam_d.ln()
            log_k, err_k = _log_factorial_decimal(k)
            log_c, err_c = _log_factorial_decimal(self.center)
            log_fact = log_k - log_c
            fact_err = err_k + err_c + (abs(log_k) + abs(log_c)) * ulp
            dist = Decimal(abs(delta)) / Decimal(self.scale)
            q = delta * log_lam - log_fact + dist - log_m
            size = abs(delta * log_lam) + abs(log_fact) + dist + abs(log_m) + 1
            return q, fact_err + size * 8 * ulp

        return q_fn

    def batch(self, n: int, rng: NoiseRng) -> IntArray:
        scale = Fraction(self.scale)
        words = rng.words(2 * n)
        k = self.center + _geometric_batch(scale, words[:n], rng)
        k -= _geometric_batch(scale, words[n:], rng)
        k = k[k >= 0]
        r, q_err = self.r_with_error(k.astype(np.float64))
        q_hat = r - self.log_m
        if np.any(q_hat - q_err > 0.0):  # pragma: no cover - would mean a wrong envelope
            raise AssertionError("Poisson envelope violated; this is a bug")
        keep = _bernoulli_exp(
            q_hat, q_err, rng.words(len(k)), lambda i: self.exact_q(int(k[i])), rng
        )
        return k[keep]


def poisson(lam: int | Fraction | float, size: int, rng: NoiseRng) -> IntArray:
    """Exact Poisson(λ) variates (λ ≥ 0 rational)."""
    mean = _as_fraction(lam, "lam")
    if mean < 0:
        raise DPValueError(f"lam must be non-negative, got {lam!r}")
    n = _check_size(size)
    if mean == 0:
        return np.zeros(n, dtype=np.int64)
    plan = _PoissonPlan(mean)
    return _fill(n, lambda m: plan.batch(m, rng))


def skellam(variance: int | Fraction | float, size: int, rng: NoiseRng) -> IntArray:
    """Exact symmetric Skellam with variance μ: Poisson(μ/2) − Poisson(μ/2)."""
    mu = _as_fraction(variance, "variance")
    if mu <= 0:
        raise DPValueError(f"variance must be positive, got {variance!r}")
    n = _check_size(size)
    half = mu / 2
    return poisson(half, n, rng) - poisson(half, n, rng)


# ------------------------------------------------------------------ Bernoulli (sampling)


def bernoulli(probabilities: npt.ArrayLike, rng: NoiseRng) -> npt.NDArray[np.bool_]:
    """Independent exact Bernoulli(p_i) draws: heterogeneous Poisson sampling, where element
    i (a device) is included with its own probability p_i ∈ [0, 1].

    Exact for every float p_i: with t = ⌊p·2^64⌋ (an exact float, a power-of-two scaling)
    and one uniform 64-bit word w, the draw is w < t, or on the tie w = t (probability
    2^-64) a fresh exact Bernoulli of the remaining fraction p·2^64 − t.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 1:
        raise DPValueError("probabilities must be a 1-D array")
    if not np.all(np.isfinite(p)) or np.any(p < 0.0) or np.any(p > 1.0):
        raise DPValueError("every probability must lie in [0, 1]")
    n = p.shape[0]
    out = np.zeros(n, dtype=np.bool_)
    ones = p >= 1.0
    out[ones] = True
    rest = np.flatnonzero(~ones)
    if not len(rest):
        return out
    scaled = np.ldexp(p[rest], 64)  # < 2^64, exact
    t = np.floor(scaled)
    words = rng.words(len(rest))
    threshold = t.astype(np.uint64)  # exact: t is an integer-valued float below 2^64
    out[rest] = words < threshold
    for j in np.flatnonzero(words == threshold):  # probability 2^-64 per element
        frac = float(scaled[j] - t[j])  # exact (Sterbenz) and in [0, 1)
        out[rest[j]] = bool(frac > 0.0 and bernoulli(np.array([frac]), rng)[0])
    return out
