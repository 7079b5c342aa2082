"""One whole round in one process: :func:`run_secagg` and its :class:`SecAggResult`.

The driver plays the network between one :class:`~protocols.server.SecAggServer` and n
:class:`~protocols.client.SecAggClient` objects: every message is encoded, carried by a
:class:`~protocols.transport.Transport` and strictly decoded on the other side, so byte
counts are real wire sizes. Client and server compute are timed separately per stage.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

import secagg
from protocols.client import SecAggClient
from protocols.config import SecAggConfig, Stage
from protocols.errors import AbortReason, ConfigError
from protocols.server import SecAggServer, ShareFault
from protocols.transport import Direction, InMemoryTransport, Transport

__all__ = ["SecAggResult", "StageReport", "run_secagg"]

STAGE_NAMES = tuple(stage.value for stage in Stage)


@dataclass(frozen=True)
class StageReport:
    """Traffic and compute of one stage (bytes as encoded on the wire)."""

    stage: str
    senders: int
    upload_bytes: int
    download_bytes: int
    upload_bytes_per_client_max: int
    client_seconds: float
    client_seconds_median: float
    client_seconds_max: float
    server_seconds: float


@dataclass(frozen=True, eq=False)
class SecAggResult:
    """Outcome of :func:`run_secagg`.

    ``total`` is the exact sum mod 2^bits of the inputs of the clients in ``included``
    (those whose masked input was summed); ``stages`` has per-stage bytes and timings;
    ``client_aborts`` lists clients that stopped on their own (treated as dropped);
    ``share_faults`` lists every bad share revealed at unmasking (corrected or ignored),
    ``faulty`` every client the server excluded or caught deviating (sorted ids).
    """

    total: npt.NDArray[Any] = field(repr=False)
    included: tuple[int, ...]
    config: SecAggConfig
    stages: tuple[StageReport, ...]
    client_seconds: float
    server_seconds: float
    wall_seconds: float
    client_aborts: Mapping[int, AbortReason]
    session_id: bytes
    share_faults: tuple[ShareFault, ...] = ()
    faulty: tuple[int, ...] = ()

    def stage(self, name: str) -> StageReport:
        """The report of stage ``name`` (e.g. ``"mask"``)."""
        for report in self.stages:
            if report.stage == name:
                return report
        raise KeyError(name)

    @property
    def upload_bytes_per_client(self) -> float:
        """Mean bytes one client uploads over the whole round."""
        n = self.config.num_clients
        return sum(report.upload_bytes for report in self.stages) / n


def _check_inputs(inputs: object, config: SecAggConfig) -> npt.NDArray[Any]:
    dtype = secagg.ring_dtype(config.bits)
    if not isinstance(inputs, np.ndarray) or inputs.ndim != 2:
        raise ConfigError("inputs must be a 2-D numpy array (clients x coordinates)")
    if inputs.shape[0] != config.num_clients or inputs.shape[1] < 1:
        raise ConfigError(
            f"inputs must have shape ({config.num_clients}, d >= 1), got {inputs.shape}"
        )
    if inputs.dtype != dtype:
        raise ConfigError(
            f"inputs must have the ring dtype {dtype} for bits={config.bits}, got "
            f"{inputs.dtype}; convert with secagg.to_ring(values, bits)"
        )
    if config.bits not in (32, 64) and inputs.size and int(inputs.max()) >> config.bits:
        raise ConfigError(f"inputs hold values >= 2^{config.bits}: not ring elements")
    return inputs


def _drop_plan(
    drop: Mapping[str, Iterable[int]] | None, config: SecAggConfig
) -> dict[Stage, frozenset[int]]:
    plan: dict[Stage, frozenset[int]] = {}
    for name, ids in (drop or {}).items():
        try:
            stage = Stage(name)
        except ValueError:
            raise ConfigError(f"unknown stage {name!r}; stages are {STAGE_NAMES}") from None
        if stage is Stage.CONSISTENCY and not config.consistency_check:
            raise ConfigError("the 'consistency' stage only runs in malicious-server mode")
        members = frozenset(int(i) for i in ids)
        if any(not 0 <= i < config.num_clients for i in members):
            raise ConfigError(f"drop[{name!r}] names a client outside [0, {config.num_clients})")
        plan[stage] = members
    return plan


def run_secagg(
    inputs: npt.NDArray[Any],
    config: SecAggConfig,
    *,
    drop: Mapping[str, Iterable[int]] | None = None,
    seed: int | None = None,
    round_number: int = 0,
    context_digest: bytes | None = None,
    transport: Transport | None = None,
) -> SecAggResult:
    """Run one round of SecAgg (full graph) or SecAgg+ in-process on an (n x d) ring array.

    ``drop`` maps a stage name (``"advertise"``, ``"share"``, ``"mask"``, ``"consistency"``
    in malicious-server mode, ``"unmask"``) to the clients that vanish just before sending
    that stage's message. ``seed`` only fixes simulation choices (the public graph seed);
    keys, seeds and masks always come from the OS CSPRNG. Raises
    :class:`~protocols.errors.ProtocolAborted` (with the stage) when fewer than t clients
    remain; an abort before ``"unmask"`` reveals no share of any secret.
    """
    if not isinstance(config, SecAggConfig):
        raise ConfigError("config must be a protocols.SecAggConfig")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed must be an int or None, got {type(seed).__name__}")
    matrix = _check_inputs(inputs, config)
    plan = _drop_plan(drop, config)
    if seed is None:
        graph_seed = secagg.random_seed(32)
    else:
        label = b"privagg/v1/simulation-graph-seed/" + str(seed).encode()
        graph_seed = hashlib.sha256(label).digest()
    n, d = matrix.shape
    signing: list[secagg.SigningKey | None] = [None] * n
    verify_keys: dict[int, bytes] | None = None
    if config.consistency_check:
        signing = [secagg.SigningKey.generate() for _ in range(n)]
        verify_keys = {i: key.public_bytes for i, key in enumerate(signing) if key is not None}
    wire = transport if transport is not None else InMemoryTransport()

    wall_start = time.perf_counter()
    clock = time.perf_counter
    t0 = clock()
    server = SecAggServer(
        config,
        d,
        round_number=round_number,
        graph_seed=graph_seed,
        context_digest=context_digest if context_digest is not None else bytes(32),
        verify_keys=verify_keys,
    )
    outbound = server.start()
    server_time = {stage: 0.0 for stage in Stage}
    server_time[Stage.ADVERTISE] += clock() - t0
    clients = [
        SecAggClient(i, config, matrix[i], signing_key=signing[i], verify_keys=verify_keys)
        for i in range(n)
    ]
    client_times: dict[Stage, list[float]] = {stage: [] for stage in Stage}
    up: dict[Stage, list[int]] = {stage: [] for stage in Stage}
    down: dict[Stage, int] = dict.fromkeys(Stage, 0)
    senders: dict[Stage, int] = dict.fromkeys(Stage, 0)
    vanished: set[int] = set()
    while not server.finished:
        stage = server.stage
        assert stage is not None
        vanished |= plan.get(stage, frozenset())
        encoded: dict[int, bytes] = {}
        for cid in sorted(outbound):
            t0 = clock()
            message = outbound[cid]
            data = encoded.get(id(message))
            if data is None:  # a broadcast is serialized once
                data = encoded[id(message)] = message.to_bytes()
            server_time[stage] += clock() - t0
            down[stage] += len(data)
            arrived = wire.send(Direction.TO_CLIENT, stage, cid, data)
            if arrived is None or cid in vanished:
                continue
            t0 = clock()
            reply = clients[cid].handle_bytes(arrived)
            client_times[stage].append(clock() - t0)
            up[stage].append(len(reply))
            delivered = wire.send(Direction.TO_SERVER, stage, cid, reply)
            if delivered is None:
                continue
            t0 = clock()
            server.receive_bytes(cid, delivered)
            server_time[stage] += clock() - t0
            senders[stage] += 1
        t0 = clock()
        outbound = server.advance()  # raises ProtocolAborted below the threshold
        server_time[stage] += clock() - t0
    output = server.output()
    wall = time.perf_counter() - wall_start

    reports = []
    for stage in Stage:
        if stage is Stage.CONSISTENCY and not config.consistency_check:
            continue
        times = client_times[stage]
        reports.append(
            StageReport(
                stage=stage.value,
                senders=senders[stage],
                upload_bytes=sum(up[stage]),
                download_bytes=down[stage],
                upload_bytes_per_client_max=max(up[stage], default=0),
                client_seconds=sum(times),
                client_seconds_median=statistics.median(times) if times else 0.0,
                client_seconds_max=max(times, default=0.0),
                server_seconds=server_time[stage],
            )
        )
    assert server.session_id is not None
    return SecAggResult(
        total=output.total,
        included=output.included,
        config=config,
        stages=tuple(reports),
        client_seconds=sum(r.client_seconds for r in reports),
        server_seconds=sum(r.server_seconds for r in reports),
        wall_seconds=wall,
        client_aborts={cid: a.reason for cid, a in server.client_aborts.items()},
        session_id=server.session_id,
        share_faults=output.share_faults,
        faulty=tuple(sorted(server.faulty)),
    )
