"""Seconds per release of the federated trainer over gRPC + TLS vs in-process, same job.

The job: the recommender (popularity release, then FCF rounds) on a seeded synthetic
population, distributed DP with secure noise under SecAgg+, every device every round, no
dropouts. Three runs of the same ``Trainer``:

* ``in_process``: the default in-process simulation (``Trainer.run()``);
* ``local_executor``: the devices on ``LocalExecutor(shard_size=1)`` in this process (the
  layout of real devices: one noise stream per device, one SecAgg client object each);
* ``grpc``: a per-round network job (``recsys.remote``) on 127.0.0.1 with one
  ``privagg client`` process per device, TLS and signed requests.

Per-release seconds come from the trainer's ``RoundRecord.seconds`` (local update,
encoding, SecAgg, decoding, server step, evaluation). All processes share this machine's
cores, so the gRPC figure includes the devices' compute time-sliced on those cores.
Usage: ``python benchmarks/bench_deploy.py --out DIR [--users 20] [--items 200]
[--rounds 3]``; writes ``DIR/bench_deploy.json`` and prints the ratio.

``--attack`` measures availability under attack instead (issue 15, observation 7): a fixed
aggregation job of ``--users`` honest ``privagg client`` processes and ``--rounds`` rounds
against ``privagg serve``, once without and once with an attacker in this process holding
``--streams`` stalled streams (an outsider: no identity key, no client certificate) and
``--polls`` bogus long-polls (a registered client). Writes ``DIR/bench_deploy_attack.json``
with each run's per-round seconds, included devices, exactness and the attacker's calls
by gRPC status, and the ratio of mean round times (attacked / baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from protocols.net import AggregationServer, ServerTLS, load_registry, make_local_pki
from recsys.data import synthetic_ratings
from recsys.executors import LocalExecutor
from recsys.features import item_features
from recsys.federated import FCFConfig
from recsys.recommender import ModelConfig
from recsys.remote import serve_training, training_job, write_histories
from recsys.split import leave_last_out
from recsys.trainer import RoundRecord, TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "deploy"))  # the loopback scenario and attackers


def _summary(records: tuple[RoundRecord, ...] | list[RoundRecord]) -> dict[str, Any]:
    seconds = [r.seconds for r in records]
    fcf = [r.seconds for r in records if r.task == "fcf"]
    return {
        "seconds_per_release": seconds,
        "mean_seconds": statistics.fmean(seconds),
        "mean_fcf_seconds": statistics.fmean(fcf) if fcf else None,
        "tasks": [r.task for r in records],
    }


def _attack(args: argparse.Namespace) -> None:
    from attack_scenario import run_scenario

    runs = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        for name, attack in (("baseline", False), ("attacked", True)):
            runs[name] = run_scenario(
                Path(tmp_name) / name,
                devices=args.users,
                rounds=args.rounds,
                streams=args.streams,
                polls=args.polls,
                attack=attack,
                join_deadline=args.join_deadline,
            )
    means = {k: statistics.fmean(r["round_seconds"]) for k, r in runs.items()}
    results = {
        **runs,
        "load_average_at_end": list(os.getloadavg()),
        "mean_round_seconds": means,
        "ratio_attacked_over_baseline": means["attacked"] / means["baseline"],
        "all_rounds_exact": all(all(r["exact"]) for r in runs.values()),
        "all_devices_exit_0": all(
            code == 0 for r in runs.values() for code in r["device_exit_codes"]
        ),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_deploy_attack.json").write_text(json.dumps(results, indent=2))
    print(
        f"{args.users} honest devices, {args.rounds} rounds; attacker: {args.streams} stalled "
        f"streams + {args.polls} bogus long-polls"
    )
    for name, r in runs.items():
        per = ", ".join(f"{s:.3f}" for s in r["round_seconds"])
        print(
            f"  {name:9s} {means[name]:.3f} s/round [{per}] included {r['included']} "
            f"exact {all(r['exact'])} exits {sorted(set(r['device_exit_codes']))}"
        )
    print(f"  attacker calls: outsider {runs['attacked']['outsider_calls']}")
    print(f"                  flood    {runs['attacked']['flood_calls']}")
    print(f"  attacked / baseline {results['ratio_attacked_over_baseline']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="FCF rounds")
    parser.add_argument("--attack", action="store_true", help="availability under attack")
    parser.add_argument("--streams", type=int, default=200, help="--attack: stalled streams")
    parser.add_argument("--polls", type=int, default=200, help="--attack: bogus long-polls")
    parser.add_argument(
        "--join-deadline",
        type=float,
        default=180.0,
        help="--attack: seconds the server waits for the devices (the attacker's registered "
        "identity never joins, so every run waits this long before its first round)",
    )
    args = parser.parse_args()
    if args.attack:
        _attack(args)
        return
    ratings = synthetic_ratings(args.users, args.items, seed=0, mean_activity=20, min_activity=5)
    split = leave_last_out(ratings)
    features = item_features(ratings)
    config = TrainConfig(
        privacy="distributed",
        epsilon=8.0,
        rounds=args.rounds,
        secagg="plus",
        dropout=0.0,
        seed=0,
        eval_every=1,
        model=ModelConfig(kind="popfeat+fcf", cap=20, fcf=FCFConfig(dim=4, active_items=100)),
    )
    results: dict[str, Any] = {
        "users": args.users,
        "items": args.items,
        "fcf_rounds": args.rounds,
        "noise": "secure (dp.SecureRng)",
    }
    results["in_process"] = _summary(Trainer(split, features, config).run().records)
    local = Trainer(split, features, config).run(executor=LocalExecutor(shard_size=1))
    results["local_executor"] = _summary(local.records)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pki = make_local_pki(tmp / "pki", num_clients=args.users)
        write_histories(split.train, tmp / "data")
        trainer = Trainer(split, features, config)
        server = AggregationServer(
            training_job(trainer, min_cohort=2),
            load_registry(pki.registry),
            ServerTLS(pki.server_cert.read_bytes(), pki.server_key.read_bytes()),
            stage_deadline=60.0,
            join_deadline=120.0,
            linger_seconds=0.5,
        )
        server.start()
        started = time.perf_counter()
        devices = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "analysis.cli",
                    "client",
                    "--server",
                    server.address,
                    "--id",
                    str(cid),
                    "--data",
                    str(tmp / "data" / f"device-{cid}.npy"),
                    "--key",
                    str(pki.client_keys[cid]),
                    "--ca",
                    str(pki.ca_cert),
                    "--quiet",
                ],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for cid in range(args.users)
        ]
        try:
            result, rounds = serve_training(server, trainer)
        finally:
            server.stop()
            deadline = time.monotonic() + 60
            for proc in devices:
                if proc.poll() is None and time.monotonic() > deadline:
                    proc.kill()
                proc.wait()
        grpc = _summary(result.records)
        grpc["network_round_seconds"] = [r.seconds for r in rounds]
        grpc["included"] = [len(r.included) for r in rounds]
        grpc["wall_seconds_incl_startup"] = time.perf_counter() - started
        results["grpc"] = grpc
    results["ratio_grpc_over_in_process"] = (
        grpc["mean_seconds"] / results["in_process"]["mean_seconds"]
    )
    results["ratio_grpc_over_local_executor"] = (
        grpc["mean_seconds"] / results["local_executor"]["mean_seconds"]
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_deploy.json").write_text(json.dumps(results, indent=2))
    print(f"{args.users} devices, {args.items} items, 1 popularity + {args.rounds} FCF releases")
    for name in ("in_process", "local_executor", "grpc"):
        r = results[name]
        per = ", ".join(f"{s:.3f}" for s in r["seconds_per_release"])
        print(f"  {name:15s} {r['mean_seconds']:.3f} s/release  [{per}]")
    print(
        f"  gRPC / in-process {results['ratio_grpc_over_in_process']:.1f}x, "
        f"gRPC / local executor {results['ratio_grpc_over_local_executor']:.1f}x"
    )


if __name__ == "__main__":
    main()
