"""Reference vectors: the committed grid (dp-accounting PLD, Opacus RDP/PRV, exact Gaussian),
Opacus' own test vectors, heterogeneous composition and the DDG/Skellam worked numbers of
``research/dp.md`` §1.4 (from ``research/dp_worked_numbers.txt``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dp
from dp.accounting import RdpAccountant
from dp.accounting.pld_analysis import GaussianPhase, gaussian_pld_bracket
from dp.accounting.rdp_analysis import ORDERS, rdp_to_epsilon, sampled_gaussian_rdp
from dp.events import (
    DistributedDiscreteGaussianEvent,
    DistributedSkellamEvent,
    GaussianEvent,
    PoissonSampledEvent,
)

GRID = Path(__file__).parent / "data" / "reference_grid.json"


def _rows() -> list[dict[str, Any]]:
    if not GRID.exists():  # pragma: no cover - the file is committed
        pytest.fail(f"{GRID} is missing: run tests/dp/data/make_reference_grid.py")
    rows: list[dict[str, Any]] = json.loads(GRID.read_text())["rows"]
    return rows


ROWS = _rows()


def test_grid_is_complete() -> None:
    assert len(ROWS) == 200
    keys = {(r["q"], r["sigma"], r["steps"], r["delta"]) for r in ROWS}
    assert len(keys) == 200
    assert all(r["dpacc_pld"] is not None and math.isfinite(r["dpacc_pld"]) for r in ROWS)


@pytest.mark.parametrize("chunk", range(4))
def test_pld_is_tight_finite_and_never_below_the_exact_value(chunk: int) -> None:
    """ε_PLD ≤ 1.005·ε_dp-accounting + 0.005 and finite on every row; ε_lower ≤ exact ≤
    ε_upper where the exact value is known (q = 1)."""
    for r in ROWS[chunk::4]:
        b = gaussian_pld_bracket([GaussianPhase(r["q"], r["sigma"], r["steps"])], r["delta"])
        where = f"q={r['q']} σ={r['sigma']} T={r['steps']} δ={r['delta']}"
        assert math.isfinite(b.epsilon_upper), where
        assert b.epsilon_upper <= 1.005 * r["dpacc_pld"] + 0.005, where
        assert 0.0 <= b.epsilon_lower <= b.epsilon_upper, where
        exact = r["exact_gaussian"]
        if exact is not None:
            assert b.epsilon_upper >= exact, where
            assert b.epsilon_lower <= exact, where
        # the function API returns the same upper bound
        if r["steps"] == 100:
            assert dp.epsilon(
                noise_multiplier=r["sigma"],
                sampling_rate=r["q"],
                steps=r["steps"],
                delta=r["delta"],
            ) == pytest.approx(b.epsilon_upper, rel=1e-12)


def test_pld_lower_bound_is_below_every_certified_upper_bound() -> None:
    """Our certified lower bound never exceeds another library's valid upper bound."""
    for r in ROWS:
        if r["steps"] not in (10, 1000):
            continue
        b = gaussian_pld_bracket([GaussianPhase(r["q"], r["sigma"], r["steps"])], r["delta"])
        assert b.epsilon_lower <= r["dpacc_pld"] + 1e-9
        if r["opacus_prv"] is not None:
            assert b.epsilon_lower <= r["opacus_prv"] + 1e-9


@pytest.mark.filterwarnings("ignore::dp.accounting.rdp.RdpOrderWarning")
def test_rdp_backend_matches_opacus_on_the_grid() -> None:
    """Same analysis as Opacus; our order grid is a superset, so never higher."""
    for r in ROWS[::3]:
        ours = dp.epsilon(
            noise_multiplier=r["sigma"],
            sampling_rate=r["q"],
            steps=r["steps"],
            delta=r["delta"],
            accountant="rdp",
        )
        assert ours <= r["opacus_rdp"] * (1 + 1e-9) + 1e-12
        assert ours >= r["dpacc_pld"] * 0.999 - 1e-3  # RDP is an upper bound too
        if r["opacus_rdp"] >= 1.0:  # optimal order inside Opacus' grid: the same number
            assert ours == pytest.approx(r["opacus_rdp"], rel=1e-9)


