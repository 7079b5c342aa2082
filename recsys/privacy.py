"""The privacy budget of a training run: split, calibration and the ε so far.

Every release is a ``dp`` privacy event; ε is always computed by the ``dp`` accountant on
the composition of the events actually produced (never by recsys arithmetic). Planning
uses the events the channel *would* produce (:class:`EventModel`), so the calibrated
noise keeps the planned composition at or below the target ε.

Budget split (explicit, recorded in the summary and the ledger): the popularity release
gets the noise at which it would spend ``popularity_share · ε`` on its own; the FCF rounds
get the smallest noise at which the composition of everything stays within ε.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dp.accounting import make_accountant
from dp.events import (
    NonPrivateEvent,
    PoissonSampledEvent,
    PrivacyEvent,
    SelfComposedEvent,
)
from recsys.errors import ConfigError

__all__ = [
    "BudgetPlan",
    "EventModel",
    "accountant_name",
    "calibrate_single",
    "epsilon_of",
    "plan_budget",
]

EventModel = Callable[[str, float, float], PrivacyEvent]
"""``(task name, noise_multiplier, sampling_rate) -> event`` of one release at that noise."""


def epsilon_of(events: Sequence[PrivacyEvent], delta: float) -> float:
    """ε of the sequential composition of ``events`` at ``delta`` (``dp`` accountant)."""
    if not events:
        return 0.0
    if any(isinstance(e, NonPrivateEvent) for e in events):
        return math.inf
    accountant = make_accountant("auto")
    for event in events:
        accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def accountant_name(events: Sequence[PrivacyEvent]) -> str:
    """Which ``dp`` backend answers for these events (PLD if all Gaussian, else RDP)."""
    accountant = make_accountant("auto")
    for event in events:
        accountant.compose(event)
    backend = getattr(accountant, "active_backend", "auto")
    return f"privagg dp auto accountant ({backend})"


def _sampled(event: PrivacyEvent, rate: float) -> PrivacyEvent:
    return event if rate >= 1.0 else PoissonSampledEvent(rate, event)


def calibrate_single(f: Callable[[float], float], target: float) -> float:
    """Smallest noise multiplier z (to 0.2 %) with ``f(z) <= target``; f decreasing in z."""
    return _bisect(f, target)


def _bisect(
    f: Callable[[float], float], target: float, lo: float = 0.05, hi: float = 5000.0
) -> float:
    """Smallest noise multiplier z (to 0.2%) with f(z) <= target; f decreasing in z."""
    if f(hi) > target:
        raise ConfigError(
            f"cannot reach ε = {target:g}: even noise multiplier {hi:g} is too little"
        )
    if f(lo) <= target:
        return lo
    while hi / lo > 1.002:
        mid = math.sqrt(lo * hi)
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class BudgetPlan:
    """Noise multipliers of the two kinds of release and how ε is computed."""

    privacy: str
    epsilon: float
    delta: float
    popularity_noise: float
    round_noise: float
    num_popularity: int
    num_rounds: int
    sampling_rate: float
    popularity_share: float
    planned_epsilon: float
    accountant: str

    def epsilon_of(self, events: Sequence[PrivacyEvent]) -> float:
        """ε so far for the events actually produced."""
        if self.privacy == "none":
            return math.inf if events else 0.0
        return epsilon_of(events, self.delta)


def plan_budget(
    *,
    privacy: str,
    epsilon: float,
    delta: float,
    sampling_rate: float,
    num_popularity: int,
    num_rounds: int,
    popularity_share: float,
    event_model: EventModel,
    extra_events: Sequence[PrivacyEvent] = (),
) -> BudgetPlan:
    """Calibrate the noise of the popularity release and of the FCF rounds (see module doc).

    ``extra_events`` are releases whose noise is already fixed (e.g. the stratified
    sampler's cluster-size release): they are composed with everything when the rounds
    (or, without rounds, the popularity release) are calibrated to reach ε.
    """
    fixed = list(extra_events)
    if privacy == "none":
        return BudgetPlan(
            privacy,
            math.inf,
            delta,
            0.0,
            0.0,
            num_popularity,
            num_rounds,
            sampling_rate,
            popularity_share,
            math.inf,
            "none (no DP)",
        )
    if num_popularity + num_rounds == 0:
        raise ConfigError("nothing to release: zero rounds and no popularity release")

    def pop_events(z: float) -> list[PrivacyEvent]:
        return [event_model("popularity", z, 1.0)] * num_popularity

    def round_events(z: float) -> list[PrivacyEvent]:
        if num_rounds == 0:
            return []
        return [
            SelfComposedEvent(
                _sampled(event_model("fcf", z, sampling_rate), sampling_rate), num_rounds
            )
        ]

    z_pop = 0.0
    z_rounds = 0.0
    if num_popularity and num_rounds:
        share = popularity_share * epsilon
        z_pop = _bisect(lambda z: epsilon_of(pop_events(z), delta), share)
        z_rounds = _bisect(
            lambda z: epsilon_of(fixed + pop_events(z_pop) + round_events(z), delta), epsilon
        )
    elif num_popularity:
        z_pop = _bisect(lambda z: epsilon_of(fixed + pop_events(z), delta), epsilon)
    else:
        z_rounds = _bisect(lambda z: epsilon_of(fixed + round_events(z), delta), epsilon)
    planned_events = fixed + (pop_events(z_pop) if num_popularity else []) + round_events(z_rounds)
    planned = epsilon_of(planned_events, delta)
    return BudgetPlan(
        privacy,
        epsilon,
        delta,
        z_pop,
        z_rounds,
        num_popularity,
        num_rounds,
        sampling_rate,
        popularity_share,
        planned,
        accountant_name(planned_events),
    )
