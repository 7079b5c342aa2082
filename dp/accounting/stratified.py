"""Heterogeneous (stratified) Poisson sampling: the per-stratum, individual view of a run.

A :class:`~dp.events.StratifiedPoissonSampledEvent` is read by every backend at its largest
stratum rate: that is the user-level guarantee of the run (worst case over users, whose
strata may depend on their data). This module adds the *individual* statement beside it: the
ε of a user who falls in stratum s at every stratified release, i.e. the composition of the
``PoissonSampled(q_s, ·)`` views (:func:`~dp.accounting.base.stratum_view`). It is the
analogue of individual privacy accounting (a data-dependent, per-user statement), reported
for information; the run's ε is the maximum over strata.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from dp.accounting.base import stratum_view, validate_delta
from dp.calibrate import make_accountant
from dp.errors import DPValueError
from dp.events import (
    ComposedEvent,
    PoissonSampledEvent,
    PrivacyEvent,
    SelfComposedEvent,
    StratifiedPoissonSampledEvent,
)

__all__ = ["num_strata", "stratum_epsilons"]


def _stratified(event: PrivacyEvent) -> Iterator[StratifiedPoissonSampledEvent]:
    if isinstance(event, StratifiedPoissonSampledEvent):
        yield event
    elif isinstance(event, SelfComposedEvent):
        if event.count:
            yield from _stratified(event.event)
    elif isinstance(event, ComposedEvent):
        for inner in event.events:
            yield from _stratified(inner)
    elif isinstance(event, PoissonSampledEvent):
        return


def num_strata(events: Iterable[PrivacyEvent]) -> int:
    """The number of strata of the stratified events (0 if there are none); every stratified
    event of one run must have the same number (raises :class:`DPValueError` otherwise)."""
    sizes = {len(s.stratum_probabilities) for e in events for s in _stratified(e)}
    if len(sizes) > 1:
        raise DPValueError(f"stratified events disagree on the number of strata: {sorted(sizes)}")
    return sizes.pop() if sizes else 0


def stratum_epsilons(
    events: Iterable[PrivacyEvent], delta: float, *, backend: str = "auto"
) -> tuple[float, ...]:
    """ε at ``delta`` of a user who is in stratum s whenever a stratified sample is drawn,
    for each s (empty without stratified events). Unsampled and uniformly sampled events
    count in full for every stratum."""
    validate_delta(delta)
    events = list(events)
    k = num_strata(events)
    out: list[float] = []
    for s in range(k):
        accountant = make_accountant(backend)
        for event in events:
            accountant.compose(stratum_view(event, s))
        out.append(float(accountant.get_epsilon_bracket(delta).epsilon_upper))
    return tuple(out)
