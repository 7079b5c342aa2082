"""Flower SecAgg / SecAgg+ rounds for ``bench_secagg_rounds.py`` (runs in .venv-flower).

Imports the reference harness ``bench_flower_secagg.py`` (shared research; it drives
Flower's real ``SecAggWorkflow`` / ``SecAggPlusWorkflow`` and ``secaggplus_mod`` through an
in-memory grid) and runs only the configurations asked for, writing their results as JSON.
Never imported by privagg: flwr is a benchmark-only dependency.

    python _flower_rounds.py --harness PATH --out OUT.json --config secagg:100:1.0:51 ...
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--harness", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--d", type=int, default=100_000)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--poc", action="store_true", help="also run the two §3.6 attacks")
    ap.add_argument(
        "--config",
        action="append",
        default=[],
        help="workflow:n:num_shares:threshold (workflow = secagg or secaggplus)",
    )
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("bench_flower_secagg", args.harness)
    if spec is None or spec.loader is None:
        sys.exit(f"cannot load the Flower harness from {args.harness}")
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    logging.getLogger("flwr").setLevel(logging.WARNING)  # after flwr set up its logger
    results = []
    for item in args.config:
        workflow, n, shares, threshold = item.split(":")
        num_shares = float(shares) if "." in shares else int(shares)
        start = time.perf_counter()
        run = harness.run_e2e(
            int(n), args.d, args.dropout, workflow, num_shares, int(threshold), seed=0
        )
        run["config"] = item
        run["wall_s"] = time.perf_counter() - start
        run["flwr"] = harness.flwr.__version__
        results.append(run)
        print(
            f"  flower {item}: total {run['total_sequential_s']:.2f} s, "
            f"server {run['server_total_s']:.2f} s",
            flush=True,
        )
        args.out.write_text(json.dumps(results, indent=1, default=str))
    if args.poc:
        attack = harness.poc_unmask_both_shares()
        overflow = harness.poc_overflow()
        print(f"  flower attack: victim in both lists -> {attack}", flush=True)
        print(f"  flower overflow (errors should be ~1e-6): {overflow}", flush=True)
        results.append({"config": "poc", "unmask_both_shares": attack, "overflow": overflow})
        args.out.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
