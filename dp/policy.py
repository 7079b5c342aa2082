"""The DP half of a device's own policy: the noise it relies on and the ε it may spend.

Distributed DP exists so that nobody has to trust the server with the noise; a device that
encodes with whatever plan the server announces trusts it anyway. :class:`DPPolicy` (frozen
data, like :mod:`dp.events`) is what a device accepts of a round's
:class:`~dp.planning.DistributedDPPlan`, checked *before* it encodes anything:

* ``noise``: the sum the device relies on is the one with the fewest honest noise shares
  the protocol lets the server release (t − n_C, computed by the device from the round's
  threshold and its own corrupt assumption: the SecAgg half, :mod:`protocols.policy`). Its
  effective noise multiplier √(local variance · (t − n_C)) / Δ₂ must reach
  ``min_noise_multiplier``; a plan sized for the expected survivors fails this whenever the
  server may keep far fewer;
* ``clip`` / ``cap``: the L2 clip of a rotated plan, the most ones of a counts plan;
* ``ring``: the plan's ring width; ``inflation``: the discretization's sensitivity
  inflation;
* ``epsilon-budget`` / ``participations``: :class:`DeviceBudget`, a small local file the
  device updates atomically *before* each upload, charges the round's worst-case event
  (unamplified: the server picks the cohort, so amplification by sampling does not hold
  against it; noise shares capped at t − n_C) and refuses a round that would take the
  composed ε at ``delta`` above ``epsilon_budget``, or the count of uploads above
  ``max_participations``. Neighbouring relation: the accountant's (see docs/accounting.md).

A refusal is a :class:`DPPolicyViolation` naming its :class:`DPRule`. This module imports
nothing outside ``dp`` (layering): the caller passes t − n_C in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import fcntl
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dp.accounting import AutoAccountant, RdpAccountant
from dp.errors import DPError, DPValueError, EventDecodeError
from dp.events import PrivacyEvent, event_from_dict
from dp.planning import DistributedDPPlan
from dp.samplers import sqrt_at_most

__all__ = [
    "DPPolicy",
    "DPPolicyViolation",
    "DPRule",
    "DeviceBudget",
    "check_manifest_rule",
    "worst_case_event",
]

_BUDGET_VERSION = 1


class DPRule(enum.Enum):
    """The DP rule of a device policy a round broke."""

    NOISE = "noise"
    CLIP = "clip"
    CAP = "cap"
    RING = "ring"
    INFLATION = "inflation"
    EPSILON_BUDGET = "epsilon-budget"
    PARTICIPATIONS = "participations"
    BUDGET_FILE = "budget-file"
    MANIFEST_RULE = "manifest-rule"


class DPPolicyViolation(DPError):
    """A device refused a round's DP plan: ``rule`` names the rule, the message says why."""

    def __init__(self, rule: DPRule, reason: str) -> None:
        super().__init__(f"refused by device policy [dp.{rule.value}]: {reason}")
        self.rule = rule
        self.reason = reason


def _positive(name: str, value: object, *, integer: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, int if integer else int | float)
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:  # type: ignore[arg-type]
        kind = "a positive int" if integer else "a positive finite number"
        raise DPValueError(f"policy {name} must be {kind}, got {value!r}")


