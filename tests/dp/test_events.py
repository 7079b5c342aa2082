"""Privacy events: JSON round trip, strict decoding, field validation."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dp
from dp.errors import DPValueError, EventDecodeError
from dp.events import (
    ComposedEvent,
    DiscreteGaussianEvent,
    DiscreteLaplaceEvent,
    DistributedDiscreteGaussianEvent,
    DistributedSkellamEvent,
    GaussianEvent,
    NonPrivateEvent,
    NoOpEvent,
    PoissonSampledEvent,
    QuantizationInfo,
    SelfComposedEvent,
    event_from_dict,
    event_from_json,
)

QUANT = QuantizationInfo(
    clip_norm=1.0, gamma=1e-4, beta=0.6, bits=20, rotation="hadamard", padded_dimension=1024
)
DDG = DistributedDiscreteGaussianEvent(
    l2_sensitivity=10001.5,
    l1_sensitivity=3e5,
    local_sigma=1234.5,
    dimension=1024,
    min_contributors=8,
    expected_contributors=10,
    secure=True,
    quantization=QUANT,
)
ALL = [
    NoOpEvent(),
    NonPrivateEvent(),
    GaussianEvent(noise_multiplier=1.1),
    DiscreteGaussianEvent(l2_sensitivity=3.0, sigma=10.0, dimension=5, secure=False),
    DiscreteLaplaceEvent(l1_sensitivity=1.0, scale=2.5),
    DDG,
    DistributedSkellamEvent(
        l2_sensitivity=2.0,
        l1_sensitivity=4.0,
        local_variance=7.0,
        dimension=4,
        min_contributors=1,
        expected_contributors=1,
    ),
    PoissonSampledEvent(sampling_probability=0.01, event=DDG),
    SelfComposedEvent(event=GaussianEvent(noise_multiplier=2.0), count=100),
    ComposedEvent(events=(NoOpEvent(), DDG)),
]


@pytest.mark.parametrize("event", ALL, ids=lambda e: e.type_name)
def test_json_round_trip(event: dp.PrivacyEvent) -> None:
    text = event.to_json()
    assert event_from_json(text) == event
    assert event_from_json(text).to_json() == text
    assert event_from_dict(json.loads(json.dumps(event.to_dict()))) == event


@settings(max_examples=50, deadline=None)
@given(sigma=st.floats(0, 1e12), dim=st.integers(1, 2**40), secure=st.booleans())
def test_round_trip_property(sigma: float, dim: int, secure: bool) -> None:
    event = DiscreteGaussianEvent(l2_sensitivity=1.0, sigma=sigma, dimension=dim, secure=secure)
    assert event_from_json(event.to_json()) == event


def test_ints_become_floats_so_round_trips_are_stable() -> None:
    event = GaussianEvent(noise_multiplier=2)
    assert isinstance(event.noise_multiplier, float)
    assert event.to_json() == GaussianEvent(noise_multiplier=2.0).to_json()


@pytest.mark.parametrize(
    "make",
    [
        lambda: GaussianEvent(noise_multiplier=-1.0),
        lambda: GaussianEvent(noise_multiplier=float("nan")),
        lambda: GaussianEvent(noise_multiplier="1"),  # type: ignore[arg-type]
        lambda: GaussianEvent(noise_multiplier=1.0, secure=1),  # type: ignore[arg-type]
        lambda: DiscreteGaussianEvent(l2_sensitivity=1.0, sigma=1.0, dimension=1.0),  # type: ignore[arg-type]
        lambda: DiscreteGaussianEvent(l2_sensitivity=1.0, sigma=1.0, dimension=0),
        lambda: DiscreteGaussianEvent(l2_sensitivity=1.0, sigma=1.0, dimension=True),
        lambda: PoissonSampledEvent(sampling_probability=1.5, event=NoOpEvent()),
        lambda: PoissonSampledEvent(sampling_probability=0.5, event="x"),  # type: ignore[arg-type]
        lambda: SelfComposedEvent(event=NoOpEvent(), count=-1),
        lambda: ComposedEvent(events=(NoOpEvent(), 3)),  # type: ignore[arg-type]
        lambda: QuantizationInfo(
            clip_norm=1.0, gamma=0.0, beta=0.5, bits=20, rotation="hadamard", padded_dimension=4
        ),
        lambda: QuantizationInfo(
            clip_norm=1.0, gamma=1.0, beta=0.5, bits=20, rotation="dct", padded_dimension=4
        ),
        lambda: DistributedSkellamEvent(
            l2_sensitivity=1.0,
            l1_sensitivity=1.0,
            local_variance=1.0,
            dimension=1,
            min_contributors=5,
            expected_contributors=4,
        ),
        lambda: DistributedDiscreteGaussianEvent(
            l2_sensitivity=1.0,
            l1_sensitivity=1.0,
            local_sigma=1.0,
            dimension=1,
            min_contributors=1,
            expected_contributors=1,
            quantization={"bits": 1},  # type: ignore[arg-type]
        ),
    ],
)
def test_invalid_events_rejected(make: object) -> None:
    with pytest.raises(DPValueError):
        make()  # type: ignore[operator]


def _mutate(event: dp.PrivacyEvent, path: list[str], value: object) -> str:
    payload = json.loads(event.to_json())
    node = payload["event"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(payload)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        json.dumps({"schema": "other/1", "event": {"type": "NoOp"}}),
        json.dumps({"schema": "privagg.dp_event/1", "event": {"type": "NoOp"}, "x": 1}),
        json.dumps({"schema": "privagg.dp_event/1", "event": {"type": ["NoOp"]}}),
        json.dumps({"schema": "privagg.dp_event/1", "event": {"type": "Unknown"}}),
        json.dumps({"schema": "privagg.dp_event/1", "event": {"type": "Gaussian"}}),
        _mutate(DDG, ["dimension"], "1024"),
        _mutate(DDG, ["secure"], 1),
        _mutate(DDG, ["local_sigma"], -3),
        _mutate(DDG, ["extra"], 1),
        _mutate(DDG, ["quantization", "bits"], 99),
        _mutate(DDG, ["quantization", "extra"], 1),
        _mutate(DDG, ["quantization"], [1]),
        _mutate(ComposedEvent(events=(NoOpEvent(),)), ["events"], {"type": "NoOp"}),
        _mutate(PoissonSampledEvent(sampling_probability=0.5, event=NoOpEvent()), ["event"], 5),
    ],
)
def test_malformed_json_rejected_with_typed_error(text: str) -> None:
    with pytest.raises(EventDecodeError):
        event_from_json(text)


def test_non_finite_values_cannot_be_serialized() -> None:
    event = GaussianEvent(noise_multiplier=1.0)
    object.__setattr__(event, "noise_multiplier", float("inf"))
    with pytest.raises(EventDecodeError):
        event.to_json()