def test_opacus_reference_vectors() -> None:
    """Opacus accountants_test: σ=1.5, q=0.04, 2250 steps, δ=1e-5."""
    kwargs: dict[str, Any] = {
        "noise_multiplier": 1.5,
        "sampling_rate": 0.04,
        "steps": 2250,
        "delta": 1e-5,
    }
    assert dp.epsilon(**kwargs, accountant="rdp") == pytest.approx(7.32911117143, rel=1e-9)
    b = dp.epsilon_bracket(**kwargs)
    # PRV's 6.7774 is the upper end of a band of width ≤ 0.02 around the truth.
    assert 6.777395712150674 - 0.02 <= b.epsilon_upper <= 6.777395712150674
    assert b.epsilon_lower <= 6.76879  # dp-accounting 0.6 PLD (a valid upper bound)
    assert b.epsilon_upper == pytest.approx(6.76879, abs=0.01)


def test_heterogeneous_composition_reference() -> None:
    """research/dp.md §3: phases composed, vs dp-accounting PLD and Opacus RDP."""
    cases = [
        ([(0.01, 1.0, 500), (0.02, 1.5, 500)], 1.8975, 2.1477),
        ([(0.001, 0.8, 5000), (0.01, 2.0, 1000), (1.0, 5.0, 10)], 2.7676, 3.0022),
    ]
    for phases, pld_ref, rdp_ref in cases:
        pld = dp.make_accountant("pld")
        rdp = RdpAccountant()
        for q, sigma, steps in phases:
            ev = GaussianEvent(sigma)
            event = ev if q == 1 else PoissonSampledEvent(q, ev)
            pld.compose(event, steps)
            rdp.compose(event, steps)
        b = pld.get_epsilon_bracket(1e-5)
        assert b.epsilon_upper <= 1.005 * pld_ref + 0.005
        assert b.epsilon_upper >= pld_ref - 0.005
        assert b.epsilon_lower <= pld_ref
        assert rdp.get_epsilon(1e-5) == pytest.approx(rdp_ref, abs=6e-5)


def test_fractional_order_rdp_matches_numerical_integration() -> None:
    """research/dp.md §1.2 (numerical-integration truth at q = 0.1)."""
    truth = {(2.0, 1.5): 0.00209893, (1.0, 1.1): 0.00809857, (1.0, 1.5): 0.0117346}
    for (sigma, alpha), value in truth.items():
        idx = int(abs(ORDERS - alpha).argmin())
        assert sampled_gaussian_rdp(0.1, sigma)[idx] == pytest.approx(value, rel=1e-5)


def test_q1_pld_meets_the_closed_form_at_large_epsilon() -> None:
    """Where dp-accounting is +1.0 absolute (ε ≳ 900), we stay within 0.1 % and above."""
    for r in ROWS:
        if r["q"] == 1 and r["exact_gaussian"] > 500:
            ours = dp.epsilon(
                noise_multiplier=r["sigma"], sampling_rate=1.0, steps=r["steps"], delta=r["delta"]
            )
            assert r["exact_gaussian"] <= ours <= r["exact_gaussian"] * 1.001


# ---------------------------------------------------------------- distributed mechanisms
def _ddg_setting(d: int, n: int, bits: int, z: float) -> dict[str, float]:
    """The planning formulas of research/dp_worked_numbers.py (c=1, β=e^-0.5, k=4)."""
    c, beta, k = 1.0, math.exp(-0.5), 4
    sigma_local = z * c / math.sqrt(n)
    gamma = (
        2
        * k
        * math.sqrt(c * c * n * n / d + n * sigma_local**2)
        / math.sqrt(2.0 ** (2 * bits) - n * k * k)
    )
    cs = c / gamma
    d2 = min(
        cs + math.sqrt(d),
        math.sqrt(cs**2 + d / 4 + math.sqrt(2 * math.log(1 / beta)) * (cs + math.sqrt(d) / 2)),
    )
    return {"d2": d2, "d1": d2 * min(math.sqrt(d), d2), "sigma": sigma_local / gamma}


WORKED = [  # d, n, bits, z, q, T, ε Gaussian RDP, ε DDG, ε Skellam (research/dp_worked_numbers.txt)
    (2**16, 100, 20, 1.0, 1.0, 1, 4.7527, 4.7528, 4.7528),
    (2**16, 100, 12, 1.0, 1.0, 1, 4.7527, 4.9395, 4.9395),
    (2**16, 100, 8, 1.0, 1.0, 1, 4.7527, 30.2112, 30.2633),
    (2**16, 1000, 16, 1.0, 0.01, 1000, 2.4503, 2.4632, 2.4632),
    (2**16, 100, 16, 0.8, 0.001, 10000, 1.4456, 1.4464, 1.4464),
]


