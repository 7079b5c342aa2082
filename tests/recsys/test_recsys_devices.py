"""The device simulator and its deadline dropouts through the real SecAgg path and ledger."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dp.ledger import participants_digest
from recsys.channels import ChannelSpec, make_channel
from recsys.data import synthetic_ratings
from recsys.devices import DAY_SECONDS, DeviceConfig, DeviceSimulator
from recsys.errors import ConfigError
from recsys.features import item_features
from recsys.federated import FCFConfig
from recsys.recommender import ModelConfig
from recsys.split import leave_last_out
from recsys.trainer import TrainConfig, Trainer, open_ledger

pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"deadline": 0.0}, "deadline"),
        ({"deadline": float("inf")}, "deadline"),
        ({"availability": 0.0}, "availability"),
        ({"availability": 1.5}, "availability"),
        ({"compute_sigma": -1.0}, "compute_sigma"),
        ({"straggler_shape": 0.0}, "straggler_shape"),
        ({"profile": "quantum"}, "profile"),
    ],
)
def test_bad_device_configs_are_typed(kw: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        DeviceConfig(**kw)


def test_population_is_seeded_and_heavy_tailed() -> None:
    a = DeviceSimulator(5000, DeviceConfig(), seed=4)
    b = DeviceSimulator(5000, DeviceConfig(), seed=4)
    c = DeviceSimulator(5000, DeviceConfig(), seed=5)
    assert np.array_equal(a.compute, b.compute) and np.array_equal(a.bandwidth, b.bandwidth)
    assert not np.array_equal(a.compute, c.compute)
    # log-normal: the slowest 1% are far slower than the median device
    assert np.quantile(a.compute, 0.99) > 5 * np.median(a.compute)
    users = np.arange(5000, dtype=np.int64)
    online = np.mean([a.online(users, t).mean() for t in np.linspace(0, DAY_SECONDS, 12)])
    assert online == pytest.approx(0.7, abs=0.05)


@settings(max_examples=30, deadline=None)
@given(
    deadline=st.floats(0.05, 60.0),
    availability=st.floats(0.2, 1.0),
    seed=st.integers(0, 2**16),
    nbytes=st.integers(0, 10**6),
)
def test_round_decisions_follow_the_deadline(
    deadline: float, availability: float, seed: int, nbytes: int
) -> None:
    sim = DeviceSimulator(60, DeviceConfig(deadline=deadline, availability=availability), seed=seed)
    cohort = np.arange(0, 60, 2, dtype=np.int64)
    start = sim.clock
    rnd = sim.next_round(cohort, 2048, nbytes)
    online = sim.online(cohort, start)
    assert set(rnd.offline.tolist()) == set(np.flatnonzero(~online).tolist())
    late = np.flatnonzero(online & (rnd.device_seconds > deadline))
    assert rnd.late.tolist() == late.tolist()
    included = online & (rnd.device_seconds <= deadline)
    if len(late):
        assert rnd.wall_seconds == deadline
    elif included.any():
        assert rnd.wall_seconds == pytest.approx(rnd.device_seconds[included].max())
    assert rnd.wall_seconds <= deadline
    assert sim.clock == start + max(sim.config.round_interval, rnd.wall_seconds)
    assert rnd.drop_plan == {"advertise": rnd.offline.tolist(), "mask": rnd.late.tolist()}


def test_uniform_profile_with_a_generous_deadline_drops_nobody() -> None:
    sim = DeviceSimulator(50, DeviceConfig(profile="uniform", deadline=100.0), seed=0)
    rnd = sim.next_round(np.arange(50, dtype=np.int64), 4096, 16_000)
    assert rnd.dropped == 0
    assert sim.expected_dropout(4096, 16_000) == 0.0
    tight = DeviceSimulator(50, DeviceConfig(profile="uniform", deadline=0.01), seed=0)
    assert tight.next_round(np.arange(50, dtype=np.int64), 4096, 16_000).dropped == 50


@pytest.mark.parametrize("secagg", ["full", "plus", "off"])
def test_aggregate_is_the_sum_of_the_devices_that_met_the_deadline(secagg: str) -> None:
    """Deadline misses and offline devices go through the real SecAgg dropout stages: the
    unmasked aggregate is exactly (up to the 2^-20 fixed point) the on-time devices' sum."""
    n, d = 40, 24
    rng = np.random.default_rng(9)
    uploads = rng.normal(0.0, 0.2, (n, d))
    uploads /= np.maximum(1.0, np.linalg.norm(uploads, axis=1, keepdims=True))
    sim = DeviceSimulator(n, DeviceConfig(deadline=0.9, availability=0.8), seed=11)
    rnd = sim.next_round(np.arange(n, dtype=np.int64), d, 4 * d)
    assert len(rnd.offline) > 0 and len(rnd.late) > 0  # both kinds of dropout occur
    assert rnd.dropped < n // 2
    # SecAgg's threshold / graph degree is sized for the simulator's expected loss
    planned = sim.expected_dropout(d, 4 * d)
    spec = ChannelSpec("none", secagg, planned, "discrete_gaussian", 32, 1e-4, 1, True)  # type: ignore[arg-type]
    channel = make_channel(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        release = channel.release(
            uploads,
            clip_norm=1.0,
            noise_multiplier=0.0,
            sampling_rate=1.0,
            expected_clients=n,
            round_index=1,
            drop_plan=rnd.drop_plan,
        )
    on_time = sorted(set(range(n)) - set(rnd.offline.tolist()) - set(rnd.late.tolist()))
    assert list(release.included_positions) == on_time
    assert release.dropped == rnd.dropped
    np.testing.assert_allclose(release.total, uploads[on_time].sum(axis=0), atol=n * 2.0**-19)
    if secagg != "off":
        assert release.bytes_up > 0 and release.bytes_down > 0


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    r = synthetic_ratings(60, 50, seed=3, mean_activity=14, min_activity=4)
    return leave_last_out(r), item_features(r)


def _devices_config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        privacy="distributed",
        epsilon=8.0,
        rounds=2,
        secagg="full",
        seed=5,
        eval_every=0,
        simulation_noise=True,
        model=ModelConfig(kind="popfeat+fcf", cap=5, fcf=FCFConfig(dim=3, active_items=20)),
        devices=DeviceConfig(deadline=1.0, availability=0.8),
    )
    base.update(kw)
    return TrainConfig(**base)


