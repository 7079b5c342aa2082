"""Poisson cohorts vary in size: the noise shares a plan guarantees must cover that too."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from recsys.channels import ChannelSpec, make_channel
from recsys.data import synthetic_ratings
from recsys.features import item_features
from recsys.federated import FCFConfig
from recsys.recommender import ModelConfig
from recsys.split import leave_last_out
from recsys.trainer import TrainConfig, Trainer, open_ledger

pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")


def _channel(dropout: float, population: int | None):  # type: ignore[no-untyped-def]
    spec = ChannelSpec(
        "distributed", "off", dropout, "discrete_gaussian", 32, 1e-4, 0, True,
        population=population,
    )  # fmt: skip
    return make_channel(spec)


@pytest.mark.parametrize("dropout", [0.0, 0.1, 0.3])
def test_full_participation_keeps_the_dropout_only_bound(dropout: float) -> None:
    expected = 943
    old = expected * (1 - dropout) - 4 * math.sqrt(expected * dropout * (1 - dropout))
    for population in (None, expected):
        got = _channel(dropout, population).min_contributors(expected)
        assert got == max(1, min(expected, math.floor(old)))


@pytest.mark.parametrize(("population", "expected", "dropout"), [(200, 40, 0.0), (3000, 1000, 0.1)])
def test_sampled_cohorts_rarely_fall_below_the_guaranteed_shares(
    population: int, expected: int, dropout: float
) -> None:
    guaranteed = _channel(dropout, population).min_contributors(expected)
    q = expected / population
    # simulation of who is sampled and who drops (not a security value): seeded
    rng = np.random.default_rng(0)
    survivors = rng.binomial(population, q * (1 - dropout), size=200_000)
    assert np.mean(survivors < guaranteed) < 1e-3
    # the dropout-only bound it replaces is under-run about half the time without dropouts
    naive = expected * (1 - dropout) - 4 * math.sqrt(expected * dropout * (1 - dropout))
    assert np.mean(survivors < math.floor(naive)) > 0.01


def test_poisson_cohorts_never_overspend_the_ledger(tmp_path: Path) -> None:
    r = synthetic_ratings(200, 50, seed=4, mean_activity=12, min_activity=4)
    split = leave_last_out(r)
    config = TrainConfig(
        privacy="distributed",
        epsilon=8.0,
        rounds=12,
        cohort=40,
        secagg="off",
        dropout=0.0,
        seed=1,
        eval_every=0,
        simulation_noise=True,
        model=ModelConfig(kind="popfeat+fcf", cap=5, fcf=FCFConfig(dim=3)),
    )
    trainer = Trainer(split, item_features(r), config)
    ledger = open_ledger(str(tmp_path / "ledger.sqlite"), trainer)
    trainer.ledger = ledger
    result = trainer.run()
    assert len(result.records) == 13  # popularity + every FCF round released
    assert float(ledger.epsilon) <= 8.0 + 1e-9
