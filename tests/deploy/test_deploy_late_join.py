"""Issue 19, observation 7: a device that joins after the join deadline and misses the whole
job is told so (one clear line, exit non-zero), and the server names the registered
clients that never joined. All traffic stays on 127.0.0.1."""

# ruff: noqa: E402  (protocols.net needs grpc: it is imported after the skip check)
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

grpc = pytest.importorskip("grpc", reason="grpcio is not installed (pip install 'privagg[net]')")

from processes import PRIVAGG, read_until, reap, spawn

from protocols.net import (
    AggregationServer,
    ClientTLS,
    JobMissed,
    JobSpec,
    ServerTLS,
    load_identity_key,
    load_registry,
    make_local_pki,
    run_device,
)


def _client(tmp: Path, target: str, cid: int) -> object:
    # a 3-device job: the safe default policy (5 % corrupt, so n_C = 1, and at least two
    # honest inputs per sum) would refuse t = 2; this test is about joining late
    policy = tmp / "policy.json"
    policy.write_text(json.dumps({"secagg": {"corrupt_fraction": 0.0, "min_honest_survivors": 2}}))
    return spawn(
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
            "3",
            "--policy",
            str(policy),
            "--quiet",
        ]
    )


@pytest.mark.slow
def test_deploy_late_client_exits_nonzero_and_server_names_missing(tmp_path: Path) -> None:
    make_local_pki(tmp_path / "pki", num_clients=3)
    for cid in range(3):
        np.save(tmp_path / f"data-{cid}.npy", np.arange(8) + cid)
    config = {
        "job": {"num_clients": 3, "threshold": 2, "vector_length": 8, "rounds": 1},
        "listen": "127.0.0.1:0",
        "tls": {"cert": "pki/server.pem", "key": "pki/server.key"},
        "registry": "pki/registry.json",
        "stage_deadline": 5,
        "join_deadline": 15,
        "linger_seconds": 15,
        "output": "aggregates.json",
    }
    (tmp_path / "serve.json").write_text(json.dumps(config))
    server = spawn([*PRIVAGG, "serve", "--config", str(tmp_path / "serve.json")])
    procs = []
    try:
        target = read_until(server, "listening on").split()[-1]
        procs = [_client(tmp_path, target, cid) for cid in (0, 1)]
        assert read_until(server, "join deadline:") == (
            "join deadline: 2 of 3 registered clients joined"
        )
        assert read_until(server, "registered clients that never joined:").endswith(": 2")
        read_until(server, "round 0:")
        late = _client(tmp_path, target, 2)  # the job is over; the server still lingers
        procs.append(late)
        late.wait(timeout=60)
        server.wait(timeout=60)
    finally:
        outputs = reap([*procs, server])
    out, err = outputs[id(procs[-1])]
    assert procs[-1].returncode == 3, (out, err)
    assert "took part in rounds none" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("privagg client: "), err
    assert "join deadline" in lines[0] and "client 2" in lines[0], lines
    assert [p.returncode for p in procs[:2]] == [0, 0]
    assert server.returncode == 0
    assert "registered clients that never joined: 2" in outputs[id(server)][0]
    result = json.loads((tmp_path / "aggregates.json").read_text())
    assert result["never_joined"] == [2]
    assert result["rounds"][0]["included"] == [0, 1]


def test_deploy_late_device_of_a_job_that_ended_without_it_raises(tmp_path: Path) -> None:
    """The device said hello after the join deadline, the job then ended before any round
    included it: DONE carries the reason and the device raises JobMissed (no silent 'none')."""
    pki = make_local_pki(tmp_path / "pki", num_clients=3)
    job = JobSpec(num_clients=3, threshold=2, vector_length=4, rounds=1, per_round=True)
    tls = ServerTLS(pki.server_cert.read_bytes(), pki.server_key.read_bytes())
    server = AggregationServer(
        job, load_registry(pki.registry), tls, join_deadline=0.2, poll_seconds=1.0
    )
    server.start()
    result: dict[str, object] = {}
    try:
        assert server.wait_for_clients() == frozenset()  # nobody in time
        assert server.never_joined() == (0, 1, 2)

        def device() -> None:
            try:
                result["report"] = run_device(
                    server.address,
                    1,
                    load_identity_key(pki.client_keys[1]),
                    lambda r, j: np.zeros(4, dtype=np.uint32),
                    ClientTLS(pki.ca_cert.read_bytes()),
                    round_inputs=lambda info: np.zeros(4, dtype=np.uint32),
                    poll_seconds=1.0,
                )
            except JobMissed as exc:
                result["missed"] = exc

        thread = threading.Thread(target=device)
        thread.start()
        end = time.monotonic() + 20
        while 1 in server.never_joined() and time.monotonic() < end:
            time.sleep(0.05)
        assert server.never_joined() == (0, 2)
        assert server.late_joined() == (1,)
        server.finish()
        thread.join(30)
    finally:
        server.stop()
    assert "report" not in result
    assert "joined" in str(result["missed"]) and "after the join deadline" in str(result["missed"])
