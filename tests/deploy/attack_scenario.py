"""The loopback load scenario of issue 15 (observation 7): honest ``privagg client``
processes run a fixed aggregation job against a ``privagg serve`` process while this
process attacks the server, or does not (the baseline).

The attack: an outsider (no identity key, no client certificate) holding ``streams``
stalled streams, and registered client ``devices`` (the job registers one more client than
there are honest devices: the attacker's own identity) keeping ``polls`` bogus long-polls
in flight. Used by ``tests/deploy/test_deploy_attack.py`` (small) and by
``benchmarks/bench_deploy.py --attack`` (20 devices, 200 + 200).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from attackers import LongPollFlood, StalledStreams
from processes import PRIVAGG, read_until, reap, spawn

import secagg
from protocols.net import load_identity_key, make_local_pki

VECTOR = 256


def run_scenario(
    tmp: Path,
    *,
    devices: int,
    rounds: int,
    streams: int,
    polls: int,
    attack: bool,
    stage_deadline: float = 20.0,
    join_deadline: float = 60.0,
) -> dict[str, Any]:
    """Run the job once; return per-round seconds and sizes, whether every round summed
    exactly the honest devices' inputs, device exit codes and the attackers' call counts."""
    tmp.mkdir(parents=True, exist_ok=True)
    n = devices + 1  # the last registered id is the attacker's
    pki = make_local_pki(tmp / "pki", num_clients=n)
    rng = np.random.default_rng(15)
    data = rng.integers(-(2**20), 2**20, size=(devices, rounds, VECTOR))
    for cid in range(devices):
        np.save(tmp / f"data-{cid}.npy", data[cid])
    config = {
        "job": {
            "num_clients": n,
            "threshold": n // 2 + 1,
            "vector_length": VECTOR,
            "rounds": rounds,
        },
        "listen": "127.0.0.1:0",
        "tls": {"cert": "pki/server.pem", "key": "pki/server.key"},
        "registry": "pki/registry.json",
        "stage_deadline": stage_deadline,
        "join_deadline": join_deadline,
        "linger_seconds": 3,
        "output": "aggregates.json",
    }
    (tmp / "serve.json").write_text(json.dumps(config))
    server = spawn([*PRIVAGG, "serve", "--config", str(tmp / "serve.json")])
    procs: list[Any] = []
    attackers: list[Any] = []
    started = time.monotonic()
    try:
        target = read_until(server, "listening on").split()[-1]
        if attack:
            ca = pki.ca_cert.read_bytes()
            attackers = [
                StalledStreams(target, ca, streams),
                LongPollFlood(
                    target,
                    ca,
                    devices,
                    load_identity_key(pki.client_keys[devices]),
                    polls,
                    seen=1 << 60,
                ),
            ]
            time.sleep(1.0)  # the attack is in place before the first device starts
        for cid in range(devices):
            procs.append(
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
                        str(pki.client_keys[cid]),
                        "--ca",
                        str(pki.ca_cert),
                        "--retry-seconds",
                        "30",
                        "--quiet",
                    ]
                )
            )
        server.wait(timeout=600)
        for proc in procs:
            proc.wait(timeout=300)
    finally:
        attack_seconds = time.monotonic() - started
        for attacker in attackers:
            attacker.close()
        outputs = reap(procs)
        server_out = reap([server])[id(server)]
    result = json.loads((tmp / "aggregates.json").read_text())
    exact = []
    for row in result["rounds"]:
        included = row["included"]
        if row["status"] != "ok" or not included:
            exact.append(False)
            continue
        want = secagg.ring_sum(secagg.to_ring(data[included, row["round"]], 32), 32)
        exact.append(row.get("total") == [int(v) for v in want])
    return {
        "attack": attack,
        "devices": devices,
        "rounds": len(result["rounds"]),
        "round_seconds": [row["seconds"] for row in result["rounds"]],
        "included": [len(row["included"]) for row in result["rounds"]],
        "exact": exact,
        "status": [row["status"] for row in result["rounds"]],
        "never_joined": result.get("never_joined"),
        "device_exit_codes": [proc.returncode for proc in procs],
        "device_errors": [outputs[id(p)][1].strip() for p in procs if p.returncode != 0],
        "server_exit_code": server.returncode,
        "server_stdout": server_out[0].splitlines()[-6:],
        "attack_seconds": attack_seconds,
        "outsider_calls": dict(attackers[0].codes) if attackers else {},
        "flood_calls": dict(attackers[1].codes) if attackers else {},
        "outsider_peak_in_flight": attackers[0].peak_in_flight if attackers else 0,
        "flood_peak_in_flight": attackers[1].peak_in_flight if attackers else 0,
        "streams": streams if attack else 0,
        "polls": polls if attack else 0,
    }
