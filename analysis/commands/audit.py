"""``privagg audit LEDGER``: check a privacy ledger without trusting the trainer.

Verifies the hash chain, the head record and (if signed) every Ed25519 signature;
recomputes every round's ε from the raw events with the recorded backend and cross-checks
it with an independent one; checks that dropouts were charged for the realized noise, and
every budget (global and per user). Exit code 0: all checks pass; 1: any violation or
tampering; 2: usage error (e.g. the file is not a ledger).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from dp.accounting.base import EpsilonBracket
from dp.calibrate import make_accountant
from dp.ledger import AuditReport, audit_ledger, read_entries

EXIT_OK = 0
EXIT_VIOLATION = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="verify a privacy ledger (chain, signatures, ε replay, budgets)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ledger", metavar="LEDGER", help="path of the SQLite ledger")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--public-key", metavar="HEX", help="expected Ed25519 public key (hex)")
    parser.add_argument(
        "--expected-head", metavar="HEX", help="published hash of the last row (detects rollback)"
    )
    parser.add_argument("--delta", type=float, metavar="D", help="also report the final ε at δ=D")
    parser.add_argument(
        "--strict", action="store_true", help="treat warnings (e.g. below-plan noise) as violations"
    )
    parser.add_argument(
        "--no-cross-check", action="store_true", help="skip the independent-backend check"
    )
    parser.set_defaults(func=run)


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return "inf" if math.isinf(x) else f"{x:.6g}"


def _extra_delta(path: str, report: AuditReport, delta: float) -> EpsilonBracket:
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        acc = make_accountant(report.backend)
        for entry in read_entries(conn):
            acc.compose(entry.charged)
    finally:
        conn.close()
    return acc.get_epsilon_bracket(delta)


def run(args: argparse.Namespace) -> int:
    report = audit_ledger(
        args.ledger,
        public_key=args.public_key,
        expected_head=args.expected_head,
        cross_check=not args.no_cross_check,
    )
    extra = None
    if args.delta is not None and not report.tampered:
        extra = _extra_delta(args.ledger, report, args.delta)
    failed = not report.ok or (args.strict and bool(report.warnings))
    if args.json:
        out = report.to_dict()
        out["ok"] = not failed
        if extra is not None:
            out["epsilon_at_delta"] = {
                "delta": extra.delta,
                "epsilon": _finite_or_str(extra.epsilon_upper),
            }
        print(json.dumps(out, indent=1))
        return EXIT_VIOLATION if failed else EXIT_OK
    print(f"privacy ledger audit: {report.path}")
    print(
        f"  rows: {report.rows}   backend: {report.backend}   δ: {_fmt(report.delta)}   "
        f"budget ε: {_fmt(report.target_epsilon)}   per-user ε: {_fmt(report.user_epsilon_target)}"
    )
    chain = "ok" if report.chain_ok else "BROKEN"
    sig = ("verified" if report.signatures_verified else "INVALID") if report.signed else "unsigned"
    print(f"  hash chain: {chain}   signatures: {sig}   head: {report.head_hash[:16]}…")
    if report.rounds:
        print("  round  status    backend  recorded ε   replayed ε   independent [lower, upper]")
        for r in report.rounds:
            flag = "  (below plan)" if r.below_plan else ""
            print(
                f"  {r.round_index:>5}  {r.status:<8}  {r.backend:<7}  {_fmt(r.recorded):>10}   "
                f"{_fmt(r.replayed):>10}   [{_fmt(r.independent_lower)}, "
                f"{_fmt(r.independent_upper)}]{flag}"
            )
    print(
        f"  final ε: {_fmt(report.final_epsilon)}   users: {report.users}   "
        f"max per-user ε: {_fmt(report.max_user_epsilon)}"
    )
    if extra is not None:
        print(f"  final ε at δ={extra.delta:g}: {_fmt(extra.epsilon_upper)}")
    for p in report.problems:
        print(f"  TAMPERING: {p}")
    for v in report.violations:
        print(f"  VIOLATION: {v}")
    for w in report.warnings:
        print(f"  WARNING: {w}")
    print("  result: " + ("FAIL" if failed else "OK"))
    return EXIT_VIOLATION if failed else EXIT_OK


def _finite_or_str(x: float) -> float | str:
    return x if math.isfinite(x) else "inf"
