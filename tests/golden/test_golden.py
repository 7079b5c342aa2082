"""Golden outputs: every carrier's release of a small seeded job is bit-identical to the
recorded one (aggregate hashes, included devices, events, ε). A refactor must not change
them; a deliberate change re-records with ``python -m tests.golden.record --write``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.golden.jobs import IN_PROCESS_CASES, all_jobs, have, run_quietly

GOLDEN = json.loads(Path(__file__).with_name("golden.json").read_text())


def _check(name: str, tmp: Path) -> None:
    jobs = all_jobs(tmp, ray=True, grpc=True)
    got: Any = run_quietly(jobs[name])
    assert got == GOLDEN[name], f"{name} changed; re-record only on purpose (see record.py)"


@pytest.mark.parametrize("case", sorted(IN_PROCESS_CASES))
def test_in_process_release_is_golden(case: str, tmp_path: Path) -> None:
    _check(f"in_process/{case}", tmp_path)


def test_sharded_local_release_is_golden(tmp_path: Path) -> None:
    _check("sharded/local", tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not have("ray"), reason="Ray is not installed (pip install 'privagg[ray]')")
def test_sharded_ray_release_is_golden(tmp_path: Path, ray_runtime: object) -> None:
    _check("sharded/ray", tmp_path)
    assert GOLDEN["sharded/ray"] == GOLDEN["sharded/local"]  # where shards run is invisible


@pytest.mark.skipif(not have("grpc"), reason="grpcio is not installed (pip install 'privagg[net]')")
def test_grpc_loopback_release_is_golden(tmp_path: Path) -> None:
    _check("grpc/loopback", tmp_path)


@pytest.mark.parametrize("kind", ["in_process", "local"])
def test_training_run_is_golden(kind: str, tmp_path: Path) -> None:
    _check(f"training/{kind}", tmp_path)
