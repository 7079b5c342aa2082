"""The SQLite store of a privacy ledger: create, append (atomically), reopen, read.

Stored in one SQLite file (stdlib ``sqlite3``, embedded, no server). Each round row holds its
planned and charged events (canonical JSON from :mod:`dp.events`), cohort size, survivors,
the guaranteed and realized noise, how the release was made (:class:`Provenance`), the
accountant backend and the cumulative ε; each user's participations are a table, so
individual (per-user) accounting can be replayed.

User-supplied paths never go through SQLite's URI parser unescaped: read-only opens use an
absolute ``file:`` URI whose path is percent-encoded (so ``?`` and ``#`` in a file name are
part of the name) with ``mode=ro``, which can neither create nor change a file.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import urllib.parse
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from dp.accounting.base import Accountant
from dp.budget import Admission, BudgetFilter, BudgetPolicy, user_event_rdp
from dp.calibrate import make_accountant
from dp.charging import charged_event, leaf_events, min_contributors, noise_levels
from dp.errors import DPValueError, LedgerError
from dp.events import PrivacyEvent
from dp.ledger.schema import (
    STATUSES,
    LedgerEntry,
    LedgerMeta,
    Provenance,
    Signer,
    canonical_bytes,
    entry_from_row,
    finite_or_none,
    head_message,
    participants_digest,
    public_key_hex,
    sha256_hex,
)

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


def _file_uri(path: Path, mode: str) -> str:
    """An absolute ``file:`` URI for ``path`` with every reserved character escaped."""
    quoted = urllib.parse.quote(str(path.resolve()), safe="/")
    return f"file:{quoted}?mode={mode}"


def connect_readonly(path: str | Path) -> sqlite3.Connection:
    """Open an existing ledger read-only: never creates, changes or journals a file.

    Raises ``LedgerError`` if there is no regular file at ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise LedgerError(f"no ledger at {path}")
    return sqlite3.connect(_file_uri(path, "ro"), uri=True)


def _connect_readwrite(path: Path) -> sqlite3.Connection:
    # mode=rw: an existing file only (a missing one is an error, never silently created)
    return sqlite3.connect(_file_uri(path, "rw"), uri=True, isolation_level=None)


