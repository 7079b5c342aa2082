"""The small jobs whose outputs are pinned bit for bit in ``golden.json``.

Every job runs with ``dp``'s seeded, explicitly non-secure ``SimulationRng`` (and seeded
dropouts), so its outputs are a pure function of the code: a refactor that moves the
release code around must leave them unchanged. Each job records

* ``total_sha256``: the SHA-256 of the exact released values (the decoded float64 sum, as
  little-endian bytes; for the ring carriers also ``ring_sha256`` of the exact ring total);
* ``included``: the cohort positions whose upload (and noise share) is in the sum;
* ``event`` / ``planned_event``: the charged and planned privacy events as JSON;
* ``epsilon``: ``repr`` of the ε of the charged event (``dp.make_accountant("auto")`` at
  ``DELTA``, add-or-remove-one neighbours), i.e. bit-exact floats.

Carriers: the in-process channel (``recsys.channels.Channel.release``: distributed DDG and
Skellam, SecAgg full / plus / off, groups, counts, central, none), the sharded executor
(``Channel.release_on`` on ``LocalExecutor`` and on ``RayExecutor``), the gRPC loopback
(``protocols.net`` server and devices in this process) and two short training runs
(in-process and local executor). Regenerate deliberately with
``python -m tests.golden.record --write`` (see that module).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

DELTA = 1e-5
SEED = 5


def _sha(values: np.ndarray) -> str:
    data = np.ascontiguousarray(values)
    dtype = data.dtype.newbyteorder("<")
    return hashlib.sha256(data.astype(dtype, copy=False).tobytes()).hexdigest()


def _epsilon(event: Any) -> str:
    from dp import make_accountant

    accountant = make_accountant("auto")
    accountant.compose(event)
    return repr(float(accountant.get_epsilon(DELTA)))


def _event_json(event: Any) -> str:
    return json.dumps(event.to_dict(), sort_keys=True)


def _release_record(release: Any) -> dict[str, Any]:
    return {
        "total_sha256": _sha(np.asarray(release.total, dtype=np.float64)),
        "included": list(release.included_positions),
        "dropped": release.dropped,
        "event": _event_json(release.event),
        "planned_event": _event_json(release.planned_event),
        "epsilon": _epsilon(release.event),
        "noise_std": repr(float(release.noise_std)),
    }


def uploads(n: int, d: int, seed: int, clip: float = 1.0) -> np.ndarray:
    """A fixed float upload matrix, rows L2-clipped to ``clip``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = x * np.minimum(1.0, clip / norms)
    return out


# ----------------------------------------------------------------------------- in-process
IN_PROCESS_CASES: dict[str, dict[str, Any]] = {
    "ddg_full": {"privacy": "distributed", "secagg": "full", "mechanism": "discrete_gaussian"},
    "skellam_plus_groups": {
        "privacy": "distributed",
        "secagg": "plus",
        "mechanism": "skellam",
        "group_size": 12,
    },
    "ddg_off": {"privacy": "distributed", "secagg": "off", "mechanism": "discrete_gaussian"},
    "counts_full": {
        "privacy": "distributed",
        "secagg": "full",
        "mechanism": "discrete_gaussian",
        "count_cap": 4,
    },
    "central_full": {"privacy": "central", "secagg": "full", "mechanism": "discrete_gaussian"},
    "none_full": {"privacy": "none", "secagg": "full", "mechanism": "discrete_gaussian"},
}
N, D = 30, 20


def in_process(case: str) -> list[dict[str, Any]]:
    """Two consecutive rounds of one channel (the noise stream continues across rounds)."""
    from recsys.channels import ChannelSpec, make_channel

    options = dict(IN_PROCESS_CASES[case])
    count_cap = options.pop("count_cap", None)
    spec = ChannelSpec(
        dropout=0.2, bits=32, delta=DELTA, seed=SEED, simulation_noise=True, **options
    )
    channel = make_channel(spec)
    if count_cap is None:
        matrix, clip = uploads(N, D, 11), 1.0
    else:
        rng = np.random.default_rng(12)
        matrix = np.zeros((N, D))
        for row in matrix:
            row[rng.choice(D, size=count_cap, replace=False)] = 1.0
        clip = float(np.sqrt(count_cap))
    records = []
    for round_index in (1, 2):
        release = channel.release(
            matrix,
            clip_norm=clip,
            noise_multiplier=0.8,
            sampling_rate=0.5,
            expected_clients=N,
            round_index=round_index,
            count_cap=count_cap,
        )
        records.append(_release_record(release))
    return records


# ----------------------------------------------------------------------------- sharded
def _recsys_job() -> tuple[Any, Any, Any, Any]:
    from recsys.data import synthetic_ratings
    from recsys.features import item_features
    from recsys.federated import DeviceFleet, ItemServer, PopularityTask
    from recsys.split import leave_last_out

    ratings = synthetic_ratings(30, 25, seed=2, mean_activity=10, min_activity=5)
    split = leave_last_out(ratings)
    fleet = DeviceFleet(split.train, item_features(ratings))
    server = ItemServer(split.train.num_items)
    task = PopularityTask(split.train.num_items, cap=8)
    return ratings, fleet, server, task


