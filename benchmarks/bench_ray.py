"""Speed-up of the Ray executor over the local executor at 10^4 and 10^5 synthetic users
per round.

Client work per device: the popularity task's local update (item-count vector, capped),
distributed discrete-Gaussian encoding into Z_2^32 and SecAgg+ masking; the cohort is
aggregated in SecAgg+ groups of ``--group`` devices (as the trainer does), 2.5% dropouts.
The local executor runs everything in one process; the Ray executor spreads the shards over
2 actors on a local Ray instance with 2 CPUs; the SecAgg server stays in the driver in both.

A round of N users is N / group independent SecAgg group rounds run one after the other,
so ``--max-groups K`` measures the first K groups of a size and scales the time by
(groups / K); the JSON and the printout label such figures ``extrapolated`` (used when the
whole round does not fit in the time available on this shared machine; the per-group time
is stationary). Goal (issue 9): report the measured speed-up and its projection (Amdahl)
on a cluster.
Usage: ``python benchmarks/bench_ray.py --out DIR [--quick] [--users 10000,100000]
[--max-groups K]``. The machine is shared: timings are noisy.
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


def _one_round(
    executor: Executor, work: EncodeWork, users: int, group: int, max_groups: int | None = None
) -> dict[str, float]:
    """One round over ``users`` devices (or its first ``max_groups`` groups, scaled up)."""
    start = time.perf_counter()
    work_s = 0.0
    rng = np.random.default_rng(0)
    starts = list(range(0, users, group))
    ran = starts if max_groups is None else starts[:max_groups]
    for lo in ran:
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
    scale = len(starts) / len(ran)
    return {
        "wall": (time.perf_counter() - start) * scale,
        "work": work_s * scale,
        "groups": len(starts),
        "groups_measured": len(ran),
    }


def _measure(users: int, group: int, max_groups: int | None) -> dict[str, object]:
    group = min(group, users)
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
    local = _one_round(LocalExecutor(shard_size=250), work, users, group, max_groups)
    ray_exec = RayExecutor(num_actors=2, shard_size=250, num_cpus=2)
    try:
        _one_round(ray_exec, work, min(users, 2 * group), group, 1)  # warm the actors up
        remote = _one_round(ray_exec, work, users, group, max_groups)
    finally:
        ray_exec.close()
    speedup = local["wall"] / remote["wall"]
    # Amdahl: the driver (SecAgg server, message routing) is serial; device work scales.
    serial = max(local["wall"] - local["work"], 1e-9) / local["wall"]
    projected = {str(k): 1.0 / (serial + (1 - serial) / k) for k in (2, 8, 32, 128)}
    extrapolated = local["groups_measured"] < local["groups"]
    return {
        "users": users,
        "group": group,
        "dimension": plan.padded_dimension,
        "groups": local["groups"],
        "groups_measured": local["groups_measured"],
        "extrapolated": extrapolated,
        "local_seconds": local["wall"],
        "local_client_work_seconds": local["work"],
        "ray_seconds": remote["wall"],
        "speedup": speedup,
        "serial_fraction": serial,
        "projected_speedup_by_workers": projected,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true", help="2000 users instead")
    parser.add_argument("--users", default=None, help="comma-separated sizes (10000,100000)")
    parser.add_argument("--group", type=int, default=2500, help="devices per SecAgg+ group")
    parser.add_argument(
        "--max-groups",
        type=int,
        default=None,
        help="measure only the first K groups of each size and scale up (labelled)",
    )
    args = parser.parse_args()
    sizes = (
        [int(u) for u in args.users.split(",")]
        if args.users
        else [2000]
        if args.quick
        else [10_000, 100_000]
    )
    warnings.simplefilter("ignore", NonSecureRandomnessWarning)
    results = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for users in sizes:
        r = _measure(users, args.group, args.max_groups)
        results.append(r)
        (out / "bench_ray.json").write_text(json.dumps({"sizes": results}, indent=2))
        label = (
            f" (extrapolated from {r['groups_measured']} of {r['groups']} groups)"
            if r["extrapolated"]
            else ""
        )
        print(f"users/round {users} (SecAgg+ groups of {r['group']}, d={r['dimension']}){label}")
        print(
            f"  local executor   {r['local_seconds']:.2f} s/round "
            f"(device work incl. masking {r['local_client_work_seconds']:.2f} s)"
        )
        print(f"  ray executor     {r['ray_seconds']:.2f} s/round on 2 actors / 2 CPUs")
        print(f"  speed-up         {r['speedup']:.2f}x (shared 2-core machine, noisy)")
        projected = r["projected_speedup_by_workers"]
        assert isinstance(projected, dict)
        print(
            f"  projected        serial fraction {r['serial_fraction']:.2f}: "
            + ", ".join(f"{k} workers {v:.1f}x" for k, v in projected.items())
        )


if __name__ == "__main__":
    main()