def _insecure_noise(event: PrivacyEvent) -> bool:
    return any(getattr(leaf, "secure", True) is False for leaf in leaf_events(event))


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
        provenance: Provenance | None = None,
    ) -> PrivacyLedger:
        """Create a new ledger file (refuses to overwrite an existing one).

        ``provenance`` declares how the run's releases are made (recorded in the metadata
        and in every row); ``signing_key`` signs every row and the head (the audit verifies
        them against a key the auditor pins).
        """
        path = Path(path)
        if path.exists():
            raise LedgerError(f"{path} already exists; open it instead of creating it")
        make_accountant(backend)  # validates the name
        meta = LedgerMeta(
            run_id=run_id,
            backend=backend,
            policy=policy,
            public_key=public_key_hex(signing_key) if signing_key is not None else None,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            run_uid=secrets.token_hex(16),
            provenance=provenance if provenance is not None else Provenance(),
        )
        # a plain path (never parsed as a URI): ``?`` and ``#`` stay part of the name
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
        from dp.ledger.audit import audit_ledger

        expected_key = public_key_hex(signing_key) if signing_key is not None else None
        report = audit_ledger(path, every_row=False, cross_check=False, public_key=expected_key)
        if report.tampered or not report.replay_ok:
            raise LedgerError("ledger failed verification: " + "; ".join(report.problems))
        path = Path(path)
        conn = _connect_readwrite(path)
        meta = read_meta(conn)
        if meta.public_key is not None and signing_key is None:
            conn.close()
            raise LedgerError("this ledger is signed: pass its signing key to append")
        ledger = cls(conn, meta, signing_key)
        for entry in read_entries(conn, meta):
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
        provenance: Provenance | None = None,
    ) -> LedgerEntry:
        """Append one round (atomically) and return its entry.

        ``event`` is the planned event of the round; ``survivors`` the number of clients
        whose contribution (and noise share) is in the released sum; ``participants`` the
        user ids whose data was used. Aborted rounds are charged nothing. ``provenance``
        defaults to the run's; an event whose noise came from a non-secure generator is
        recorded as simulated noise whatever was declared (an undeclared source is taken
        from the events' generator flags).
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
        if len(users) > cohort_size:
            raise DPValueError(
                f"{len(users)} participants cannot come from a cohort of {cohort_size}"
            )
        if status == "aborted" and (survivors or users):
            raise DPValueError("an aborted round has no survivors and no participants")
        if status == "released" and survivors is None:
            shares = min_contributors(event)
            if shares is not None and shares > cohort_size:
                raise DPValueError(
                    f"the event guarantees {shares} noise shares but the cohort has only "
                    f"{cohort_size} clients"
                )
        prov = provenance if provenance is not None else self.meta.provenance
        noise = "simulated" if _insecure_noise(event) else prov.noise
        if noise == "unspecified":  # the event's own generator flag says it
            noise = "secure"
        if noise != prov.noise:
            prov = Provenance(
                noise=noise,
                aggregation=prov.aggregation,
                threat_model=prov.threat_model,
                adjacency=prov.adjacency,
            )
        charged = charged_event(event, status, survivors)
        trial = self._accountant.copy()
        trial.compose(charged)  # raises UnsupportedEventError before anything is written
        bracket = trial.get_epsilon_bracket(self.meta.policy.delta)
        body = {
            "seq": self._count,
            "round": round_index,
            "status": status,
            "event": event.to_dict(),
            "charged_event": charged.to_dict(),
            "cohort_size": cohort_size,
            "survivors": survivors,
            "min_contributors": min_contributors(event),
            "planned_noise": noise_levels(event),
            "realized_noise": noise_levels(charged) if status == "released" else [],
            "below_plan": status == "released" and charged != event,
            "backend": bracket.backend,
            "delta": self.meta.policy.delta,
            "cumulative_epsilon": finite_or_none(bracket.epsilon_upper),
            "epsilon_lower": finite_or_none(bracket.epsilon_lower),
            "participants_sha256": participants_digest(users),
            "participant_count": len(users),
            "provenance": prov.to_dict(),
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        raw = canonical_bytes(body)
        row_hash = sha256_hex(bytes.fromhex(self._last_hash), raw)
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
            entry = entry_from_row(self._count, raw.decode(), row_hash, users, self.meta)
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
            self._key.sign(head_message(self._count, self._last_hash)).hex() if self._key else None
        )
        self._conn.execute(
            "INSERT OR REPLACE INTO head (id, count, head_hash, signature) VALUES (1, ?, ?, ?)",
            (self._count, self._last_hash, sig),
        )

    @property
    def head_hash(self) -> str:
        """Hash of the last row (publish it elsewhere to detect rollbacks)."""
        return self._last_hash

    @property
    def rows(self) -> int:
        """Rows recorded so far."""
        return self._count

    def publish_line(self) -> str:
        """The one line to publish for this ledger's current state (see
        :func:`dp.ledger.audit.publish_line`)."""
        from dp.ledger.audit import publish_line

        return publish_line(self.meta, self._count, self._last_hash)

    def entries(self) -> list[LedgerEntry]:
        """Every stored round, in order."""
        return read_entries(self._conn, self.meta)


def read_meta(conn: sqlite3.Connection) -> LedgerMeta:
    """Decode the metadata row (raises ``LedgerError`` if missing or malformed)."""
    try:
        row = conn.execute("SELECT body FROM meta WHERE id = 1").fetchone()
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # damaged bytes in the text
        raise LedgerError(f"not a readable privacy ledger: {exc}") from None
    if row is None:
        raise LedgerError("ledger metadata is missing")
    try:
        data = json.loads(row[0])
    except (json.JSONDecodeError, TypeError) as exc:
        raise LedgerError(f"ledger metadata is not JSON: {exc}") from None
    return LedgerMeta.from_dict(data)


def read_entries(conn: sqlite3.Connection, meta: LedgerMeta | None = None) -> list[LedgerEntry]:
    """Decode every row (no verification; see :func:`dp.ledger.audit.audit_ledger`)."""
    meta = meta if meta is not None else read_meta(conn)
    users: dict[int, list[str]] = {}
    for seq, uid in conn.execute("SELECT seq, user_id FROM participations"):
        users.setdefault(int(seq), []).append(str(uid))
    return [
        entry_from_row(int(seq), body, row_hash, users.get(int(seq), []), meta)
        for seq, body, row_hash in conn.execute(
            "SELECT seq, body, row_hash FROM rounds ORDER BY seq"
        )
    ]
