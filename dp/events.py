"""Privacy events: what a mechanism did, as plain immutable data.

In the spirit of dp_accounting's ``DpEvent``: every mechanism application returns one of
these frozen values, and accountants interpret them. Mechanism code never computes ε.
Events serialize to JSON and back exactly (``to_dict`` / ``event_from_dict``), so a ledger
can be replayed by an independent accountant long after training.

Units: sensitivities and noise scales of the distributed mechanisms are stated **in the
integer domain** the clients add noise in (after rotation, scaling by ``gamma`` and
rounding), which is what the privacy analysis of Kairouz et al. 2021 (DDG) and Agarwal et
al. 2021 (Skellam) is about. Noise scales are rounded *down* to floats and sensitivities
*up*, so an accountant reading an event never under-states ε.

Construction validates every field (a ``DPValueError`` for a wrong type or an
out-of-range value; ints given for float fields become floats, so an event equals its JSON
round trip), and decoding is strict: unknown types or keys, wrong JSON types and invalid
values raise :class:`~dp.errors.EventDecodeError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from dp.errors import DPValueError, EventDecodeError

SCHEMA = "privagg.dp_event/1"

_REGISTRY: dict[str, type[PrivacyEvent]] = {}


def _register(cls: type[PrivacyEvent]) -> type[PrivacyEvent]:
    _REGISTRY[cls.type_name] = cls
    return cls


@dataclass(frozen=True)
class PrivacyEvent:
    """Base class of all privacy events."""

    type_name: ClassVar[str] = "PrivacyEvent"

    def __post_init__(self) -> None:
        _validate_fields(self)
        self._check()

    def _check(self) -> None:
        """Range checks of a subclass (types are checked generically)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict with a ``type`` discriminator (nested events included)."""
        out: dict[str, Any] = {"type": self.type_name}
        for f in fields(self):
            out[f.name] = _encode_value(getattr(self, f.name))
        return out

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no whitespace), stable for hashing."""
        return json.dumps(
            {"schema": SCHEMA, "event": self.to_dict()},
            sort_keys=True,
            separators=(",", ":"),
            allow_nan=False,
        )


def _validate_fields(obj: Any) -> None:
    """Check every field against its annotation; ints given for floats become floats, so
    an event equals its JSON round trip. Raises :class:`DPValueError`."""
    name = type(obj).__name__
    for f in fields(obj):
        value = getattr(obj, f.name)
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        where = f"{name}.{f.name}"
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise DPValueError(f"{where} must be a number, got {type(value).__name__}")
            if not math.isfinite(value):
                raise DPValueError(f"{where} must be finite, got {value!r}")
            object.__setattr__(obj, f.name, float(value))
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise DPValueError(f"{where} must be an int, got {type(value).__name__}")
        elif kind == "bool":
            if not isinstance(value, bool):
                raise DPValueError(f"{where} must be a bool, got {type(value).__name__}")
        elif kind == "str":
            if not isinstance(value, str):
                raise DPValueError(f"{where} must be a str, got {type(value).__name__}")
        elif kind == "PrivacyEvent":
            if not isinstance(value, PrivacyEvent):
                raise DPValueError(f"{where} must be a PrivacyEvent")
        elif kind == "tuple[PrivacyEvent, ...]":
            if not isinstance(value, tuple | list) or not all(
                isinstance(v, PrivacyEvent) for v in value
            ):
                raise DPValueError(f"{where} must be a tuple of PrivacyEvent")
            object.__setattr__(obj, f.name, tuple(value))
        elif kind == "tuple[float, ...]":
            if not isinstance(value, tuple | list) or any(
                isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
                for v in value
            ):
                raise DPValueError(f"{where} must be a tuple of finite numbers")
            object.__setattr__(obj, f.name, tuple(float(v) for v in value))
        elif kind == "QuantizationInfo | None":
            if value is not None and not isinstance(value, QuantizationInfo):
                raise DPValueError(f"{where} must be a QuantizationInfo or None")
        else:  # pragma: no cover - a new field type must be added above
            raise DPValueError(f"{where} has an unsupported annotation {kind!r}")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise DPValueError(message)


def _encode_value(value: Any) -> Any:
    if isinstance(value, PrivacyEvent):
        return value.to_dict()
    if isinstance(value, QuantizationInfo):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_encode_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise EventDecodeError(f"event field value {value!r} is not finite")
    return value


