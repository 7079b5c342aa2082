"""Private active cohort sampling: public centroids, on-device clusters, rates, trainer, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.cli import main
from dp.accounting import stratum_epsilons
from dp.events import (
    PoissonSampledEvent,
    PrivacyEvent,
    StratifiedPoissonSampledEvent,
)
from dp.ledger import audit_ledger
from recsys.data import synthetic_ratings
from recsys.errors import ConfigError
from recsys.features import item_features
from recsys.federated import FCFConfig
from recsys.privacy import epsilon_of
from recsys.recommender import FederatedRecommender, ModelConfig
from recsys.sampling import (
    ClusterCountTask,
    StratifiedConfig,
    allocate_rates,
    assign_clusters,
    device_profiles,
    public_centroids,
)
from recsys.split import leave_last_out
from recsys.trainer import TrainConfig, Trainer, open_ledger

pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")


@pytest.fixture(scope="module")
def small() -> tuple[object, np.ndarray]:
    ratings = synthetic_ratings(300, 120, seed=3)
    return leave_last_out(ratings), item_features(ratings)


# ---------------------------------------------------------------------------- rates


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.floats(-5.0, 500.0), min_size=2, max_size=10),
    frac=st.floats(0.01, 0.9),
    boost=st.floats(1.0, 4.0),
    a=st.floats(0.0, 1.0),
)
def test_rates_spend_the_cohort_and_respect_the_cap(
    counts: list[float], frac: float, boost: float, a: float
) -> None:
    n = np.maximum(np.array(counts), 1.0)
    cohort = frac * n.sum()
    cap = min(1.0, boost * frac)
    rates = allocate_rates(np.array(counts), cohort, allocation=a, max_rate=cap)
    assert np.all(rates >= 0) and np.all(rates <= cap + 1e-15)
    spent = float((n * rates).sum())
    if (n * cap).sum() >= cohort:
        assert spent == pytest.approx(cohort, rel=1e-9)
    else:
        assert np.allclose(rates, cap)


def test_allocation_exponent_interpolates_uniform_and_equal() -> None:
    counts = np.array([400.0, 100.0, 50.0, 10.0])
    uniform = allocate_rates(counts, 56.0, allocation=1.0, max_rate=1.0)
    assert np.allclose(uniform, 0.1)  # proportional allocation = uniform Poisson sampling
    equal = allocate_rates(counts, 40.0, allocation=0.0, max_rate=1.0)
    assert np.allclose(counts * equal, 10.0)  # the same expected number per cluster
    capped = allocate_rates(counts, 56.0, allocation=0.0, max_rate=0.2)
    assert capped[-1] == pytest.approx(0.2) and capped[-2] == pytest.approx(0.2)
    assert (counts * capped).sum() == pytest.approx(56.0)
    assert capped[0] < 0.1  # the largest cluster is sampled below the uniform rate
    for bad in ({"max_rate": 0.0}, {"max_rate": 1.5}):
        with pytest.raises(ConfigError):
            allocate_rates(counts, 10.0, allocation=0.5, **bad)
    with pytest.raises(ConfigError):
        allocate_rates(counts, 0.0, allocation=0.5, max_rate=0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"clusters": 1},
        {"allocation": 1.5},
        {"allocation": math.nan},
        {"max_boost": 0.5},
        {"cluster_share": 0.0},
        {"cluster_share": 1.0},
        {"kmeans_iterations": 0},
    ],
)
def test_bad_stratified_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        StratifiedConfig(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- clustering


def test_centroids_are_public_and_deterministic(small: tuple[object, np.ndarray]) -> None:
    _, feats = small
    a = public_centroids(feats, 5, seed=1)
    b = public_centroids(feats, 5, seed=1)
    assert np.array_equal(a, b)
    assert a.shape == (6, feats.shape[1])  # 5 centroids and the public centre
    assert np.allclose(np.linalg.norm(a[:-1], axis=1), 1.0)
    weighted = public_centroids(
        feats, 5, seed=1, weights=np.arange(feats.shape[0], dtype=np.float64) - 10.0
    )
    assert not np.array_equal(weighted, a)
    with pytest.raises(ConfigError):
        public_centroids(np.zeros((10, 0)), 2)
    with pytest.raises(ConfigError):
        public_centroids(feats, feats.shape[0] + 1)


def test_devices_assign_themselves_and_upload_one_hot(small: tuple[object, np.ndarray]) -> None:
    split, feats = small
    rec = FederatedRecommender(split.train, feats, ModelConfig(kind="fcf"))  # type: ignore[attr-defined]
    task = ClusterCountTask(feats, 300, StratifiedConfig(clusters=4), cohort=30, max_rate=0.2)
    users = np.arange(300, dtype=np.int64)
    up = task.local_updates(rec.fleet, rec.server, users)
    assert up.shape == (300, 4) and task.upload_dim == 4
    assert np.array_equal(up.sum(axis=1), np.ones(300))
    assert np.all(np.linalg.norm(up, axis=1) <= task.clip_norm)
    assert task.centroids is not None and task.center is not None
    prof = device_profiles(rec.fleet, users, task.center)
    labels = assign_clusters(prof, task.centroids)
    assert np.array_equal(np.argmax(up, axis=1), labels)
    assert np.array_equal(task.device_strata, labels)
    # a device's assignment depends on its own history only
    alone = task.local_updates(rec.fleet, rec.server, users[7:8])
    assert np.array_equal(alone[0], up[7])
    with pytest.raises(ConfigError):
        task.inclusion_probabilities()
    task.server_step(rec.server, up.sum(axis=0) + np.array([3.0, -2.0, 0.5, 0.0]), 300.0)
    q = task.inclusion_probabilities()
    assert q.shape == (300,) and np.all(q <= 0.2)
    assert task.rates is not None
    assert np.array_equal(q, task.rates[labels])


# ---------------------------------------------------------------------------- trainer


def _config(sampler: str, **kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "privacy": "central",
        "epsilon": 4.0,
        "rounds": 4,
        "cohort": 40,
        "secagg": "off",
        "dropout": 0.0,
        "simulation_noise": True,
        "eval_every": 0,
        "model": ModelConfig(kind="fcf", fcf=FCFConfig(dim=4)),
        "sampler": sampler,
        "stratified": StratifiedConfig(clusters=4, allocation=0.0, max_boost=2.0),
    }
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_default_is_uniform_and_stratified_needs_a_cohort() -> None:
    assert TrainConfig().sampler == "uniform"
    with pytest.raises(ConfigError):
        TrainConfig(sampler="stratified")
    with pytest.raises(ConfigError):
        TrainConfig(sampler="active", cohort=10)  # type: ignore[arg-type]


def _worst_case(event: PrivacyEvent) -> PrivacyEvent:
    if isinstance(event, StratifiedPoissonSampledEvent):
        return PoissonSampledEvent(max(event.stratum_probabilities), event.event)
    return event


def test_stratified_run_is_accounted_at_the_largest_rate(
    small: tuple[object, np.ndarray], tmp_path: Path
) -> None:
    split, feats = small
    config = _config("stratified")
    trainer = Trainer(split, feats, config)  # type: ignore[arg-type]
    trainer.ledger = open_ledger(str(tmp_path / "ledger.sqlite"), trainer)
    result = trainer.run()
    trainer.ledger.close()
    tasks = [r.task for r in result.records]
    assert tasks == ["clusters", "fcf", "fcf", "fcf", "fcf"]
    assert result.records[0].sampled == 300  # the cluster release asks every device
    assert trainer.accounting_rate == pytest.approx(2 * 40 / 300)
    strat = trainer.stratifier
    assert strat is not None and strat.rates is not None and strat.counts is not None
    assert max(strat.rates) <= trainer.accounting_rate
    events = list(trainer.released_events)
    fcf = [e for e in events if isinstance(e, StratifiedPoissonSampledEvent)]
    assert len(fcf) == 4
    assert all(e.stratum_probabilities == tuple(strat.rates.tolist()) for e in fcf)
    # the run's ε = the direct computation with every round at its largest rate, within ε
    direct = epsilon_of([_worst_case(e) for e in events], config.delta)
    assert result.report_card["epsilon"] == pytest.approx(direct, rel=1e-9)
    assert result.report_card["epsilon"] <= config.epsilon + 1e-9
    # the cluster release is charged (it is the first, non-free, row of the ledger)
    report = audit_ledger(tmp_path / "ledger.sqlite")
    assert report.ok, report.problems + report.violations
    assert report.rounds[0].recorded > 0
    per = result.report_card["stratified"]["stratum_epsilons"]
    assert per == pytest.approx(list(stratum_epsilons(events, config.delta)))
    assert max(per) <= result.report_card["epsilon"] + 1e-9


def test_stratified_pays_for_its_worst_case_rate(small: tuple[object, np.ndarray]) -> None:
    split, feats = small
    uniform = Trainer(split, feats, _config("uniform"))  # type: ignore[arg-type]
    strat = Trainer(split, feats, _config("stratified"))  # type: ignore[arg-type]
    # equal ε: the stratified rounds get more noise (cluster release + rate 2q)
    assert strat.plan.round_noise > uniform.plan.round_noise
    assert strat.plan.planned_epsilon <= 4.0 + 1e-9
    assert uniform.stratifier is None and uniform.accounting_rate == uniform.sampling_rate


def test_sampled_devices_follow_their_cluster_rates(small: tuple[object, np.ndarray]) -> None:
    split, feats = small
    trainer = Trainer(split, feats, _config("stratified", privacy="none", rounds=1))  # type: ignore[arg-type]
    trainer.run()
    strat = trainer.stratifier
    assert strat is not None
    probs = strat.inclusion_probabilities()
    draws = np.zeros(300)
    for _ in range(300):
        draws[trainer._cohort()] += 1
    for s in range(4):
        members = strat.device_strata == s
        if members.sum() == 0:
            continue
        observed = draws[members].sum()
        expected = 300 * probs[members].sum()
        assert abs(observed - expected) <= 5 * math.sqrt(expected) + 1


def test_cli_sampler_flags(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", "synthetic", "--users", "120", "--items", "40", "--quiet"]
    args += ["--privacy", "central", "--secagg", "off", "--rounds", "2", "--cohort", "20"]
    args += ["--model", "fcf", "--no-baselines", "--sampler", "stratified", "--clusters", "3"]
    assert main([*args, "--out", str(out)]) == 0
    card = json.loads((out / "summary.json").read_text())["report_card"]
    assert card["sampler"] == "stratified"
    assert card["stratified"]["clusters"] == 3 and len(card["stratified"]["rates"]) == 3
    assert card["fcf_rounds"] == 2
    bad = main(["train", "--data", "synthetic", "--users", "40", "--items", "30", "--quiet",
                "--sampler", "stratified", "--out", str(tmp_path / "bad")])  # fmt: skip
    assert bad == 2


# ---------------------------------------------------------------------------- the study


def test_rounds_to_target_and_design_bound(small: tuple[object, np.ndarray]) -> None:
    from analysis.studies.sampling import design_bound, rounds_to_target

    assert rounds_to_target([0, 5, 10, 15], [0.01, 0.04, 0.06, 0.05], 0.05) == 10
    assert rounds_to_target([0, 5], [0.01, 0.02], 0.05) is None
    assert rounds_to_target([0, 5], [0.07, 0.02], 0.05) == 0
    split, feats = small
    bound = design_bound(split, feats, cohort=30)  # type: ignore[arg-type]
    assert 0.0 <= bound["clipped_fraction"] <= 1.0
    # the oracle design is never worse than uniform (it minimises the same variance)
    assert bound["variance_ratio_uniform_over_optimal"] >= 1.0 - 1e-9


def test_study_quick_run_writes_its_outputs(tmp_path: Path) -> None:
    from analysis.studies import main as study_main

    assert study_main("sampling", ["--out", str(tmp_path), "--quick"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "clusters.csv",
        "curves.csv",
        "report_sampling.md",
        "rounds_to_target.csv",
        "sampling.png",
        "summary.csv",
    ]
    report = (tmp_path / "report_sampling.md").read_text()
    assert "rounds to target" in report and "Verdict" in report
