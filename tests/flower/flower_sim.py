"""A seeded Flower simulation with privagg's mod and workflow, and its in-process twin.

Imported by ``check_flower_mod.py`` inside the Flower virtualenv (``.venv-flower``). The
model is a small linear regressor; every device's training is a deterministic function of
its partition id and the global model, so the in-process reference
(:func:`reference_round`) can recompute the very same updates, encode them with the very
same seeded simulation noise and sum them with ``protocols.run_secagg``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import protocols
import secagg
from dp.budget import BudgetPolicy
from dp.distributed import decode, encode
from dp.ledger import PrivacyLedger
from dp.rng import NonSecureRandomnessWarning, SimulationRng
from privagg.flower import (
    DevicePolicy,
    PrivaggMod,
    PrivaggWorkflow,
    RoundReport,
    apply_mean_update,
    backend_config,
    dropout_mod,
    flat_update,
    simulation_noise_seed,
)

IN_FEATURES, OUT_FEATURES = 6, 3
NOISE_SEED = 7


def initial_model() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.normal(0.0, 0.1, (IN_FEATURES, OUT_FEATURES)).astype(np.float32),
        np.zeros(OUT_FEATURES, dtype=np.float32),
    ]


def local_data(partition: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 + partition)
    x = rng.normal(size=(16, IN_FEATURES)).astype(np.float32)
    true_w = (
        np.arange(IN_FEATURES * OUT_FEATURES, dtype=np.float32).reshape(IN_FEATURES, OUT_FEATURES)
        / 10.0
    )
    y = (x @ true_w + rng.normal(0.0, 0.1, (16, OUT_FEATURES))).astype(np.float32)
    return x, y


def train(partition: int, model: list[np.ndarray]) -> list[np.ndarray]:
    """Two steps of full-batch gradient descent on the squared error (float32)."""
    w, b = (a.copy() for a in model)
    x, y = local_data(partition)
    for _ in range(2):
        err = x @ w + b - y
        w = (w - np.float32(0.05) * (x.T @ err) / np.float32(len(x))).astype(np.float32)
        b = (b - np.float32(0.05) * err.mean(axis=0)).astype(np.float32)
    return [w, b]


@dataclass
class SimulationRun:
    reports: list[RoundReport]
    node_of_partition: dict[int, int]
    final_model: list[np.ndarray]
    ledger_path: Path
    history: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def run_flower(
    tmp: Path,
    *,
    num_clients: int,
    num_rounds: int,
    vanish_at: Mapping[int, str],
    policy: DevicePolicy | None = None,
    noise_multiplier: float = 1.0,
) -> SimulationRun:
    """Run ``num_rounds`` rounds in Flower's simulation engine with privagg's mod."""
    from flwr.app import Context
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server import ServerApp, ServerConfig
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
    from flwr.simulation import run_simulation

    mapping_dir = tmp / "nodes"
    mapping_dir.mkdir(exist_ok=True)
    device_policy = policy or DevicePolicy(allow_simulation_noise=True)

    class Device(NumPyClient):  # type: ignore[misc]
        def __init__(self, partition: int) -> None:
            self.partition = partition

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            return train(self.partition, parameters), 16, {"loss": 1.0}

    def record_node(msg: Any, ctxt: Any, call_next: Any) -> Any:
        part = int(ctxt.node_config["partition-id"])
        (mapping_dir / str(part)).write_text(str(msg.metadata.dst_node_id))
        return call_next(msg, ctxt)

    def client_fn(context: Context) -> Any:
        return Device(int(context.node_config["partition-id"])).to_client()

    client_app = ClientApp(
        client_fn=client_fn,
        mods=[record_node, dropout_mod(dict(vanish_at)), PrivaggMod(device_policy)],
    )
    ledger_path = tmp / "ledger.sqlite"
    captured: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Any, context: Context) -> None:
        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=num_clients,
            min_available_clients=num_clients,
            initial_parameters=ndarrays_to_parameters(initial_model()),
        )
        # The ledger's SQLite connection belongs to the ServerApp's thread: open it here.
        signing_key = secagg.SigningKey.generate()
        captured["ledger_public_key"] = signing_key.public_bytes.hex()
        ledger = PrivacyLedger.create(
            ledger_path,
            policy=BudgetPolicy(delta=1e-5),
            signing_key=signing_key,
            run_id="flower-test",
        )
        workflow = PrivaggWorkflow(
            clip_norm=1.0,
            noise_multiplier=noise_multiplier,
            ledger=ledger,
            graph="full",
            dropout_rate=0.2,
            timeout=120.0,
            simulation_noise_seed=NOISE_SEED,
        )
        captured["workflow"] = workflow
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=num_rounds), strategy=strategy
        )
        DefaultWorkflow(fit_workflow=workflow)(grid, legacy)
        captured["model"] = parameters_to_ndarrays(
            compat.arrayrecord_to_parameters(
                legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
            )
        )
        captured["history"] = legacy.history
        ledger.close()

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=num_clients,
        backend_config=backend_config(1),  # type: ignore[arg-type]
    )
    logging.getLogger("flwr").setLevel(logging.WARNING)
    nodes = {int(p.name): int(p.read_text()) for p in mapping_dir.iterdir()}
    return SimulationRun(
        reports=captured["workflow"].reports if "workflow" in captured else [],
        node_of_partition=nodes,
        final_model=captured.get("model", []),
        ledger_path=ledger_path,
        history=captured.get("history"),
        extra={"ledger_public_key": captured.get("ledger_public_key")},
    )


def reference_round(
    report: RoundReport,
    model: list[np.ndarray],
    node_of_partition: Mapping[int, int],
    vanish_at: Mapping[int, str],
) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
    """privagg's in-process run of the same round: the same updates, the same seeded noise,
    ``protocols.run_secagg`` with the same dropouts, then ``dp.decode``.

    Returns (ring total, included node ids, decoded float sum)."""
    offer = report.offer
    assert offer is not None
    partition_of = {node: part for part, node in node_of_partition.items()}
    cohort = offer.node_ids
    updates = [flat_update(model, train(partition_of[nid], model)) for nid in cohort]
    plan = offer.plan(updates[0].size)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonSecureRandomnessWarning)
        for nid, update in zip(cohort, updates, strict=True):
            rng = SimulationRng(simulation_noise_seed(NOISE_SEED, offer.round_number, nid))
            ring, _ = encode(update, plan, rotation_seed=offer.rotation_seed, rng=rng)
            rows.append(ring)
    drop: dict[str, list[int]] = {}
    for part, stage in vanish_at.items():
        drop.setdefault(stage, []).append(cohort.index(node_of_partition[part]))
    result = protocols.run_secagg(np.stack(rows), offer.secagg_config(), drop=drop)
    included = tuple(cohort[i] for i in result.included)
    total_sum, _ = decode(
        result.total, plan, rotation_seed=offer.rotation_seed, num_contributors=len(included)
    )
    return result.total, included, total_sum


def reference_model(
    reports: list[RoundReport],
    node_of_partition: Mapping[int, int],
    vanish_at: Mapping[int, str],
) -> tuple[list[np.ndarray], list[tuple[np.ndarray, tuple[int, ...], np.ndarray]]]:
    """Replays every round in-process; returns the final model and each round's result."""
    model = initial_model()
    rounds = []
    for report in reports:
        total, included, update_sum = reference_round(report, model, node_of_partition, vanish_at)
        rounds.append((total, included, update_sum))
        model = apply_mean_update(model, update_sum, len(included))
    return model, rounds
