"""Benchmark: whole SecAgg / SecAgg+ rounds of privagg vs Flower, in the same run.

All clients are simulated one after another in one process (as in the Flower baseline of
``../shared/research/secagg.md`` §3.4); 10 % of the clients vanish after sharing keys
(before sending their masked input, the expensive case for the server). Every privagg
round is checked bit for bit against the plain modular sum of the included inputs.

Flower (flwr) is never a privagg dependency: it runs in its own virtualenv
(``.venv-flower``, created by ``make bench``) through ``benchmarks/_flower_rounds.py``,
which drives Flower's real workflow + client mod via the shared reference harness.
Figures Flower cannot produce in reasonable time (n = 500 full graph, about 12 h) are
quoted from the research notes and labelled "recorded".

    python benchmarks/bench_secagg_rounds.py --out benchmarks/results [--quick] [--no-flower]

Timings on a shared 2-core machine are noisy; the JSON keeps every raw number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import protocols
import secagg
from protocols import SecAggConfig, run_secagg
from protocols.server import SecAggServer

REPO = Path(__file__).resolve().parents[1]
FLOWER_PYTHON = REPO / ".venv-flower" / "bin" / "python"
FLOWER_HARNESS = REPO.parent / "shared" / "bench" / "bench_flower_secagg.py"
DROPOUT = 0.1

# Flower 1.42.0 on this machine, from ../shared/research/secagg.md §3.4 / §3.5
# (used only when Flower is not measured in this run).
RECORDED_FLOWER = {
    "full-n100": {"total_s": 238.8, "server_s": 108.1, "source": "recorded §3.4"},
    "plus-n500-k18": {"total_s": 62.0, "server_s": 30.0, "source": "recorded §3.4"},
    "plus-n100-k14": {"total_s": 8.64, "server_s": 4.16, "source": "recorded §3.4"},
    "full-n500": {"total_s": 12.1 * 3600, "server_s": 20_175.0, "source": "model §3.5"},
}
FLOWER_CONFIG = {  # workflow:n:num_shares (incl. self):threshold
    "full-n100": "secagg:100:1.0:51",
    "plus-n500-k18": "secaggplus:500:19:10",
    "plus-n100-k14": "secaggplus:100:15:8",
}


@dataclass(frozen=True)
class Case:
    name: str
    config: SecAggConfig
    d: int
    goal_total_s: float | None
    goal_server_s: float | None
    note: str
    bounded_inputs: bool = False  # centered inputs with a proven no-overflow budget


def cases(quick: bool) -> list[Case]:
    d = 100_000
    out = [
        Case("full-n100", SecAggConfig(100, 51), d, 2.5, 0.3, "full graph, n=100, t=51"),
        Case(
            "plus-n500-k18",
            SecAggConfig(500, 10, neighbors=18),
            d,
            3.5,
            0.3,
            "SecAgg+, n=500, k=18 (+self = Flower's num_shares=19), t=10",
        ),
        Case(
            "plus-n100-k14",
            SecAggConfig(100, 8, neighbors=14),
            d,
            None,
            None,
            "SecAgg+, n=100, k=14 (+self = Flower's num_shares=15), t=8",
        ),
    ]
    if not quick:
        bell500 = SecAggConfig.plus(500, dropout_rate=DROPOUT)
        big = SecAggConfig.plus(1000, dropout_rate=DROPOUT, max_abs_input=2**20)
        out += [
            Case(
                "plus-n500-bell",
                bell500,
                d,
                None,
                None,
                f"SecAgg+ from SecAggConfig.plus(500, dropout_rate=0.1): "
                f"k={bell500.neighbors}, t={bell500.threshold}",
            ),
            Case("full-n500", SecAggConfig(500, 251), d, 60.0, 15.0, "full graph, n=500, t=251"),
            Case(
                "plus-n1000-d311744",
                big,
                311_744,
                20.0,
                2.0,
                f"SecAgg+ from plus(1000, 0.1): k={big.neighbors}, t={big.threshold}, "
                "d=311,744 (9,742 items x 32), inputs |x| <= 2^20",
                bounded_inputs=True,
            ),
        ]
    return out


def make_inputs(case: Case, rng: np.random.Generator) -> np.ndarray:
    n = case.config.num_clients
    if case.bounded_inputs:
        # int32 values in [-2^20, 2^20], viewed as their residues in Z_2^32 (no copy)
        return rng.integers(-(2**20), 2**20, size=(n, case.d), dtype=np.int32).view(np.uint32)
    return rng.integers(0, 2**32, size=(n, case.d), dtype=np.uint32)


def check_exact(case: Case, x: np.ndarray, result: protocols.SecAggResult) -> bool:
    excluded = sorted(set(range(case.config.num_clients)) - set(result.included))
    if case.bounded_inputs:
        signed = x.view(np.int32)
        expected = signed.sum(axis=0, dtype=np.int64)
        for row in excluded:
            expected -= signed[row]
        got = secagg.centered_lift(result.total, 32)
        return bool(np.array_equal(got, expected))  # exact integers: nothing wrapped
    expected_ring = x.sum(axis=0, dtype=np.uint32)
    for row in excluded:
        expected_ring -= x[row]
    return bool(np.array_equal(result.total, expected_ring))


def drop_plan(case: Case, rng: np.random.Generator) -> dict[str, list[int]]:
    n = case.config.num_clients
    return {"mask": sorted(rng.choice(n, size=round(DROPOUT * n), replace=False).tolist())}


def deep_size(root: object) -> int:
    """Bytes held by ``root``: containers, dataclass fields, bytes and numpy buffers."""
    seen: set[int] = set()
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, (int, float, bool, str, type)):
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            base = obj if obj.base is None else obj.base
            if id(base) not in seen or base is obj:
                seen.add(id(base))
                total += obj.nbytes if base is obj else sys.getsizeof(base)
            continue
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__"):
            stack.extend(vars(obj).values())
    return total


def server_peak_bytes(run: Callable[[], protocols.SecAggResult]) -> int:
    """Server peak memory = its retained state + the transient peak of its steps.

    Retained state is the deep size of the server object (accumulator, stored messages,
    keys) before each stage closes; the transient peak is what tracemalloc sees allocated
    during each ``receive_bytes`` / ``advance`` call, tracing only server calls (clients
    run untraced). The caller's input matrix and the clients' memory are not counted.
    """
    original_advance, original_receive = SecAggServer.advance, SecAggServer.receive_bytes
    peak = 0
    transient = 0

    def traced(call: Callable[[], Any]) -> Any:
        nonlocal transient
        tracemalloc.start(1)
        try:
            return call()
        finally:
            transient = max(transient, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    def advance(self: SecAggServer) -> Any:
        nonlocal peak, transient
        retained = deep_size(self)
        try:
            return traced(lambda: original_advance(self))
        finally:
            peak = max(peak, retained + transient, deep_size(self))
            transient = 0

    def receive_bytes(self: SecAggServer, sender: int, data: bytes) -> None:
        traced(lambda: original_receive(self, sender, data))

    SecAggServer.advance = advance  # type: ignore[method-assign]
    SecAggServer.receive_bytes = receive_bytes  # type: ignore[method-assign]
    try:
        run()
    finally:
        SecAggServer.advance = original_advance  # type: ignore[method-assign]
        SecAggServer.receive_bytes = original_receive  # type: ignore[method-assign]
    return peak


def run_privagg(case: Case, repeats: int, memory: bool) -> dict[str, Any]:
    rng = np.random.default_rng(2026)
    x = make_inputs(case, rng)
    drop = drop_plan(case, rng)
    runs = []
    for rep in range(repeats):
        result = run_secagg(x, case.config, drop=drop, seed=rep)
        if not check_exact(case, x, result):
            raise SystemExit(f"{case.name}: WRONG AGGREGATE")
        runs.append(result)
    best = sorted(runs, key=lambda r: r.wall_seconds)[len(runs) // 2]
    mask = best.stage("mask")
    record: dict[str, Any] = {
        "case": case.name,
        "note": case.note,
        "n": case.config.num_clients,
        "t": case.config.threshold,
        "neighbors": case.config.degree,
        "d": case.d,
        "dropped": len(drop["mask"]),
        "exact": True,
        "total_s": best.wall_seconds,
        "total_s_all": [r.wall_seconds for r in runs],
        "server_s": best.server_seconds,
        "client_s": best.client_seconds,
        "client_median_s": sum(s.client_seconds_median for s in best.stages),
        "masked_upload_bytes_per_client": mask.upload_bytes_per_client_max,
        "upload_bytes_per_coordinate": mask.upload_bytes_per_client_max / case.d,
        "upload_bytes_per_client_total": best.upload_bytes_per_client,
        "stages": [s.__dict__ for s in best.stages],
        "goal_total_s": case.goal_total_s,
        "goal_server_s": case.goal_server_s,
    }
    if memory:
        record["server_peak_bytes"] = server_peak_bytes(
            lambda: run_secagg(x, case.config, drop=drop, seed=0)
        )
    return record


def run_flower(names: list[str], quick: bool, out_dir: Path) -> dict[str, dict[str, Any]]:
    if not FLOWER_PYTHON.exists():
        print(f"# Flower skipped: {FLOWER_PYTHON} missing (make bench creates it)")
        return {}
    if not FLOWER_HARNESS.exists():
        print(f"# Flower skipped: reference harness {FLOWER_HARNESS} missing")
        return {}
    out = out_dir / "flower_rounds.json"
    cmd = [
        str(FLOWER_PYTHON),
        str(REPO / "benchmarks" / "_flower_rounds.py"),
        "--harness",
        str(FLOWER_HARNESS),
        "--out",
        str(out),
        "--dropout",
        str(DROPOUT),
    ]
    for name in names:
        cmd += ["--config", FLOWER_CONFIG[name]]
    if not quick:
        cmd.append("--poc")
    print(f"# running Flower ({', '.join(names)}) in {FLOWER_PYTHON.parent.parent.name}")
    subprocess.run(cmd, check=True)
    runs = json.loads(out.read_text())
    poc = [r for r in runs if r["config"] == "poc"]
    runs = [r for r in runs if r["config"] != "poc"]
    by_config = {FLOWER_CONFIG[name]: name for name in names}
    measured = {
        by_config[r["config"]]: {
            "total_s": r["total_sequential_s"],
            "server_s": r["server_total_s"],
            "client_median_s": r["client_median_total_s"],
            "masked_upload_bytes_per_client": r["stages"]["collect_masked_vectors"][
                "upload_bytes_median"
            ],
            "source": f"measured in this run (flwr {r['flwr']})",
        }
        for r in runs
    }
    if poc:
        measured["attacks"] = poc[0]
    return measured


def fmt_ratio(theirs: float | None, ours: float) -> str:
    return f"{theirs / ours:,.0f}x" if theirs else "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--quick", action="store_true", help="smoke run: small set, 1 repeat")
    ap.add_argument("--no-flower", action="store_true", help="do not run Flower")
    ap.add_argument(
        "--skip-flower-full", action="store_true", help="skip Flower full graph n=100 (~4 min)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    repeats = 1 if args.quick else args.repeats
    env = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
    }
    print("# env", json.dumps(env))
    results: dict[str, Any] = {"env": env, "dropout": DROPOUT, "privagg": [], "flower": {}}
    for case in cases(args.quick):
        memory = case.name in ("full-n100", "plus-n500-k18") or (case.name == "plus-n1000-d311744")
        t0 = time.perf_counter()
        rec = run_privagg(
            case, 1 if case.d > 100_000 or case.name == "full-n500" else repeats, memory
        )
        results["privagg"].append(rec)
        mem = rec.get("server_peak_bytes")
        print(
            f"privagg {case.name:19s} total {rec['total_s']:7.2f} s  server "
            f"{rec['server_s']:6.3f} s  client median {rec['client_median_s'] * 1e3:6.1f} ms  "
            f"upload {rec['upload_bytes_per_coordinate']:.2f} B/coord"
            + (f"  server peak {mem / 2**20:.1f} MiB" if mem else "")
            + f"  exact  [{time.perf_counter() - t0:.0f} s incl. setup]",
            flush=True,
        )
    flower_names = ["plus-n100-k14"]
    if not args.quick:
        flower_names.append("plus-n500-k18")
        if not args.skip_flower_full:
            flower_names.insert(0, "full-n100")
    measured = {} if args.no_flower else run_flower(flower_names, args.quick, args.out)
    results["flower"] = measured
    print("\n# figures (goal | ratio vs Flower; Flower source in brackets)")
    for rec in results["privagg"]:
        name = rec["case"]
        flower = measured.get(name) or RECORDED_FLOWER.get(name)
        print(f"{name:19s} {rec['note']}")
        for label, key, digits in (("round", "total_s", 2), ("server", "server_s", 3)):
            ours, goal = rec[key], rec["goal_" + key]
            verdict = "" if goal is None else (" met" if ours <= goal else " MISSED")
            goal_text = f" (goal <= {goal} s{verdict})" if goal is not None else ""
            theirs = flower[key] if flower else None
            versus = (
                f" | Flower {theirs:,.1f} s [{flower['source']}] -> {fmt_ratio(theirs, ours)}"
                if flower and theirs
                else " | no Flower figure"
            )
            print(f"    {label} {ours:.{digits}f} s{goal_text}{versus}")
        fl_up = (flower or {}).get("masked_upload_bytes_per_client")
        print(
            f"    masked upload {rec['masked_upload_bytes_per_client']:,} B/client = "
            f"{rec['upload_bytes_per_coordinate']:.3f} B/coord (goal 4)"
            + (
                f" | Flower {fl_up:,.0f} B -> {fl_up / rec['masked_upload_bytes_per_client']:.2f}x"
                if fl_up
                else ""
            )
        )
    attacks = measured.get("attacks")
    if attacks:
        print(
            "flower attacks (same run): victim-in-both-lists unmasking "
            f"{'SUCCEEDED' if attacks['unmask_both_shares']['attack_succeeded'] else 'failed'}"
            f"; overflow max error {attacks['overflow']} -- both fail against privagg "
            "(tests/protocols/test_protocols_attacks.py)"
        )
    results["env"]["loadavg_end"] = os.getloadavg()
    results["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    path = args.out / "bench_secagg_rounds.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    print(
        f"\nwrote {path}  (process max RSS {results['max_rss_bytes'] / 2**30:.2f} GiB; "
        f"loadavg {results['env']['loadavg_end'][0]:.1f} on {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