def test_ledger_charges_the_realized_survivors(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    split, feats = data
    trainer = Trainer(split, feats, _devices_config())
    assert trainer.channel.spec.dropout == trainer.planned_dropout > 0
    ledger = open_ledger(str(tmp_path / "ledger.sqlite"), trainer)
    trainer.ledger = ledger
    # replay the simulator to know who should be in every sum
    replay = DeviceSimulator(trainer.num_users, trainer.config.devices, seed=5)  # type: ignore[arg-type]
    result = trainer.run()
    entries = ledger.entries()
    ledger.close()
    assert len(entries) == len(result.records) == 3
    users = np.arange(trainer.num_users, dtype=np.int64)
    for rec, entry, task in zip(result.records, entries, ["popularity", "fcf", "fcf"], strict=True):
        values, nbytes = trainer.channel.masked_input_size(
            trainer.recommender.popularity_task.upload_dim
            if task == "popularity"
            else trainer.recommender.fcf_task.upload_dim,
            len(users),
        )
        rnd = replay.next_round(users, values, nbytes)
        gone = set(rnd.offline.tolist()) | set(rnd.late.tolist())
        survivors = [f"user{u}" for u in users.tolist() if u not in gone]
        assert rec.offline == len(rnd.offline) and rec.late == len(rnd.late)
        assert rec.sim_seconds == rnd.wall_seconds
        assert rec.included == len(survivors) == entry.survivors
        assert entry.body["participants_sha256"] == participants_digest(tuple(sorted(survivors)))
        planned_min = entry.min_contributors
        assert planned_min is not None
        charged_min = (
            entry.charged.event.min_contributors
            if hasattr(entry.charged, "event")
            else entry.charged.min_contributors
        )  # type: ignore[attr-defined]
        assert charged_min == min(planned_min, len(survivors))
    card = result.report_card
    assert card["devices"]["offline_total"] == sum(r.offline for r in result.records)
    assert card["dropped_total"] == sum(r.offline + r.late for r in result.records)


def test_a_deadline_nobody_meets_is_refused(data) -> None:  # type: ignore[no-untyped-def]
    split, feats = data
    with pytest.raises(ConfigError, match="deadline"):
        Trainer(split, feats, _devices_config(devices=DeviceConfig(deadline=0.001)))
