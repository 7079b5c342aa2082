"""Auditing a privacy ledger without trusting the process that wrote it.

What the audit establishes, and against what:

- **integrity**: every row's hash is SHA-256(previous hash ‖ canonical row bytes), starting
  from the hash of the metadata (budget, δ, backend, public key, run uid, provenance); the
  head record (row count + last hash) is compared with the chain;
- **authorship**: every row hash and the head are Ed25519-signed. A signature proves
  something only against a key the auditor already holds: the audit verifies against the
  pinned keys (``public_key`` / ``trusted_keys``); a key found only inside the file is
  reported ``self-signed: not verified`` (anyone can re-key and re-sign a file), an unsigned
  ledger ``unsigned`` — both fail a strict audit;
- **freshness**: a rollback, truncation with the head rewritten, or replacement by another
  run cannot be seen in the file alone; the audit prints one line to publish
  (:func:`publish_line`) and, given it back (``expected_head``), checks run, rows, head and
  key — a published state that is a prefix of the ledger (rows appended since) passes;
- **accounting**: each charged event follows from the planned event and the survivors; a
  replay of the charged events with the recorded backend gives the recorded ε; an
  independent backend agrees; the global and per-user budgets hold;
- **consistency**: the recorded counts are possible (survivors ≤ cohort, charged noise
  shares ≤ survivors, participants ≤ cohort, nothing survives an aborted round) and the
  events match how the release was made (:class:`~dp.ledger.schema.Provenance`);
- **provenance**: simulated noise, SecAgg off, unspecified provenance or a non-private
  release in a run that claims a target ε fail a strict audit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dp.accounting import rdp_analysis as ra
from dp.accounting.base import Accountant, SampledMechanism, normalize
from dp.budget import BudgetFilter, user_event_rdp
from dp.calibrate import make_accountant
from dp.charging import (
    charged_event,
    distributed_leaves,
    leaf_events,
    min_contributors,
    noise_levels,
    unsampled,
)
from dp.errors import DPValueError, LedgerError
from dp.events import NonPrivateEvent, NoOpEvent, PrivacyEvent
from dp.ledger.schema import (
    ADJACENCY_DESCRIPTIONS,
    PUBLISH_PREFIX,
    LedgerEntry,
    LedgerMeta,
    canonical_bytes,
    head_message,
    key_fingerprint,
    participants_digest,
    sha256_hex,
)
from dp.ledger.store import connect_readonly, read_entries, read_meta

#: at most this many distinct participation patterns get the run's (tight) backend each;
#: beyond, every user is bounded on the RDP order grid (1.1 … 1024, covering any useful ε)
TIGHT_USER_GROUPS = 8

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_FPR = re.compile(r"^ed25519:[0-9a-f]{32}$")


# --------------------------------------------------------------------------- pins
@dataclass(frozen=True)
class PublishedHead:
    """What an operator publishes and an auditor compares against (:func:`publish_line`)."""

    run_uid: str | None
    rows: int | None
    head_hash: str
    key: str | None  # a fingerprint, "unsigned", or None (not stated)


def publish_line(meta: LedgerMeta, rows: int, head_hash: str) -> str:
    """The one line to publish: run uid, rows, full head hash and key fingerprint."""
    key = key_fingerprint(meta.public_key) if meta.public_key else "unsigned"
    return f"{PUBLISH_PREFIX} run={meta.run_uid} rows={rows} head={head_hash} key={key}"


def parse_expected_head(text: str) -> PublishedHead:
    """A bare 64-hex head hash or a whole published line; ``DPValueError`` otherwise."""
    text = text.strip()
    if _HEX64.match(text.lower()):
        return PublishedHead(None, None, text.lower(), None)
    parts = text.split()
    if not parts or parts[0] != PUBLISH_PREFIX:
        raise DPValueError(
            f"expected head must be a 64-hex hash or a '{PUBLISH_PREFIX} run=… rows=… head=… "
            "key=…' line"
        )
    fields: dict[str, str] = {}
    for part in parts[1:]:
        name, sep, value = part.partition("=")
        if not sep or name not in ("run", "rows", "head", "key") or name in fields:
            raise DPValueError(f"bad field {part!r} in the published head line")
        fields[name] = value
    if set(fields) != {"run", "rows", "head", "key"}:
        raise DPValueError("the published head line needs run=, rows=, head= and key=")
    head = fields["head"].lower()
    if not _HEX64.match(head) or not fields["rows"].isdigit():
        raise DPValueError("the published head line has a malformed head= or rows=")
    key = fields["key"].lower()
    if key != "unsigned" and not _FPR.match(key):
        raise DPValueError("the published head line has a malformed key= fingerprint")
    return PublishedHead(fields["run"], int(fields["rows"]), head, key)


def parse_public_key(text: str) -> str:
    """A pinned key: 64 hex digits (raw Ed25519 public key) or an ``ed25519:`` fingerprint.

    Raises ``DPValueError`` (a usage error, not evidence of tampering) otherwise.
    """
    value = text.strip().lower()
    if _HEX64.match(value):
        try:
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(value))
        except ValueError:
            raise DPValueError("the pinned public key is not a valid Ed25519 key") from None
        return value
    if _FPR.match(value):
        return value
    raise DPValueError(
        "a pinned public key must be 64 hex digits (raw Ed25519) or an 'ed25519:' fingerprint "
        f"of 32 hex digits, got {text.strip()[:20]!r}"
    )


def read_trusted_keys(path: str | Path) -> list[str]:
    """A trusted-keys file: one key (hex or fingerprint) per line; ``#`` starts a comment."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DPValueError(f"cannot read the trusted-keys file {path}: {exc}") from None
    keys = [
        parse_public_key(line.split("#", 1)[0])
        for line in text.splitlines()
        if line.split("#", 1)[0].strip()
    ]
    if not keys:
        raise DPValueError(f"the trusted-keys file {path} names no key")
    return keys


