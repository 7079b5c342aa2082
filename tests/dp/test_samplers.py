"""Exactness of the samplers: Kolmogorov distance to exact CDFs with fixed-seed generators
(checklist D1), the exact slow path, and argument validation."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from dp import samplers
from dp.errors import DPValueError
from dp.rng import SimulationRng
from dp.samplers import (
    discrete_gaussian,
    discrete_laplace,
    geometric,
    poisson,
    rational_at_least,
    skellam,
    sqrt_at_most,
)

pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")

N = 200_000
KS_LIMIT = 1.63 / math.sqrt(N)  # α ≈ 0.01 for a continuous law; conservative for discrete


def kolmogorov(sample: npt.NDArray[np.int64], support: np.ndarray, cdf: np.ndarray) -> float:
    """sup_k |F_emp(k) − F(k)| over the support points (values outside count in the tails)."""
    emp = np.searchsorted(np.sort(sample), support, side="right") / sample.size
    return float(np.max(np.abs(emp - cdf)))


def dg_cdf(sigma2: float, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    span = int(40 * math.sqrt(sigma2)) + 50
    ks = np.arange(-span, span + 1)
    logp = -(ks.astype(float) ** 2) / (2.0 * sigma2)
    p = np.exp(logp - logp.max())
    cdf = np.cumsum(p) / p.sum()
    keep = (ks >= lo) & (ks <= hi)
    return ks[keep], cdf[keep]


@pytest.mark.parametrize(
    "sigma2", [Fraction(1, 4), Fraction(2), Fraction(100), Fraction(1234567, 89)]
)
def test_discrete_gaussian_matches_exact_cdf(sigma2: Fraction) -> None:
    x = discrete_gaussian(sigma2, N, SimulationRng(11))
    support, cdf = dg_cdf(float(sigma2), int(x.min()) - 1, int(x.max()))
    assert kolmogorov(x, support, cdf) < KS_LIMIT


def test_kolmogorov_test_has_power() -> None:
    """The same check rejects a 4 % error in σ², so the tests above can fail."""
    x = discrete_gaussian(100, N, SimulationRng(11))
    support, cdf = dg_cdf(108.0, int(x.min()) - 1, int(x.max()))
    assert kolmogorov(x, support, cdf) > 3 * KS_LIMIT


@pytest.mark.parametrize("scale", [Fraction(1, 3), Fraction(1), Fraction(7, 2), Fraction(40)])
def test_discrete_laplace_matches_exact_cdf(scale: Fraction) -> None:
    x = discrete_laplace(scale, N, SimulationRng(12))
    q = math.exp(-1.0 / float(scale))
    ks = np.arange(int(x.min()) - 1, int(x.max()) + 1)
    # P(Y <= k) for the two-sided geometric law with ratio q.
    cdf = np.where(
        ks < 0,
        q ** (-ks.astype(float)) / (1 + q),
        1.0 - q ** (ks.astype(float) + 1) / (1 + q),
    )
    assert kolmogorov(x, ks, cdf) < KS_LIMIT


def test_geometric_matches_exact_cdf() -> None:
    x = geometric(Fraction(5, 2), N, SimulationRng(13))
    ks = np.arange(0, int(x.max()) + 1)
    cdf = 1.0 - np.exp(-(ks + 1) / 2.5)
    assert kolmogorov(x, ks, cdf) < KS_LIMIT
    assert x.min() >= 0


@pytest.mark.parametrize("lam", [Fraction(1, 3), Fraction(5), Fraction(1001, 10), Fraction(50000)])
def test_poisson_matches_exact_cdf(lam: Fraction) -> None:
    x = poisson(lam, N, SimulationRng(14))
    ks = np.arange(0, int(x.max()) + 1)
    assert kolmogorov(x, ks, stats.poisson.cdf(ks, float(lam))) < KS_LIMIT


@pytest.mark.parametrize("mu", [Fraction(1, 2), Fraction(30), Fraction(4000)])
def test_skellam_matches_exact_cdf(mu: Fraction) -> None:
    x = skellam(mu, N, SimulationRng(15))
    ks = np.arange(int(x.min()) - 1, int(x.max()) + 1)
    half = float(mu) / 2
    assert kolmogorov(x, ks, stats.skellam.cdf(ks, half, half)) < KS_LIMIT


def test_exact_slow_path_keeps_the_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    """Widen the float bracket so that ~10 % of all comparisons take the decimal path: the
    law must not change (the fast path only ever *defers*)."""
    monkeypatch.setattr(samplers, "_ETA", 2.0**-4)
    n = 6000
    limit = 1.63 / math.sqrt(n)
    x = discrete_gaussian(Fraction(9, 2), n, SimulationRng(16))
    support, cdf = dg_cdf(4.5, int(x.min()) - 1, int(x.max()))
    assert kolmogorov(x, support, cdf) < limit
    p = poisson(Fraction(7, 3), n, SimulationRng(17))
    ks = np.arange(0, int(p.max()) + 1)
    assert kolmogorov(p, ks, stats.poisson.cdf(ks, 7 / 3)) < limit
    # Large mean: the decimal path evaluates ln k! by Stirling's series with its remainder.
    big = poisson(10**6, 1000, SimulationRng(18))
    ks = np.arange(int(big.min()) - 1, int(big.max()) + 1)
    assert kolmogorov(big, ks, stats.poisson.cdf(ks, 10**6)) < 1.63 / math.sqrt(1000)


def test_decimal_and_float_poisson_log_ratios_agree() -> None:
    """The float fast path's value is within its stated error of the exact (decimal) one."""
    plan = samplers._PoissonPlan(Fraction(10**8))
    for k in (10**8 - 30000, 10**8 + 12345, 10**8, 40):
        r, err = plan.r_with_error(np.array([float(k)]))
        with localcontext(samplers._context(60)):
            q, q_err = plan.exact_q(k)(60)
        assert abs(float(r[0] - plan.log_m) - float(q)) <= err[0] + float(q_err)
        assert float(q) <= 0.0  # the envelope really bounds the target


