"""The exact Skellam-counts PLD backend ("skellam-pld") and its routing in "auto"."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

from dp.accounting import (
    AutoAccountant,
    DiscretePldAccountant,
    PldAccountant,
    RdpAccountant,
    SkellamPldAccountant,
)
from dp.accounting.skellam_pld import (
    DELTA_SLACK,
    MAX_VARIANCE,
    SkellamPhase,
    composed_pld,
    log_skellam_tail_bound,
    skellam_log_pmf,
    skellam_pld_bracket,
    support_half_width,
    unit_shift_pld,
)
from dp.budget import BudgetPolicy
from dp.calibrate import make_accountant
from dp.errors import DPValueError, UnsupportedEventError
from dp.events import (
    ComposedEvent,
    DiscreteLaplaceEvent,
    DistributedDiscreteGaussianEvent,
    DistributedSkellamCountsEvent,
    GaussianEvent,
    NoOpEvent,
    PoissonSampledEvent,
    SelfComposedEvent,
    event_from_dict,
    event_from_json,
)
from dp.ledger import PrivacyLedger, audit_ledger

DELTA = 1e-4


def counts(
    max_ones: int, variance: float, *, contributors: int = 1
) -> DistributedSkellamCountsEvent:
    """A counts event whose guaranteed total variance is ``variance``."""
    return DistributedSkellamCountsEvent(
        max_ones=max_ones,
        local_variance=variance / contributors,
        dimension=1682,
        min_contributors=contributors,
        expected_contributors=contributors + 3,
    )


def bracket(max_ones: int, variance: float, delta: float = DELTA) -> tuple[float, float]:
    b = SkellamPldAccountant().compose(counts(max_ones, variance)).get_epsilon_bracket(delta)
    assert b.backend == "skellam-pld"
    return b.epsilon_lower, b.epsilon_upper


# ---------------------------------------------------------------- exact references
def exact_delta_mp(variance: float, eps: float, half: int) -> float:
    """δ(ε) of Sk(μ)+1 vs Sk(μ) by direct summation in 40-digit arithmetic over ±half
    (the omitted tails are bounded by the Chernoff bound and checked to be negligible)."""
    with mpmath.workdps(40):
        mu = mpmath.mpf(variance)
        pmf = {k: mpmath.exp(-mu) * mpmath.besseli(abs(k), mu) for k in range(-half, half + 2)}
        e = mpmath.exp(eps)
        total = mpmath.mpf(0)
        for k in range(-half + 1, half + 2):
            total += max(mpmath.mpf(0), pmf[k - 1] - e * pmf.get(k, mpmath.mpf(0)))
        return float(total)


def exact_delta_float(variance: float, eps: float, half: int) -> float:
    """Same by float summation in log space (ive is accurate to ~1e-15 relative)."""
    k = np.arange(-half, half + 2)
    log_p = skellam_log_pmf(variance, k)
    log_q = skellam_log_pmf(variance, k - 1)
    return float(np.sum(np.maximum(0.0, np.exp(log_q) - np.exp(eps + log_p))))


def exact_delta(variance: float, eps: float) -> float:
    half = support_half_width(variance, 1e-40) + 5
    if variance <= 50:
        return exact_delta_mp(variance, eps, half)
    return exact_delta_float(variance, eps, half)


@pytest.mark.parametrize("variance", [0.5, 3.0, 20.0, 2000.0])
@pytest.mark.parametrize("delta", [1e-3, 1e-6])
def test_single_shift_bracket_contains_the_exact_epsilon(variance: float, delta: float) -> None:
    lower, upper = bracket(1, variance, delta)
    assert 0 < lower <= upper
    # the upper end is valid: δ_exact(ε_upper) ≤ δ ...
    assert exact_delta(variance, upper) <= delta
    # ... and the lower end is certified: just below it δ_exact > δ
    assert exact_delta(variance, lower * (1 - 1e-9) - 1e-12) >= delta
    assert upper - lower <= 2e-3 * upper + 5e-4


def test_two_shifts_match_a_direct_double_sum() -> None:
    # m = 2 unit shifts (the composition) against a direct sum over the product space
    mu, delta = 3.0, 1e-4
    lower, upper = bracket(2, mu, delta)
    half = support_half_width(mu, 1e-40) + 5
    k = np.arange(-half, half + 2)
    p = np.exp(skellam_log_pmf(mu, k))
    q = np.exp(skellam_log_pmf(mu, k - 1))
    pp, qq = np.outer(p, p), np.outer(q, q)

    def d(eps: float) -> float:
        return float(np.maximum(0.0, qq - math.exp(eps) * pp).sum())

    assert d(upper) <= delta <= d(lower * (1 - 1e-9))


def test_neighbour_directions_are_symmetric() -> None:
    # PLD(P‖Q) = PLD(Q‖P) for the symmetric Skellam: both hockey-stick divergences agree
    mu, half = 3.0, support_half_width(3.0, 1e-40) + 5
    k = np.arange(-half - 1, half + 2)
    p, q = np.exp(skellam_log_pmf(mu, k)), np.exp(skellam_log_pmf(mu, k - 1))
    for eps in (0.1, 0.5, 1.0, 2.0):
        forward = np.maximum(0.0, q - math.exp(eps) * p).sum()
        backward = np.maximum(0.0, p - math.exp(eps) * q).sum()
        assert forward == pytest.approx(backward, rel=1e-12, abs=1e-300)


def test_log_pmf_is_the_skellam_pmf() -> None:
    mu = 7.5
    k = np.arange(-60, 61)
    p = np.exp(skellam_log_pmf(mu, k))
    assert p.sum() == pytest.approx(1.0, abs=1e-14)
    assert (p * k**2).sum() == pytest.approx(mu, rel=1e-12)
    # Poisson(μ/2) − Poisson(μ/2) at k = 3 by direct summation
    a = mu / 2
    direct = sum(
        math.exp(-2 * a) * a ** (j + 3) / math.factorial(j + 3) * a**j / math.factorial(j)
        for j in range(80)
    )
    assert p[63] == pytest.approx(direct, rel=1e-12)


@pytest.mark.parametrize("variance", [0.7, 40.0, 5000.0])
def test_chernoff_tail_bound_dominates_the_true_tail(variance: float) -> None:
    for k in (1, 3, 10, int(3 * math.sqrt(variance)) + 1):
        ks = np.arange(k, k + 40 * int(math.sqrt(variance) + 10))
        true_tail = float(special.ive(ks, variance).sum())
        assert true_tail <= math.exp(log_skellam_tail_bound(variance, k)) * (1 + 1e-12)


# ---------------------------------------------------------------- truncation soundness
def test_truncated_tail_is_charged_not_dropped() -> None:
    # cut the support early (Chernoff tail 1e-3, true cut mass ~3e-5): the sentinel infinite
    # mass keeps the upper end valid; the same PLD with the cut mass silently dropped (what
    # dp_accounting does with outcomes absent from both dicts) under-states ε
    from dp_accounting.pld import privacy_loss_distribution as pld_module

    mu, delta, h, tail = 0.3, 1e-4, 1e-4, 1e-3
    exact_lower, exact_upper = bracket(1, mu, delta)
    upper = unit_shift_pld(mu, h, True, tail).get_epsilon_for_delta(delta)
    assert math.isinf(upper) or exact_delta(mu, upper) <= delta
    assert upper >= exact_upper - 1e-12
    lower = unit_shift_pld(mu, h, False, tail).get_epsilon_for_delta(delta)
    assert lower <= exact_lower
    assert exact_delta(mu, lower * (1 - 1e-9)) >= delta
    half = support_half_width(mu, tail)
    k = np.arange(-half, half + 1)
    log_p = skellam_log_pmf(mu, k)
    dropped = pld_module.from_two_probability_mass_functions(
        dict(zip(k.tolist(), log_p.tolist(), strict=True)),
        dict(zip(k[:-1].tolist(), log_p[1:].tolist(), strict=True)),  # Q on [-K+1, K] only
        value_discretization_interval=h,
    ).get_epsilon_for_delta(delta)
    assert exact_delta(mu, dropped) > delta  # invalid without the explicit tail


def test_fft_composition_round_off_is_far_below_the_delta_allowance() -> None:
    # rebuild the rounded (pessimistic) unit-shift PLD independently, compose it by direct
    # convolution and compare δ(ε) with dp_accounting's FFT composition: the difference
    # (round-off + its 1e-15 tail truncation) must be far below DELTA_SLACK
    mu, ones, h = 50.0, 20, 2.0**-10
    half = support_half_width(mu)
    k = np.arange(-half + 1, half + 1)
    log_p, log_q = skellam_log_pmf(mu, k), skellam_log_pmf(mu, k - 1) + 1e-12
    idx = np.ceil((log_q - log_p) / h).astype(np.int64)
    step = np.zeros(idx.max() - idx.min() + 1)
    np.add.at(step, idx - idx.min(), np.exp(log_q))
    inf_one = math.exp(skellam_log_pmf(mu, np.array([half]))[0] + 1e-12) + 2 * math.exp(
        log_skellam_tail_bound(mu, half + 1)
    )
    total = step
    for _ in range(ones - 1):
        total = np.convolve(total, step)
    losses = (idx.min() * ones + np.arange(total.size)) * h
    inf_mass = -math.expm1(ones * math.log1p(-inf_one))
    composed = composed_pld(mu, ones, h, True)
    for eps in (0.3, 1.0, 2.0, 4.0):
        direct = inf_mass + float(np.sum(total * np.maximum(0.0, -np.expm1(eps - losses))))
        assert abs(composed.get_delta_for_epsilon(eps) - direct) <= DELTA_SLACK / 100


# ---------------------------------------------------------------- Gaussian limit, RDP
@pytest.mark.parametrize(("ones", "z"), [(100, 3.0), (100, 5.0), (400, 4.0)])
def test_large_variance_approaches_the_gaussian_mechanism(ones: int, z: float) -> None:
    mu = ones * z * z  # Gaussian equivalent: noise multiplier √(μ/m) = z
    lower, upper = bracket(ones, mu)
    gauss = PldAccountant().compose(GaussianEvent(noise_multiplier=z)).get_epsilon(DELTA)
    assert upper == pytest.approx(gauss, rel=0.01)
    assert lower == pytest.approx(gauss, rel=0.01)


@settings(max_examples=15, deadline=None)
@given(
    log_mu=st.floats(min_value=math.log(0.5), max_value=math.log(1e5)),
    ones=st.integers(min_value=1, max_value=100),
)
def test_never_looser_than_rdp(log_mu: float, ones: int) -> None:
    event = counts(ones, math.exp(log_mu), contributors=3)
    tight = SkellamPldAccountant().compose(event).get_epsilon(DELTA)
    rdp = RdpAccountant().compose(event).get_epsilon_bracket(DELTA).epsilon_upper
    assert tight <= rdp


@settings(max_examples=12, deadline=None)
@given(
    log_mu=st.floats(min_value=math.log(1.0), max_value=math.log(2e4)),
    ones=st.integers(min_value=1, max_value=60),
)
def test_monotone_in_variance_and_in_ones(log_mu: float, ones: int) -> None:
    mu = math.exp(log_mu)
    base = bracket(ones, mu)
    assert bracket(ones, 1.25 * mu)[1] <= base[1]  # more noise: smaller ε
    assert bracket(ones + 1, mu)[1] >= base[1]  # more ones: larger ε


def test_huge_variance_is_bounded_at_the_cap_not_an_error() -> None:
    """Noise far beyond any useful ε (e.g. a calibration's upper end) still gets a valid
    answer: the ε of MAX_VARIANCE (less noise), with no certified lower end."""
    huge = skellam_pld_bracket([SkellamPhase(1.25e9, 50)], DELTA)
    at_cap = skellam_pld_bracket([SkellamPhase(MAX_VARIANCE, 50)], DELTA)
    assert huge.epsilon_upper == at_cap.epsilon_upper < 0.01
    assert huge.epsilon_lower == 0.0 < at_cap.epsilon_lower


def test_more_contributors_means_more_noise() -> None:
    one = SkellamPldAccountant().compose(counts(20, 100.0, contributors=10))
    more = SkellamPldAccountant().compose(
        DistributedSkellamCountsEvent(
            max_ones=20,
            local_variance=10.0,
            dimension=1682,
            min_contributors=20,
            expected_contributors=25,
        )
    )
    assert more.get_epsilon(DELTA) < one.get_epsilon(DELTA)


def test_composition_of_distinct_variances_and_counts() -> None:
    acc = SkellamPldAccountant().compose(counts(5, 300.0)).compose(counts(3, 50.0), 2)
    assert {(p.variance, p.shifts) for p in acc.phases()} == {(50.0, 6), (300.0, 5)}
    alone_50 = SkellamPldAccountant().compose(counts(6, 50.0)).get_epsilon(DELTA)
    both = acc.get_epsilon_bracket(DELTA)
    assert both.epsilon_lower <= both.epsilon_upper
    assert both.epsilon_upper > alone_50
    # self-composition by count and by max_ones are the same composition
    by_count = SkellamPldAccountant().compose(counts(1, 80.0), 12).get_epsilon(DELTA)
    by_ones = SkellamPldAccountant().compose(counts(12, 80.0)).get_epsilon(DELTA)
    nested = SkellamPldAccountant().compose(SelfComposedEvent(counts(4, 80.0), 3))
    assert by_count == by_ones == nested.get_epsilon(DELTA)


# ---------------------------------------------------------------- interface, routing
SAMPLED_COUNTS = PoissonSampledEvent(0.1, counts(20, 400.0))
DDG = DistributedDiscreteGaussianEvent(
    l2_sensitivity=100.0,
    l1_sensitivity=1000.0,
    local_sigma=20.0,
    dimension=1024,
    min_contributors=50,
    expected_contributors=60,
)


@pytest.mark.parametrize(
    "bad",
    [GaussianEvent(1.0), SAMPLED_COUNTS, DDG, ComposedEvent((counts(2, 10.0), GaussianEvent(1.0)))],
    ids=["gaussian", "sampled", "ddg", "mixed"],
)
def test_backend_refuses_other_events_transactionally(bad: object) -> None:
    acc = SkellamPldAccountant().compose(counts(20, 400.0))
    before = acc.get_epsilon(DELTA)
    assert not acc.supports(bad)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedEventError):
        acc.compose(bad)  # type: ignore[arg-type]
    assert len(acc.events) == 1
    assert acc.get_epsilon(DELTA) == before


def test_degenerate_events() -> None:
    for backend in (SkellamPldAccountant, RdpAccountant, AutoAccountant):
        free = backend().compose(counts(0, 10.0))
        assert free.get_epsilon(DELTA) == 0.0
        leaky = backend().compose(counts(3, 10.0)).compose(counts(3, 0.0))
        assert math.isinf(leaky.get_epsilon(DELTA))
    with pytest.raises(DPValueError):
        SkellamPldAccountant().compose(counts(3, 10.0)).get_epsilon(DELTA_SLACK)


def test_auto_routes_counts_to_the_exact_backend() -> None:
    auto = AutoAccountant().compose(NoOpEvent()).compose(counts(20, 400.0), 2)
    assert auto.active_backend == "skellam-pld"
    b = auto.get_epsilon_bracket(DELTA)
    assert b.backend == "skellam-pld"
    exact = SkellamPldAccountant().compose(counts(20, 400.0), 2)
    assert auto.get_epsilon(DELTA) == exact.get_epsilon(DELTA)
    assert auto.get_epsilon(DELTA) < RdpAccountant().compose(counts(20, 400.0), 2).get_epsilon(
        DELTA
    )


@pytest.mark.parametrize(
    "other", [GaussianEvent(2.0), DDG, SAMPLED_COUNTS], ids=["gaussian", "ddg", "sampled"]
)
def test_auto_sends_mixtures_to_the_dominated_pld(other: object) -> None:
    auto = AutoAccountant().compose(counts(20, 400.0))
    auto.compose(other)  # type: ignore[arg-type]
    assert auto.active_backend == "discrete-pld"
    tight = DiscretePldAccountant().compose(counts(20, 400.0)).compose(other)  # type: ignore[arg-type]
    rdp = RdpAccountant().compose(counts(20, 400.0)).compose(other)  # type: ignore[arg-type]
    assert auto.get_epsilon_bracket(DELTA).backend == "discrete-pld"
    assert auto.get_epsilon(DELTA) == tight.get_epsilon(DELTA)
    assert auto.get_epsilon(DELTA) <= rdp.get_epsilon_bracket(DELTA).epsilon_upper
    # sampled counts alone too, Gaussian-only stays on the Gaussian PLD, and a mechanism
    # without a Gaussian domination (discrete Laplace) sends everything to RDP
    assert AutoAccountant().compose(SAMPLED_COUNTS).active_backend == "discrete-pld"
    assert AutoAccountant().compose(GaussianEvent(2.0)).active_backend == "pld"
    laplace = DiscreteLaplaceEvent(l1_sensitivity=1.0, scale=5.0)
    assert auto.compose(laplace).active_backend == "rdp"
    assert auto.get_epsilon(DELTA) == rdp.compose(laplace).get_epsilon_bracket(DELTA).epsilon_upper


def test_rdp_leaf_curve_is_akl21_with_exact_sensitivities() -> None:
    from dp.accounting import rdp_analysis as ra

    event = counts(20, 400.0, contributors=8)
    got = RdpAccountant().compose(event).rdp()
    want = ra.skellam_rdp(
        l2_sensitivity=math.sqrt(20), l1_sensitivity=20.0, variance=400.0, orders=ra.ORDERS
    )
    np.testing.assert_allclose(got, want, rtol=1e-12)


# ---------------------------------------------------------------- serialization, ledger
def test_event_json_round_trip() -> None:
    event = counts(20, 400.0, contributors=7)
    assert event_from_json(event.to_json()) == event
    assert event_from_dict(json.loads(json.dumps(event.to_dict()))) == event
    acc = SkellamPldAccountant().compose(event_from_json(event.to_json()))
    assert acc.get_epsilon(DELTA) == SkellamPldAccountant().compose(event).get_epsilon(DELTA)


def test_ledger_replay_and_audit(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = PrivacyLedger.create(path, policy=BudgetPolicy(delta=DELTA, target_epsilon=10.0))
    event = counts(20, 400.0, contributors=10)
    for r in range(2):
        ledger.record_round(
            round_index=r, event=event, cohort_size=12, survivors=12, participants=[f"u{r}"]
        )
    entries = ledger.entries()
    assert [e.backend for e in entries] == ["skellam-pld", "skellam-pld"]
    replay = make_accountant("auto")
    for e in entries:
        replay.compose(e.charged)
        assert replay.get_epsilon(DELTA) == e.cumulative_epsilon
    report = audit_ledger(path)
    assert report.ok, report.problems + report.violations
    ledger.close()
