"""Budget policies: refuse a round *before* it starts if it would exceed the privacy budget.

Two levels:

- **global** — the (ε, δ) of the whole run, from the run's accountant: the planned round's
  event is composed on a *copy* and the round is refused (``PrivacyBudgetExceeded``) if the
  copy's ε would exceed the target. Call this before sampling clients.
- **per user** (individual accounting) — each user is charged only for the rounds they took
  part in, *without* amplification by sampling (their participation is recorded, so it cannot
  be assumed secret). Because users are then excluded adaptively, the guarantee is a Rényi
  filter at one order α fixed in advance (Feldman & Zrnic, NeurIPS 2021, "Individual
  Privacy Accounting via a Rényi Filter", Thm 3.3): a user whose summed RDP at α would exceed
  the RDP budget equivalent to (ε_user, δ) is excluded from the round (or the round refused).
  Users sampled less often spend less.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from dp.accounting import rdp_analysis as ra
from dp.accounting.base import Accountant, SampledMechanism, normalize
from dp.accounting.rdp import mechanism_rdp
from dp.errors import DPValueError, PrivacyBudgetExceeded
from dp.events import NonPrivateEvent, PrivacyEvent


@dataclass(frozen=True)
class BudgetPolicy:
    """Targets of a run. ``None`` disables a level.

    ``user_rdp_order`` is the Rényi filter's fixed order (default: the order that is optimal
    for a Gaussian-like composition reaching exactly ``user_epsilon``, 1 + 2·ln(1/δ)/ε,
    snapped to the accountant's order grid). ``exclude_users`` excludes over-budget users
    from the round instead of refusing the whole round.
    """

    delta: float
    target_epsilon: float | None = None
    user_epsilon: float | None = None
    exclude_users: bool = True
    user_rdp_order: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.delta, float | int) and 0 < self.delta < 1):
            raise DPValueError(f"delta must be in (0, 1), got {self.delta!r}")
        for name in ("target_epsilon", "user_epsilon"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, float | int) and math.isfinite(value) and value > 0
            ):
                raise DPValueError(f"{name} must be a positive finite number or None")
        if self.user_rdp_order is not None and float(self.user_rdp_order) not in set(
            ra.ORDERS.tolist()
        ):
            raise DPValueError("user_rdp_order must be one of dp.accounting.rdp_analysis.ORDERS")

    def filter_order(self) -> float:
        """The fixed Rényi order of the per-user filter."""
        if self.user_rdp_order is not None:
            return float(self.user_rdp_order)
        eps = self.user_epsilon if self.user_epsilon is not None else 1.0
        wanted = 1.0 + 2.0 * math.log(1.0 / self.delta) / eps
        return float(ra.ORDERS[int(np.argmin(np.abs(ra.ORDERS - wanted)))])

    def user_rdp_budget(self) -> float:
        """The RDP budget at :meth:`filter_order` equivalent to (user_epsilon, δ) (Balle et
        al. 2020 conversion, the one the accountants use)."""
        if self.user_epsilon is None:
            return math.inf
        a = self.filter_order()
        return (
            self.user_epsilon
            - math.log((a - 1) / a)
            + (math.log(self.delta) + math.log(a)) / (a - 1)
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "delta": self.delta,
            "target_epsilon": self.target_epsilon,
            "user_epsilon": self.user_epsilon,
            "exclude_users": self.exclude_users,
            "user_rdp_order": self.user_rdp_order,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> BudgetPolicy:
        try:
            return cls(**data)  # type: ignore[arg-type]
        except TypeError as exc:
            raise DPValueError(f"bad budget policy: {exc}") from None


def user_event_rdp(event: PrivacyEvent, order: float) -> float:
    """RDP at ``order`` charged to one *participating* user for ``event``: sampling is
    stripped (no amplification), every leaf mechanism is charged in full."""
    index = int(np.flatnonzero(np.isclose(ra.ORDERS, order, rtol=0, atol=1e-12))[0])
    total = 0.0
    for mech, count in normalize(event):
        if any(isinstance(leaf, NonPrivateEvent) for leaf, _ in mech.leaves):
            return math.inf
        unsampled = SampledMechanism(1.0, mech.leaves)
        total += count * float(mechanism_rdp(unsampled)[index])
    return total


@dataclass(frozen=True)
class Admission:
    """Which of a sampled cohort may take part in a round under the per-user budget."""

    admitted: tuple[str, ...]
    excluded: tuple[str, ...]


class BudgetFilter:
    """Applies a :class:`BudgetPolicy` to a run's accountant and per-user RDP totals."""

    def __init__(self, policy: BudgetPolicy) -> None:
        self.policy = policy

    def check_round(self, accountant: Accountant, event: PrivacyEvent) -> float:
        """Raise ``PrivacyBudgetExceeded`` if composing ``event`` would exceed the global
        target; otherwise return the ε the run would have after the round. The accountant
        is not modified (a copy is used)."""
        trial = accountant.copy()
        trial.compose(event)
        eps = trial.get_epsilon_bracket(self.policy.delta).epsilon_upper
        target = self.policy.target_epsilon
        if target is not None and eps > target:
            raise PrivacyBudgetExceeded(
                f"the round would bring ε to {eps:.6g} > target {target:g} "
                f"(δ={self.policy.delta:g}); refused before sampling clients"
            )
        return eps

    def admit(
        self, user_rdp: Mapping[str, float], cohort: Iterable[str], event: PrivacyEvent
    ) -> Admission:
        """Split a sampled cohort into admitted and excluded users (per-user filter).

        Raises ``PrivacyBudgetExceeded`` instead of excluding when the policy says so.
        """
        cohort = tuple(cohort)
        if self.policy.user_epsilon is None:
            return Admission(cohort, ())
        order = self.policy.filter_order()
        cost = user_event_rdp(event, order)
        budget = self.policy.user_rdp_budget()
        over = tuple(u for u in cohort if user_rdp.get(u, 0.0) + cost > budget)
        if over and not self.policy.exclude_users:
            raise PrivacyBudgetExceeded(
                f"{len(over)} sampled user(s) would exceed the per-user budget "
                f"ε={self.policy.user_epsilon:g} (e.g. {over[0]!r}); round refused"
            )
        excluded = set(over)
        return Admission(tuple(u for u in cohort if u not in excluded), over)

    def user_epsilon(self, rdp_at_order: float) -> float:
        """The (ε, δ) guarantee of a user with this filter-order RDP total."""
        a = self.policy.filter_order()
        if not math.isfinite(rdp_at_order):
            return math.inf
        eps = (
            rdp_at_order
            + math.log((a - 1) / a)
            - (math.log(self.policy.delta) + math.log(a)) / (a - 1)
        )
        return max(eps, 0.0)