@dataclass(frozen=True)
class QuantizationInfo:
    """How a float update was turned into integers before noise was added.

    ``clip_norm`` is the float L2 clip c, ``gamma`` the quantization step (integer = float
    / gamma), ``beta`` the conditional-rounding slack of Kairouz et al., ``bits`` the ring
    width, ``rotation`` the public rotation applied (``"hadamard"`` or ``"none"``), and
    ``padded_dimension`` the dimension after padding to a power of two.
    """

    clip_norm: float
    gamma: float
    beta: float
    bits: int
    rotation: str
    padded_dimension: int

    def __post_init__(self) -> None:
        _validate_fields(self)
        _require(self.clip_norm > 0, "QuantizationInfo.clip_norm must be > 0")
        _require(self.gamma > 0, "QuantizationInfo.gamma must be > 0")
        _require(0 <= self.beta < 1, "QuantizationInfo.beta must be in [0, 1)")
        _require(1 <= self.bits <= 64, "QuantizationInfo.bits must be in [1, 64]")
        _require(self.rotation in ("hadamard", "none"), "rotation must be 'hadamard' or 'none'")
        _require(self.padded_dimension >= 1, "QuantizationInfo.padded_dimension must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@_register
@dataclass(frozen=True)
class NoOpEvent(PrivacyEvent):
    """Nothing private was released (e.g. an aborted round): costs zero."""

    type_name: ClassVar[str] = "NoOp"


@_register
@dataclass(frozen=True)
class NonPrivateEvent(PrivacyEvent):
    """Data was released without a DP guarantee: ε = ∞."""

    type_name: ClassVar[str] = "NonPrivate"


@_register
@dataclass(frozen=True)
class GaussianEvent(PrivacyEvent):
    """A (central) Gaussian mechanism with std = ``noise_multiplier`` × L2 sensitivity."""

    type_name: ClassVar[str] = "Gaussian"
    noise_multiplier: float
    secure: bool = True

    def _check(self) -> None:
        _require(self.noise_multiplier >= 0, "noise_multiplier must be >= 0")


@_register
@dataclass(frozen=True)
class DiscreteGaussianEvent(PrivacyEvent):
    """One discrete Gaussian N_Z(0, σ²) per coordinate added by a single (trusted) party to an
    integer vector of L2 sensitivity ``l2_sensitivity`` (Canonne–Kamath–Steinke 2020)."""

    type_name: ClassVar[str] = "DiscreteGaussian"
    l2_sensitivity: float
    sigma: float
    dimension: int
    secure: bool = True

    def _check(self) -> None:
        _require(self.l2_sensitivity >= 0, "l2_sensitivity must be >= 0")
        _require(self.sigma >= 0, "sigma must be >= 0")
        _require(self.dimension >= 1, "dimension must be >= 1")


@_register
@dataclass(frozen=True)
class DiscreteLaplaceEvent(PrivacyEvent):
    """Discrete Laplace noise with scale ``scale`` on an integer query of L1 sensitivity
    ``l1_sensitivity``: pure ε = l1_sensitivity / scale."""

    type_name: ClassVar[str] = "DiscreteLaplace"
    l1_sensitivity: float
    scale: float
    secure: bool = True

    def _check(self) -> None:
        _require(self.l1_sensitivity >= 0, "l1_sensitivity must be >= 0")
        _require(self.scale >= 0, "scale must be >= 0")


def _check_secure_sum(
    event: DistributedDiscreteGaussianEvent
    | DistributedSkellamEvent
    | DistributedSkellamCountsEvent,
) -> None:
    """The checks both distributed (secure-sum) events share."""
    _require(event.l2_sensitivity >= 0, "l2_sensitivity must be >= 0")
    _require(event.l1_sensitivity >= 0, "l1_sensitivity must be >= 0")
    _require(event.dimension >= 1, "dimension must be >= 1")
    _require(event.min_contributors >= 1, "min_contributors must be >= 1")
    _require(
        event.expected_contributors >= event.min_contributors,
        "expected_contributors must be >= min_contributors",
    )


@_register
@dataclass(frozen=True)
class DistributedDiscreteGaussianEvent(PrivacyEvent):
    """Distributed discrete Gaussian (Kairouz, Liu, Steinke 2021) summed by secure aggregation.

    Each contributing client adds N_Z(0, ``local_sigma``²) per coordinate; at least
    ``min_contributors`` honest shares are guaranteed to be in any released sum, so the
    accountant must use ``min_contributors`` (never the expected count) as n.
    """

    type_name: ClassVar[str] = "DistributedDiscreteGaussian"
    l2_sensitivity: float
    l1_sensitivity: float
    local_sigma: float
    dimension: int
    min_contributors: int
    expected_contributors: int
    secure: bool = True
    quantization: QuantizationInfo | None = None

    def _check(self) -> None:
        _require(self.local_sigma >= 0, "local_sigma must be >= 0")
        _check_secure_sum(self)


@_register
@dataclass(frozen=True)
class DistributedSkellamEvent(PrivacyEvent):
    """Distributed Skellam (Agarwal, Kairouz, Liu 2021) summed by secure aggregation.

    Each contributing client adds a symmetric Skellam with variance ``local_variance`` per
    coordinate (Poisson(μ/2) − Poisson(μ/2), μ = local_variance); the sum over
    ``min_contributors`` honest shares has variance ``min_contributors * local_variance``.
    """

    type_name: ClassVar[str] = "DistributedSkellam"
    l2_sensitivity: float
    l1_sensitivity: float
    local_variance: float
    dimension: int
    min_contributors: int
    expected_contributors: int
    secure: bool = True
    quantization: QuantizationInfo | None = None

    def _check(self) -> None:
        _require(self.local_variance >= 0, "local_variance must be >= 0")
        _check_secure_sum(self)


@_register
@dataclass(frozen=True)
class DistributedSkellamCountsEvent(PrivacyEvent):
    """Integer counts (e.g. capped popularity) summed by secure aggregation under Skellam noise.

    Each user contributes a 0/1 vector with at most ``max_ones`` ones (no rotation, no
    rounding: the contribution *is* the integers), and each contributing client adds a
    symmetric Skellam of variance ``local_variance`` per coordinate. A sum of independent
    symmetric Skellams is exactly a symmetric Skellam, so every released coordinate carries
    Skellam noise of variance at least ``min_contributors * local_variance`` and a user moves
    at most ``max_ones`` coordinates by one: the privacy loss is exactly the ``max_ones``-fold
    composition of a unit-shift Skellam, which the PLD backend evaluates without slack.
    """

    type_name: ClassVar[str] = "DistributedSkellamCounts"
    max_ones: int
    local_variance: float
    dimension: int
    min_contributors: int
    expected_contributors: int
    secure: bool = True

    @property
    def l2_sensitivity(self) -> float:
        """√max_ones: the L2 norm of the largest contribution."""
        return math.sqrt(self.max_ones)

    @property
    def l1_sensitivity(self) -> float:
        """max_ones: the L1 norm of the largest contribution."""
        return float(self.max_ones)

    @property
    def total_variance(self) -> float:
        """The Skellam variance per coordinate every released sum is guaranteed to hold."""
        return self.min_contributors * self.local_variance

    def _check(self) -> None:
        _require(self.max_ones >= 0, "max_ones must be >= 0")
        _require(self.local_variance >= 0, "local_variance must be >= 0")
        _check_secure_sum(self)


@_register
@dataclass(frozen=True)
class PoissonSampledEvent(PrivacyEvent):
    """``event`` applied to a Poisson sample: each user is included w.p.
    ``sampling_probability``."""

    type_name: ClassVar[str] = "PoissonSampled"
    sampling_probability: float
    event: PrivacyEvent

    def _check(self) -> None:
        _require(0 <= self.sampling_probability <= 1, "sampling_probability must be in [0, 1]")


@_register
@dataclass(frozen=True)
class StratifiedPoissonSampledEvent(PrivacyEvent):
    """``event`` applied to a heterogeneous Poisson sample: a user in stratum s is included
    independently with probability ``stratum_probabilities[s]``.

    Under add/remove-one-user adjacency the added or removed user's privacy loss is that of
    ``PoissonSampled(q_s, event)`` for its own stratum s (the other users' contributions are
    an independent shift common to both neighbours: a post-processing). A user's stratum may
    depend on the user's data (on-device self-assignment), so the guarantee of the release is
    the worst case over strata, ``PoissonSampled(max_s q_s, event)``; that is how accountants
    read this event. The rates themselves must be functions of public or already-released
    (DP) quantities only. The per-stratum rates are kept so a ledger records them and a
    per-stratum (individual) ε can be reported beside the run's ε.
    """

    type_name: ClassVar[str] = "StratifiedPoissonSampled"
    stratum_probabilities: tuple[float, ...]
    event: PrivacyEvent

    def _check(self) -> None:
        _require(len(self.stratum_probabilities) >= 1, "stratum_probabilities must be non-empty")
        _require(
            all(0 <= q <= 1 for q in self.stratum_probabilities),
            "every stratum probability must be in [0, 1]",
        )

    @property
    def max_probability(self) -> float:
        """The worst-case (largest) inclusion probability: what the run's ε is computed at."""
        return max(self.stratum_probabilities)

    def stratum_event(self, stratum: int) -> PoissonSampledEvent:
        """The event as seen by a user of ``stratum`` (its own amplification)."""
        if not 0 <= stratum < len(self.stratum_probabilities):
            raise DPValueError(
                f"stratum {stratum} out of range (0..{len(self.stratum_probabilities) - 1})"
            )
        return PoissonSampledEvent(self.stratum_probabilities[stratum], self.event)


@_register
@dataclass(frozen=True)
class SelfComposedEvent(PrivacyEvent):
    """``event`` applied ``count`` times."""

    type_name: ClassVar[str] = "SelfComposed"
    event: PrivacyEvent
    count: int

    def _check(self) -> None:
        _require(self.count >= 0, "count must be >= 0")


@_register
@dataclass(frozen=True)
class ComposedEvent(PrivacyEvent):
    """The sequential composition of ``events``."""

    type_name: ClassVar[str] = "Composed"
    events: tuple[PrivacyEvent, ...]


_EVENT_FIELDS = {"event"}
_EVENT_TUPLE_FIELDS = {"events"}


def event_from_dict(data: Mapping[str, Any]) -> PrivacyEvent:
    """Rebuild an event from :meth:`PrivacyEvent.to_dict` output; strict about types and keys."""
    if not isinstance(data, Mapping) or "type" not in data:
        raise EventDecodeError("a privacy event must be an object with a 'type' key")
    type_name = data["type"]
    cls = _REGISTRY.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise EventDecodeError(f"unknown privacy event type {type_name!r}")
    expected = {f.name for f in fields(cls)}
    given = set(data) - {"type"}
    if given != expected:
        raise EventDecodeError(
            f"{cls.type_name} event has fields {sorted(given)}, expected {sorted(expected)}"
        )
    kwargs: dict[str, Any] = {}
    for name in expected:
        value = data[name]
        if name in _EVENT_FIELDS:
            value = event_from_dict(value)
        elif name in _EVENT_TUPLE_FIELDS:
            if not isinstance(value, list):
                raise EventDecodeError(f"{cls.type_name}.{name} must be a list")
            value = tuple(event_from_dict(v) for v in value)
        elif name == "stratum_probabilities" and not isinstance(value, list):
            raise EventDecodeError(f"{cls.type_name}.{name} must be a list")
        elif name == "quantization" and value is not None:
            value = _quantization_from_dict(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except DPValueError as exc:
        raise EventDecodeError(f"invalid {cls.type_name} event: {exc}") from None


def _quantization_from_dict(value: Any) -> QuantizationInfo:
    if not isinstance(value, Mapping):
        raise EventDecodeError("quantization must be an object or null")
    expected = {f.name for f in fields(QuantizationInfo)}
    if set(value) != expected:
        raise EventDecodeError(
            f"quantization has fields {sorted(value)}, expected {sorted(expected)}"
        )
    try:
        return QuantizationInfo(**value)
    except DPValueError as exc:
        raise EventDecodeError(f"bad quantization info: {exc}") from None


def event_from_json(text: str) -> PrivacyEvent:
    """Parse :meth:`PrivacyEvent.to_json` output, checking the schema version."""
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EventDecodeError(f"privacy event is not valid JSON: {exc}") from None
    if not isinstance(payload, dict) or payload.get("schema") != SCHEMA:
        raise EventDecodeError(f"privacy event schema must be {SCHEMA!r}")
    if set(payload) != {"schema", "event"}:
        raise EventDecodeError("privacy event JSON must have exactly 'schema' and 'event'")
    return event_from_dict(payload["event"])
