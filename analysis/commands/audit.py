"""``privagg audit LEDGER`` and ``privagg audit --empirical``: check ε claims.

``audit LEDGER`` checks a privacy ledger without trusting the trainer: it verifies the hash
chain, the head record and every Ed25519 signature against a key you pin (``--public-key``
HEX|FILE, ``--trusted-keys FILE``; a key found only inside the file is "self-signed: not
verified"); compares the published line (``--expected-head``, as printed by ``privagg
train`` and by this audit) to detect rollback, truncation and replacement; recomputes every
round's ε from the raw events with the recorded backend and cross-checks it with an
independent one; checks that the recorded counts are possible and match how each release
was made (noise source, aggregation, threat model, adjacency), that dropouts were charged
for the realized noise, and every budget (global and per user). ``--strict`` also fails an
unsigned or self-signed ledger, simulated noise, SecAgg off, a non-private release in a run
claiming a target ε, and any warning. Exit code 0: all checks pass; 1: tampering, a
violation or a strict failure; 2: usage error (the file is not a ledger, a malformed key or
head). The audit opens the file read-only and never creates or changes a file.

``audit --empirical`` measures instead of recomputing: a one-run audit with canaries
(Steinke, Nasr, Jagielski 2023) gives a 95 % lower bound on ε for a ``privagg train`` run
(``--from-run DIR``), a given noise multiplier and number of releases, or the Gaussian
self-check (``--mechanism gaussian``); see :mod:`analysis.commands.audit_empirical`
(``privagg audit-empirical`` is an alias). Exit code 0: consistent with the claimed ε;
1: the claim is rejected; 2: usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from analysis.commands import audit_empirical
from analysis.errors import AuditInputError
from dp.accounting.base import EpsilonBracket
from dp.calibrate import make_accountant
from dp.errors import DPValueError
from dp.ledger import (
    AuditReport,
    audit_ledger,
    connect_readonly,
    parse_expected_head,
    parse_public_key,
    read_entries,
    read_trusted_keys,
)

EXIT_OK = 0
EXIT_VIOLATION = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="verify a privacy ledger (chain, signatures, ε replay, budgets), or with "
        "--empirical measure a lower bound on ε with canaries",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ledger", metavar="LEDGER", nargs="?", help="path of the SQLite ledger")
    parser.add_argument(
        "--delta",
        type=float,
        metavar="D",
        help="ledger: also report the final ε at δ=D; --empirical: the audit's δ (1e-5)",
    )
    ledger = parser.add_argument_group("ledger audit (LEDGER)")
    ledger.add_argument("--json", action="store_true", help="print the report as JSON")
    ledger.add_argument(
        "--public-key",
        metavar="HEX|FILE",
        help="the operator's pinned Ed25519 public key: 64 hex digits, an 'ed25519:' "
        "fingerprint, or a file holding one (e.g. the key's .pub file)",
    )
    ledger.add_argument(
        "--trusted-keys",
        metavar="FILE",
        help="a file of pinned keys (hex or fingerprints, one per line, '#' comments)",
    )
    ledger.add_argument(
        "--expected-head",
        metavar="LINE|HEX",
        help="the published line ('privagg-ledger/2 run=… rows=… head=… key=…') or head hash: "
        "detects rollback, truncation and replacement by another run",
    )
    ledger.add_argument(
        "--strict",
        action="store_true",
        help="also fail unsigned or self-signed ledgers, simulated noise, SecAgg off, "
        "non-private releases under a target ε, and warnings (e.g. below-plan noise)",
    )
    ledger.add_argument(
        "--no-cross-check", action="store_true", help="skip the independent-backend check"
    )
    empirical = parser.add_argument_group(
        "empirical one-run audit (--empirical; also 'privagg audit-empirical')"
    )
    empirical.add_argument(
        "--empirical", action="store_true", help="audit with canaries instead of a ledger"
    )
    audit_empirical.add_empirical_arguments(empirical, with_delta=False)
    parser.set_defaults(func=run)


_LEDGER_ONLY = (
    "json",
    "public_key",
    "trusted_keys",
    "expected_head",
    "strict",
    "no_cross_check",
)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return "inf" if math.isinf(x) else f"{x:.6g}"


def _extra_delta(path: str, report: AuditReport, delta: float) -> EpsilonBracket:
    conn = connect_readonly(path)
    try:
        acc = make_accountant(report.backend)
        for entry in read_entries(conn):
            acc.compose(entry.charged)
    finally:
        conn.close()
    return acc.get_epsilon_bracket(delta)


def _pinned_key(value: str) -> str:
    """``--public-key``: the key itself, or a file holding it (a usage error otherwise)."""
    text = value.strip()
    if not text:
        raise AuditInputError("--public-key is empty")
    try:
        return parse_public_key(text)
    except DPValueError:
        if os.path.isfile(text):
            try:
                with open(text, encoding="utf-8") as fh:
                    return parse_public_key(fh.read())
            except (OSError, UnicodeDecodeError, DPValueError) as exc:
                raise AuditInputError(f"--public-key {text}: {exc}") from None
        raise AuditInputError(
            f"--public-key must be 64 hex digits, an 'ed25519:' fingerprint or a file holding "
            f"one; got {text[:20]!r}"
        ) from None


def run(args: argparse.Namespace) -> int:
    """The ledger audit, or the empirical audit with ``--empirical``."""
    if args.empirical:
        if args.ledger is not None:
            raise AuditInputError(
                "--empirical audits a run (--from-run DIR) or a mechanism, not a LEDGER; "
                "run 'privagg audit LEDGER' for the ledger"
            )
        used = [f"--{n.replace('_', '-')}" for n in _LEDGER_ONLY if getattr(args, n)]
        if used:
            raise AuditInputError(f"{', '.join(used)} only apply to a ledger audit")
        if args.delta is None:
            args.delta = audit_empirical.DEFAULT_DELTA
        return audit_empirical.run_audit(args)
    if args.ledger is None:
        raise AuditInputError("give a LEDGER to check, or --empirical for a canary audit")
    defaults = argparse.ArgumentParser()
    audit_empirical.add_empirical_arguments(defaults, with_delta=False)
    stray = [
        f"--{k.replace('_', '-')}"
        for k, v in vars(defaults.parse_args([])).items()
        if getattr(args, k) != v
    ]
    if stray:
        raise AuditInputError(f"{', '.join(stray)} only apply with --empirical")
    pins = [_pinned_key(args.public_key)] if args.public_key else []
    if args.trusted_keys:
        try:
            pins.extend(read_trusted_keys(args.trusted_keys))
        except DPValueError as exc:
            raise AuditInputError(f"--trusted-keys: {exc}") from None
    if args.expected_head is not None:
        try:
            parse_expected_head(args.expected_head)
        except DPValueError as exc:
            raise AuditInputError(f"--expected-head: {exc}") from None
    report = audit_ledger(
        args.ledger,
        trusted_keys=pins,
        expected_head=args.expected_head,
        cross_check=not args.no_cross_check,
    )
    extra = None
    if args.delta is not None and not report.tampered:
        extra = _extra_delta(args.ledger, report, args.delta)
    failed = not (report.strict_ok if args.strict else report.ok)
    code = EXIT_VIOLATION if failed else EXIT_OK
    try:
        _print_report(report, extra, failed, as_json=args.json, strict=args.strict)
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader (e.g. `| head`) has gone: not an error of the audit; stop writing
        # without a second failure at interpreter exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return code


def _print_report(
    report: AuditReport,
    extra: EpsilonBracket | None,
    failed: bool,
    *,
    as_json: bool,
    strict: bool,
) -> None:
    if as_json:
        out = report.to_dict()
        out["ok"] = not failed
        out["strict"] = strict
        if extra is not None:
            out["epsilon_at_delta"] = {
                "delta": extra.delta,
                "epsilon": _finite_or_str(extra.epsilon_upper),
            }
        print(json.dumps(out, indent=1))
        return
    print(f"privacy ledger audit: {report.path}")
    print(f"  run: {report.run_id or '-'}   uid: {report.run_uid or '-'}")
    print(
        f"  rows: {report.rows}   backend: {report.backend}   δ: {_fmt(report.delta)}   "
        f"budget ε: {_fmt(report.target_epsilon)}   per-user ε: {_fmt(report.user_epsilon_target)}"
    )
    chain = "ok" if report.chain_ok else "BROKEN"
    key = f" by {report.key_fingerprint}" if report.key_fingerprint else ""
    print(f"  hash chain: {chain}   signatures: {report.key_status}{key}")
    print(f"  head: {report.head_hash}")
    if report.adjacency:
        print(f"  adjacency: {report.adjacency}")
    for name, counts in report.provenance.items():
        shown = ", ".join(f"{v} ({n} rows)" for v, n in sorted(counts.items()))
        print(f"  {name.replace('_', ' ')}: {shown}")
    if report.rounds:
        print(
            "  round  status    backend  recorded ε   replayed ε   independent [lower, upper]"
            "   noise / aggregation"
        )
        for r in report.rounds:
            flag = "  (below plan)" if r.below_plan else ""
            print(
                f"  {r.round_index:>5}  {r.status:<8}  {r.backend:<7}  {_fmt(r.recorded):>10}   "
                f"{_fmt(r.replayed):>10}   [{_fmt(r.independent_lower)}, "
                f"{_fmt(r.independent_upper)}]   {r.noise} / {r.aggregation}{flag}"
            )
    if report.tampered:
        print("  accounting not replayed: the file failed verification")
    else:
        print(
            f"  final ε: {_fmt(report.final_epsilon)}   users: {report.users}   "
            f"max per-user ε: {_fmt(report.max_user_epsilon)}"
        )
    if report.user_epsilon_method:
        print(f"  per-user ε: {report.user_epsilon_method}")
    if extra is not None:
        print(f"  final ε at δ={extra.delta:g}: {_fmt(extra.epsilon_upper)}")
    for p in report.problems:
        print(f"  TAMPERING: {p}")
    for v in report.violations:
        print(f"  VIOLATION: {v}")
    for f in report.strict_findings:
        print(f"  {'STRICT' if strict else 'NOTE'}: {f}")
    for w in report.warnings:
        print(f"  WARNING: {w}")
    if report.publish and not report.tampered:
        print(f"  publish: {report.publish}")
    print("  result: " + ("FAIL" if failed else "OK"))


def _finite_or_str(x: float) -> float | str:
    return x if math.isfinite(x) else "inf"