def _pinned(key_hex: str, pins: Sequence[str]) -> bool:
    return any(p in (key_hex.lower(), key_fingerprint(key_hex)) for p in pins)


# --------------------------------------------------------------------------- report
@dataclass
class RoundCheck:
    """Recorded vs recomputed ε of one row, and how the release was made."""

    seq: int
    round_index: int
    status: str
    backend: str
    recorded: float
    replayed: float
    independent_lower: float | None
    independent_upper: float | None
    below_plan: bool
    noise: str = "unspecified"
    aggregation: str = "unspecified"


@dataclass(frozen=True)
class Finding:
    """One typed audit finding.

    ``kind``: ``tampering`` (the file was altered or does not match a pin), ``violation``
    (a budget or accounting rule is broken), ``impossible`` (recorded counts or events that
    cannot have happened), ``strict`` (fails only a strict audit: unsigned, self-signed,
    simulated noise, SecAgg off, …) or ``warning``.
    """

    kind: str
    message: str
    round_index: int | None = None


@dataclass
class AuditReport:
    """Everything ``privagg audit`` checks; ``ok`` is False on any violation or tampering,
    ``strict_ok`` additionally on every strict finding and warning."""

    path: str
    rows: int = 0
    signed: bool = False
    signatures_verified: bool = False
    key_status: str = "unsigned"
    key_fingerprint: str | None = None
    chain_ok: bool = True
    replay_ok: bool = True
    tampered: bool = False
    problems: list[str] = dataclasses.field(default_factory=list)
    violations: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    strict_findings: list[str] = dataclasses.field(default_factory=list)
    findings: list[Finding] = dataclasses.field(default_factory=list)
    rounds: list[RoundCheck] = dataclasses.field(default_factory=list)
    final_epsilon: float = 0.0
    delta: float | None = None
    target_epsilon: float | None = None
    user_epsilon_target: float | None = None
    max_user_epsilon: float | None = None
    user_epsilon_method: str = ""
    users: int = 0
    backend: str = ""
    head_hash: str = ""
    run_id: str = ""
    run_uid: str = ""
    adjacency: str = ""
    provenance: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    publish: str = ""

    @property
    def ok(self) -> bool:
        return not (self.tampered or self.problems or self.violations)

    @property
    def strict_ok(self) -> bool:
        return self.ok and not (self.strict_findings or self.warnings)

    def add(self, kind: str, message: str, round_index: int | None = None) -> None:
        """Record one finding in its typed list and the matching text list."""
        self.findings.append(Finding(kind, message, round_index))
        if kind == "tampering":
            self.problems.append(message)
            self.tampered = True
        elif kind in ("violation", "impossible"):
            self.violations.append(message)
        elif kind == "strict":
            self.strict_findings.append(message)
        else:
            self.warnings.append(message)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["ok"] = self.ok
        out["strict_ok"] = self.strict_ok
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


