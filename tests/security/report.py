"""Run the adversarial suite and print its figures (the ``make security`` entry point).

Runs pytest on ``tests/security`` (plus the protocol attack tests, which the figures do not
count but whose failures fail the run) with ``PRIVAGG_SECURITY_STATS`` pointing at a
temporary file, then prints what the tests counted: scenarios tried, faults injected, fuzz
cases, aborts by typed reason, rounds completed, Ray shard hosts lost mid-round (F8: killed
or stuck actors, whose devices become dropouts), honest inputs lost and individual inputs
recovered by the transcript attack, and for the malicious-server scenarios (a lying server
against real ``privagg client`` processes, ``test_sec_untrusted_server.py``) the scenarios
tried, the announcements the devices refused by policy, the inputs the server recovered and
the honest inputs lost. Exits non-zero if a test failed or if either of the
last two figures is not zero. ``--long`` sets ``PRIVAGG_LONG_FUZZ=1`` (ten times more
fuzz examples and fault scenarios).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LABELS = {
    "scenarios": "scenarios tried",
    "faults_injected": "faults injected",
    "fuzz_cases": "fuzz / bad-input cases",
    "rounds_completed": "rounds completed (exact sum)",
    "rounds_aborted": "rounds aborted (typed reason)",
    "hosts_lost": "Ray shard hosts lost mid-round (F8)",
    "attack_attempts": "unmasking attacks attempted",
    "attack_controls_recovered": "attack positive controls that recovered",
    "honest_inputs_lost": "honest inputs lost (must be 0)",
    "inputs_recovered": "individual inputs recovered (must be 0)",
}
UNTRUSTED = {
    "untrusted_scenarios": "scenarios tried",
    "untrusted_refused": "announcements refused by device policy",
    "untrusted_inputs_recovered": "individual inputs recovered (must be 0)",
    "untrusted_honest_lost": "honest inputs lost (must be 0)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="long fuzz runs")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "security_stats.json"
        env = dict(os.environ, PRIVAGG_SECURITY_STATS=str(stats))
        if args.long:
            env["PRIVAGG_LONG_FUZZ"] = "1"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(HERE),
            str(ROOT / "tests" / "protocols" / "test_protocols_attacks.py"),
            *args.pytest_args,
        ]
        start = time.perf_counter()
        code = subprocess.call(command, cwd=ROOT, env=env)
        seconds = time.perf_counter() - start
        if not stats.exists():
            print("security: no figures were written (did the suite run?)", file=sys.stderr)
            return code or 1
        data = json.loads(stats.read_text(encoding="utf-8"))
    figures, reasons = data["figures"], data["abort_reasons"]
    print(f"\n== privagg security figures ({seconds:.1f} s, long={args.long})")
    for name, label in LABELS.items():
        print(f"{label:<45} {figures.get(name, 0):>8}")
    print("malicious-server scenarios (lying server vs real `privagg client` devices):")
    for name, label in UNTRUSTED.items():
        print(f"  {label:<43} {figures.get(name, 0):>8}")
    print("aborts by typed reason:")
    for reason, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {reason:<43} {count:>8}")
    if not figures.get("hosts_lost", 0):
        print("note: no Ray shard host was lost: the F8 scenarios were skipped (is Ray installed?)")
    bad = (
        figures.get("honest_inputs_lost", 0)
        or figures.get("inputs_recovered", 0)
        or figures.get("untrusted_inputs_recovered", 0)
        or figures.get("untrusted_honest_lost", 0)
    )
    if bad:
        print("security: an honest input was lost or an individual input recovered")
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
