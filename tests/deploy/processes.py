"""Process helpers of the loopback tests: spawn ``privagg`` processes, wait for a line, reap."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRIVAGG = [sys.executable, "-m", "analysis.cli"]


def spawn(args: list[str], **kw: object) -> subprocess.Popen[str]:
    """Start a process in the repository root with text pipes for stdout and stderr."""
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        **kw,  # type: ignore[arg-type]
    )


def read_until(proc: subprocess.Popen[str], prefix: str, timeout: float = 60) -> str:
    """The first stdout line starting with ``prefix`` (fails on timeout or exit)."""
    end = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line.strip()
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no line starting with {prefix!r} (exit {proc.poll()})")


def reap(procs: list[subprocess.Popen[str]]) -> dict[int, tuple[str, str]]:
    """Kill whatever still runs and collect every output (closing the pipes)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    return {id(proc): proc.communicate(timeout=60) for proc in procs}


def kill_server_and_expect_clean_exits(
    server: subprocess.Popen[str], devices: list[subprocess.Popen[str]], after: str
) -> None:
    """SIGKILL ``server`` once it printed a line starting with ``after``; every device must
    then exit with code 3 and one line naming the lost server."""
    try:
        read_until(server, after, timeout=90)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        for proc in devices:
            proc.wait(timeout=60)
    finally:
        collected = reap(devices)
        reap([server])
    for proc in devices:
        err = collected[id(proc)][1]
        assert proc.returncode == 3, err
        assert "lost the aggregation server at 127.0.0.1:" in err
        assert len(err.strip().splitlines()) == 1