# --------------------------------------------------------------------------- audit
def audit_ledger(
    path: str | Path,
    *,
    public_key: str | None = None,
    trusted_keys: Iterable[str] = (),
    expected_head: str | None = None,
    rtol: float = 1e-9,
    cross_check: bool = True,
    every_row: bool = True,
) -> AuditReport:
    """Verify a ledger without trusting the process that wrote it (see the module doc).

    ``public_key`` / ``trusted_keys``: the pinned keys (64-hex raw Ed25519 keys or
    ``ed25519:`` fingerprints); ``expected_head``: a published head hash or line
    (:func:`publish_line`). A malformed pin is a ``DPValueError`` (a usage error), never a
    finding. ``every_row=False`` recomputes ε only for the last row (fast reopening of long
    ledgers; the chain is still fully verified). The file is opened read-only.
    """
    pins = [parse_public_key(k) for k in trusted_keys]
    if public_key is not None:
        pins.append(parse_public_key(public_key))
    published = parse_expected_head(expected_head) if expected_head is not None else None
    path = Path(path)
    report = AuditReport(path=str(path))
    conn = connect_readonly(path)
    try:
        meta = read_meta(conn)  # not a ledger at all: LedgerError (a usage error)
    except BaseException:
        conn.close()
        raise
    try:
        report.backend = meta.backend
        report.delta = meta.policy.delta
        report.target_epsilon = meta.policy.target_epsilon
        report.user_epsilon_target = meta.policy.user_epsilon
        report.run_id = meta.run_id
        report.run_uid = meta.run_uid
        report.adjacency = ADJACENCY_DESCRIPTIONS[meta.provenance.adjacency]
        _verify_structure(conn, meta, report, pins, published)
        if report.tampered:
            return report
        entries = read_entries(conn, meta)
        _verify_accounting(entries, meta, report, rtol, cross_check and every_row, every_row)
        _verify_consistency(entries, meta, report)
        _per_user_epsilon(entries, meta, report)
    except sqlite3.DatabaseError as exc:
        report.add("tampering", f"unreadable database: {exc}")
    except (ValueError, TypeError, KeyError, AttributeError, LedgerError) as exc:
        # The file is untrusted input: any field that does not parse (a non-hex hash, a
        # body of the wrong type, an undecodable event) is evidence of tampering, reported
        # as such rather than escaping as an untyped error.
        report.add("tampering", f"malformed ledger content: {type(exc).__name__}: {exc}")
    finally:
        conn.close()
    return report


def _signature_key(meta: LedgerMeta, report: AuditReport, pins: Sequence[str]) -> Any:
    """The key signatures are checked with (None: unsigned), and the key status."""
    if meta.public_key is None:
        report.key_status = "unsigned"
        if pins:
            report.add("tampering", "a public key is pinned but the ledger is not signed")
        else:
            report.add("strict", "the ledger is unsigned: nothing proves who wrote it")
        return None
    report.signed = True
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(meta.public_key))
    except ValueError:
        report.add("tampering", "the embedded public key is malformed")
        return None
    report.key_fingerprint = key_fingerprint(meta.public_key)
    if pins and not _pinned(meta.public_key, pins):
        report.key_status = "NOT PINNED"
        report.add(
            "tampering",
            f"the ledger is signed by {report.key_fingerprint}, which is not a pinned key "
            "(re-keyed or written by someone else)",
        )
        return None
    report.key_status = "verified" if pins else "self-signed: not verified"
    if not pins:
        report.add(
            "strict",
            "signatures checked only against the key stored in the file (self-signed: not "
            "verified); pin the operator's key with --public-key or --trusted-keys",
        )
    return key


