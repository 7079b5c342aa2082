"""Benchmark: one Flower round with Flower's SecAgg+ and one with privagg's mod, same run.

One Flower simulation (the Ray engine, one actor), one ServerApp, the same ClientApp, the
same devices and the same model (an MLP of ``--hidden`` units on 64 inputs, d floats):
round A runs ``SecAggPlusWorkflow`` + ``secaggplus_mod`` (full graph, threshold n/2 + 1),
round B runs ``PrivaggWorkflow`` + ``privagg_mod`` (distributed DDG noise, secure RNG,
SecAgg on the full graph with the same threshold, a signed ledger), round C is plain
FedAvg (no secure aggregation, no DP: the engine's own floor). All start from the same
initial weights, after one untimed warm-up round, alternating A, B, C ``--repeats`` times;
each figure is the best wall time of the fit workflow (every stage, the devices' training
and the engine's message polling included). No dropouts: Flower's workflow waits forever
on a silent device unless given a timeout.

flwr is not a privagg dependency: run in ``.venv-flower`` (``make flower-venv``); run with
another interpreter, the script re-executes itself there, or says why it cannot.

    .venv-flower/bin/python benchmarks/bench_flower_mod.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FLOWER_PYTHON = REPO / ".venv-flower" / "bin" / "python"


def _reexec_in_flower_venv() -> None:
    if importlib.util.find_spec("flwr") is not None:
        return
    if not FLOWER_PYTHON.exists():
        print(
            f"# bench_flower_mod skipped: flwr missing and {FLOWER_PYTHON} absent "
            "(make flower-venv)"
        )
        sys.exit(0)
    os.execv(str(FLOWER_PYTHON), [str(FLOWER_PYTHON), __file__, *sys.argv[1:]])


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    from flwr.app import Context
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters
    from flwr.common.secure_aggregation.secaggplus_constants import (
        RECORD_KEY_CONFIGS as SECAGGPLUS_CONFIGS,
    )
    from flwr.server import ServerApp, ServerConfig
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.default_workflows import default_fit_workflow
    from flwr.simulation import run_simulation

    import secagg
    from dp.budget import BudgetPolicy
    from dp.ledger import PrivacyLedger
    from privagg.flower import PrivaggWorkflow, backend_config, privagg_mod, wire

    n, hidden = args.clients, args.hidden
    threshold = n // 2 + 1
    rng = np.random.default_rng(0)
    x_all = rng.random((n * 32, 64), dtype=np.float32)
    y_all = rng.integers(0, 10, n * 32)

    def make_model() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10)
        )

    def weights(model: torch.nn.Module) -> list[np.ndarray]:
        return [p.detach().numpy().copy() for p in model.state_dict().values()]

    initial = weights(make_model())
    dimension = sum(int(a.size) for a in initial)

    class Device(NumPyClient):  # type: ignore[misc]
        def __init__(self, part: int) -> None:
            self.x = torch.from_numpy(x_all[part * 32 : (part + 1) * 32])
            self.y = torch.from_numpy(y_all[part * 32 : (part + 1) * 32])

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            model = make_model()
            keys = list(model.state_dict())
            model.load_state_dict(
                {k: torch.from_numpy(w) for k, w in zip(keys, parameters, strict=True)}
            )
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(self.x), self.y).backward()
            opt.step()
            return weights(model), 32, {}

    def either_mod(msg: Any, ctxt: Any, call_next: Any) -> Any:
        # Route each round's messages to the mod of the workflow that sent them.
        records = msg.content.config_records if msg.has_content() else {}
        if wire.CONFIG_KEY in records:
            return privagg_mod(msg, ctxt, call_next)
        if SECAGGPLUS_CONFIGS in records:
            return secaggplus_mod(msg, ctxt, call_next)
        return call_next(msg, ctxt)

    client_app = ClientApp(
        client_fn=lambda context: Device(int(context.node_config["partition-id"])).to_client(),
        mods=[either_mod],
    )
    timings: dict[str, list[float]] = {"flower_secaggplus": [], "privagg": [], "plain_fedavg": []}
    extra: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-flower-mod-"))

    def timed(name: str, workflow: Any) -> Any:
        def call(grid: Any, context: Any) -> None:
            start = time.perf_counter()
            workflow(grid, context)
            timings[name].append(time.perf_counter() - start)

        return call

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Any, context: Context) -> None:
        def legacy() -> Any:
            strategy = FedAvg(
                fraction_fit=1.0,
                fraction_evaluate=0.0,
                min_fit_clients=n,
                min_available_clients=n,
                initial_parameters=ndarrays_to_parameters(initial),
            )
            return LegacyContext(
                context=context, config=ServerConfig(num_rounds=1), strategy=strategy
            )

        # Warm-up (untimed): the actor's first message imports torch and builds the model.
        DefaultWorkflow()(grid, legacy())
        flower = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=threshold)
        ledger = PrivacyLedger.create(
            tmp / "ledger.sqlite",
            policy=BudgetPolicy(delta=1e-5),
            signing_key=secagg.SigningKey.generate(),
        )
        ours = PrivaggWorkflow(
            clip_norm=1.0, noise_multiplier=1.0, ledger=ledger, graph="full", dropout_rate=0.1
        )
        # Alternate the two, so load from the shared machine falls on both alike.
        for _ in range(args.repeats):
            DefaultWorkflow(fit_workflow=timed("flower_secaggplus", flower))(grid, legacy())
            DefaultWorkflow(fit_workflow=timed("privagg", ours))(grid, legacy())
            # The same round with no secure aggregation and no DP: the engine's own floor.
            DefaultWorkflow(fit_workflow=timed("plain_fedavg", default_fit_workflow))(
                grid, legacy()
            )
        report = ours.reports[-1]
        extra.update(
            privagg_status=[r.status for r in ours.reports],
            privagg_contributors=len(report.included),
            privagg_threshold=report.offer.threshold if report.offer else None,
            privagg_upload_bytes_per_device=report.upload_bytes / n,
            privagg_download_bytes_per_device=report.download_bytes / n,
            privagg_epsilon_after_all_rounds=report.epsilon,
        )
        ledger.close()

    logging.getLogger("flwr").setLevel(logging.WARNING)
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=n,
        backend_config=backend_config(1),  # type: ignore[arg-type]
    )
    import flwr

    best = {name: min(values) for name, values in timings.items()}
    return {
        "benchmark": "bench_flower_mod",
        "env": {
            "python": platform.python_version(),
            "flwr": flwr.__version__,
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
        },
        "clients": n,
        "dimension": dimension,
        "threshold": threshold,
        "graph": "full",
        "dropouts": 0,
        "repeats": args.repeats,
        "flower_secaggplus_round_s": best["flower_secaggplus"],
        "privagg_round_s": best["privagg"],
        "plain_fedavg_round_s": best["plain_fedavg"],
        "flower_over_privagg": best["flower_secaggplus"] / best["privagg"],
        "all_rounds_s": timings,
        **extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=1536, help="hidden units (d ≈ 75·hidden)")
    ap.add_argument("--repeats", type=int, default=2, help="timed rounds of each kind")
    args = ap.parse_args()
    _reexec_in_flower_venv()
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_flower_mod.json"
    path.write_text(json.dumps(result, indent=1))
    print(
        f"flower SecAgg+ round {result['flower_secaggplus_round_s']:.2f} s, privagg round "
        f"{result['privagg_round_s']:.2f} s (x{result['flower_over_privagg']:.1f}), plain "
        f"FedAvg {result['plain_fedavg_round_s']:.2f} s; "
        f"n={result['clients']}, d={result['dimension']}; wrote {path}"
    )


if __name__ == "__main__":
    main()
