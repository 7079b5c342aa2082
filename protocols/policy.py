"""The SecAgg half of a device's own policy: what it accepts from a server it does not trust.

A device checks the job the server's welcome announces and every round announcement
against a :class:`SecAggPolicy` *before* it sends anything derived from its data (not even
its advertised keys). The server's word is not evidence: every rule is evaluated with the
device's own assumptions (its threat model, its assumed corrupt fraction), never with the
numbers the server states. A refusal is a :class:`PolicyViolation` naming the :class:`Rule`
it broke. The DP half (noise, clip, cap, ε budget) lives in :mod:`dp.policy`; a device
composes both (``recsys.remote``, ``privagg client``).

The rules, per announcement (n = cohort size, t = threshold, k = neighbours,
n_C = ⌈γ·n⌉ with γ = max(the device's assumed corrupt fraction, the job's)):

* ``threat-model``: the job runs at least the device's threat model (malicious-server mode
  when the device holds a client registry: no silent downgrade to honest-but-curious);
* ``corrupt-fraction``: in malicious mode the job states a corrupt fraction, at least the
  device's (a job that assumes fewer corrupt clients prints guarantees that do not hold);
* ``threshold``: t > (n + n_C)/2 on the full graph in malicious mode; t > n/2 and n_C < t
  honest-but-curious (Bonawitz et al. 2017);
* ``graph``: no sparse graph in malicious mode; honest-but-curious, k must meet the
  2^-σ security bound of :mod:`protocols.params` at the device's γ (dropouts do not weaken
  the security bound's exposure term, they are counted as the server's to choose);
* ``honest-survivors``: t − n_C, the honest clients in any sum the server can unmask, is at
  least ``min_honest_survivors`` (a sum of one honest input plus corrupt ones *is* that
  input);
* ``cohort``, ``ring``, ``vector``, ``rounds``: cohort size, ring width, vector length and
  the job's number of rounds within the device's bounds; ``participations``: the device
  joins at most ``max_participations`` rounds of one job.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from protocols.config import SecAggConfig, ThreatModel
from protocols.errors import ConfigError, ProtocolError

__all__ = ["PolicyViolation", "Rule", "SecAggPolicy", "load_policy_file"]

_STRENGTH = {ThreatModel.HONEST_BUT_CURIOUS: 0, ThreatModel.MALICIOUS_SERVER: 1}


class Rule(enum.Enum):
    """The rule of a device policy an announcement broke (the DP rules are in dp.policy)."""

    THREAT_MODEL = "threat-model"
    CORRUPT_FRACTION = "corrupt-fraction"
    THRESHOLD = "threshold"
    GRAPH = "graph"
    HONEST_SURVIVORS = "honest-survivors"
    COHORT = "cohort"
    RING = "ring"
    VECTOR = "vector"
    ROUNDS = "rounds"
    PARTICIPATIONS = "participations"
    MANIFEST = "manifest"


class PolicyViolation(ProtocolError):
    """A device refused an announcement: ``rule`` names the rule, the message says why."""

    def __init__(self, rule: Rule, reason: str) -> None:
        super().__init__(f"refused by device policy [{rule.value}]: {reason}")
        self.rule = rule
        self.reason = reason


@dataclass(frozen=True)
class SecAggPolicy:
    """What a device accepts of a job's SecAgg parameters (frozen data, like dp.events).

    The defaults are the safe ones: malicious-server mode, 5 % of every cohort assumed
    corrupt, no sparse graph in malicious mode, at least 2 honest inputs in any unmasked
    sum. :meth:`for_device` picks the threat model from whether the device has a registry.
    """

    threat_model: ThreatModel = ThreatModel.MALICIOUS_SERVER
    corrupt_fraction: float = 0.05
    min_honest_survivors: int = 2
    min_cohort: int = 3
    max_cohort: int = 1 << 20
    min_bits: int = 16
    max_bits: int = 62
    max_vector_length: int = 1 << 24
    max_rounds: int = 10_000
    max_participations: int = 1_000
    security_bits: int = 40
    require_signed_manifest: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.require_signed_manifest, bool):
            raise ConfigError("policy require_signed_manifest must be true or false")
        if not isinstance(self.threat_model, ThreatModel):
            raise ConfigError("policy threat_model must be a ThreatModel")
        g = self.corrupt_fraction
        if isinstance(g, bool) or not isinstance(g, int | float) or not 0.0 <= g < 0.5:
            raise ConfigError(f"policy corrupt_fraction must be in [0, 0.5), got {g!r}")
        for name in (
            "min_honest_survivors",
            "min_cohort",
            "max_cohort",
            "min_bits",
            "max_bits",
            "max_vector_length",
            "max_rounds",
            "max_participations",
            "security_bits",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"policy {name} must be a positive int, got {value!r}")
        if self.min_cohort > self.max_cohort or self.min_bits > self.max_bits:
            raise ConfigError("policy bounds must satisfy min <= max")

    @classmethod
    def for_device(cls, *, has_registry: bool, **fields: Any) -> SecAggPolicy:
        """The safe default of a device: malicious-server mode iff it holds a registry
        (without one it cannot verify signed keys, so it can only run honest-but-curious)."""
        threat = ThreatModel.MALICIOUS_SERVER if has_registry else ThreatModel.HONEST_BUT_CURIOUS
        fields.setdefault("threat_model", threat)
        return cls(**fields)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SecAggPolicy:
        """From parsed JSON/TOML (``threat_model`` as its string value); unknown fields are
        a ConfigError."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown secagg policy fields {sorted(unknown)}")
        values = dict(data)
        if "threat_model" in values:
            try:
                values["threat_model"] = ThreatModel(values["threat_model"])
            except ValueError:
                names = [m.value for m in ThreatModel]
                raise ConfigError(f"policy threat_model must be one of {names}") from None
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"bad secagg policy: {exc}") from None

    def to_mapping(self) -> dict[str, Any]:
        """JSON-ready fields (the inverse of :meth:`from_mapping`)."""
        out = asdict(self)
        out["threat_model"] = self.threat_model.value
        return out

    # ------------------------------------------------------------------ the checks
    def corrupt_count(self, num_clients: int, stated: float | None = None) -> int:
        """n_C the device assumes for a cohort of ``num_clients``: the larger of its own
        fraction and the job's stated one."""
        gamma = max(self.corrupt_fraction, stated or 0.0)
        return math.ceil(gamma * num_clients)

    def check_job(
        self, *, threat_model: ThreatModel, corrupt_fraction: float | None, bits: int, rounds: int
    ) -> None:
        """The job-level rules (threat model, stated corrupt fraction, ring, rounds)."""
        if _STRENGTH[threat_model] < _STRENGTH[self.threat_model]:
            raise PolicyViolation(
                Rule.THREAT_MODEL,
                f"the server announces {threat_model.value}, this device requires "
                f"{self.threat_model.value} (it will not be downgraded)",
            )
        if threat_model is ThreatModel.MALICIOUS_SERVER:
            if corrupt_fraction is None:
                raise PolicyViolation(
                    Rule.CORRUPT_FRACTION,
                    "a malicious-server job must state its assumed corrupt fraction",
                )
            if corrupt_fraction < self.corrupt_fraction:
                raise PolicyViolation(
                    Rule.CORRUPT_FRACTION,
                    f"the job assumes corrupt_fraction {corrupt_fraction:g}, below this "
                    f"device's {self.corrupt_fraction:g}: its guarantees would not hold",
                )
        if not self.min_bits <= bits <= self.max_bits:
            raise PolicyViolation(
                Rule.RING, f"a {bits}-bit ring is outside [{self.min_bits}, {self.max_bits}]"
            )
        if rounds > self.max_rounds:
            raise PolicyViolation(
                Rule.ROUNDS,
                f"the job announces {rounds} rounds, this device allows at most {self.max_rounds}",
            )

    def check_round(self, config: SecAggConfig, *, vector_length: int, participations: int) -> None:
        """The per-round rules for the protocol configuration a round announces (built by
        the caller from the announcement; ``participations`` rounds already joined)."""
        n, t = config.num_clients, config.threshold
        malicious = config.threat_model is ThreatModel.MALICIOUS_SERVER
        if participations >= self.max_participations:
            raise PolicyViolation(
                Rule.PARTICIPATIONS,
                f"this device already joined {participations} rounds of this job (at most "
                f"{self.max_participations})",
            )
        if not self.min_cohort <= n <= self.max_cohort:
            raise PolicyViolation(
                Rule.COHORT, f"a cohort of {n} is outside [{self.min_cohort}, {self.max_cohort}]"
            )
        if vector_length > self.max_vector_length:
            raise PolicyViolation(
                Rule.VECTOR, f"vector length {vector_length} exceeds {self.max_vector_length}"
            )
        corrupt = self.corrupt_count(n, config.corrupt_fraction)
        if malicious and not config.is_full_graph:
            raise PolicyViolation(
                Rule.GRAPH,
                f"neighbors={config.neighbors}: sparse graphs give no guarantee against a "
                "malicious server (it picks the graph seed and who drops)",
            )
        if config.is_full_graph:
            need = (n + corrupt) // 2 + 1 if malicious else max(n // 2 + 1, corrupt + 1)
            if t < need:
                rule = "t > (n + n_C)/2" if malicious else "t > n/2 and t > n_C"
                raise PolicyViolation(
                    Rule.THRESHOLD,
                    f"threshold {t} for a cohort of {n} with n_C = {corrupt} breaks {rule} "
                    f"(need t >= {need})",
                )
        else:
            group = config.group_size
            if 2 * t <= group:
                raise PolicyViolation(
                    Rule.THRESHOLD, f"threshold {t} is not a majority of neighbors + 1 = {group}"
                )
            try:
                guarantee = SecAggConfig(
                    n,
                    t,
                    neighbors=config.neighbors,
                    bits=config.bits,
                    corrupt_fraction=corrupt / n,
                    security_bits=self.security_bits,
                    correctness_bits=256,
                ).guarantee()
            except ConfigError as exc:
                raise PolicyViolation(Rule.GRAPH, str(exc)) from None
            if guarantee.security_failure > 2.0**-self.security_bits:
                raise PolicyViolation(
                    Rule.GRAPH,
                    f"neighbors={config.neighbors}, threshold={t}: failure bound "
                    f"{guarantee.security_failure:.3g} at n_C = {corrupt} exceeds "
                    f"2^-{self.security_bits}",
                )
        honest = t - corrupt
        if honest < self.min_honest_survivors:
            raise PolicyViolation(
                Rule.HONEST_SURVIVORS,
                f"a sum the server may unmask holds t - n_C = {honest} honest inputs, "
                f"fewer than {self.min_honest_survivors}",
            )

    def honest_floor(self, config: SecAggConfig) -> int:
        """t − n_C: the fewest honest noise shares in any sum the protocol lets the server
        unmask, with the device's own n_C."""
        stated = config.corrupt_fraction
        return max(0, config.threshold - self.corrupt_count(config.num_clients, stated))


def load_policy_file(path: str | Path) -> dict[str, Any]:
    """A policy file (JSON, or TOML by its ``.toml`` suffix) as a mapping with optional
    ``secagg`` and ``dp`` tables; anything else is a ConfigError."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {p}: {exc.strerror}") from None
    try:
        if p.suffix == ".toml":
            import tomllib

            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{p} is not a valid policy file ({exc})") from None
    if not isinstance(data, dict) or set(data) - {"secagg", "dp"}:
        raise ConfigError(f"{p}: a policy file holds a 'secagg' and/or a 'dp' table")
    for key in ("secagg", "dp"):
        if not isinstance(data.get(key, {}), dict):
            raise ConfigError(f"{p}: '{key}' must be a table")
    return data