def _verify_structure(
    conn: sqlite3.Connection,
    meta: LedgerMeta,
    report: AuditReport,
    pins: Sequence[str],
    published: PublishedHead | None,
) -> None:
    key = _signature_key(meta, report, pins)
    if report.tampered:
        return
    problems: list[str] = []
    prev = meta.genesis_hash()
    users: dict[int, list[str]] = {}
    for seq, uid in conn.execute("SELECT seq, user_id FROM participations"):
        users.setdefault(int(seq), []).append(str(uid))
    rows = conn.execute(
        "SELECT seq, body, prev_hash, row_hash, signature FROM rounds ORDER BY seq"
    ).fetchall()
    report.rows = len(rows)
    chain: list[str] = []
    sig_ok = True
    for expected_seq, (seq, body, prev_hash, row_hash, signature) in enumerate(rows):
        where = f"row {seq}"
        if seq != expected_seq:
            problems.append(f"{where}: sequence gap (expected {expected_seq})")
        if prev_hash != prev:
            problems.append(f"{where}: previous-hash link broken (deleted or reordered)")
        computed = sha256_hex(bytes.fromhex(prev), str(body).encode())
        if computed != row_hash:
            problems.append(f"{where}: content does not match its hash (edited)")
        try:
            parsed = json.loads(body)
        except (json.JSONDecodeError, TypeError):
            problems.append(f"{where}: body is not JSON")
            parsed = {}
        if not isinstance(parsed, dict):
            problems.append(f"{where}: body is not a JSON object")
            parsed = {}
        elif canonical_bytes(parsed).decode() != body:
            problems.append(f"{where}: body is not canonical JSON")
        if parsed.get("seq") != seq:
            problems.append(f"{where}: body names a different sequence number")
        if parsed.get("participants_sha256") != participants_digest(users.get(seq, [])):
            problems.append(f"{where}: participations do not match the hashed digest")
        if key is not None:
            try:
                key.verify(bytes.fromhex(signature or ""), bytes.fromhex(row_hash))
            except (InvalidSignature, ValueError, TypeError):
                sig_ok = False
                problems.append(f"{where}: invalid or missing signature")
        prev = str(row_hash)
        chain.append(prev)
    stray = set(users) - {r[0] for r in rows}
    if stray:
        problems.append(f"participations reference missing rows {sorted(stray)[:5]}")
    head = conn.execute("SELECT count, head_hash, signature FROM head WHERE id = 1").fetchone()
    if head is None:
        problems.append("head record missing")
    else:
        count, head_hash, head_sig = head
        if count != len(rows) or head_hash != prev:
            problems.append(
                f"head records {count} rows ending in {head_hash}, the file has {len(rows)} "
                f"ending in {prev} (rows deleted or appended outside the ledger)"
            )
        if key is not None:
            try:
                key.verify(bytes.fromhex(head_sig or ""), head_message(count, head_hash))
            except (InvalidSignature, ValueError, TypeError):
                sig_ok = False
                problems.append("head: invalid or missing signature")
    report.head_hash = prev
    report.publish = publish_line(meta, len(rows), prev)
    if published is not None:
        problems.extend(_compare_published(meta, chain, prev, published))
    report.signatures_verified = report.signed and sig_ok and report.key_status == "verified"
    if key is not None and not sig_ok:
        report.key_status = "INVALID"
    report.chain_ok = not problems
    for p in problems:
        report.add("tampering", p)


