"""The privacy ledger: an append-only, tamper-evident record of every round's privacy cost.

Stored in one SQLite file (stdlib ``sqlite3``, embedded, no server). Each round row holds
its planned and charged events (canonical JSON from :mod:`dp.events`), cohort size,
survivors, the guaranteed and realized noise, the accountant backend and the cumulative ε;
each user's participations are a table, so individual (per-user) accounting can be replayed.

Tamper evidence:

- every row's hash is SHA-256(previous hash ‖ canonical row bytes); the chain starts from
  the hash of the ledger's metadata (budget, δ, backend, public key), so editing, deleting or
  reordering any row, a participation or the metadata breaks the chain;
- a *head* record (row count + last hash) catches truncation of the last rows;
- optionally every row hash and the head are signed with the server's Ed25519 key
  (``cryptography``), so the chain cannot be recomputed by someone without the key;
- SQLite triggers refuse UPDATE/DELETE on rows (defence in depth: the chain is the proof).

A rollback to an older, complete and correctly signed state cannot be detected from the file
alone: compare the head hash with one published elsewhere (``expected_head``).

Dropouts: for distributed mechanisms the charged event uses n = min(planned minimum,
survivors) noise contributors, so a round whose realized noise is below plan is charged for
what really happened and flagged ``below_plan`` (reported by ``privagg audit``), never hidden.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sqlite3
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dp.accounting.base import Accountant
from dp.budget import Admission, BudgetFilter, BudgetPolicy, user_event_rdp
from dp.calibrate import make_accountant
from dp.errors import DPValueError, LedgerError
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
    event_from_dict,
)

SCHEMA = "privagg.ledger/1"
STATUSES = ("released", "aborted")
_HEAD_LABEL = b"privagg.ledger.head/1"

_DDL = """
CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL);
CREATE TABLE rounds (
    seq INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    row_hash TEXT NOT NULL,
    signature TEXT
);
CREATE TABLE participations (
    seq INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (seq, user_id)
);
CREATE INDEX participations_user ON participations (user_id);
CREATE TABLE head (id INTEGER PRIMARY KEY CHECK (id = 1), count INTEGER NOT NULL,
                   head_hash TEXT NOT NULL, signature TEXT);
CREATE TRIGGER rounds_append_only_u BEFORE UPDATE ON rounds
    BEGIN SELECT RAISE(ABORT, 'privacy ledger rows are append-only'); END;
CREATE TRIGGER rounds_append_only_d BEFORE DELETE ON rounds
    BEGIN SELECT RAISE(ABORT, 'privacy ledger rows are append-only'); END;
CREATE TRIGGER participations_append_only_u BEFORE UPDATE ON participations
    BEGIN SELECT RAISE(ABORT, 'privacy ledger rows are append-only'); END;
CREATE TRIGGER participations_append_only_d BEFORE DELETE ON participations
    BEGIN SELECT RAISE(ABORT, 'privacy ledger rows are append-only'); END;
