"""The trainer end to end: real SecAgg+, distributed DP, accounting, determinism, R2 spy."""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from typing import Any

import numpy as np
import pytest

import protocols
from dp.events import NonPrivateEvent, PoissonSampledEvent, PrivacyEvent
from dp.rng import NonSecureRandomnessWarning
from recsys import channels as channels_module
from recsys.data import synthetic_ratings
from recsys.errors import ConfigError
from recsys.features import item_features
from recsys.federated import FCFConfig
from recsys.recommender import ModelConfig
from recsys.split import leave_last_out
from recsys.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")

NUM_USERS = 37  # a prime unlike any other dimension here, so the R2 spy can spot it
NUM_ITEMS = 60


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    r = synthetic_ratings(NUM_USERS, NUM_ITEMS, seed=2, mean_activity=15, min_activity=4)
    return leave_last_out(r), item_features(r)


def _config(**kw: Any) -> TrainConfig:
    model = ModelConfig(kind="popfeat+fcf", cap=5, fcf=FCFConfig(dim=3, active_items=25))
    base: dict[str, Any] = dict(
        privacy="distributed",
        epsilon=8.0,
        rounds=2,
        secagg="plus",
        dropout=0.1,
        seed=3,
        eval_every=0,
        simulation_noise=True,
        model=model,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_distributed_training_spends_exactly_the_budget(data) -> None:  # type: ignore[no-untyped-def]
    split, feats = data
    result = Trainer(split, feats, _config()).run()
    eps = [r.epsilon for r in result.records]
    assert [r.task for r in result.records] == ["popularity", "fcf", "fcf"]
    assert all(a < b for a, b in itertools.pairwise(eps))
    assert eps[-1] <= 8.0 + 1e-9 and eps[-1] > 7.9
    # the popularity release alone spends about half of ε (the explicit split)
    assert eps[0] == pytest.approx(4.0, rel=0.02)
    assert all(r.included + r.dropped == r.sampled for r in result.records)
    assert result.report_card["secure_noise"] is False
    assert 0.0 <= result.final.hr <= 1.0


def test_bit_identical_for_a_seed_with_test_generators(data) -> None:  # type: ignore[no-untyped-def]
    split, feats = data
    config = _config(secagg="plus")
    a = Trainer(split, feats, config).run()
    b = Trainer(split, feats, config).run()
    sa, sb = a.recommender.server, b.recommender.server
    assert sa.popularity is not None and sb.popularity is not None
    assert np.array_equal(sa.popularity, sb.popularity)
    assert sa.item_factors is not None and sb.item_factors is not None
    assert np.array_equal(sa.item_factors, sb.item_factors)
    assert np.array_equal(a.final.ranks, b.final.ranks)
    c = Trainer(split, feats, _config(seed=4)).run()
    assert c.recommender.server.popularity is not None
    assert not np.array_equal(sa.popularity, c.recommender.server.popularity)


def test_r2_no_user_state_crosses_the_protocol_boundary(
    data,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    split, feats = data
    seen: list[np.ndarray] = []
    wire: list[tuple[protocols.Direction, protocols.Stage, bytes]] = []
    real = protocols.run_secagg

    def hook(direction: Any, stage: Any, client: int, payload: bytes) -> bytes:
        wire.append((direction, stage, payload))
        return payload

    def spy(inputs: np.ndarray, config: Any, **kw: Any) -> Any:
        seen.append(np.array(inputs, copy=True))
        kw["transport"] = protocols.InMemoryTransport(hooks=[hook])
        return real(inputs, config, **kw)

    # the channel's release runs SecAgg through the private sum's inner ring sum
    monkeypatch.setattr(protocols.secagg_sum, "run_secagg", spy)
    trainer = Trainer(split, feats, _config(privacy="none", dropout=0.0))
    result = trainer.run()
    widths = {x.shape[1] for x in seen}
    # two kinds of release, each a fixed dense width set by the item table only
    assert widths == {NUM_ITEMS, 25 * 4}
    assert all(x.shape[0] == NUM_USERS for x in seen)  # one row per device, never a table
    # the server-side object holds no per-user array
    server = result.recommender.server
    for name, value in vars(server).items():
        if isinstance(value, np.ndarray):
            assert NUM_USERS not in value.shape, name
    # the user factors and feature weights exist, on the devices only
    fleet = result.recommender.fleet
    assert fleet.user_factors is not None and fleet.user_factors.shape[0] == NUM_USERS
    assert fleet.feature_weights is not None
    # no upload carries a user factor verbatim (at the fixed-point scale of this mode)
    quantized = np.rint(fleet.user_factors * float(1 << 20))
    d = quantized.shape[1]
    for x in seen:
        lifted = x.astype(np.int64)
        lifted[lifted >= 1 << 31] -= 1 << 32
        windows = np.lib.stride_tricks.sliding_window_view(lifted, d, axis=1)
        equal = (windows[:, :, None, :] == quantized[None, None, :, :]).all(axis=-1)
        assert not equal.any()
    # on the wire: every masked input has the same size, and no message carries a user
    # factor's bytes (float64 or the fixed-point int32 of this mode)
    masked = [
        len(p)
        for d, st, p in wire
        if d is protocols.Direction.TO_SERVER and st is protocols.Stage.MASK
    ]
    assert len(set(masked)) == 2  # one size per kind of release
    needles = [u.tobytes() for u in fleet.user_factors[:, :2]] + [
        q.astype(np.uint32).tobytes() for q in quantized[:, :2]
    ]
    for _, _, payload in wire:
        assert not any(n in payload for n in needles)


def test_none_and_central_modes_and_secagg_off(data) -> None:  # type: ignore[no-untyped-def]
    split, feats = data
    none = Trainer(split, feats, _config(privacy="none", secagg="off")).run()
    assert all(math.isinf(r.epsilon) for r in none.records)
    assert none.report_card["accountant"] == "none (no DP)"
    central = Trainer(split, feats, _config(privacy="central", secagg="full")).run()
    assert central.records[-1].epsilon <= 8.0 + 1e-9
    assert central.report_card["mechanism"].startswith("central")


def test_poisson_sampling_is_accounted(data) -> None:  # type: ignore[no-untyped-def]
    split, feats = data
    trainer = Trainer(split, feats, _config(cohort=20, rounds=3, secagg="off"))
    events: list[PrivacyEvent] = []
    real = trainer.channel.release

    def capture(*args: Any, **kw: Any) -> Any:
        rel = real(*args, **kw)
        events.append(rel.event)
        return rel

    trainer.channel.release = capture  # type: ignore[method-assign]
    result = trainer.run()
    assert trainer.sampling_rate == pytest.approx(20 / NUM_USERS)
    assert not isinstance(events[0], PoissonSampledEvent)  # the one-shot release: everyone
    assert all(isinstance(e, PoissonSampledEvent) for e in events[1:])
    assert result.records[-1].epsilon <= 8.0 + 1e-9
    sizes = [r.sampled for r in result.records[1:]]
    assert len(set(sizes)) >= 1 and all(s <= NUM_USERS for s in sizes)


def test_non_private_release_is_infinite(data) -> None:  # type: ignore[no-untyped-def]
    split, feats = data
    trainer = Trainer(split, feats, _config(privacy="none", secagg="off"))
    rel = trainer.channel.release(
        np.zeros((4, 10)),
        clip_norm=1.0,
        noise_multiplier=0.0,
        sampling_rate=1.0,
        expected_clients=4,
        round_index=1,
    )
    assert isinstance(rel.event, NonPrivateEvent)
    assert np.array_equal(rel.total, np.zeros(10))


def test_distributed_sum_matches_plain_sum_up_to_noise(data) -> None:  # type: ignore[no-untyped-def]
    split, feats = data
    trainer = Trainer(split, feats, _config(dropout=0.0, secagg="full"))
    # a release of all 12 devices of a population of 12 (no cohort-size variance)
    channel = channels_module.make_channel(dataclasses.replace(trainer.channel.spec, population=12))
    rng = np.random.default_rng(0)
    uploads = rng.normal(0, 1, (12, 40))
    uploads /= np.linalg.norm(uploads, axis=1, keepdims=True) * 2
    rel = channel.release(
        uploads,
        clip_norm=1.0,
        noise_multiplier=0.5,
        sampling_rate=1.0,
        expected_clients=12,
        round_index=7,
    )
    assert rel.included == 12
    err = rel.total - uploads.sum(axis=0)
    # noise std z·c = 0.5 per coordinate: the error is noise-sized, not garbage
    assert 0.2 < float(np.std(err)) < 1.0


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        (dict(epsilon=0.0), "epsilon"),
        (dict(epsilon=-1.0), "epsilon"),
        (dict(delta=1.0), "delta"),
        (dict(dropout=1.0), "dropout"),
        (dict(privacy="trusted"), "privacy"),
        (dict(secagg="maybe"), "secagg"),
        (dict(cohort=1), "cohort"),
    ],
)
def test_bad_configs_are_typed(kw: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        _config(**kw)


def test_cohort_larger_than_population(data) -> None:  # type: ignore[no-untyped-def]
    split, feats = data
    with pytest.raises(ConfigError, match="larger than the population"):
        Trainer(split, feats, _config(cohort=NUM_USERS + 1))


def test_secure_noise_is_the_default(data) -> None:  # type: ignore[no-untyped-def]
    split, feats = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonSecureRandomnessWarning)
        trainer = Trainer(split, feats, _config(simulation_noise=False, rounds=1, secagg="off"))
        result = trainer.run()
    assert result.report_card["secure_noise"] is True
    assert trainer.channel.rng.secure


def test_ledger_records_every_release_and_matches(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dp.ledger import audit_ledger
    from recsys.trainer import open_ledger

    split, feats = data
    trainer = Trainer(split, feats, _config(secagg="off"))
    ledger = open_ledger(str(tmp_path / "ledger.sqlite"), trainer)
    trainer.ledger = ledger
    result = trainer.run()
    entries = ledger.entries()
    ledger.close()
    assert len(entries) == len(result.records) == 3
    assert ledger.meta.run_id.count("popularity_share=0.5") == 1
    report = audit_ledger(tmp_path / "ledger.sqlite")
    assert not report.tampered
    # the ledger's ε (what the trainer reports) is the planned composition, within ε
    assert result.records[-1].epsilon == pytest.approx(trainer.plan.planned_epsilon, rel=1e-6)
    assert result.records[-1].epsilon <= 8.0 + 1e-9
    assert [e.cumulative_epsilon for e in entries] == [r.epsilon for r in result.records]