def _compare_published(
    meta: LedgerMeta, chain: Sequence[str], last: str, published: PublishedHead
) -> list[str]:
    out: list[str] = []
    if published.run_uid is not None and published.run_uid != meta.run_uid:
        out.append(
            f"the ledger belongs to run {meta.run_uid or '(none)'}, the published line to run "
            f"{published.run_uid} (replaced by another run's ledger)"
        )
        return out
    if published.key is not None:
        have = key_fingerprint(meta.public_key) if meta.public_key else "unsigned"
        if have != published.key:
            out.append(f"the ledger's key is {have}, the published line names {published.key}")
    if published.rows is None:
        if published.head_hash != last:
            out.append("the last row's hash differs from the expected (published) head")
        return out
    if published.rows > len(chain):
        out.append(
            f"the published line records {published.rows} rows, the file has {len(chain)} "
            "(truncated or rolled back)"
        )
    else:
        at = chain[published.rows - 1] if published.rows else meta.genesis_hash()
        if at != published.head_hash:
            out.append(
                f"row {published.rows - 1}'s hash differs from the published head (the "
                "published state is not part of this ledger: rolled back or rewritten)"
            )
    return out


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
            report.add(
                "violation",
                f"round {e.round_index}: charged event does not follow from the planned event "
                "and the survivors (under-charged)",
                e.round_index,
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
            report.add(
                "warning",
                f"round {e.round_index}: realized noise below plan ({e.survivors} survivors < "
                f"{e.min_contributors} guaranteed contributors); charged for the realized noise",
                e.round_index,
            )
        target = meta.policy.target_epsilon
        if target is not None and e.status == "released" and e.cumulative_epsilon > target:
            report.add(
                "violation",
                f"round {e.round_index}: cumulative ε={e.cumulative_epsilon:.6g} exceeds the "
                f"budget {target:g}",
                e.round_index,
            )
        if e.status == "released" and e.participants:
            cost = user_event_rdp(e.charged, order)
            for u in e.participants:
                user_rdp[u] = user_rdp.get(u, 0.0) + cost
    report.final_epsilon = report.rounds[-1].replayed if report.rounds else 0.0
    report.users = len(user_rdp)
    if user_rdp and meta.policy.user_epsilon is not None:
        limit = meta.policy.user_rdp_budget()
        over = sorted(u for u, r in user_rdp.items() if r > limit * (1 + 1e-12))
        if over:
            report.add(
                "violation",
                f"{len(over)} user(s) exceed the per-user budget "
                f"ε={meta.policy.user_epsilon:g} "
                f"(e.g. {over[0]!r}: ε={budget.user_epsilon(user_rdp[over[0]]):.6g})",
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
            noise=e.provenance.noise,
            aggregation=e.provenance.aggregation,
        )
    )
    if not _close(e.cumulative_epsilon, bracket.epsilon_upper, rtol):
        report.replay_ok = False
        report.add(
            "violation",
            f"round {e.round_index}: recorded ε={e.cumulative_epsilon:.6g} but replay with "
            f"{meta.backend} gives {bracket.epsilon_upper:.6g}",
            e.round_index,
        )
    if lower_ind is not None and e.cumulative_epsilon < lower_ind * (1 - 1e-9):
        report.add(
            "violation",
            f"round {e.round_index}: recorded ε={e.cumulative_epsilon:.6g} is below the "
            f"independent certified lower bound {lower_ind:.6g}",
            e.round_index,
        )
    if (
        upper_ind is not None
        and e.backend in ("pld", "skellam-pld")
        and e.cumulative_epsilon > upper_ind * (1 + 1e-6) + 1e-6
    ):
        report.add(
            "warning",
            f"round {e.round_index}: PLD ε={e.cumulative_epsilon:.6g} exceeds the RDP bound "
            f"{upper_ind:.6g} (valid but unexpectedly loose)",
            e.round_index,
        )


def _private_leaves(event: PrivacyEvent) -> list[PrivacyEvent]:
    return [
        leaf for leaf in leaf_events(event) if not isinstance(leaf, NoOpEvent | NonPrivateEvent)
    ]