"""


def canonical_bytes(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no whitespace, no NaN): what gets hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _sha256_hex(*parts: bytes) -> str:
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


def _head_message(count: int, head_hash: str) -> bytes:
    return _HEAD_LABEL + struct.pack(">Q", count) + bytes.fromhex(head_hash)


def _finite(x: float) -> float | None:
    """JSON cannot hold ∞: a non-private ledger stores ε = null (read back as ∞)."""
    return x if math.isfinite(x) else None


def _as_float(x: object) -> float:
    return math.inf if x is None else float(x)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- dropouts
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
    if isinstance(
        event,
        DistributedDiscreteGaussianEvent | DistributedSkellamEvent | DistributedSkellamCountsEvent,
    ):
        if survivors < event.min_contributors:
            return dataclasses.replace(event, min_contributors=max(survivors, 1))
        return event
    if isinstance(event, PoissonSampledEvent | StratifiedPoissonSampledEvent):
        return dataclasses.replace(event, event=_cap_contributors(event.event, survivors))
    if isinstance(event, SelfComposedEvent):
        return dataclasses.replace(event, event=_cap_contributors(event.event, survivors))
    if isinstance(event, ComposedEvent):
        return ComposedEvent(events=tuple(_cap_contributors(e, survivors) for e in event.events))
    return event


def _noise_levels(event: PrivacyEvent) -> list[dict[str, Any]]:
    """Central noise of each distributed leaf (integer units): std and contributors."""
    out: list[dict[str, Any]] = []
    if isinstance(event, DistributedDiscreteGaussianEvent):
        out.append(
            {
                "mechanism": event.type_name,
                "contributors": event.min_contributors,
                "central_std": math.sqrt(event.min_contributors) * event.local_sigma,
            }
        )
    elif isinstance(event, DistributedSkellamEvent | DistributedSkellamCountsEvent):
        out.append(
            {
                "mechanism": event.type_name,
                "contributors": event.min_contributors,
                "central_std": math.sqrt(event.min_contributors * event.local_variance),
            }
        )
    elif isinstance(event, PoissonSampledEvent | StratifiedPoissonSampledEvent | SelfComposedEvent):
        out.extend(_noise_levels(event.event))
    elif isinstance(event, ComposedEvent):
        for e in event.events:
            out.extend(_noise_levels(e))
    return out


def _min_contributors(event: PrivacyEvent) -> int | None:
    levels = _noise_levels(event)
    return min(lv["contributors"] for lv in levels) if levels else None


# --------------------------------------------------------------------------- entries
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


@dataclass(frozen=True)
class LedgerMeta:
    """Run-level settings, hashed into the start of the chain."""

    run_id: str
    backend: str
    policy: BudgetPolicy
    public_key: str | None
    created: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "backend": self.backend,
            "policy": self.policy.to_dict(),
            "public_key": self.public_key,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LedgerMeta:
        if data.get("schema") != SCHEMA:
            raise LedgerError(f"not a privagg ledger (schema {data.get('schema')!r})")
        try:
            return cls(
                run_id=str(data["run_id"]),
                backend=str(data["backend"]),
                policy=BudgetPolicy.from_dict(data["policy"]),
                public_key=data["public_key"],
                created=str(data["created"]),
            )
        except (KeyError, DPValueError) as exc:
            raise LedgerError(f"ledger metadata is malformed: {exc}") from None

    def genesis_hash(self) -> str:
        return _sha256_hex(b"privagg.ledger.genesis/1", canonical_bytes(self.to_dict()))


@runtime_checkable
class LedgerSigner(Protocol):
    """An Ed25519 signer holding the server's key (e.g. ``secagg.SigningKey``)."""

    def sign(self, message: bytes) -> bytes: ...

    @property
    def public_bytes(self) -> bytes: ...


Signer = Ed25519PrivateKey | LedgerSigner


def _public_key_hex(key: Signer) -> str:
    if isinstance(key, Ed25519PrivateKey):
        return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    return key.public_bytes.hex()


def entry_from_row(
    seq: int, body_text: str, row_hash: str, participants: Sequence[str]
) -> LedgerEntry:
    """Decode one stored row (raises ``LedgerError`` if malformed)."""
    try:
        body = json.loads(body_text)
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
            cumulative_epsilon=_as_float(body["cumulative_epsilon"]),
            epsilon_lower=_as_float(body["epsilon_lower"]),
            participants=tuple(sorted(participants)),
            row_hash=row_hash,
            body=body,
        )
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise LedgerError(f"ledger row {seq} is malformed: {exc}") from None


