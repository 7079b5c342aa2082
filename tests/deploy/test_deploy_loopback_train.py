"""Loopback process test of federated training: a ``privagg serve`` training job and 20
device processes (``privagg client`` plus a test-only dump of each encoded vector) train the
recommender over gRPC + TLS with secure noise: the popularity release, then FCF rounds of
another upload length.

Three devices are SIGKILLed at different stages: device 3 in the popularity round before
sending its key shares, device 7 in the first FCF round before sending its masked input,
device 11 in the second FCF round before unmasking. Every round completes; its aggregate is
the exact modular sum of the encoded vectors of the devices it reports as included (checked
against the dumps, which a real server never sees); the dead devices are left out of later
cohorts. Then a training server is SIGKILLed under running devices, which must exit with
code 3 and a one-line message. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("grpc", reason="grpcio is not installed (pip install 'privagg[net]')")

from processes import PRIVAGG, kill_server_and_expect_clean_exits, read_until, reap, spawn

import secagg
from protocols.net import make_local_pki
from recsys.data import synthetic_ratings
from recsys.features import item_features
from recsys.remote import write_histories
from recsys.split import leave_last_out

N = 20
HERE = Path(__file__).parent
KILLS = {3: (0, "share"), 7: (1, "mask"), 11: (2, "unmask")}


def _setup(tmp: Path, n: int = N, rounds: int = 2) -> Path:
    make_local_pki(tmp / "pki", num_clients=n)
    ratings = synthetic_ratings(n, 40, seed=3, mean_activity=12, min_activity=6)
    split = leave_last_out(ratings)
    write_histories(split.train, tmp / "data")
    np.save(tmp / "targets.npy", split.targets)
    np.save(tmp / "features.npy", item_features(ratings))
    (tmp / "dump").mkdir()
    config = {
        "kind": "train",
        "train": {
            "rounds": rounds,
            "epsilon": 8.0,
            "secagg": "plus",
            "dropout": 0.15,
            "seed": 1,
            "eval_every": 1,
            "model": {"kind": "popfeat+fcf", "cap": 8, "fcf": {"dim": 3, "active_items": 25}},
        },
        "catalog": {"num_items": ratings.num_items, "features": "features.npy"},
        "evaluation": {"histories": "data/device-{id}.npy", "targets": "targets.npy"},
        "min_cohort": min(5, n),
        "listen": "127.0.0.1:0",
        "tls": {"cert": "pki/server.pem", "key": "pki/server.key"},
        "registry": "pki/registry.json",
        "stage_deadline": 3,
        "join_deadline": 120,
        "output": "training.json",
        "ledger": "ledger.sqlite",
        "model_output": "model.npz",
        "record_aggregates": True,
    }
    path = tmp / "serve.json"
    path.write_text(json.dumps(config))
    # the job spends epsilon 8 at delta 1e-4; the devices' default budget (10 at delta 1e-5,
    # charged unamplified at t - n_C honest shares) would refuse its last release
    (tmp / "policy.json").write_text(json.dumps({"dp": {"epsilon_budget": 20.0}}))
    return path


def _device(tmp: Path, target: str, cid: int) -> subprocess.Popen[str]:
    pki = tmp / "pki"
    own = [str(tmp / "dump")]
    if cid in KILLS:
        rnd, stage = KILLS[cid]
        own += ["--pause", str(rnd), stage]
    client = [
        "--server",
        target,
        "--id",
        str(cid),
        "--data",
        str(tmp / "data" / f"device-{cid}.npy"),
        "--key",
        str(pki / f"client-{cid}.key"),
        "--ca",
        str(pki / "ca.pem"),
        "--retry-seconds",
        "5",
        "--policy",
        str(tmp / "policy.json"),
        "--quiet",
    ]
    return spawn([sys.executable, str(HERE / "training_device.py"), *own, "--", *client])


@pytest.mark.slow
def test_deploy_twenty_processes_train_with_kills(tmp_path: Path) -> None:
    config = _setup(tmp_path)
    server = spawn([*PRIVAGG, "serve", "--config", str(config)])
    devices: dict[int, subprocess.Popen[str]] = {}
    start = time.monotonic()
    try:
        target = read_until(server, "listening on", timeout=90).split()[-1]
        assert target.startswith("127.0.0.1:")
        devices = {cid: _device(tmp_path, target, cid) for cid in range(N)}
        for cid in KILLS:  # SIGKILL each paused device at its own stage
            read_until(devices[cid], "PAUSED", timeout=120)
            devices[cid].send_signal(signal.SIGKILL)
        server.wait(timeout=120)
    finally:
        collected = reap([*devices.values()])
        server_out = reap([server])[id(server)]
    wall = time.monotonic() - start
    assert server.returncode == 0, server_out
    result = json.loads((tmp_path / "training.json").read_text())
    rows = result["rounds"]
    assert [r["status"] for r in rows] == ["ok"] * 3, rows
    assert [r["task"] for r in rows] == ["popularity", "fcf", "fcf"]
    everyone = set(range(N))
    # the dead are left out of later cohorts; 11 dies while unmasking: still in the sum
    assert [set(r["cohort"]) for r in rows] == [everyone, everyone - {3}, everyone - {3, 7}]
    assert [set(r["included"]) for r in rows] == [
        everyone - {3},
        everyone - {3, 7},
        everyone - {3, 7},
    ]
    lengths = set()
    for row in rows:
        vectors = np.stack(
            [
                np.load(tmp_path / "dump" / f"vec-{cid}-{row['round']}.npy")
                for cid in row["included"]
            ]
        )
        lengths.add(vectors.shape[1])
        expected = secagg.ring_sum(vectors, result["job"]["bits"])
        assert row["total"] == [int(v) for v in expected], f"round {row['round']}"
    assert len(lengths) == 2  # the popularity and the FCF uploads differ in length
    assert result["secure_noise"] is True
    releases = result["releases"]
    assert [r["included"] for r in releases] == [N - 1, N - 2, N - 2]
    eps = [r["epsilon"] for r in releases]
    assert all(0 < a < b for a, b in itertools.pairwise(eps)) and eps[-1] <= 8.0 + 1e-9
    assert result["report_card"]["releases"] == 3
    model = np.load(tmp_path / "model.npz")
    assert model["item_factors"].shape == (40, 3) and np.isfinite(model["item_factors"]).all()
    assert (tmp_path / "ledger.sqlite").exists()
    from dp.ledger import audit_ledger

    ledger = audit_ledger(tmp_path / "ledger.sqlite")  # signed by the server's key by default
    assert ledger.ok and ledger.signed and ledger.provenance["aggregation"]
    for cid, proc in devices.items():
        if cid in KILLS:
            assert proc.returncode == -signal.SIGKILL
        else:
            assert proc.returncode == 0, (cid, collected[id(proc)])
            assert "job done" in collected[id(proc)][0]
    seconds = [r["seconds"] for r in rows]
    print(f"\nloopback training: 3 rounds, seconds {seconds}, wall {wall:.1f} s, killed 3")


@pytest.mark.slow
def test_deploy_training_server_killed_devices_exit_cleanly(tmp_path: Path) -> None:
    config = _setup(tmp_path, n=4, rounds=50)
    server = spawn([*PRIVAGG, "serve", "--config", str(config)])
    devices: list[subprocess.Popen[str]] = []
    try:
        target = read_until(server, "listening on", timeout=90).split()[-1]
        pki = tmp_path / "pki"
        devices = [
            spawn(
                [
                    *PRIVAGG,
                    "client",
                    "--server",
                    target,
                    "--id",
                    str(cid),
                    "--data",
                    str(tmp_path / "data" / f"device-{cid}.npy"),
                    "--key",
                    str(pki / f"client-{cid}.key"),
                    "--ca",
                    str(pki / "ca.pem"),
                    "--retry-seconds",
                    "2",
                    "--quiet",
                ]
            )
            for cid in range(4)
        ]
    except BaseException:
        reap([*devices, server])
        raise
    kill_server_and_expect_clean_exits(server, devices, after="round 2 (")
