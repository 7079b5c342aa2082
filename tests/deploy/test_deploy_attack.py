"""Loopback load test (issue 15, observation 7), small: 6 `privagg client` processes run 2
rounds against `privagg serve` while an outsider holds 50 stalled streams and a registered
client keeps 50 bogus long-polls in flight. Every round must sum exactly the 6 honest
devices, every device must exit 0, and the attacker must only ever be refused. The
full-size measurement (20 devices, 3 rounds, 200 + 200, with and without the attack) is
``benchmarks/bench_deploy.py --attack``."""

# ruff: noqa: E402  (protocols.net needs grpc: it is imported after the skip check)
from __future__ import annotations

from pathlib import Path

import pytest

grpc = pytest.importorskip("grpc", reason="grpcio is not installed (pip install 'privagg[net]')")

from attack_scenario import run_scenario


# The attacker's registered identity never joins, so the server waits the whole join
# deadline (30 s: room for 6 device processes to start on a loaded 2-core machine).
@pytest.mark.slow
def test_deploy_honest_devices_finish_under_stalled_streams_and_long_poll_flood(
    tmp_path: Path,
) -> None:
    got = run_scenario(
        tmp_path, devices=6, rounds=2, streams=50, polls=50, attack=True, join_deadline=30.0
    )
    assert got["status"] == ["ok", "ok"], got
    assert got["included"] == [6, 6] and all(got["exact"]), got
    assert got["device_exit_codes"] == [0] * 6, got["device_errors"]
    assert got["server_exit_code"] == 0
    assert got["never_joined"] == [6]  # the attacker's identity never got in
    # (CANCELLED / UNAVAILABLE: the calls in flight when the server exits)
    ended = {"CANCELLED", "UNAVAILABLE"}
    assert set(got["outsider_calls"]) <= {"UNAUTHENTICATED", *ended}, got
    assert got["outsider_calls"].get("UNAUTHENTICATED", 0) > 50
    # the flood's calls were refused: bogus (admitted, then INVALID_ARGUMENT), over quota,
    # or (its concurrent headers overtaking each other) as replayed counters
    refused = {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED"}
    assert set(got["flood_calls"]) <= refused | ended, got
    assert got["flood_calls"].get("INVALID_ARGUMENT", 0) > 0, got
    print(
        "\nattack loopback:",
        {k: got[k] for k in ("round_seconds", "outsider_calls", "flood_calls")},
    )
