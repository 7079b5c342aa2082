"""The round offer and the device policy (pure privagg code: no flwr needed).

The offer is what a lying server would tamper with: its encoding is strict, its digest
(bound into the SecAgg session) changes with every field, and the device's policy refuses
each weak parameter on its own.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from privagg.flower import DevicePolicy, OfferRefused, RoundOffer, model_digest
from privagg.flower.client_mod import flat_update
from privagg.flower.workflow import apply_mean_update


def offer(**changes: object) -> RoundOffer:
    base = RoundOffer(
        round_number=3,
        node_ids=(5, 9, 11, 40, 41, 77),
        threshold=4,
        neighbors=None,
        bits=32,
        dropout_rate=0.2,
        corrupt_fraction=0.0,
        clip_norm=1.0,
        noise_multiplier=1.0,
        mechanism="ddg",
        min_contributors=4,
        rotation_seed=bytes(range(32)),
        model_sha256=model_digest([np.zeros(3, np.float32)]),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_offer_round_trips_and_rebuilds_config_and_plan() -> None:
    o = offer(simulation_noise_seed=7)
    assert RoundOffer.from_bytes(o.to_bytes()) == o
    assert o.secagg_config().threshold == 4 and o.secagg_config().is_full_graph
    plan = o.plan(10)
    assert plan.min_contributors == 4 and plan.bits == 32 and plan.dimension == 10


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.update(version=2),
        lambda b: b.update(extra=1),
        lambda b: b.pop("clip_norm"),
        lambda b: b.update(node_ids=[9, 5, 11, 40, 41, 77]),
        lambda b: b.update(node_ids=[5, 5, 11, 40, 41, 77]),
        lambda b: b.update(threshold=True),
        lambda b: b.update(threshold="4"),
        lambda b: b.update(mechanism="gaussian"),
        lambda b: b.update(rotation_seed="00"),
        lambda b: b.update(threat_model="trusting"),
    ],
)
def test_malformed_offers_are_refused(mutate: object) -> None:
    body = json.loads(offer().to_bytes())
    mutate(body)  # type: ignore[operator]
    with pytest.raises(ValueError):
        RoundOffer.from_bytes(json.dumps(body).encode())


FIELD_CHANGES = {
    "round_number": 4,
    "node_ids": (5, 9, 11, 40, 41, 78),
    "threshold": 5,
    "bits": 31,
    "dropout_rate": 0.1,
    "clip_norm": 1.5,
    "noise_multiplier": 0.9,
    "mechanism": "skellam",
    "min_contributors": 3,
    "rotation_seed": bytes(32),
    "model_sha256": model_digest([np.ones(3, np.float32)]),
    "simulation_noise_seed": 1,
    "threat_model": "malicious_server",
}


@pytest.mark.parametrize("name", sorted(FIELD_CHANGES))
def test_every_field_changes_the_session_digest(name: str) -> None:
    assert offer(**{name: FIELD_CHANGES[name]}).context_digest() != offer().context_digest()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"noise_multiplier": 0.1}, "below the device's floor"),
        ({"noise_multiplier": float("nan")}, "below the device's floor"),
        ({"min_contributors": 1}, "noise shares"),
        ({"min_contributors": 5}, "exceed the threshold"),
        ({"clip_norm": 50.0}, "clipping norm"),
        ({"bits": 8}, "ring"),
        ({"simulation_noise_seed": 1}, "not secure"),
    ],
)
def test_the_device_policy_refuses_each_weak_parameter(
    changes: dict[str, object], message: str
) -> None:
    DevicePolicy().check(offer())  # the honest offer passes
    with pytest.raises(OfferRefused, match=message):
        DevicePolicy().check(offer(**changes))


def test_a_device_requiring_the_consistency_check_refuses_rounds_without_it() -> None:
    policy = DevicePolicy(require_consistency_check=True)
    with pytest.raises(OfferRefused, match="malicious-server mode"):
        policy.check(offer())
    policy.check(offer(threat_model="malicious_server"))


def test_the_policy_measures_the_threshold_against_the_share_group() -> None:
    policy = DevicePolicy(min_threshold_fraction=0.5)
    sparse = offer(node_ids=tuple(range(100)), neighbors=10, threshold=6, min_contributors=4)
    policy.check(sparse)  # 6 of a group of 11
    with pytest.raises(OfferRefused, match="share group of 11"):
        policy.check(dataclasses.replace(sparse, threshold=5, min_contributors=4))


@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.integers(1, 9))
def test_update_flattening_and_mean_application_invert(sizes: list[int], k: int) -> None:
    rng = np.random.default_rng(sum(sizes) + k)
    model = [rng.normal(size=s).astype(np.float32) for s in sizes]
    trained = [a + np.float32(0.25) for a in model]
    update = flat_update(model, trained)
    assert update.size == sum(sizes)
    moved = apply_mean_update(model, update * k, k)
    for a, b in zip(moved, trained, strict=True):
        assert a.dtype == np.float32 and np.allclose(a, b, atol=1e-6)
    with pytest.raises(OfferRefused):
        flat_update(model, [*trained, np.zeros(1, np.float32)])
