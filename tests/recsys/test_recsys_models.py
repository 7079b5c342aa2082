"""Federated models: dense fixed-length uploads (R1), clipping, local fits, server optimizers."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data import synthetic_ratings
from recsys.errors import ConfigError
from recsys.features import fit_feature_weights, item_features, recency_weights
from recsys.federated import (
    DeviceFleet,
    FCFConfig,
    FCFTask,
    ItemServer,
    PopularityTask,
    clip_rows,
)
from recsys.metrics import evaluate_ranking
from recsys.recommender import FederatedRecommender, ModelConfig
from recsys.split import leave_last_out


@pytest.fixture(scope="module")
def small():  # type: ignore[no-untyped-def]
    r = synthetic_ratings(400, 90, seed=5, mean_activity=25, min_activity=4)
    split = leave_last_out(r)
    return r, split, item_features(r)


def test_r1_upload_length_independent_of_history(small) -> None:  # type: ignore[no-untyped-def]
    r, split, feats = small
    counts = split.train.counts
    light, heavy = int(np.argmin(counts)), int(np.argmax(counts))
    assert counts[heavy] > 5 * counts[light]
    fleet = DeviceFleet(split.train, feats)
    server = ItemServer(r.num_items)
    config = FCFConfig(dim=4)
    server.init_factors(4, 0.1, feats, seed=0)
    for task in (PopularityTask(r.num_items, cap=6), FCFTask(r.num_items, config)):
        cohort = np.array([light, heavy], dtype=np.int64)
        up = task.local_updates(fleet, server, cohort)
        assert up.shape == (2, task.upload_dim)
        assert task.upload_dim in (r.num_items, r.num_items * 5)
        assert (np.linalg.norm(up, axis=1) <= task.clip_norm + 1e-9).all()
    # FCF uploads are dense: every item's coordinates move, rated or not
    fcf = FCFTask(r.num_items, config).local_updates(fleet, server, np.array([light]))
    per_item = np.abs(fcf.reshape(r.num_items, 5)).sum(axis=1)
    assert (per_item > 0).all()


def test_popularity_upload_is_the_capped_recent_indicator(small) -> None:  # type: ignore[no-untyped-def]
    r, split, feats = small
    fleet = DeviceFleet(split.train, feats)
    task = PopularityTask(r.num_items, cap=3)
    up = task.local_updates(fleet, ItemServer(r.num_items), np.array([7], dtype=np.int64))
    expected = np.zeros(r.num_items)
    expected[split.train.user_items(7)[-3:]] = 1.0
    assert np.array_equal(up[0], expected)
    assert task.clip_norm == pytest.approx(np.sqrt(3))


def test_clip_rows() -> None:
    x = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    out = clip_rows(x, 1.0)
    assert np.allclose(out, [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]])


def test_recency_weights_sum_to_one_and_favour_recent(small) -> None:  # type: ignore[no-untyped-def]
    _, split, _ = small
    w = recency_weights(split.train, 2.0)
    sums = np.add.reduceat(w, split.train.indptr[:-1])
    assert np.allclose(sums, 1.0)
    first = w[split.train.indptr[0] : split.train.indptr[1]]
    assert np.all(np.diff(first) > 0)  # later items weigh more
    assert first[-1] / first[-3] == pytest.approx(2.0)


def test_feature_model_recovers_a_preference() -> None:
    # two features; the user only ever picks items with feature 0
    feats = np.array([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 5)
    obs = np.zeros((2, 10))
    obs[0, :5] = 0.2
    obs[1, 5:] = 0.2
    w = fit_feature_weights(obs, feats, np.zeros(10), l2=0.01, iterations=20)
    assert w[0, 0] - w[0, 1] > 2.0 and w[1, 1] - w[1, 0] > 2.0
    # row u depends only on row u of the observations
    w_single = fit_feature_weights(obs[:1], feats, np.zeros(10), l2=0.01, iterations=20)
    assert np.allclose(w_single[0], w[0])
    with pytest.raises(ConfigError):
        fit_feature_weights(obs, feats, np.zeros(10), l2=0.0)


@pytest.mark.parametrize("optimizer", ["fedavg", "momentum", "adam"])
def test_server_optimizers_descend(optimizer: str) -> None:
    config = FCFConfig(dim=2, optimizer=optimizer, learning_rate=0.1)  # type: ignore[arg-type]
    server = ItemServer(3)
    server.init_factors(2, 0.1, np.zeros((3, 0)), seed=0)
    assert server.item_factors is not None
    before = server.item_factors.copy()
    grad = np.ones((3, 3))
    server.apply_gradient(grad, config)
    assert server.item_factors is not None and server.item_bias is not None
    assert (server.item_factors < before).all() and (server.item_bias < 0).all()


def test_fcf_alone_learns_on_synthetic() -> None:
    r = synthetic_ratings(500, 80, seed=9, mean_activity=25, min_activity=5)
    split = leave_last_out(r)
    feats = item_features(r)
    rec = FederatedRecommender(
        split.train, feats, ModelConfig(kind="fcf", fcf=FCFConfig(dim=4, learning_rate=0.05))
    )
    cohort = np.arange(r.num_users, dtype=np.int64)
    before = evaluate_ranking(rec.scores, split).hr
    for task, rounds in rec.tasks(15):
        for _ in range(rounds):
            up = task.local_updates(rec.fleet, rec.server, cohort)
            task.server_step(rec.server, up.sum(axis=0), float(len(cohort)))
            rec.after_step(task)
    after = evaluate_ranking(rec.scores, split).hr
    assert after > before + 0.02


def test_model_config_validation() -> None:
    with pytest.raises(ConfigError):
        ModelConfig(kind="nope")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        FCFConfig(optimizer="sgd")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        FCFConfig(clip_norm=0.0)


def test_opacus_silo_is_record_level_and_ledgered(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dp.ledger import audit_ledger
    from recsys.silo import SiloConfig, train_silo

    r = synthetic_ratings(80, 40, seed=1, mean_activity=20, min_activity=5)
    split = leave_last_out(r)
    config = SiloConfig(dim=3, epochs=1, batch_size=64, noise_multiplier=1.2)
    res = train_silo(split.train, np.arange(50), config, ledger_path=tmp_path / "silo.sqlite")
    assert res.item_factors.shape == (40, 3) and np.isfinite(res.item_factors).all()
    assert res.users == 50 and res.steps >= 1
    assert res.sample_rate == pytest.approx(64 / res.records)
    # our PLD accountant and Opacus' RDP accountant agree to within RDP's looseness
    assert 0 < res.epsilon <= res.epsilon_opacus * 1.05
    report = audit_ledger(tmp_path / "silo.sqlite")
    assert not report.tampered
    with pytest.raises(ConfigError):
        SiloConfig(noise_multiplier=0.0)


def test_auto_model_choice() -> None:
    from recsys.recommender import RESIDUAL_MIN_USERS, choose_model_kind

    assert choose_model_kind("none", 943) == "popfeat+fcf"
    assert choose_model_kind("distributed", 943) == "popfeat"
    assert choose_model_kind("central", RESIDUAL_MIN_USERS) == "popfeat+fcf"
