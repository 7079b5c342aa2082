"""Loopback process test: a `privagg serve` process and 20 device processes over gRPC + TLS.

Three devices are SIGKILLed at different stages (round 0 before sharing keys, round 0
before sending the masked input, round 1 before unmasking), one sends garbage instead of
its masked input, one sends an oversized message; every round must still release the
exact sum of the inputs of the clients it reports as included. Then a server is SIGKILLed
under running devices, which must exit with code 3 and a clear message. All traffic stays
on 127.0.0.1.
"""

# ruff: noqa: E402  (protocols.net needs grpc: it is imported after the skip check)
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

grpc = pytest.importorskip("grpc", reason="grpcio is not installed (pip install 'privagg[net]')")

from processes import PRIVAGG, kill_server_and_expect_clean_exits, read_until, reap, spawn

import secagg
from protocols.net import make_local_pki

N, T, D, ROUNDS = 20, 11, 32, 3
HERE = Path(__file__).parent
KILLS = {3: (0, "share"), 7: (0, "mask"), 11: (1, "unmask")}
GARBAGE, OVERSIZED = 5, 9


def _write_config(tmp: Path, rounds: int, deadline: float, n: int = N, t: int = T) -> Path:
    config = {
        "job": {"num_clients": n, "threshold": t, "vector_length": D, "rounds": rounds},
        "listen": "127.0.0.1:0",
        "tls": {"cert": "pki/server.pem", "key": "pki/server.key"},
        "registry": "pki/registry.json",
        "stage_deadline": deadline,
        "join_deadline": 60,
        "output": "aggregates.json",
    }
    path = tmp / f"serve-{rounds}.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("loopback")
    make_local_pki(tmp / "pki", num_clients=N)
    rng = np.random.default_rng(7)
    data = rng.integers(-(2**20), 2**20, size=(N, ROUNDS, D))
    for cid in range(N):
        np.save(tmp / f"data-{cid}.npy", data[cid])
    np.save(tmp / "all.npy", data)
    return tmp


def _device(tmp: Path, target: str, cid: int) -> subprocess.Popen[str]:
    pki = tmp / "pki"
    common = [target, str(cid), str(pki / f"client-{cid}.key"), str(pki / "ca.pem")]
    data = str(tmp / f"data-{cid}.npy")
    if cid in KILLS:
        rnd, stage = KILLS[cid]
        return spawn(
            [
                sys.executable,
                str(HERE / "faulty_device.py"),
                *common,
                data,
                "pause",
                str(rnd),
                stage,
            ]
        )
    if cid == GARBAGE:
        return spawn(
            [sys.executable, str(HERE / "faulty_device.py"), *common, data, "garbage", "0", "mask"]
        )
    if cid == OVERSIZED:
        return spawn(
            [
                sys.executable,
                str(HERE / "faulty_device.py"),
                *common,
                data,
                "oversized",
                "1",
                "share",
            ]
        )
    return spawn(
        [
            *PRIVAGG,
            "client",
            "--server",
            target,
            "--id",
            str(cid),
            "--data",
            data,
            "--key",
            common[2],
            "--ca",
            common[3],
            "--job",
            str(tmp / "serve-3.json"),
            "--retry-seconds",
            "5",
            "--quiet",
        ]
    )


@pytest.mark.slow
def test_deploy_twenty_processes_with_kills_garbage_and_oversized(deployment: Path) -> None:
    tmp = deployment
    config = _write_config(tmp, ROUNDS, deadline=3.0)
    server = spawn([*PRIVAGG, "serve", "--config", str(config)])
    devices: dict[int, subprocess.Popen[str]] = {}
    try:
        target = read_until(server, "listening on").split()[-1]
        assert target.startswith("127.0.0.1:")
        devices = {cid: _device(tmp, target, cid) for cid in range(N)}
        # an unauthenticated stranger: garbage without a signed call header is refused
        # before the server reads it
        channel = grpc.secure_channel(
            target, grpc.ssl_channel_credentials((tmp / "pki" / "ca.pem").read_bytes())
        )
        exchange = channel.unary_unary("/privagg.Aggregation/Exchange")
        with pytest.raises(grpc.RpcError) as refused:
            exchange(os.urandom(300), timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        channel.close()
        for cid in KILLS:  # SIGKILL each paused device at its own stage
            read_until(devices[cid], "PAUSED", timeout=90)
            devices[cid].send_signal(signal.SIGKILL)
        server.wait(timeout=120)
        assert server.returncode == 0
    finally:
        collected = reap([*devices.values()])
        reap([server])
    outputs = {cid: collected[id(proc)] for cid, proc in devices.items()}
    result = json.loads((tmp / "aggregates.json").read_text())
    data = np.load(tmp / "all.npy")
    rows = result["rounds"]
    assert [r["status"] for r in rows] == ["ok"] * ROUNDS, rows
    for row in rows:
        included = row["included"]
        expected = secagg.ring_sum(secagg.to_ring(data[included, row["round"]], 32), 32)
        assert row["total"] == [int(v) for v in expected], f"round {row['round']}"
    inc = [set(r["included"]) for r in rows]
    everyone = set(range(N))
    assert inc[0] == everyone - {3, 7, GARBAGE}  # killed before share / mask; garbage masked
    assert GARBAGE in rows[0]["faulty"]
    assert inc[1] == everyone - {3, 7, OVERSIZED}  # 11 dies during unmask: still included
    assert inc[2] == everyone - {3, 7, 11, OVERSIZED}  # the garbage sender is back
    assert "OVERSIZED RESOURCE_EXHAUSTED" in outputs[OVERSIZED][0]
    for cid, proc in devices.items():
        if cid in KILLS:
            assert proc.returncode == -signal.SIGKILL
        elif cid == OVERSIZED:
            assert proc.returncode == 4
        else:
            assert proc.returncode == 0, (cid, outputs[cid])
    print(
        "\nloopback: rounds",
        len(rows),
        "seconds/round",
        [r["seconds"] for r in rows],
        "included",
        [len(i) for i in inc],
    )


@pytest.mark.slow
def test_deploy_server_killed_clients_exit_cleanly(deployment: Path) -> None:
    tmp = deployment
    config = _write_config(tmp, 1000, deadline=30.0, n=4, t=3)
    server = spawn([*PRIVAGG, "serve", "--config", str(config), "--output", str(tmp / "long.json")])
    devices: list[subprocess.Popen[str]] = []
    try:
        target = read_until(server, "listening on").split()[-1]
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
                    str(tmp / f"data-{cid}.npy"),
                    "--key",
                    str(tmp / "pki" / f"client-{cid}.key"),
                    "--ca",
                    str(tmp / "pki" / "ca.pem"),
                    "--retry-seconds",
                    "2",
                ]
            )
            for cid in range(4)
        ]
    except BaseException:
        reap([*devices, server])
        raise
    kill_server_and_expect_clean_exits(server, devices, after="round 1:")
