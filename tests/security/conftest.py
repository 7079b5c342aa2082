"""Shared set-up of the adversarial suite: the protocol test doubles and the counters."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The malicious-server / malicious-client doubles live with the protocol tests.
_PROTOCOL_TESTS = str(Path(__file__).resolve().parents[1] / "protocols")
if _PROTOCOL_TESTS not in sys.path:
    sys.path.insert(0, _PROTOCOL_TESTS)

import sec_stats  # noqa: E402 - after the path set-up above


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    sec_stats.dump()