@dataclass(frozen=True)
class DPPolicy:
    """What a device accepts of a round's distributed-DP plan (defaults: the safe ones)."""

    min_noise_multiplier: float = 0.5
    max_clip_norm: float = 10.0
    max_count_cap: int = 100
    min_bits: int = 16
    max_bits: int = 62
    max_l2_inflation: float = 1.25
    epsilon_budget: float = 10.0
    delta: float = 1e-5
    max_participations: int = 1_000

    def __post_init__(self) -> None:
        for name in ("min_noise_multiplier", "max_clip_norm", "max_l2_inflation"):
            _positive(name, getattr(self, name))
        _positive("epsilon_budget", self.epsilon_budget)
        for name in ("max_count_cap", "min_bits", "max_bits", "max_participations"):
            _positive(name, getattr(self, name), integer=True)
        if self.min_bits > self.max_bits:
            raise DPValueError("policy min_bits must be <= max_bits")
        d = self.delta
        if isinstance(d, bool) or not isinstance(d, int | float) or not 0.0 < d < 1.0:
            raise DPValueError(f"policy delta must be in (0, 1), got {d!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> DPPolicy:
        """From parsed JSON/TOML; unknown fields are a DPValueError."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise DPValueError(f"unknown dp policy fields {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise DPValueError(f"bad dp policy: {exc}") from None

    def to_mapping(self) -> dict[str, Any]:
        """JSON-ready fields (the inverse of :meth:`from_mapping`)."""
        return dataclasses.asdict(self)

    def noise_at(self, plan: DistributedDPPlan, honest_shares: int) -> float:
        """Effective noise multiplier of a sum of ``honest_shares`` of ``plan``'s shares."""
        if honest_shares <= 0 or plan.local_variance == 0:
            return 0.0
        return sqrt_at_most(plan.local_variance * honest_shares) / plan.l2_sensitivity

    def check_plan(self, plan: DistributedDPPlan, honest_floor: int) -> PrivacyEvent:
        """Refuse ``plan`` unless it meets every rule when only ``honest_floor`` (t − n_C)
        honest noise shares reach the sum; return the worst-case event to charge."""
        z = self.noise_at(plan, honest_floor)
        if z < self.min_noise_multiplier:
            raise DPPolicyViolation(
                DPRule.NOISE,
                f"with t - n_C = {honest_floor} honest noise shares the sum carries noise "
                f"multiplier {z:.4g} < {self.min_noise_multiplier:g} (the plan is sized for "
                f"{plan.min_contributors} shares, noise multiplier {plan.noise_multiplier:g})",
            )
        if plan.encoding == "counts":
            ones = plan.l2_bound_sq
            if ones > self.max_count_cap:
                raise DPPolicyViolation(
                    DPRule.CAP,
                    f"a cap of {ones} ones per contribution exceeds {self.max_count_cap}",
                )
        elif plan.clip_norm > self.max_clip_norm:
            raise DPPolicyViolation(
                DPRule.CLIP, f"clip norm {plan.clip_norm:g} exceeds {self.max_clip_norm:g}"
            )
        if not self.min_bits <= plan.bits <= self.max_bits:
            raise DPPolicyViolation(
                DPRule.RING,
                f"a {plan.bits}-bit ring is outside [{self.min_bits}, {self.max_bits}]",
            )
        if plan.l2_inflation > self.max_l2_inflation:
            raise DPPolicyViolation(
                DPRule.INFLATION,
                f"discretization inflates the sensitivity by {plan.l2_inflation:.4g} > "
                f"{self.max_l2_inflation:g}",
            )
        return worst_case_event(plan, honest_floor)


def check_manifest_rule(plan: DistributedDPPlan, rule: Mapping[str, Any]) -> None:
    """Refuse a plan that breaks the DP rule the server signed in its job manifest (keys,
    all optional: ``min_noise_multiplier``, ``max_clip_norm``, ``max_count_cap``, ``bits``):
    a server cannot change the rule from round to round once devices pinned it."""
    try:
        z = float(rule.get("min_noise_multiplier", 0.0))
        clip = float(rule.get("max_clip_norm", math.inf))
        cap = float(rule.get("max_count_cap", math.inf))
        bits = rule.get("bits")
    except (TypeError, ValueError):
        raise DPPolicyViolation(
            DPRule.MANIFEST_RULE, "the manifest's DP rule is malformed"
        ) from None
    broken = []
    if plan.noise_multiplier < z:
        broken.append(f"noise multiplier {plan.noise_multiplier:g} < {z:g}")
    if plan.encoding == "counts" and plan.l2_bound_sq > cap:
        broken.append(f"cap {plan.l2_bound_sq} > {cap:g}")
    if plan.encoding != "counts" and plan.clip_norm > clip:
        broken.append(f"clip norm {plan.clip_norm:g} > {clip:g}")
    if bits is not None and plan.bits != bits:
        broken.append(f"ring of {plan.bits} bits, not {bits}")
    if broken:
        raise DPPolicyViolation(
            DPRule.MANIFEST_RULE, "the plan breaks the signed job manifest: " + "; ".join(broken)
        )


def worst_case_event(plan: DistributedDPPlan, honest_floor: int) -> PrivacyEvent:
    """The event of one participation as the device must assume it: no sampling
    amplification (the server chooses the cohort) and at most ``honest_floor`` noise
    shares (the fewest the protocol lets the server keep)."""
    shares = max(1, min(plan.min_contributors, honest_floor))
    worst = dataclasses.replace(plan, sampling_probability=None, min_contributors=shares)
    return worst.event(secure=True)


class DeviceBudget:
    """A device's own ε ledger: one small JSON file it updates atomically before an upload.

    :meth:`charge` takes an exclusive lock (``fcntl``), re-reads the file, composes every
    recorded event with the new one (the ``auto`` accountant) and refuses, changing nothing,
    if ε at ``delta`` would exceed ``epsilon_budget`` or the uploads ``max_participations``;
    otherwise it writes the new file (temporary file, fsync, atomic rename, directory fsync)
    and only then returns, so an upload is never made without its charge on disk. A damaged
    file refuses every round (fail closed).
    """

    def __init__(self, path: str | Path, policy: DPPolicy) -> None:
        self.path = Path(path)
        self.policy = policy

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text())
            charges = data["charges"]
            if data.get("version") != _BUDGET_VERSION or not isinstance(charges, list):
                raise ValueError
            for row in charges:
                event_from_dict(row["event"])
        except (OSError, ValueError, KeyError, TypeError, EventDecodeError):
            raise DPPolicyViolation(
                DPRule.BUDGET_FILE,
                f"the device budget file {self.path} is damaged; refusing to upload",
            ) from None
        return list(charges)

    def charges(self) -> list[dict[str, Any]]:
        """The recorded charges (label, event, ε after the charge), oldest first."""
        with self._locked():
            return self._read()

    def _epsilon(self, events: list[PrivacyEvent]) -> float:
        """An upper bound on ε at δ: RDP first (closed form, sub-millisecond, so a device
        meets its stage deadline), the tighter ``auto`` backend (exact Skellam / Gaussian
        PLD, seconds) only when the RDP bound alone would exceed the budget."""
        rdp = RdpAccountant()
        for event in events:
            rdp.compose(event)
        loose = rdp.get_epsilon(self.policy.delta)
        if loose <= self.policy.epsilon_budget:
            return loose
        tight = AutoAccountant()
        for event in events:
            tight.compose(event)
        return min(loose, tight.get_epsilon(self.policy.delta))

    def spent(self) -> float:
        """ε at the policy's δ of everything charged so far."""
        rows = self.charges()
        return self._epsilon([event_from_dict(r["event"]) for r in rows]) if rows else 0.0

    def charge(self, event: PrivacyEvent, *, label: str) -> float:
        """Record ``event`` (refusing if it would break the budget); the new total ε."""
        with self._locked():
            rows = self._read()
            if len(rows) >= self.policy.max_participations:
                raise DPPolicyViolation(
                    DPRule.PARTICIPATIONS,
                    f"this device already made {len(rows)} uploads (at most "
                    f"{self.policy.max_participations})",
                )
            events = [event_from_dict(r["event"]) for r in rows] + [event]
            epsilon = self._epsilon(events)
            if not epsilon <= self.policy.epsilon_budget:
                raise DPPolicyViolation(
                    DPRule.EPSILON_BUDGET,
                    f"this round would take the device's epsilon to {epsilon:.4g} at delta "
                    f"{self.policy.delta:g}, above its budget {self.policy.epsilon_budget:g}",
                )
            rows.append({"label": label, "event": event.to_dict(), "epsilon": epsilon})
            self._write({"version": _BUDGET_VERSION, "charges": rows})
            return epsilon

    def _write(self, content: Mapping[str, Any]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as handle:
            handle.write(json.dumps(content, sort_keys=True))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