def test_lazy_comparison_is_exact_against_a_known_threshold() -> None:
    """U < exp(0) = 1 always holds; U < exp(−1000) essentially never does."""
    rng = SimulationRng(18)
    for word in (0, 1, 2**64 - 1, 2**63):
        u = samplers._LazyUniform(word, rng)
        assert samplers._u_below_exp(u, samplers._rational_q(Fraction(0)))
    u = samplers._LazyUniform(2**40, rng)
    assert not samplers._u_below_exp(u, samplers._rational_q(Fraction(-1000)))
    # A word of 0 cannot be decided against exp(−1000) from 64 bits: more bits are drawn.
    u = samplers._LazyUniform(0, rng)
    assert not samplers._u_below_exp(u, samplers._rational_q(Fraction(-1000)))
    assert u.bits > 64


def test_same_seed_same_stream_and_shapes() -> None:
    a = discrete_gaussian(50, 1000, SimulationRng(3))
    b = discrete_gaussian(50, 1000, SimulationRng(3))
    assert np.array_equal(a, b) and a.dtype == np.int64
    assert discrete_gaussian(50, 0, SimulationRng(3)).shape == (0,)
    assert np.array_equal(poisson(0, 5, SimulationRng(1)), np.zeros(5, dtype=np.int64))


@pytest.mark.parametrize(
    ("call", "arg"),
    [
        (discrete_gaussian, 0),
        (discrete_gaussian, -1),
        (discrete_gaussian, float("nan")),
        (discrete_gaussian, True),
        (discrete_gaussian, "1"),
        (discrete_gaussian, 0.1),  # denominator 2^55: must be rounded explicitly
        (discrete_laplace, 0),
        (poisson, -1),
        (skellam, 0),
    ],
)
def test_bad_parameters_raise(call: object, arg: object) -> None:
    with pytest.raises(DPValueError):
        call(arg, 10, SimulationRng(0))  # type: ignore[operator]


def test_bad_size_raises() -> None:
    with pytest.raises(DPValueError):
        discrete_gaussian(1, -1, SimulationRng(0))


def test_rational_rounding_is_upward_and_sqrt_is_downward() -> None:
    r = rational_at_least(0.1)
    assert r >= Fraction(0.1) and r.denominator <= 1 << 20
    assert r - Fraction(0.1) <= Fraction(1, 1 << 20)
    for value in (Fraction(2), Fraction(10**12 + 1, 3), Fraction(1, 7)):
        s = sqrt_at_most(value)
        assert Fraction(s) ** 2 <= value < Fraction(math.nextafter(s, math.inf)) ** 2


def test_decimal_stirling_matches_the_exact_product() -> None:
    with localcontext(samplers._context(45)):
        stirling, err = samplers._log_gamma(1501)
        exact = sum((Decimal(j).ln() for j in range(2, 1501)), Decimal(0))
        assert abs(stirling - exact) <= err + Decimal(10) ** -38
        pi = samplers._decimal_pi()
    assert str(pi).startswith("3.14159265358979323846264338327950288")
