"""What a ledger row and the ledger's metadata hold, and how they are hashed and signed.

Data only: the SQLite store (:mod:`dp.ledger.store`) writes these values, the audit
(:mod:`dp.ledger.audit`) reads them back without trusting the writer.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dp.budget import BudgetPolicy
from dp.errors import DPValueError, LedgerError
from dp.events import PrivacyEvent, event_from_dict

SCHEMA = "privagg.ledger/2"
#: readable for audit; rows carry no provenance (reported as "unspecified")
LEGACY_SCHEMAS = ("privagg.ledger/1",)
STATUSES = ("released", "aborted")
HEAD_LABEL = b"privagg.ledger.head/1"
PUBLISH_PREFIX = "privagg-ledger/2"

# --------------------------------------------------------------------------- provenance
#: noise generator of a release: OS entropy, or dp's seeded SimulationRng (not private)
NOISE_SOURCES = ("secure", "simulated", "unspecified")
#: who saw what: SecAgg on the full graph / SecAgg+ (the server sees only the sum), a plain
#: sum of the devices' ring vectors (``secagg-off``: the server saw every vector), a trusted
#: server adding the noise (``central``), or no aggregation-level privacy (``none``)
AGGREGATIONS = ("secagg-full", "secagg-plus", "secagg-off", "central", "none", "unspecified")
THREAT_MODELS = ("honest-but-curious", "malicious-server", "trusted-server", "unspecified")
#: the neighbouring relation the ε of the run is proved under
ADJACENCIES = ("zero-out", "add-remove")
ADJACENCY_DESCRIPTIONS = {
    "zero-out": (
        "user-level zero-out (replace-one with public participation): the neighbour "
        "replaces one user's whole history by zero while that user's own noise share stays "
        "in the sum (the fixed-contributor relation of Kairouz-Liu-Steinke 2021 and "
        "Agarwal-Kairouz-Liu 2021)"
    ),
    "add-remove": (
        "user-level add/remove: the neighbour adds or removes one user's whole history, "
        "noise included (proved here only for noise added by a trusted server)"
    ),
}


def _choice(name: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise DPValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Provenance:
    """How a release was made, as data: recorded in every row and shown by the audit.

    The accountant charges only the events; these fields say whether the guarantee those
    events describe held (secure noise, the server never seeing an individual vector, the
    neighbouring relation the ε is stated under).
    """

    noise: str = "unspecified"
    aggregation: str = "unspecified"
    threat_model: str = "unspecified"
    adjacency: str = "zero-out"

    def __post_init__(self) -> None:
        _choice("noise", self.noise, NOISE_SOURCES)
        _choice("aggregation", self.aggregation, AGGREGATIONS)
        _choice("threat_model", self.threat_model, THREAT_MODELS)
        _choice("adjacency", self.adjacency, ADJACENCIES)

    def to_dict(self) -> dict[str, str]:
        return {
            "noise": self.noise,
            "aggregation": self.aggregation,
            "threat_model": self.threat_model,
            "adjacency": self.adjacency,
        }

    @classmethod
    def from_dict(cls, data: object) -> Provenance:
        if not isinstance(data, Mapping) or set(data) != {
            "noise",
            "aggregation",
            "threat_model",
            "adjacency",
        }:
            raise LedgerError(f"malformed provenance {data!r}")
        try:
            return cls(**{str(k): v for k, v in data.items()})
        except DPValueError as exc:
            raise LedgerError(f"malformed provenance: {exc}") from None


# --------------------------------------------------------------------------- hashing
def canonical_bytes(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no whitespace, no NaN): what gets hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def sha256_hex(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()


def participants_digest(user_ids: Iterable[str]) -> str:
    """SHA-256 over the sorted, length-prefixed user ids of a round."""
    h = hashlib.sha256()
    for uid in sorted(user_ids):
        raw = uid.encode()
        h.update(struct.pack(">I", len(raw)) + raw)
    return h.hexdigest()


def head_message(count: int, head_hash: str) -> bytes:
    """The bytes the head signature covers (row count and last hash)."""
    return HEAD_LABEL + struct.pack(">Q", count) + bytes.fromhex(head_hash)


def key_fingerprint(public_key_hex: str) -> str:
    """A public key's fingerprint: ``ed25519:`` + the first 32 hex digits of SHA-256 of the
    raw key (128 bits: a second key with the same print is out of reach)."""
    return "ed25519:" + sha256_hex(bytes.fromhex(public_key_hex))[:32]


def finite_or_none(x: float) -> float | None:
    """JSON cannot hold ∞: a non-private ledger stores ε = null (read back as ∞)."""
    return x if math.isfinite(x) else None


def as_float(x: object) -> float:
    return math.inf if x is None else float(x)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- signing
@runtime_checkable
class LedgerSigner(Protocol):
    """An Ed25519 signer holding the server's key (e.g. ``secagg.SigningKey``)."""

    def sign(self, message: bytes) -> bytes: ...

    @property
    def public_bytes(self) -> bytes: ...


