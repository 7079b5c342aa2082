"""The accountant interface shared by every backend, and the event normalization they share.

An accountant interprets :mod:`dp.events` values. Like dp_accounting's ``PrivacyAccountant``
(and unlike Opacus' tuple history), its state is the list of events composed so far, so it
can be checkpointed, replayed and audited; ``compose`` is transactional: an unsupported
event anywhere in a tree raises :class:`~dp.errors.UnsupportedEventError` and changes nothing.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Generic, Protocol, Self, TypeVar

from dp.errors import DPValueError, UnsupportedEventError
from dp.events import (
    ComposedEvent,
    DiscreteGaussianEvent,
    DiscreteLaplaceEvent,
    DistributedDiscreteGaussianEvent,
    DistributedSkellamCountsEvent,
    DistributedSkellamEvent,
    GaussianEvent,
    NonPrivateEvent,
    NoOpEvent,
    PoissonSampledEvent,
    PrivacyEvent,
    SelfComposedEvent,
    StratifiedPoissonSampledEvent,
)


@dataclass(frozen=True)
class SampledMechanism:
    """One use of a base mechanism on a Poisson sample of rate ``sampling_rate`` (1 = no
    sampling). ``leaves`` are the leaf events applied to that same sample, with counts."""

    sampling_rate: float
    leaves: tuple[tuple[PrivacyEvent, int], ...]


@dataclass(frozen=True)
class EpsilonBracket:
    """An (ε, δ) answer with its certified lower end and how it was computed."""

    epsilon_lower: float
    epsilon_upper: float
    delta: float
    backend: str
    detail: str = ""


_NON_PRIVATE = SampledMechanism(1.0, ((NonPrivateEvent(), 1),))


def _degenerate(event: PrivacyEvent) -> PrivacyEvent:
    """Zero noise is a non-private release; zero sensitivity releases nothing private."""
    noise: float | None = None
    sensitivity: float | None = None
    if isinstance(event, GaussianEvent):
        noise, sensitivity = event.noise_multiplier, 1.0
    elif isinstance(event, DiscreteGaussianEvent):
        noise, sensitivity = event.sigma, event.l2_sensitivity
    elif isinstance(event, DiscreteLaplaceEvent):
        noise, sensitivity = event.scale, event.l1_sensitivity
    elif isinstance(event, DistributedDiscreteGaussianEvent):
        noise, sensitivity = event.local_sigma, event.l2_sensitivity
    elif isinstance(event, DistributedSkellamEvent):
        noise, sensitivity = event.local_variance, event.l2_sensitivity
    elif isinstance(event, DistributedSkellamCountsEvent):
        noise, sensitivity = event.local_variance, float(event.max_ones)
    if sensitivity == 0:
        return NoOpEvent()
    if noise == 0:
        return NonPrivateEvent()
    return event


def _leaves(event: PrivacyEvent, count: int) -> Iterator[tuple[PrivacyEvent, int]]:
    """Leaf events with multiplicities (composition flattened); sampling is not allowed here."""
    if isinstance(event, NoOpEvent):
        return
    if isinstance(event, SelfComposedEvent):
        if isinstance(event.count, bool) or not isinstance(event.count, int) or event.count < 0:
            raise DPValueError(
                f"SelfComposed count must be a non-negative int, got {event.count!r}"
            )
        yield from _leaves(event.event, count * event.count)
        return
    if isinstance(event, ComposedEvent):
        for inner in event.events:
            yield from _leaves(inner, count)
        return
    if isinstance(event, PoissonSampledEvent | StratifiedPoissonSampledEvent):
        raise UnsupportedEventError("nested Poisson sampling is not supported")
    event = _degenerate(event)
    if count and not isinstance(event, NoOpEvent):
        yield event, count


def normalize(event: PrivacyEvent, count: int = 1) -> list[tuple[SampledMechanism, int]]:
    """Flatten an event tree into (sampled mechanism, count) pairs.

    Composition is commutative for these accountants, so the order is irrelevant; leaves
    under one ``PoissonSampled`` share the sample and stay together.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise DPValueError(f"count must be a non-negative int, got {count!r}")
    out: list[tuple[SampledMechanism, int]] = []
    _normalize_into(event, count, out)
    return out


