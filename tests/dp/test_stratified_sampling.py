"""Heterogeneous (stratified) Poisson sampling: the event, its accounting, and the ledger.

The accounting claim under test: with add/remove-one-user adjacency, a user included with
its own probability q_u has the privacy loss of ``PoissonSampled(q_u, M)`` whatever the
other users' rates are, so a run's user-level ε is the accountant's ε at max_u q_u in every
round, and a per-stratum ε is the composition at that stratum's rates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dp.accounting import (
    make_accountant,
    normalize,
    num_strata,
    stratum_epsilons,
    stratum_view,
)
from dp.budget import BudgetPolicy
from dp.errors import DPValueError, EventDecodeError, UnsupportedEventError
from dp.events import (
    ComposedEvent,
    DistributedDiscreteGaussianEvent,
    GaussianEvent,
    NonPrivateEvent,
    PoissonSampledEvent,
    PrivacyEvent,
    SelfComposedEvent,
    StratifiedPoissonSampledEvent,
    event_from_dict,
    event_from_json,
)
from dp.ledger import PrivacyLedger, audit_ledger, charged_event
from dp.rng import SimulationRng
from dp.samplers import bernoulli

DELTA = 1e-5
DDG = DistributedDiscreteGaussianEvent(
    l2_sensitivity=1000.0,
    l1_sensitivity=3e4,
    local_sigma=300.0,
    dimension=256,
    min_contributors=40,
    expected_contributors=50,
)


def eps(events: Sequence[PrivacyEvent], backend: str) -> float:
    accountant = make_accountant(backend)
    for e in events:
        accountant.compose(e)
    return accountant.get_epsilon_bracket(DELTA).epsilon_upper


# ---------------------------------------------------------------------------- the event


def test_json_round_trip_keeps_the_stratum_rates() -> None:
    event = StratifiedPoissonSampledEvent((0.01, 0.2, 0.0, 1), DDG)
    assert event.stratum_probabilities == (0.01, 0.2, 0.0, 1.0)
    assert all(isinstance(q, float) for q in event.stratum_probabilities)
    assert event_from_json(event.to_json()) == event
    assert event.to_dict()["stratum_probabilities"] == [0.01, 0.2, 0.0, 1.0]
    assert event.max_probability == 1.0


@pytest.mark.parametrize(
    "rates", [(), (1.5,), (-0.1, 0.2), (math.nan,), (True, 0.1), ("0.1",), 0.1, None]
)
def test_bad_rates_are_rejected(rates: object) -> None:
    with pytest.raises(DPValueError):
        StratifiedPoissonSampledEvent(rates, GaussianEvent(1.0))  # type: ignore[arg-type]


def test_strict_decoding() -> None:
    good = StratifiedPoissonSampledEvent((0.1, 0.2), GaussianEvent(1.0)).to_dict()
    for bad in ({**good, "stratum_probabilities": 0.1}, {**good, "stratum_probabilities": []}):
        with pytest.raises(EventDecodeError):
            event_from_dict(bad)
    with pytest.raises(EventDecodeError):
        event_from_dict({**good, "extra": 1})


def test_stratum_event_bounds() -> None:
    event = StratifiedPoissonSampledEvent((0.1, 0.2), GaussianEvent(1.0))
    assert event.stratum_event(1) == PoissonSampledEvent(0.2, GaussianEvent(1.0))
    for bad in (-1, 2):
        with pytest.raises(DPValueError):
            event.stratum_event(bad)


@pytest.mark.parametrize("backend", ["pld", "rdp", "auto"])
def test_nested_sampling_is_refused(backend: str) -> None:
    inner = StratifiedPoissonSampledEvent((0.1,), GaussianEvent(1.0))
    accountant = make_accountant(backend)
    for event in (
        PoissonSampledEvent(0.5, inner),
        StratifiedPoissonSampledEvent((0.5,), PoissonSampledEvent(0.1, GaussianEvent(1.0))),
    ):
        with pytest.raises(UnsupportedEventError):
            accountant.compose(event)
    assert not accountant.events


# ---------------------------------------------------------------------------- accounting


@pytest.mark.parametrize("backend", ["pld", "rdp", "auto"])
@pytest.mark.parametrize("q", [0.003, 0.05, 1.0])
def test_equal_rates_reduce_exactly_to_poisson(backend: str, q: float) -> None:
    base = GaussianEvent(1.3)
    stratified = SelfComposedEvent(StratifiedPoissonSampledEvent((q, q, q), base), 40)
    poisson = SelfComposedEvent(PoissonSampledEvent(q, base), 40)
    assert normalize(stratified) == normalize(poisson)
    assert eps([stratified], backend) == eps([poisson], backend)


@settings(max_examples=15, deadline=None)
@given(
    rates=st.lists(st.floats(0.001, 1.0), min_size=1, max_size=5),
    sigma=st.floats(0.8, 20.0),
    steps=st.integers(1, 100),
)
def test_run_epsilon_is_the_direct_computation_at_the_largest_rate(
    rates: list[float], sigma: float, steps: int
) -> None:
    base = GaussianEvent(sigma)
    run = [SelfComposedEvent(StratifiedPoissonSampledEvent(tuple(rates), base), steps)]
    direct = [SelfComposedEvent(PoissonSampledEvent(max(rates), base), steps)]
    for backend in ("rdp", "pld"):
        assert eps(run, backend) == eps(direct, backend)
    # and every stratum's own ε is at most the run's
    per = stratum_epsilons(run, DELTA, backend="rdp")
    assert len(per) == len(rates)
    assert max(per) == pytest.approx(eps(run, "rdp"), rel=1e-12)
    order = np.argsort(rates, kind="stable")
    assert all(per[order[i]] <= per[order[i + 1]] + 1e-12 for i in range(len(rates) - 1))


def test_run_epsilon_matches_dp_accounting_at_the_largest_rate() -> None:
    dp_accounting = pytest.importorskip("dp_accounting")
    rates, sigma, steps = (0.004, 0.02, 0.01), 1.1, 300
    ours = eps(
        [SelfComposedEvent(StratifiedPoissonSampledEvent(rates, GaussianEvent(sigma)), steps)],
        "pld",
    )
    pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    pld.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(max(rates), dp_accounting.GaussianDpEvent(sigma)),
            steps,
        )
    )
    reference = pld.get_epsilon(DELTA)
    assert reference * (1 - 2e-3) <= ours <= reference * 1.01 + 5e-3


def test_per_stratum_epsilon_matches_a_direct_computation_when_rates_change() -> None:
    """Rates change between rounds (re-published from released counts); each stratum's ε is
    the composition of that stratum's own Poisson events, the run's is at the per-round max."""
    g, pop = GaussianEvent(2.0), GaussianEvent(5.0)
    rounds = [
        SelfComposedEvent(StratifiedPoissonSampledEvent((0.10, 0.02, 0.05), g), 30),
        SelfComposedEvent(StratifiedPoissonSampledEvent((0.01, 0.20, 0.05), g), 20),
    ]
    events: list[PrivacyEvent] = [pop, ComposedEvent(tuple(rounds))]
    assert num_strata(events) == 3
    got = stratum_epsilons(events, DELTA, backend="pld")
    for s, (a, b) in enumerate([(0.10, 0.01), (0.02, 0.20), (0.05, 0.05)]):
        direct = [
            pop,
            SelfComposedEvent(PoissonSampledEvent(a, g), 30),
            SelfComposedEvent(PoissonSampledEvent(b, g), 20),
        ]
        assert got[s] == eps(direct, "pld")
    worst = [
        pop,
        SelfComposedEvent(PoissonSampledEvent(0.10, g), 30),
        SelfComposedEvent(PoissonSampledEvent(0.20, g), 20),
    ]
    assert eps(events, "pld") == eps(worst, "pld")
    assert eps(events, "pld") > max(got)  # no single stratum has the max in both phases


def test_stratum_view_and_count_checks() -> None:
    a = StratifiedPoissonSampledEvent((0.1, 0.2), GaussianEvent(1.0))
    b = StratifiedPoissonSampledEvent((0.1, 0.2, 0.3), GaussianEvent(1.0))
    assert stratum_view(GaussianEvent(1.0), 5) == GaussianEvent(1.0)
    assert stratum_view(SelfComposedEvent(a, 3), 0) == SelfComposedEvent(
        PoissonSampledEvent(0.1, GaussianEvent(1.0)), 3
    )
    with pytest.raises(DPValueError):
        num_strata([a, b])
    assert stratum_epsilons([GaussianEvent(1.0)], DELTA) == ()
    with pytest.raises(DPValueError):
        stratum_epsilons([a], 0.0)


def test_discrete_mechanisms_are_accounted_at_the_largest_rate() -> None:
    run = [SelfComposedEvent(StratifiedPoissonSampledEvent((0.01, 0.08), DDG), 50)]
    direct = [SelfComposedEvent(PoissonSampledEvent(0.08, DDG), 50)]
    assert eps(run, "auto") == eps(direct, "auto") == eps(direct, "discrete-pld")
    assert eps(run, "rdp") == eps(direct, "rdp") > eps(direct, "auto")
    assert not make_accountant("pld").supports(run[0])


def test_zero_rates_and_non_private_leaves() -> None:
    assert eps([StratifiedPoissonSampledEvent((0.0, 0.0), GaussianEvent(1.0))], "pld") == 0.0
    assert math.isinf(eps([StratifiedPoissonSampledEvent((0.1,), NonPrivateEvent())], "rdp"))


def _gaussian_mixture_pdf(x: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    """pdf of Σ_k w_k N(k, σ²) on x."""
    k = np.arange(len(weights))
    out: np.ndarray = (weights[None, :] * stats.norm.pdf(x[:, None], k[None, :], sigma)).sum(1)
    return out


def _hockey(p: np.ndarray, q: np.ndarray, e: float, dx: float) -> float:
    return float(np.maximum(p - math.exp(e) * q, 0.0).sum() * dx)


@pytest.mark.parametrize("q_u", [0.05, 0.3])
def test_heterogeneous_amplification_by_direct_integration(q_u: float) -> None:
    """A sum of 0/1 contributions with heterogeneous inclusion probabilities plus Gaussian
    noise: the hockey-stick divergence between the outputs with and without user u, computed
    by numerical integration over the exact output mixtures, never exceeds that of the
    Poisson-subsampled Gaussian at u's own rate — whatever the others' rates are."""
    sigma = 1.0
    others = np.array([0.9, 0.02, 0.5, 0.3])  # the other users' own rates
    # distribution of the others' included count: a Poisson-binomial
    count = np.array([1.0])
    for r in others:
        count = np.convolve(count, [1 - r, r])
    with_u = np.convolve(count, [1 - q_u, q_u])
    without_u = np.append(count, 0.0)
    x = np.linspace(-12.0, 12.0 + len(others), 200_001)
    dx = float(x[1] - x[0])
    p = _gaussian_mixture_pdf(x, with_u, sigma)
    q = _gaussian_mixture_pdf(x, without_u, sigma)
    p1 = _gaussian_mixture_pdf(x, np.array([1 - q_u, q_u]), sigma)
    q1 = _gaussian_mixture_pdf(x, np.array([1.0, 0.0]), sigma)
    for e in (0.0, 0.05, 0.2, 0.5, 1.0):
        for a, b, a1, b1 in ((p, q, p1, q1), (q, p, q1, p1)):  # remove and add directions
            assert _hockey(a, b, e, dx) <= _hockey(a1, b1, e, dx) + 1e-9
    # and the accountant's one-step δ at the largest rate bounds it from above
    accountant = make_accountant("pld").compose(
        StratifiedPoissonSampledEvent((q_u, 0.01), GaussianEvent(sigma))
    )
    e_acc = accountant.get_epsilon(1e-3)
    assert max(_hockey(p, q, e_acc, dx), _hockey(q, p, e_acc, dx)) <= 1e-3 * (1 + 1e-6)


# ---------------------------------------------------------------------------- sampler


@pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")
def test_bernoulli_is_exact_at_the_edges_and_unbiased() -> None:
    rng = SimulationRng(7)
    p = np.array([0.0, 1.0, 5e-324, 0.25, 0.9] * 40_000)
    got = bernoulli(p, rng).reshape(-1, 5)
    assert not got[:, 0].any() and got[:, 1].all() and not got[:, 2].any()
    for col, prob in ((3, 0.25), (4, 0.9)):
        mean = got[:, col].mean()
        assert abs(mean - prob) < 5 * math.sqrt(prob * (1 - prob) / len(got))
    with pytest.raises(DPValueError):
        bernoulli(np.array([0.5, 1.2]), rng)
    with pytest.raises(DPValueError):
        bernoulli(np.array([[0.5]]), rng)
    with pytest.raises(DPValueError):
        bernoulli(np.array([math.nan]), rng)


# ---------------------------------------------------------------------------- ledger


def test_ledger_records_the_stratum_rates_and_charges_the_worst_case(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "ledger.sqlite"
    policy = BudgetPolicy(delta=DELTA, target_epsilon=50.0)
    rates = [(0.02, 0.08, 0.05), (0.03, 0.04, 0.1)]
    with PrivacyLedger.create(path, policy=policy) as ledger:
        for i, r in enumerate(rates):
            planned = StratifiedPoissonSampledEvent(r, DDG)
            # fewer survivors than the plan's guaranteed contributors: charged for 30
            entry = ledger.record_round(
                round_index=i + 1, event=planned, cohort_size=35, survivors=30
            )
            assert entry.event.stratum_probabilities == r  # type: ignore[attr-defined]
            assert entry.body["event"]["stratum_probabilities"] == list(r)
            assert entry.charged == StratifiedPoissonSampledEvent(
                r, DistributedDiscreteGaussianEvent(**{**DDG.__dict__, "min_contributors": 30})
            )
            assert entry.below_plan
        final = ledger.epsilon
    direct = eps(
        [charged_event(PoissonSampledEvent(max(r), DDG), "released", 30) for r in rates], "auto"
    )
    assert final == direct
    report = audit_ledger(path)
    assert report.ok, report.problems + report.violations
    with PrivacyLedger.open(path) as reopened:
        assert reopened.epsilon == final
