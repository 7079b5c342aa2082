"""Runs the Flower checks (``check_flower_mod.py``) in the Flower virtualenv.

flwr 1.42.0 pins ray==2.55.1, protobuf<7 and packaging<26, older than the dev extras
resolve, so ``privagg[flower]`` lives in ``.venv-flower`` (``make test`` builds it before
the suite runs). Outside CI a missing virtualenv skips with the command that builds it; in
CI (``CI`` set) it fails: the Flower path must never go untested silently.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOWER_PYTHON = ROOT / ".venv-flower" / "bin" / "python"
CHECKS = Path(__file__).resolve().parent / "check_flower_mod.py"
# Warnings raised by flwr's and Ray's own imports and shutdown, not by privagg.
IGNORED = (
    "ignore::DeprecationWarning",
    "ignore::FutureWarning",
    "ignore::ResourceWarning",
    "ignore::pytest.PytestUnraisableExceptionWarning",
)


def _flower_python() -> Path:
    probe = (
        subprocess.run(
            [str(FLOWER_PYTHON), "-c", "import flwr, privagg.flower"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if FLOWER_PYTHON.exists()
        else None
    )
    if probe is None or probe.returncode != 0:
        reason = (
            f"{FLOWER_PYTHON} cannot import flwr and privagg.flower "
            f"({'missing' if probe is None else probe.stderr.strip().splitlines()[-1]}); "
            "build it with `make flower-venv`"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return FLOWER_PYTHON


def test_flower_mod_and_workflow_in_the_flower_venv() -> None:
    python = _flower_python()
    cmd = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    cmd += ["-o", "python_files=check_*.py"]
    for rule in IGNORED:
        cmd += ["-W", rule]
    cmd.append(str(CHECKS))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["RAY_DEDUP_LOGS"] = "0"
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-40:])
    assert run.returncode == 0, f"Flower checks failed:\n{tail}"
    assert " passed" in run.stdout and "skipped" not in run.stdout.splitlines()[-1], tail