def _normalize_into(
    event: PrivacyEvent, count: int, out: list[tuple[SampledMechanism, int]]
) -> None:
    if not isinstance(event, PrivacyEvent):
        raise UnsupportedEventError(f"not a privacy event: {type(event).__name__}")
    if count == 0 or isinstance(event, NoOpEvent):
        return
    if isinstance(event, NonPrivateEvent):
        out.append((_NON_PRIVATE, 1))
    elif isinstance(event, SelfComposedEvent):
        if isinstance(event.count, bool) or not isinstance(event.count, int) or event.count < 0:
            raise DPValueError(
                f"SelfComposed count must be a non-negative int, got {event.count!r}"
            )
        _normalize_into(event.event, count * event.count, out)
    elif isinstance(event, ComposedEvent):
        for inner in event.events:
            _normalize_into(inner, count, out)
    elif isinstance(event, PoissonSampledEvent | StratifiedPoissonSampledEvent):
        q = _sampling_rate(event)
        if q == 0:
            return
        leaves = tuple(_leaves(event.event, 1))
        if any(isinstance(leaf, NonPrivateEvent) for leaf, _ in leaves):
            out.append((_NON_PRIVATE, 1))
        elif leaves:
            out.append((SampledMechanism(float(q), leaves), count))
    else:
        leaf = _degenerate(event)
        if isinstance(leaf, NonPrivateEvent):
            out.append((_NON_PRIVATE, 1))
        elif not isinstance(leaf, NoOpEvent):
            out.append((SampledMechanism(1.0, ((leaf, 1),)), count))


def _check_rate(q: object) -> float:
    if isinstance(q, bool) or not isinstance(q, float | int) or not 0.0 <= q <= 1.0:
        raise DPValueError(f"sampling probability must be in [0, 1], got {q!r}")
    return float(q)


def _sampling_rate(event: PoissonSampledEvent | StratifiedPoissonSampledEvent) -> float:
    """The rate an accountant amplifies by: the event's own, or for heterogeneous (stratified)
    Poisson sampling the largest stratum rate — the user-level guarantee is the worst case
    over users, and each user's loss is amplified by its own rate (see the event's doc)."""
    if isinstance(event, PoissonSampledEvent):
        return _check_rate(event.sampling_probability)
    rates = event.stratum_probabilities
    if not isinstance(rates, tuple) or not rates:
        raise DPValueError("stratum_probabilities must be a non-empty tuple")
    return max(_check_rate(q) for q in rates)


def stratum_view(event: PrivacyEvent, stratum: int) -> PrivacyEvent:
    """``event`` as experienced by a user who is in ``stratum`` whenever a stratified
    sample is drawn: every :class:`StratifiedPoissonSampledEvent` becomes the
    ``PoissonSampled`` event of that stratum's rate (compositions are rebuilt around it).

    Composing the views gives the individual (per-stratum) ε of such a user; the run's ε
    (the worst case over users) is that of the events themselves.
    """
    if isinstance(event, StratifiedPoissonSampledEvent):
        return event.stratum_event(stratum)
    if isinstance(event, SelfComposedEvent):
        return SelfComposedEvent(stratum_view(event.event, stratum), event.count)
    if isinstance(event, ComposedEvent):
        return ComposedEvent(tuple(stratum_view(e, stratum) for e in event.events))
    return event


def validate_delta(delta: float) -> None:
    """Raise :class:`DPValueError` unless 0 < δ < 1."""
    if isinstance(delta, bool) or not isinstance(delta, float | int) or not 0.0 < delta < 1.0:
        raise DPValueError(f"delta must be in (0, 1), got {delta!r}")


