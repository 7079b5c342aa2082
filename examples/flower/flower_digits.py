"""Federated learning on scikit-learn's digits in Flower, with privagg's distributed DP and
SecAgg(+) in place of Flower's SecAgg+.

A small PyTorch MLP, 24 simulated devices (Flower's simulation engine), two devices that
crash at the masking stage every round, FedAvg, secure noise drawn on every device, every
round charged in a signed privacy ledger, and the ε printed after each round.

    make flower-venv
    .venv-flower/bin/python examples/flower/flower_digits.py --out runs/flower-digits

Compared with Flower's own secure-aggregation example, three lines differ: the import,
``mods=[privagg_mod]`` (was ``secaggplus_mod``) and ``fit_workflow=PrivaggWorkflow(...)``
(was ``SecAggPlusWorkflow(...)``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Context
from flwr.client import ClientApp, NumPyClient
from flwr.common import ndarrays_to_parameters
from flwr.server import ServerApp, ServerConfig
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow
from flwr.simulation import run_simulation
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import secagg
from dp.budget import BudgetPolicy
from dp.ledger import PrivacyLedger
from privagg.flower import (
    NEIGHBOURING_RELATION,
    PrivaggWorkflow,
    RoundReport,
    backend_config,
    dropout_mod,
    privagg_mod,
)

DELTA = 1e-5


def load(num_clients: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]:
    """Digits scaled to [0, 1], 25 % held out; the rest split into ``num_clients`` shards."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    shards = np.array_split(np.arange(len(x_train)), num_clients)
    return [(x_train[s], y_train[s]) for s in shards], x_test, y_test


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def get_weights(model: torch.nn.Module) -> list[np.ndarray]:
    return [p.detach().cpu().numpy().copy() for p in model.state_dict().values()]


def set_weights(model: torch.nn.Module, weights: list[np.ndarray]) -> None:
    keys = list(model.state_dict())
    model.load_state_dict(
        {k: torch.from_numpy(np.asarray(w)) for k, w in zip(keys, weights, strict=True)}
    )


def accuracy(weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    model = make_model()
    set_weights(model, weights)
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((predicted == y).mean())


class Device(NumPyClient):  # type: ignore[misc]
    """One device: a few epochs of SGD on its own shard."""

    def __init__(self, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
        self.x, self.y, self.epochs = torch.from_numpy(x), torch.from_numpy(y), epochs

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        model = make_model()
        set_weights(model, parameters)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(self.epochs):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(self.x), self.y)
            loss.backward()
            optimizer.step()
        return get_weights(model), len(self.x), {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the privacy ledger")
    ap.add_argument("--clients", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--noise-multiplier", type=float, default=0.8)
    ap.add_argument("--crashing", type=int, default=2, help="devices that vanish at 'mask'")
    args = ap.parse_args()
    if args.clients < 4 or not 0 <= args.crashing < args.clients // 2:
        ap.error("need at least 4 clients and fewer crashing devices than half of them")
    args.out.mkdir(parents=True, exist_ok=True)
    ledger_path = args.out / "ledger.sqlite"
    if ledger_path.exists():
        ap.error(f"{ledger_path} exists; pick a fresh --out")
    shards, x_test, y_test = load(args.clients)

    def client_fn(context: Context) -> Any:
        x, y = shards[int(context.node_config["partition-id"])]
        return Device(x, y, args.epochs).to_client()

    crashing = {p: "mask" for p in range(args.crashing)}
    client_app = ClientApp(client_fn=client_fn, mods=[dropout_mod(crashing), privagg_mod])

    def evaluate(server_round: int, parameters: list[np.ndarray], config: Any) -> Any:
        return 0.0, {"accuracy": accuracy(parameters, x_test, y_test)}

    def report(r: RoundReport) -> None:
        print(
            f"round {r.round_number}: {r.status}, {len(r.included)}/{len(r.cohort)} devices "
            f"in the sum, epsilon = {r.epsilon:.3f} at delta = {DELTA:g}",
            flush=True,
        )

    server_app = ServerApp()

    @server_app.main()
    def server(grid: Any, context: Context) -> None:
        ledger = PrivacyLedger.create(
            ledger_path,
            policy=BudgetPolicy(delta=DELTA),
            signing_key=secagg.SigningKey.generate(),
            run_id="flower-digits",
        )
        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=args.clients,
            min_available_clients=args.clients,
            initial_parameters=ndarrays_to_parameters(get_weights(make_model())),
            evaluate_fn=evaluate,
        )
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=args.rounds), strategy=strategy
        )
        workflow = PrivaggWorkflow(
            clip_norm=args.clip,
            noise_multiplier=args.noise_multiplier,
            ledger=ledger,
            dropout_rate=0.2,
            on_round=report,
        )
        DefaultWorkflow(fit_workflow=workflow)(grid, legacy)
        history = legacy.history.metrics_centralized.get("accuracy", [])
        for rnd, acc in history:
            print(f"test accuracy after round {rnd}: {acc:.3f}")
        print(
            f"final epsilon = {ledger.epsilon:.3f} at delta = {DELTA:g} "
            f"({NEIGHBOURING_RELATION}); signed ledger: {ledger_path}"
        )
        ledger.close()

    logging.getLogger("flwr").setLevel(logging.WARNING)
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=args.clients,
        backend_config=backend_config(1),
    )


if __name__ == "__main__":
    main()