def sharded(executor_kind: str) -> list[dict[str, Any]]:
    """``Channel.release_on`` on a sharded executor: three SecAgg groups, 20 % dropouts."""
    from recsys.channels import ChannelSpec, make_channel
    from recsys.executors import LocalExecutor, RayExecutor

    _, fleet, server, task = _recsys_job()
    spec = ChannelSpec(
        privacy="distributed",
        secagg="full",
        dropout=0.2,
        mechanism="discrete_gaussian",
        bits=32,
        delta=DELTA,
        seed=SEED,
        simulation_noise=True,
        group_size=12,
    )
    channel = make_channel(spec)
    executor = (
        LocalExecutor(shard_size=5)
        if executor_kind == "local"
        else RayExecutor(num_actors=2, shard_size=5)
    )
    cohort = np.arange(30, dtype=np.int64)
    records = []
    try:
        for round_index in (1, 2):
            release = channel.release_on(
                executor,
                task,
                fleet,
                server,
                cohort,
                noise_multiplier=0.8,
                sampling_rate=1.0,
                expected_clients=30,
                round_index=round_index,
            )
            records.append(_release_record(release))
    finally:
        executor.close()
    return records


# ----------------------------------------------------------------------------- gRPC
def grpc_loopback(tmp: Any) -> list[dict[str, Any]]:
    """A distributed-DP popularity release whose ring vectors (each device encodes its own
    update with its own seeded noise) are summed by the gRPC server and real devices over
    TLS on 127.0.0.1; the server's total is decoded with the plan."""
    import protocols
    from dp import decode, plan_distributed_dp
    from dp.events import PoissonSampledEvent
    from dp.ledger import charged_event
    from protocols.net import (
        AggregationServer,
        ClientTLS,
        JobSpec,
        ServerTLS,
        load_identity_key,
        load_registry,
        make_local_pki,
        run_device,
    )
    from recsys.executors import EncodeWork

    n = 8
    _, fleet, server_model, task = _recsys_job()
    plan = plan_distributed_dp(
        dimension=task.upload_dim,
        expected_contributors=n,
        min_contributors=5,
        clip_norm=task.clip_norm,
        noise_multiplier=0.8,
        bits=32,
    )
    rotation_seed = 77
    work = EncodeWork(fleet, server_model, task, plan, rotation_seed, 32, noise_seed=SEED)
    users = np.arange(n, dtype=np.int64)
    vectors = np.stack([work(cid, users[cid : cid + 1], 0)[0] for cid in range(n)])
    pki = make_local_pki(tmp / "pki", num_clients=n)
    job = JobSpec(num_clients=n, threshold=5, vector_length=plan.padded_dimension, rounds=1)
    tls = ServerTLS(pki.server_cert.read_bytes(), pki.server_key.read_bytes())
    server = AggregationServer(
        job,
        load_registry(pki.registry),
        tls,
        stage_deadline=5.0,
        join_deadline=60.0,
        linger_seconds=0.3,
    )
    server.start()
    client_tls = ClientTLS(pki.ca_cert.read_bytes())
    errors: list[BaseException] = []

    def device(cid: int) -> None:
        try:
            run_device(
                server.address,
                cid,
                load_identity_key(pki.client_keys[cid]),
                lambda r, job: vectors[cid],
                client_tls,
                retry_seconds=5,
            )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=device, args=(cid,)) for cid in range(n)]
    for thread in threads:
        thread.start()
    try:
        (outcome,) = server.run()
    finally:
        server.stop()
    for thread in threads:
        thread.join(30)
    if errors:
        raise errors[0]
    assert outcome.total is not None
    local = protocols.run_secagg(vectors, protocols.SecAggConfig(n, 5), seed=0)
    if not np.array_equal(local.total, outcome.total):
        raise AssertionError("the gRPC total differs from the in-process total")
    values, _ = decode(
        outcome.total, plan, rotation_seed=rotation_seed, num_contributors=n, strict=False
    )
    planned = PoissonSampledEvent(0.5, plan.event(secure=False))
    charged = charged_event(planned, "released", len(outcome.included))
    return [
        {
            "ring_sha256": _sha(outcome.total.astype(np.uint64)),
            "total_sha256": _sha(values),
            "included": list(outcome.included),
            "event": _event_json(charged),
            "epsilon": _epsilon(charged),
        }
    ]


# ----------------------------------------------------------------------------- training
def training(executor_kind: str | None) -> dict[str, Any]:
    """A short recommender run (popularity release + two FCF rounds, Poisson cohorts)."""
    from recsys.data import synthetic_ratings
    from recsys.features import item_features
    from recsys.split import leave_last_out
    from recsys.trainer import TrainConfig, Trainer

    ratings = synthetic_ratings(40, 30, seed=3, mean_activity=10, min_activity=5)
    split = leave_last_out(ratings)
    config = TrainConfig(
        rounds=2,
        cohort=24,
        secagg="full",
        dropout=0.1,
        seed=SEED,
        eval_every=0,
        simulation_noise=True,
        executor=executor_kind,  # type: ignore[arg-type]
    )
    result = Trainer(split, item_features(ratings), config).run()
    return {
        "rounds": [
            [r.task, r.sampled, r.included, r.dropped, repr(float(r.epsilon))]
            for r in result.records
        ],
        "ranks_sha256": _sha(np.asarray(result.final.ranks, dtype=np.int64)),
    }


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def all_jobs(tmp: Any, *, ray: bool, grpc: bool) -> dict[str, Callable[[], Any]]:
    """Name -> job (the Ray and gRPC jobs only when those extras are installed)."""
    jobs: dict[str, Callable[[], Any]] = {
        f"in_process/{case}": (lambda case=case: in_process(case)) for case in IN_PROCESS_CASES
    }
    jobs["sharded/local"] = lambda: sharded("local")
    if ray:
        jobs["sharded/ray"] = lambda: sharded("ray")
    if grpc:
        jobs["grpc/loopback"] = lambda: grpc_loopback(tmp)
    jobs["training/in_process"] = lambda: training(None)
    jobs["training/local"] = lambda: training("local")
    return jobs


def run_quietly(job: Callable[[], Any]) -> Any:
    """Run a job with the simulation generator's non-secure warning silenced."""
    from dp.rng import NonSecureRandomnessWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonSecureRandomnessWarning)
        return job()