class Accountant(ABC):
    """A privacy accountant: compose events, then ask for ε at a δ.

    Subclasses implement :meth:`_check` (raise ``UnsupportedEventError`` for a mechanism they
    cannot interpret) and :meth:`get_epsilon_bracket`.
    """

    name: ClassVar[str] = "abstract"

    def __init__(self) -> None:
        self._events: list[tuple[PrivacyEvent, int]] = []
        self._mechanisms: dict[SampledMechanism, int] = {}

    # -- state ----------------------------------------------------------------------
    @property
    def events(self) -> tuple[tuple[PrivacyEvent, int], ...]:
        """Every (event, count) composed so far, in order: the accountant's whole state."""
        return tuple(self._events)

    @property
    def mechanisms(self) -> dict[SampledMechanism, int]:
        """The normalized composition (sampled mechanism → total count)."""
        return dict(self._mechanisms)

    @property
    def is_non_private(self) -> bool:
        return _NON_PRIVATE in self._mechanisms

    def copy(self) -> Self:
        """An independent accountant with the same state (for what-if checks)."""
        return copy.deepcopy(self)

    # -- composition ----------------------------------------------------------------
    def supports(self, event: PrivacyEvent) -> bool:
        """Whether :meth:`compose` would accept ``event``."""
        try:
            for mech, _ in normalize(event):
                if mech != _NON_PRIVATE:
                    self._check(mech)
        except (UnsupportedEventError, DPValueError):
            return False
        return True

    def compose(self, event: PrivacyEvent, count: int = 1) -> Self:
        """Compose ``event`` ``count`` times; all-or-nothing (validated before any change)."""
        parts = normalize(event, count)
        for mech, _ in parts:
            if mech != _NON_PRIVATE:
                self._check(mech)
        for mech, n in parts:
            self._mechanisms[mech] = self._mechanisms.get(mech, 0) + n
        self._events.append((event, count))
        self._invalidate()
        return self

    def get_epsilon(self, delta: float) -> float:
        """The (upper, valid) ε at ``delta`` for everything composed so far."""
        return self.get_epsilon_bracket(delta).epsilon_upper

    @abstractmethod
    def get_epsilon_bracket(self, delta: float) -> EpsilonBracket:
        """ε at ``delta`` with a certified lower end (equal to the upper end if not known)."""

    @abstractmethod
    def _check(self, mechanism: SampledMechanism) -> None:
        """Raise :class:`UnsupportedEventError` if this backend cannot interpret it."""

    def _invalidate(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Hook: drop cached results after the state changed."""

    def _trivial(self, delta: float) -> EpsilonBracket | None:
        validate_delta(delta)
        if self.is_non_private:
            return EpsilonBracket(math.inf, math.inf, delta, self.name, "non-private release")
        if not self._mechanisms:
            return EpsilonBracket(0.0, 0.0, delta, self.name, "no events")
        return None


class _Bracketed(Protocol):
    @property
    def epsilon_lower(self) -> float: ...

    @property
    def epsilon_upper(self) -> float: ...


BracketT = TypeVar("BracketT", bound=_Bracketed)


class CachedBracketAccountant(Accountant, Generic[BracketT]):
    """A backend whose answer is one computed bracket per δ, cached until the next
    ``compose``; :meth:`get_epsilon` skips the certified lower end (about half the cost).

    Subclasses implement :meth:`_compute_bracket` and :meth:`_bracket_detail`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[tuple[float, bool], BracketT] = {}

    def _invalidate(self) -> None:
        self._cache.clear()

    @abstractmethod
    def _compute_bracket(self, delta: float, want_lower: bool) -> BracketT:
        """The bracket at ``delta`` (``want_lower=False``: the lower end may be 0)."""

    @abstractmethod
    def _bracket_detail(self, bracket: BracketT) -> str:
        """How the bracket was computed, for :class:`EpsilonBracket.detail`."""

    def pld_bracket(self, delta: float, *, want_lower: bool = True) -> BracketT:
        """The full result for ``delta`` (cached; a cached full bracket serves both asks)."""
        cached = self._cache.get((delta, True))
        if cached is None:
            cached = self._cache.get((delta, want_lower))
        if cached is None:
            cached = self._compute_bracket(delta, want_lower)
            self._cache[(delta, want_lower)] = cached
        return cached

    def get_epsilon(self, delta: float) -> float:
        """The valid (upper) ε, without paying for the certified lower end."""
        trivial = self._trivial(delta)
        if trivial is not None:
            return trivial.epsilon_upper
        return self.pld_bracket(delta, want_lower=False).epsilon_upper

    def get_epsilon_bracket(self, delta: float) -> EpsilonBracket:
        trivial = self._trivial(delta)
        if trivial is not None:
            return trivial
        b = self.pld_bracket(delta)
        return EpsilonBracket(
            b.epsilon_lower, b.epsilon_upper, delta, self.name, self._bracket_detail(b)
        )