def _verify_consistency(entries: list[LedgerEntry], meta: LedgerMeta, report: AuditReport) -> None:
    """Counts that cannot have happened, events that contradict how the release was made,
    and the provenance a strict audit refuses."""
    tally: dict[str, dict[str, int]] = {
        "noise": {},
        "aggregation": {},
        "threat_model": {},
        "adjacency": {},
    }
    strict_seen: set[str] = set()

    def strict_once(key: str, message: str, r: int) -> None:
        if key not in strict_seen:
            strict_seen.add(key)
            report.add("strict", message, r)

    for e in entries:
        r = e.round_index
        prov = e.provenance
        for name, value in prov.to_dict().items():
            tally[name][value] = tally[name].get(value, 0) + 1
        body = e.body
        count = body.get("participant_count")
        where = f"round {r}"
        if e.survivors is not None and not (0 <= e.survivors <= e.cohort_size):
            report.add(
                "impossible", f"{where}: {e.survivors} survivors of a cohort of {e.cohort_size}", r
            )
        if not isinstance(count, int) or count != len(e.participants):
            report.add(
                "impossible", f"{where}: participant_count does not match the participations", r
            )
        elif count > e.cohort_size or (e.survivors is not None and count > e.survivors):
            report.add(
                "impossible",
                f"{where}: {count} participants but a cohort of "
                f"{e.cohort_size} with {e.survivors} survivors",
                r,
            )
        if body.get("delta") != meta.policy.delta:
            report.add(
                "impossible",
                f"{where}: recorded at δ={body.get('delta')}, the run's δ is {meta.policy.delta:g}",
                r,
            )
        derived: dict[str, object] = {
            "min_contributors": min_contributors(e.event),
            "planned_noise": noise_levels(e.event),
            "realized_noise": noise_levels(e.charged) if e.status == "released" else [],
        }
        for field, expected in derived.items():
            if body.get(field) != expected:
                report.add("impossible", f"{where}: {field} does not follow from the events", r)
        if e.below_plan != (e.status == "released" and e.charged != e.event):
            report.add("impossible", f"{where}: below_plan flag contradicts the events", r)
        if e.status == "aborted":
            if e.survivors or e.participants:
                report.add(
                    "impossible",
                    f"{where}: recorded as aborted but with survivors or "
                    "participants (a released round relabelled?)",
                    r,
                )
            continue
        bound = e.survivors if e.survivors is not None else e.cohort_size
        for leaf in distributed_leaves(e.charged):
            if leaf.min_contributors > bound:
                report.add(
                    "impossible",
                    f"{where}: charged for {leaf.min_contributors} noise shares but only "
                    f"{bound} {'survivors' if e.survivors is not None else 'cohort members'} "
                    "can have contributed",
                    r,
                )
        private = _private_leaves(e.event)
        insecure = [leaf for leaf in private if getattr(leaf, "secure", True) is False]
        if insecure and prov.noise == "secure":
            report.add(
                "impossible",
                f"{where}: provenance says secure noise but the event was "
                "made with a non-secure generator",
                r,
            )
        secure_sum = prov.aggregation.startswith("secagg-")
        if secure_sum and any(not distributed_leaves(leaf) for leaf in private):
            report.add(
                "impossible",
                f"{where}: aggregation {prov.aggregation} but a release "
                "with central (trusted-server) noise",
                r,
            )
        if prov.aggregation == "central" and distributed_leaves(e.event):
            report.add(
                "impossible", f"{where}: aggregation central but distributed noise shares", r
            )
        if prov.adjacency != meta.provenance.adjacency:
            report.add(
                "impossible",
                f"{where}: adjacency {prov.adjacency} differs from the "
                f"run's {meta.provenance.adjacency}",
                r,
            )
        if prov.adjacency == "add-remove" and distributed_leaves(e.event):
            report.add(
                "violation",
                f"{where}: add/remove adjacency claimed for distributed noise shares, which "
                "the accountant proves only under zero-out adjacency",
                r,
            )
        # provenance a strict audit refuses
        if prov.noise == "simulated":
            strict_once(
                "noise",
                f"{where}: noise source {prov.noise} (a seeded, non-secure generator is not a "
                "private release)",
                r,
            )
        if prov.aggregation == "secagg-off":
            strict_once(
                "secagg-off",
                f"{where}: SecAgg off: the server saw every device's ring vector",
                r,
            )
        if "unspecified" in (prov.noise, prov.aggregation, prov.threat_model):
            strict_once("unspecified", f"{where}: provenance not recorded (unspecified)", r)
        non_private = any(isinstance(leaf, NonPrivateEvent) for leaf in leaf_events(e.event))
        if meta.policy.target_epsilon is not None and (non_private or prov.aggregation == "none"):
            strict_once(
                "non-private",
                f"{where}: a non-private release in a run that claims ε ≤ "
                f"{meta.policy.target_epsilon:g}",
                r,
            )
    report.provenance = tally


