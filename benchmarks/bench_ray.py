"""Speed-up of the Ray executor over the local executor at 10^4 synthetic users per round.

Client work per device: the popularity task's local update (item-count vector, capped),
distributed discrete-Gaussian encoding into Z_2^32 and SecAgg+ masking; the cohort is
aggregated in SecAgg+ groups of ``--group`` devices (as the trainer does), 5% dropouts.
The local executor runs everything in one process; the Ray executor spreads the shards over
2 actors on a local Ray instance with 2 CPUs; the SecAgg server stays in the driver in both.
Goal (issue 9): report the measured speed-up and its projection (Amdahl) on a cluster.
Usage: ``python benchmarks/bench_ray.py --out DIR [--quick] [--users N]``.
The machine is shared: timings are noisy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np

import protocols
from dp.planning import plan_distributed_dp
from dp.rng import NonSecureRandomnessWarning
from recsys.data import synthetic_ratings
from recsys.executors import EncodeWork, Executor, LocalExecutor, RayExecutor
from recsys.features import item_features
from recsys.federated import DeviceFleet, ItemServer, PopularityTask
from recsys.split import leave_last_out


def _one_round(executor: Executor, work: EncodeWork, users: int, group: int) -> dict[str, float]:
    start = time.perf_counter()
    work_s = 0.0
    rng = np.random.default_rng(0)
    for lo in range(0, users, group):
        ids = np.arange(lo, min(users, lo + group), dtype=np.int64)
        config = protocols.SecAggConfig.plus(len(ids), dropout_rate=0.05)
        gone = rng.choice(len(ids), size=len(ids) // 40, replace=False).tolist()
        out = executor.aggregate(
            work,
            ids,
            config,
            work.plan.padded_dimension,
            round_number=lo,
            graph_seed=hashlib.sha256(b"bench%d" % lo).digest(),
            drop={"mask": gone},
        )
        work_s += out.work_seconds + out.protocol_seconds
    return {"wall": time.perf_counter() - start, "work": work_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true", help="2000 users instead of 10^4")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--group", type=int, default=2500, help="devices per SecAgg+ group")
    args = parser.parse_args()
    users = args.users or (2000 if args.quick else 10_000)
    group = min(args.group, users)
    warnings.simplefilter("ignore", NonSecureRandomnessWarning)
    ratings = synthetic_ratings(users, 300, seed=0, mean_activity=20, min_activity=5)
    split = leave_last_out(ratings)
    task = PopularityTask(split.train.num_items, cap=20)
    plan = plan_distributed_dp(
        dimension=task.upload_dim,
        expected_contributors=group,
        min_contributors=group // 2,
        clip_norm=task.clip_norm,
        noise_multiplier=1.0,
        bits=32,
    )
    fleet = DeviceFleet(split.train, item_features(ratings))
    work = EncodeWork(fleet, ItemServer(split.train.num_items), task, plan, 1, 32, noise_seed=3)
    local = _one_round(LocalExecutor(shard_size=250), work, users, group)
    ray_exec = RayExecutor(num_actors=2, shard_size=250, num_cpus=2)
    try:
        _one_round(ray_exec, work, min(users, 2 * group), group)  # warm the actors up
        remote = _one_round(ray_exec, work, users, group)
    finally:
        ray_exec.close()
    speedup = local["wall"] / remote["wall"]
    # Amdahl: the driver (SecAgg server, message routing) is serial; device work scales.
    serial = max(local["wall"] - local["work"], 1e-9) / local["wall"]
    projected = {str(k): 1.0 / (serial + (1 - serial) / k) for k in (2, 8, 32, 128)}
    result = {
        "users": users,
        "group": group,
        "dimension": plan.padded_dimension,
        "local_seconds": local["wall"],
        "local_client_work_seconds": local["work"],
        "ray_seconds": remote["wall"],
        "speedup": speedup,
        "serial_fraction": serial,
        "projected_speedup_by_workers": projected,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_ray.json").write_text(json.dumps(result, indent=2))
    print(f"users/round {users} (SecAgg+ groups of {group}, d={plan.padded_dimension})")
    print(
        f"local executor   {local['wall']:.2f} s/round "
        f"(device work incl. masking {local['work']:.2f} s)"
    )
    print(f"ray executor     {remote['wall']:.2f} s/round on 2 actors / 2 CPUs")
    print(f"speed-up         {speedup:.2f}x (goal: > 1 on 2 cores; shared machine, noisy)")
    print(
        f"projected        serial fraction {serial:.2f}: "
        + ", ".join(f"{k} workers {v:.1f}x" for k, v in projected.items())
    )


if __name__ == "__main__":
    main()