@pytest.mark.parametrize("row", WORKED, ids=lambda r: f"d{r[0]}-n{r[1]}-b{r[2]}-q{r[4]}")
def test_ddg_and_skellam_reproduce_the_worked_numbers(row: tuple[Any, ...]) -> None:
    d, n, bits, z, q, steps, _, eps_ddg, eps_sk = row
    s = _ddg_setting(d, n, bits, z)
    ddg = DistributedDiscreteGaussianEvent(
        l2_sensitivity=s["d2"],
        l1_sensitivity=s["d1"],
        local_sigma=s["sigma"],
        dimension=d,
        min_contributors=n,
        expected_contributors=n,
    )
    sk = DistributedSkellamEvent(
        l2_sensitivity=s["d2"],
        l1_sensitivity=s["d1"],
        local_variance=s["sigma"] ** 2,
        dimension=d,
        min_contributors=n,
        expected_contributors=n,
    )
    for event, ref in ((ddg, eps_ddg), (sk, eps_sk)):
        wrapped = event if q == 1 else PoissonSampledEvent(q, event)
        acc = RdpAccountant().compose(wrapped, steps)
        ours = acc.get_epsilon_bracket(1e-5).epsilon_upper
        # our order grid is a superset of the script's integer orders 2..256
        assert ours <= ref + 2e-4
        assert ours >= ref * 0.99


def test_ddg_is_never_cheaper_than_the_gaussian_of_equal_central_noise() -> None:
    """L7: the DDG accounting uses dimension and min_contributors (τ term, sensitivity)."""
    base: dict[str, Any] = {
        "l2_sensitivity": 10.0,
        "l1_sensitivity": 100.0,
        "dimension": 100,
        "expected_contributors": 20,
    }
    eps = {}
    for sigma in (0.3, 3.0):
        for n in (5, 20):
            ev = DistributedDiscreteGaussianEvent(local_sigma=sigma, min_contributors=n, **base)
            eps[sigma, n] = RdpAccountant().compose(ev).get_epsilon_bracket(1e-5).epsilon_upper
            central = sigma * math.sqrt(n) / 10.0
            gauss = RdpAccountant().compose(GaussianEvent(central)).get_epsilon_bracket(1e-5)
            assert eps[sigma, n] >= gauss.epsilon_upper - 1e-12
    assert eps[3.0, 5] > eps[3.0, 20]  # fewer guaranteed contributors: less noise, more ε
    # at small local σ the sum of DGs is far from a DG: τ·d dominates and more dims cost more
    big = DistributedDiscreteGaussianEvent(
        local_sigma=0.3, min_contributors=20, **{**base, "dimension": 10_000}
    )
    assert RdpAccountant().compose(big).get_epsilon_bracket(1e-5).epsilon_upper > eps[0.3, 20]


def test_general_subsampling_bound_is_above_the_exact_gaussian_analysis() -> None:
    """Zhu–Wang's general bound (used for DDG/Skellam) must not beat the Gaussian-specific
    exact analysis when applied to a Gaussian."""
    from dp.accounting.rdp_analysis import INTEGER_ORDERS, gaussian_rdp, poisson_subsampled_rdp

    for q, sigma in ((0.01, 1.0), (0.1, 2.0), (0.001, 0.8)):
        general = poisson_subsampled_rdp(gaussian_rdp(sigma, 1.0, INTEGER_ORDERS), q)
        exact = sampled_gaussian_rdp(q, sigma)
        integer = np.equal(ORDERS, ORDERS.round())
        assert (general[integer] >= exact[integer] * (1 - 1e-9)).all()
        e_general, _ = rdp_to_epsilon(general * 1000, 1e-5)
        e_exact, _ = rdp_to_epsilon(exact * 1000, 1e-5)
        assert e_exact <= e_general <= 3 * e_exact + 1.0


def _exact_gaussian_epsilon(mu: float, delta: float) -> float:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_reference_grid", Path(__file__).parent / "data" / "make_reference_grid.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    value: float = module.exact_gaussian_epsilon(mu, delta)
    return value


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    sigma=st.floats(0.3, 20.0),
    steps=st.integers(1, 20000),
    delta=st.sampled_from([1e-3, 1e-5, 1e-8, 1e-10]),
)
def test_bracket_contains_the_closed_form_at_q1(sigma: float, steps: int, delta: float) -> None:
    exact = _exact_gaussian_epsilon(math.sqrt(steps) / sigma, delta)
    b = dp.epsilon_bracket(noise_multiplier=sigma, sampling_rate=1.0, steps=steps, delta=delta)
    assert b.epsilon_lower <= exact <= b.epsilon_upper
    assert b.epsilon_upper <= 1.005 * exact + 0.005