def _per_user_epsilon(entries: list[LedgerEntry], meta: LedgerMeta, report: AuditReport) -> None:
    """The worst individual ε, with the one-line explanation of how it was bounded."""
    released = [e for e in entries if e.status == "released" and e.participants]
    if not released:
        return
    delta = meta.policy.delta
    budget = BudgetFilter(meta.policy)
    if meta.policy.user_epsilon is not None:
        order = meta.policy.filter_order()
        totals: dict[str, float] = {}
        for e in released:
            cost = user_event_rdp(e.charged, order)
            for u in e.participants:
                totals[u] = totals.get(u, 0.0) + cost
        report.max_user_epsilon = budget.user_epsilon(max(totals.values()))
        report.user_epsilon_method = (
            f"Rényi filter at the fixed order α={order:g} (Feldman-Zrnic 2021): each user's own "
            "releases without sampling amplification; at most the per-user target by "
            "construction"
        )
        return
    patterns: dict[tuple[int, ...], int] = {}
    seqs_of: dict[str, list[int]] = {}
    for i, e in enumerate(released):
        for u in e.participants:
            seqs_of.setdefault(u, []).append(i)
    for seqs in seqs_of.values():
        key = tuple(seqs)
        patterns[key] = patterns.get(key, 0) + 1
    events = [unsampled(e.charged) for e in released]
    if len(patterns) <= TIGHT_USER_GROUPS:
        worst = 0.0
        backend = meta.backend
        for pattern in patterns:
            acc = make_accountant(meta.backend)
            for i in pattern:
                acc.compose(events[i])
            bracket = acc.get_epsilon_bracket(delta)
            backend = bracket.backend
            worst = max(worst, bracket.epsilon_upper)
        report.max_user_epsilon = worst
        report.user_epsilon_method = (
            f"each user's own releases composed without sampling amplification (participation "
            f"is recorded), {backend} backend over {len(patterns)} participation pattern(s)"
        )
        return
    curves = np.stack([_rdp_curve(ev) for ev in events])
    worst = 0.0
    for pattern in patterns:
        total = curves[list(pattern)].sum(axis=0)
        if not np.all(np.isfinite(total)):
            worst = math.inf
            break
        eps, _ = ra.rdp_to_epsilon(total, delta)
        worst = max(worst, eps)
    report.max_user_epsilon = worst
    report.user_epsilon_method = (
        "each user's own releases composed without sampling amplification (participation is "
        f"recorded), RDP minimized over orders {ra.ORDERS[0]:g}-{ra.ORDERS[-1]:g} for each of "
        f"{len(patterns)} participation patterns"
    )


def _rdp_curve(event: PrivacyEvent) -> ra.FloatArray:
    from dp.accounting.rdp import mechanism_rdp

    total = np.zeros_like(ra.ORDERS)
    for mech, count in normalize(event):
        if any(isinstance(leaf, NonPrivateEvent) for leaf, _ in mech.leaves):
            return np.full_like(ra.ORDERS, math.inf)
        total = total + count * mechanism_rdp(SampledMechanism(1.0, mech.leaves))
    return total
