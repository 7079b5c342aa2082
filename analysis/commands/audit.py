"""``privagg audit LEDGER`` and ``privagg audit --empirical``: check ε claims.

``audit LEDGER`` checks a privacy ledger without trusting the trainer: it verifies the hash
chain, the head record and (if signed) every Ed25519 signature; recomputes every round's ε
from the raw events with the recorded backend and cross-checks it with an independent one;
checks that dropouts were charged for the realized noise, and every budget (global and per
user). Exit code 0: all checks pass; 1: any violation or tampering; 2: usage error (e.g.
the file is not a ledger).

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
from typing import Any

from analysis.commands import audit_empirical
from analysis.errors import AuditInputError
from dp.accounting.base import EpsilonBracket
from dp.calibrate import make_accountant
from dp.ledger import AuditReport, audit_ledger, read_entries

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
    ledger.add_argument("--public-key", metavar="HEX", help="expected Ed25519 public key (hex)")
    ledger.add_argument(
        "--expected-head", metavar="HEX", help="published hash of the last row (detects rollback)"
    )
    ledger.add_argument(
        "--strict", action="store_true", help="treat warnings (e.g. below-plan noise) as violations"
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


_LEDGER_ONLY = ("json", "public_key", "expected_head", "strict", "no_cross_check")


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
