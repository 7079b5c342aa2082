"""What a round is charged: the planned event adjusted for what really happened.

Pure functions over :mod:`dp.events` values (mechanisms stay data; accountants interpret
them). The ledger records the charged event beside the planned one, and the audit recomputes
it from the planned event and the survivors, so an under-charged round cannot hide.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from dp.events import (
    ComposedEvent,
    DistributedDiscreteGaussianEvent,
    DistributedSkellamCountsEvent,
    DistributedSkellamEvent,
    NoOpEvent,
    PoissonSampledEvent,
    PrivacyEvent,
    SelfComposedEvent,
    StratifiedPoissonSampledEvent,
)

DistributedEvent = (
    DistributedDiscreteGaussianEvent | DistributedSkellamEvent | DistributedSkellamCountsEvent
)

__all__ = [
    "charged_event",
    "distributed_leaves",
    "leaf_events",
    "min_contributors",
    "noise_levels",
    "unsampled",
]


def charged_event(event: PrivacyEvent, status: str, survivors: int | None) -> PrivacyEvent:
    """The event actually charged for a round.

    Aborted rounds released nothing: NoOp. For released rounds, every distributed
    mechanism's ``min_contributors`` is lowered to the number of survivors if fewer survived
    (their noise is all the aggregate contains).
    """
    if status == "aborted":
        return NoOpEvent()
    if survivors is None:
        return event
    return _cap_contributors(event, survivors)


def _cap_contributors(event: PrivacyEvent, survivors: int) -> PrivacyEvent:
    if isinstance(event, DistributedEvent):
        if survivors < event.min_contributors:
            return dataclasses.replace(event, min_contributors=max(survivors, 1))
        return event
    if isinstance(event, PoissonSampledEvent | StratifiedPoissonSampledEvent | SelfComposedEvent):
        return dataclasses.replace(event, event=_cap_contributors(event.event, survivors))
    if isinstance(event, ComposedEvent):
        return ComposedEvent(events=tuple(_cap_contributors(e, survivors) for e in event.events))
    return event


def leaf_events(event: PrivacyEvent) -> list[PrivacyEvent]:
    """The mechanism leaves of an event (sampling, self-composition and composition
    unwrapped)."""
    if isinstance(event, PoissonSampledEvent | StratifiedPoissonSampledEvent | SelfComposedEvent):
        return leaf_events(event.event)
    if isinstance(event, ComposedEvent):
        return [leaf for e in event.events for leaf in leaf_events(e)]
    return [event]


def distributed_leaves(event: PrivacyEvent) -> list[DistributedEvent]:
    """The secure-sum (distributed-DP) leaves of an event."""
    return [leaf for leaf in leaf_events(event) if isinstance(leaf, DistributedEvent)]


def noise_levels(event: PrivacyEvent) -> list[dict[str, Any]]:
    """Central noise of each distributed leaf (integer units): std and contributors."""
    out: list[dict[str, Any]] = []
    for leaf in distributed_leaves(event):
        if isinstance(leaf, DistributedDiscreteGaussianEvent):
            std = math.sqrt(leaf.min_contributors) * leaf.local_sigma
        else:
            std = math.sqrt(leaf.min_contributors * leaf.local_variance)
        out.append(
            {"mechanism": leaf.type_name, "contributors": leaf.min_contributors, "central_std": std}
        )
    return out


def min_contributors(event: PrivacyEvent) -> int | None:
    """The fewest guaranteed noise shares of any distributed leaf (None if there is none)."""
    levels = noise_levels(event)
    return min(lv["contributors"] for lv in levels) if levels else None


def unsampled(event: PrivacyEvent) -> PrivacyEvent:
    """``event`` as seen by a user known to take part: Poisson sampling stripped (no
    amplification), everything else kept. What individual (per-user) accounting charges."""
    if isinstance(event, PoissonSampledEvent | StratifiedPoissonSampledEvent):
        return unsampled(event.event)
    if isinstance(event, SelfComposedEvent):
        return dataclasses.replace(event, event=unsampled(event.event))
    if isinstance(event, ComposedEvent):
        return ComposedEvent(events=tuple(unsampled(e) for e in event.events))
    return event