# --------------------------------------------------------------------------- ledger
class PrivacyLedger:
    """Append-only privacy ledger backed by one SQLite file.

    Create with :meth:`create`, reopen with :meth:`open` (which verifies the chain and
    rebuilds the accountant by replay). Use :meth:`check_round` before sampling clients,
    :meth:`admit` after sampling, and :meth:`record_round` once the round has ended.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        meta: LedgerMeta,
        signing_key: Signer | None,
    ) -> None:
        self._conn = conn
        self.meta = meta
        self._key: Signer | None = signing_key
        self._filter = BudgetFilter(meta.policy)
        self._accountant: Accountant = make_accountant(meta.backend)
        self._user_rdp: dict[str, float] = {}
        self._order = meta.policy.filter_order()
        self._last_hash = meta.genesis_hash()
        self._count = 0
        self._last_epsilon = 0.0

    # -- lifecycle ----------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        policy: BudgetPolicy,
        backend: str = "auto",
        signing_key: Signer | None = None,
        run_id: str = "",
    ) -> PrivacyLedger:
        """Create a new ledger file (refuses to overwrite an existing one)."""
        path = Path(path)
        if path.exists():
            raise LedgerError(f"{path} already exists; open it instead of creating it")
        make_accountant(backend)  # validates the name
        meta = LedgerMeta(
            run_id=run_id,
            backend=backend,
            policy=policy,
            public_key=_public_key_hex(signing_key) if signing_key is not None else None,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.executescript("BEGIN;" + _DDL + "COMMIT;")
            body = json.dumps(meta.to_dict(), sort_keys=True)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO meta (id, body) VALUES (1, ?)", (body,))
            ledger = cls(conn, meta, signing_key)
            ledger._write_head()
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            path.unlink(missing_ok=True)
            raise
        return ledger

    @classmethod
    def open(cls, path: str | Path, *, signing_key: Signer | None = None) -> PrivacyLedger:
        """Open an existing ledger for appending, after verifying it end to end."""
        report = audit_ledger(path, every_row=False, cross_check=False)
        if report.tampered or not report.replay_ok:
            raise LedgerError("ledger failed verification: " + "; ".join(report.problems))
        conn = sqlite3.connect(Path(path), isolation_level=None)
        meta = _read_meta(conn)
        if signing_key is not None and meta.public_key != _public_key_hex(signing_key):
            conn.close()
            raise LedgerError("the signing key does not match the ledger's public key")
        if meta.public_key is not None and signing_key is None:
            conn.close()
            raise LedgerError("this ledger is signed: pass its signing key to append")
        ledger = cls(conn, meta, signing_key)
        for entry in read_entries(conn):
            ledger._apply(entry)
        return ledger

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- budget -------------------------------------------------------------------------
    @property
    def epsilon(self) -> float:
        """Cumulative ε (at the policy's δ) after the last recorded round."""
        return self._last_epsilon

    @property
    def accountant(self) -> Accountant:
        """A copy of the run's accountant (the ledger's own cannot be modified from outside)."""
        return self._accountant.copy()

    def check_round(self, event: PrivacyEvent) -> float:
        """Refuse (``PrivacyBudgetExceeded``) a planned round that would exceed the global
        budget; call before sampling clients. Returns the ε the run would reach."""
        return self._filter.check_round(self._accountant, event)

    def admit(self, cohort: Iterable[str], event: PrivacyEvent) -> Admission:
        """Apply the per-user budget to a sampled cohort (exclude or refuse)."""
        return self._filter.admit(self._user_rdp, cohort, event)

    def user_epsilon(self, user_id: str) -> float:
        """The individual ε (at the policy's δ) of one user under the per-user filter."""
        return self._filter.user_epsilon(self._user_rdp.get(user_id, 0.0))

    # -- recording ----------------------------------------------------------------------
    def record_round(
        self,
        *,
        round_index: int,
        event: PrivacyEvent,
        cohort_size: int,
        survivors: int | None = None,
        participants: Sequence[str] = (),
        status: str = "released",
    ) -> LedgerEntry:
        """Append one round (atomically) and return its entry.

        ``event`` is the planned event of the round; ``survivors`` the number of clients
        whose contribution (and noise share) is in the released sum; ``participants`` the
        user ids whose data was used. Aborted rounds are charged nothing.
        """
        if status not in STATUSES:
            raise DPValueError(f"status must be one of {STATUSES}, got {status!r}")
        for name, value in (("round_index", round_index), ("cohort_size", cohort_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DPValueError(f"{name} must be a non-negative int, got {value!r}")
        if survivors is not None and (
            isinstance(survivors, bool) or not isinstance(survivors, int) or survivors < 0
        ):
            raise DPValueError(f"survivors must be a non-negative int or None, got {survivors!r}")
        if survivors is not None and survivors > cohort_size:
            raise DPValueError(
                f"survivors ({survivors}) cannot exceed the cohort size ({cohort_size})"
            )
        users = tuple(sorted(set(participants)))
        if any(not isinstance(u, str) or not u for u in users):
            raise DPValueError("participant ids must be non-empty strings")
        charged = charged_event(event, status, survivors)
        trial = self._accountant.copy()
        trial.compose(charged)  # raises UnsupportedEventError before anything is written
        bracket = trial.get_epsilon_bracket(self.meta.policy.delta)
        planned_min = _min_contributors(event)
        body = {
            "seq": self._count,
            "round": round_index,
            "status": status,
            "event": event.to_dict(),
            "charged_event": charged.to_dict(),
            "cohort_size": cohort_size,
            "survivors": survivors,
            "min_contributors": planned_min,
            "planned_noise": _noise_levels(event),
            "realized_noise": _noise_levels(charged) if status == "released" else [],
            "below_plan": status == "released" and charged != event,
            "backend": bracket.backend,
            "delta": self.meta.policy.delta,
            "cumulative_epsilon": _finite(bracket.epsilon_upper),
            "epsilon_lower": _finite(bracket.epsilon_lower),
            "participants_sha256": participants_digest(users),
            "participant_count": len(users),
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        raw = canonical_bytes(body)
        row_hash = _sha256_hex(bytes.fromhex(self._last_hash), raw)
        signature = self._key.sign(bytes.fromhex(row_hash)).hex() if self._key else None
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO rounds (seq, body, prev_hash, row_hash, signature) VALUES (?,?,?,?,?)",
                (self._count, raw.decode(), self._last_hash, row_hash, signature),
            )
            conn.executemany(
                "INSERT INTO participations (seq, user_id) VALUES (?, ?)",
                [(self._count, u) for u in users],
            )
            entry = entry_from_row(self._count, raw.decode(), row_hash, users)
            self._apply(entry, trial)
            self._write_head()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return entry

    def _apply(self, entry: LedgerEntry, composed: Accountant | None = None) -> None:
        """Advance in-memory state by one verified entry."""
        if composed is None:
            composed = self._accountant.copy()
            composed.compose(entry.charged)
        self._accountant = composed
        if entry.status == "released" and entry.participants:
            cost = user_event_rdp(entry.charged, self._order)
            for u in entry.participants:
                self._user_rdp[u] = self._user_rdp.get(u, 0.0) + cost
        self._last_hash = entry.row_hash
        self._count = entry.seq + 1
        self._last_epsilon = entry.cumulative_epsilon

    def _write_head(self) -> None:
        sig = (
            self._key.sign(_head_message(self._count, self._last_hash)).hex() if self._key else None
        )
        self._conn.execute(
            "INSERT OR REPLACE INTO head (id, count, head_hash, signature) VALUES (1, ?, ?, ?)",
            (self._count, self._last_hash, sig),
        )

    @property
    def head_hash(self) -> str:
        """Hash of the last row (publish it elsewhere to detect rollbacks)."""
        return self._last_hash

    def entries(self) -> list[LedgerEntry]:
        """Every stored round, in order."""
        return read_entries(self._conn)


def _read_meta(conn: sqlite3.Connection) -> LedgerMeta:
    try:
        row = conn.execute("SELECT body FROM meta WHERE id = 1").fetchone()
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"not a readable privacy ledger: {exc}") from None
    if row is None:
        raise LedgerError("ledger metadata is missing")
    try:
        data = json.loads(row[0])
    except json.JSONDecodeError as exc:
        raise LedgerError(f"ledger metadata is not JSON: {exc}") from None
    return LedgerMeta.from_dict(data)


def read_entries(conn: sqlite3.Connection) -> list[LedgerEntry]:
    """Decode every row (no verification; see :func:`audit_ledger`)."""
    users: dict[int, list[str]] = {}
    for seq, uid in conn.execute("SELECT seq, user_id FROM participations"):
        users.setdefault(int(seq), []).append(str(uid))
    return [
        entry_from_row(int(seq), body, row_hash, users.get(int(seq), []))
        for seq, body, row_hash in conn.execute(
            "SELECT seq, body, row_hash FROM rounds ORDER BY seq"
        )
    ]


# --------------------------------------------------------------------------- audit
@dataclass
class RoundCheck:
    """Recorded vs recomputed ε of one row."""

    seq: int
    round_index: int
    status: str
    backend: str
    recorded: float
    replayed: float
    independent_lower: float | None
    independent_upper: float | None
    below_plan: bool


@dataclass
class AuditReport:
    """Everything ``privagg audit`` checks; ``ok`` is False on any violation or tampering."""

    path: str
    rows: int = 0
    signed: bool = False
    signatures_verified: bool = False
    chain_ok: bool = True
    replay_ok: bool = True
    tampered: bool = False
    problems: list[str] = dataclasses.field(default_factory=list)
    violations: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    rounds: list[RoundCheck] = dataclasses.field(default_factory=list)
    final_epsilon: float = 0.0
    delta: float | None = None
    target_epsilon: float | None = None
    user_epsilon_target: float | None = None
    max_user_epsilon: float | None = None
    users: int = 0
    backend: str = ""
    head_hash: str = ""

    @property
    def ok(self) -> bool:
        return not (self.tampered or self.problems or self.violations)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["ok"] = self.ok
        safe: dict[str, Any] = _json_safe(out)
        return safe


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _close(a: float, b: float, rtol: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-12)


def audit_ledger(
    path: str | Path,
    *,
    public_key: str | None = None,
    expected_head: str | None = None,
    rtol: float = 1e-9,
    cross_check: bool = True,
    every_row: bool = True,
) -> AuditReport:
    """Verify a ledger without trusting the process that wrote it.

    Checks the hash chain, head, signatures (against ``public_key`` hex if given, which must
    match the embedded key), that each charged event follows from the planned event and the
    survivors, that replaying the charged events with the recorded backend gives the
    recorded ε (relative tolerance ``rtol``), that an independent backend agrees (the PLD's
    certified lower bound may not exceed a recorded ε; RDP bounds each PLD answer from
    above), and every budget (global and per user). ``every_row=False`` recomputes ε only
    for the last row (fast reopening of long ledgers; the chain is still fully verified).
    """
    path = Path(path)
    report = AuditReport(path=str(path))
    if not path.is_file():
        raise LedgerError(f"no ledger at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = _read_meta(conn)
        report.backend = meta.backend
        report.delta = meta.policy.delta
        report.target_epsilon = meta.policy.target_epsilon
        report.user_epsilon_target = meta.policy.user_epsilon
        _verify_structure(conn, meta, report, public_key, expected_head)
        if report.tampered:
            return report
        entries = read_entries(conn)
        _verify_accounting(entries, meta, report, rtol, cross_check and every_row, every_row)
    except sqlite3.DatabaseError as exc:
        report.tampered = True
        report.problems.append(f"unreadable database: {exc}")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # The file is untrusted input: any field that does not parse (a non-hex hash, a
        # body of the wrong type, an undecodable event) is evidence of tampering, reported
        # as such rather than escaping as an untyped error.
        report.tampered = True
        report.problems.append(f"malformed ledger content: {type(exc).__name__}: {exc}")
    finally:
        conn.close()
    return report


def _verify_structure(
    conn: sqlite3.Connection,
    meta: LedgerMeta,
    report: AuditReport,
    public_key: str | None,
    expected_head: str | None,
) -> None:
    key: Ed25519PublicKey | None = None
    if meta.public_key is not None:
        report.signed = True
        if public_key is not None and public_key.lower() != meta.public_key.lower():
            report.tampered = True
            report.problems.append("the ledger's embedded public key differs from --public-key")
            return
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(meta.public_key))
        except ValueError:
            report.tampered = True
            report.problems.append("the embedded public key is malformed")
            return
    elif public_key is not None:
        report.tampered = True
        report.problems.append("a public key was given but the ledger is not signed")
        return

    prev = meta.genesis_hash()
    users: dict[int, list[str]] = {}
    for seq, uid in conn.execute("SELECT seq, user_id FROM participations"):
        users.setdefault(int(seq), []).append(str(uid))
    rows = conn.execute(
        "SELECT seq, body, prev_hash, row_hash, signature FROM rounds ORDER BY seq"
    ).fetchall()
    report.rows = len(rows)
    sig_ok = True
    for expected_seq, (seq, body, prev_hash, row_hash, signature) in enumerate(rows):
        where = f"row {seq}"
        if seq != expected_seq:
            report.problems.append(f"{where}: sequence gap (expected {expected_seq})")
        if prev_hash != prev:
            report.problems.append(f"{where}: previous-hash link broken (deleted or reordered)")
        computed = _sha256_hex(bytes.fromhex(prev), body.encode())
        if computed != row_hash:
            report.problems.append(f"{where}: content does not match its hash (edited)")
        try:
            parsed = json.loads(body)
        except json.JSONDecodeError:
            report.problems.append(f"{where}: body is not JSON")
            parsed = {}
        if canonical_bytes(parsed).decode() != body:
            report.problems.append(f"{where}: body is not canonical JSON")
        if parsed.get("seq") != seq:
            report.problems.append(f"{where}: body names a different sequence number")
        if parsed.get("participants_sha256") != participants_digest(users.get(seq, [])):
            report.problems.append(f"{where}: participations do not match the hashed digest")
        if key is not None:
            try:
                key.verify(bytes.fromhex(signature or ""), bytes.fromhex(row_hash))
            except (InvalidSignature, ValueError):
                sig_ok = False
                report.problems.append(f"{where}: invalid or missing signature")
        prev = row_hash
    stray = set(users) - {r[0] for r in rows}
    if stray:
        report.problems.append(f"participations reference missing rows {sorted(stray)[:5]}")
    head = conn.execute("SELECT count, head_hash, signature FROM head WHERE id = 1").fetchone()
    if head is None:
        report.problems.append("head record missing")
    else:
        count, head_hash, head_sig = head
        if count != len(rows) or head_hash != prev:
            report.problems.append(
                f"head records {count} rows ending in {head_hash[:12]}…, the file has "
                f"{len(rows)} ending in {prev[:12]}… (rows deleted or appended outside the ledger)"
            )
        if key is not None:
            try:
                key.verify(bytes.fromhex(head_sig or ""), _head_message(count, head_hash))
            except (InvalidSignature, ValueError):
                sig_ok = False
                report.problems.append("head: invalid or missing signature")
    if expected_head is not None and expected_head.lower() != prev:
        report.problems.append("the last row's hash differs from the expected (published) head")
    report.head_hash = prev
    report.signatures_verified = report.signed and sig_ok
    report.chain_ok = not report.problems
    report.tampered = bool(report.problems)


def _verify_accounting(
    entries: list[LedgerEntry],
    meta: LedgerMeta,
    report: AuditReport,
    rtol: float,
    cross_check: bool,
    every_row: bool = True,
) -> None:
    from dp.accounting.pld import PldAccountant
    from dp.accounting.rdp import RdpAccountant
    from dp.accounting.skellam_pld import SkellamPldAccountant

    replay = make_accountant(meta.backend)
    # independent certified lower ends: Gaussian PLD, or exact Skellam PLD for count releases
    lower_backends: list[Accountant] = [PldAccountant(), SkellamPldAccountant()]
    other_rdp = RdpAccountant()
    budget = BudgetFilter(meta.policy)
    order = meta.policy.filter_order()
    user_rdp: dict[str, float] = {}
    for position, e in enumerate(entries):
        expected_charge = charged_event(e.event, e.status, e.survivors)
        if expected_charge != e.charged:
            report.violations.append(
                f"round {e.round_index}: charged event does not follow from the planned event "
                "and the survivors (under-charged)"
            )
        replay.compose(e.charged)
        if cross_check:
            other_rdp.compose(e.charged)
            lower_backends = [b for b in lower_backends if b.supports(e.charged)]
            for backend in lower_backends:
                backend.compose(e.charged)
        if every_row or position == len(entries) - 1:
            other_lower = lower_backends[0] if cross_check and lower_backends else None
            _check_row(e, replay, other_rdp, other_lower, report, meta, rtol)
        if e.below_plan:
            report.warnings.append(
                f"round {e.round_index}: realized noise below plan ({e.survivors} survivors < "
                f"{e.min_contributors} guaranteed contributors); charged for the realized noise"
            )
        target = meta.policy.target_epsilon
        if target is not None and e.status == "released" and e.cumulative_epsilon > target:
            report.violations.append(
                f"round {e.round_index}: cumulative ε={e.cumulative_epsilon:.6g} exceeds the "
                f"budget {target:g}"
            )
        if e.status == "released" and e.participants:
            cost = user_event_rdp(e.charged, order)
            for u in e.participants:
                user_rdp[u] = user_rdp.get(u, 0.0) + cost
    report.final_epsilon = report.rounds[-1].replayed if report.rounds else 0.0
    report.users = len(user_rdp)
    if user_rdp:
        worst_user = max(user_rdp, key=lambda u: user_rdp[u])
        report.max_user_epsilon = budget.user_epsilon(user_rdp[worst_user])
        if meta.policy.user_epsilon is not None:
            limit = meta.policy.user_rdp_budget()
            over = sorted(u for u, r in user_rdp.items() if r > limit * (1 + 1e-12))
            if over:
                report.violations.append(
                    f"{len(over)} user(s) exceed the per-user budget "
                    f"ε={meta.policy.user_epsilon:g} "
                    f"(e.g. {over[0]!r}: ε={budget.user_epsilon(user_rdp[over[0]]):.6g})"
                )


def _check_row(
    e: LedgerEntry,
    replay: Accountant,
    other_rdp: Accountant | None,
    other_pld: Accountant | None,
    report: AuditReport,
    meta: LedgerMeta,
    rtol: float,
) -> None:
    """Compare one row's recorded ε with the replay and the independent backends."""
    delta = meta.policy.delta
    bracket = replay.get_epsilon_bracket(delta)
    lower_ind: float | None = None
    upper_ind: float | None = None
    if other_rdp is not None and other_rdp.events:
        upper_ind = other_rdp.get_epsilon_bracket(delta).epsilon_upper
    if other_pld is not None and other_pld.events:
        lower_ind = other_pld.get_epsilon_bracket(delta).epsilon_lower
    report.rounds.append(
        RoundCheck(
            seq=e.seq,
            round_index=e.round_index,
            status=e.status,
            backend=e.backend,
            recorded=e.cumulative_epsilon,
            replayed=bracket.epsilon_upper,
            independent_lower=lower_ind,
            independent_upper=upper_ind,
            below_plan=e.below_plan,
        )
    )
    if not _close(e.cumulative_epsilon, bracket.epsilon_upper, rtol):
        report.replay_ok = False
        report.violations.append(
            f"round {e.round_index}: recorded ε={e.cumulative_epsilon:.6g} but replay with "
            f"{meta.backend} gives {bracket.epsilon_upper:.6g}"
        )
    if lower_ind is not None and e.cumulative_epsilon < lower_ind * (1 - 1e-9):
        report.violations.append(
            f"round {e.round_index}: recorded ε={e.cumulative_epsilon:.6g} is below the "
            f"independent certified lower bound {lower_ind:.6g}"
        )
    if (
        upper_ind is not None
        and e.backend in ("pld", "skellam-pld")
        and e.cumulative_epsilon > upper_ind * (1 + 1e-6) + 1e-6
    ):
        report.warnings.append(
            f"round {e.round_index}: PLD ε={e.cumulative_epsilon:.6g} exceeds the RDP bound "
            f"{upper_ind:.6g} (valid but unexpectedly loose)"
        )