Signer = Ed25519PrivateKey | LedgerSigner


def public_key_hex(key: Signer) -> str:
    if isinstance(key, Ed25519PrivateKey):
        return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    return key.public_bytes.hex()


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class LedgerEntry:
    """One round as stored (``body`` is exactly what was hashed)."""

    seq: int
    round_index: int
    status: str
    event: PrivacyEvent
    charged: PrivacyEvent
    cohort_size: int
    survivors: int | None
    min_contributors: int | None
    below_plan: bool
    backend: str
    cumulative_epsilon: float
    epsilon_lower: float
    participants: tuple[str, ...]
    row_hash: str
    body: dict[str, Any]
    provenance: Provenance


@dataclass(frozen=True)
class LedgerMeta:
    """Run-level settings, hashed into the start of the chain.

    ``run_uid`` is a random id drawn when the ledger is created (it names the run in the
    published line); ``provenance`` is what the writer declared for the run's releases.
    """

    run_id: str
    backend: str
    policy: BudgetPolicy
    public_key: str | None
    created: str
    run_uid: str = ""
    provenance: Provenance = Provenance()
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": self.schema,
            "run_id": self.run_id,
            "backend": self.backend,
            "policy": self.policy.to_dict(),
            "public_key": self.public_key,
            "created": self.created,
        }
        if self.schema == SCHEMA:
            out["run_uid"] = self.run_uid
            out["provenance"] = self.provenance.to_dict()
            out["adjacency"] = ADJACENCY_DESCRIPTIONS[self.provenance.adjacency]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LedgerMeta:
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema != SCHEMA and schema not in LEGACY_SCHEMAS:
            raise LedgerError(f"not a privagg ledger (schema {schema!r})")
        try:
            legacy = schema != SCHEMA
            public_key = data["public_key"]
            if public_key is not None and not isinstance(public_key, str):
                raise LedgerError("public_key must be a hex string or null")
            meta = cls(
                run_id=str(data["run_id"]),
                backend=str(data["backend"]),
                policy=BudgetPolicy.from_dict(data["policy"]),
                public_key=public_key,
                created=str(data["created"]),
                run_uid="" if legacy else str(data["run_uid"]),
                provenance=Provenance() if legacy else Provenance.from_dict(data["provenance"]),
                schema=str(schema),
            )
        except (KeyError, TypeError, DPValueError) as exc:
            raise LedgerError(f"ledger metadata is malformed: {exc}") from None
        if meta.to_dict() != data:
            raise LedgerError("ledger metadata has unknown or inconsistent fields")
        return meta

    def genesis_hash(self) -> str:
        return sha256_hex(b"privagg.ledger.genesis/1", canonical_bytes(self.to_dict()))


def entry_from_row(
    seq: int, body_text: str, row_hash: str, participants: Sequence[str], meta: LedgerMeta
) -> LedgerEntry:
    """Decode one stored row (raises ``LedgerError`` if malformed)."""
    try:
        body = json.loads(body_text)
        provenance = (
            Provenance.from_dict(body["provenance"]) if meta.schema == SCHEMA else Provenance()
        )
        return LedgerEntry(
            seq=seq,
            round_index=int(body["round"]),
            status=str(body["status"]),
            event=event_from_dict(body["event"]),
            charged=event_from_dict(body["charged_event"]),
            cohort_size=int(body["cohort_size"]),
            survivors=body["survivors"],
            min_contributors=body["min_contributors"],
            below_plan=bool(body["below_plan"]),
            backend=str(body["backend"]),
            cumulative_epsilon=as_float(body["cumulative_epsilon"]),
            epsilon_lower=as_float(body["epsilon_lower"]),
            participants=tuple(sorted(participants)),
            row_hash=row_hash,
            body=body,
            provenance=provenance,
        )
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise LedgerError(f"ledger row {seq} is malformed: {exc}") from None
