"""Counters behind the figures of ``make security``.

Tests of this folder record what they really tried (scenarios, injected faults, fuzz
cases, aborts by reason, completed rounds) and what they measured (honest inputs lost,
individual inputs an attacker recovered from a transcript). The folder's ``conftest.py``
writes the totals as JSON to ``$PRIVAGG_SECURITY_STATS`` at the end of the session, and
``tests/security/report.py`` prints them. Nothing here is asserted as a constant: each
figure is the sum of what the tests counted while running.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

STATS_ENV = "PRIVAGG_SECURITY_STATS"
LONG_FUZZ_ENV = "PRIVAGG_LONG_FUZZ"

FIGURES = (
    "scenarios",
    "faults_injected",
    "fuzz_cases",
    "rounds_completed",
    "rounds_aborted",
    "hosts_lost",
    "attack_attempts",
    "attack_controls_recovered",
    "honest_inputs_lost",
    "inputs_recovered",
    "untrusted_scenarios",
    "untrusted_refused",
    "untrusted_inputs_recovered",
    "untrusted_honest_lost",
)

counts: Counter[str] = Counter()
abort_reasons: Counter[str] = Counter()


def add(name: str, amount: int = 1) -> None:
    """Add ``amount`` to the figure ``name`` (one of :data:`FIGURES`)."""
    if name not in FIGURES:
        raise KeyError(f"unknown security figure {name!r}")
    counts[name] += amount


def abort(reason: str) -> None:
    """Count one abort (of a round or of a client) with its typed reason."""
    abort_reasons[reason] += 1


def long_fuzz() -> bool:
    """Whether the long fuzz runs were asked for (``PRIVAGG_LONG_FUZZ=1``)."""
    return os.environ.get(LONG_FUZZ_ENV, "") not in ("", "0")


def dump() -> None:
    """Write the totals to ``$PRIVAGG_SECURITY_STATS`` (if set)."""
    target = os.environ.get(STATS_ENV)
    if not target:
        return
    data = {
        "figures": {name: counts[name] for name in FIGURES},
        "abort_reasons": dict(sorted(abort_reasons.items())),
    }
    Path(target).write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
