"""Executors of client work: in-process, or sharded over stateful Ray actors.

Client work is everything a device does in a round: local training, distributed-DP
encoding and SecAgg masking. An executor holds the cohort in *shards* (fixed blocks of
``shard_size`` cohort positions) and runs one secure-aggregation round: the server state
machine stays with the caller, and each shard host computes its devices' ring vectors with
a picklable :class:`ClientWork`, creates their :class:`~protocols.SecAggClient` objects (the
secrets) and answers the server's messages. Only encoded protocol messages cross a host
boundary; the clients refuse pickling, so a secret cannot leak into Ray's object store by
accident.

Determinism: the shard layout depends only on ``shard_size``, and :class:`EncodeWork` draws
simulation noise from a generator seeded by (seed, round, shard), so :class:`LocalExecutor`
and :class:`RayExecutor` release bit-identical aggregates for a fixed seed (modular sums do
not depend on completion order). :class:`RayExecutor` needs the ``ray`` extra; pass
``address`` to use an existing cluster.

Lost hosts (checklist F8): a Ray actor that dies, or does not answer within ``timeout``
seconds, is killed and its devices are treated as dropouts from that stage on; the round
goes on with the other hosts' devices. SecAgg decides the outcome exactly as for any other
dropout: the exact sum over the included devices (a device whose masked input reached the
server before its host died stays included), or :class:`protocols.ProtocolAborted` with
``TOO_FEW_SURVIVORS`` when fewer than the threshold remain. No ``ray.get`` waits without a
timeout, so a dead or stuck actor cannot hang a round; lost actors are replaced by fresh
ones at the start of the next round.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import pickle
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

import protocols
import secagg
from dp.distributed import encode_many
from dp.planning import DistributedDPPlan
from dp.rng import NoiseRng, SecureRng, SimulationRng
from recsys.errors import ConfigError
from recsys.federated import ClientTask, DeviceFleet, ItemServer

IntArray = NDArray[np.int64]
_log = logging.getLogger(__name__)

__all__ = [
    "ClientWork",
    "EncodeWork",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "RoundOutcome",
    "ShardHost",
    "make_executor",
]


class ClientWork(Protocol):
    """Picklable client work: the ring vectors of ``users`` (one row each) for a round."""

    def __call__(self, shard: int, users: IntArray, round_number: int) -> NDArray[Any]: ...


@dataclass(frozen=True)
class EncodeWork:
    """Local updates of a recommender task, then distributed-DP encoding into the ring.

    ``noise_seed=None`` draws noise from the OS CSPRNG (``dp.SecureRng``); an int seeds a
    non-secure simulation generator per (seed, round, shard), for reproducible studies.
    """

    fleet: DeviceFleet
    server: ItemServer
    task: ClientTask
    plan: DistributedDPPlan
    rotation_seed: int
    bits: int
    noise_seed: int | None = None

    def rng(self, shard: int, round_number: int) -> NoiseRng:
        """The noise generator of one shard in one round."""
        if self.noise_seed is None:
            return SecureRng()
        label = f"privagg/executor/{self.noise_seed}/{round_number}/{shard}".encode()
        return SimulationRng(int.from_bytes(hashlib.sha256(label).digest()[:8], "little"))

    def __call__(self, shard: int, users: IntArray, round_number: int) -> NDArray[Any]:
        updates = self.task.local_updates(self.fleet, self.server, users)
        encoded, _ = encode_many(
            updates, self.plan, rotation_seed=self.rotation_seed, rng=self.rng(shard, round_number)
        )
        return encoded.astype(secagg.ring_dtype(self.bits))


class ShardHost:
    """Holds the devices of some shards for one round: their inputs and SecAgg secrets."""

    def __init__(self) -> None:
        self._clients: dict[int, protocols.SecAggClient] = {}
        self.work_seconds = 0.0

    def begin(
        self,
        work: ClientWork | bytes,
        shards: Sequence[tuple[int, int, IntArray]],
        config: protocols.SecAggConfig,
        round_number: int,
    ) -> float:
        """Start a round for ``shards`` = (shard index, first position, user ids); returns
        the seconds spent in client work (training + encoding)."""
        self._clients = {}
        start = time.perf_counter()
        # bytes: shipped pickled by this run's own Ray driver (see RayExecutor._begin)
        run: ClientWork = pickle.loads(work) if isinstance(work, bytes) else work  # noqa: S301
        for shard, first, users in shards:
            vectors = run(shard, users, round_number)
            for offset in range(len(users)):
                position = first + offset
                self._clients[position] = protocols.SecAggClient(position, config, vectors[offset])
        return time.perf_counter() - start

    def handle(self, messages: Mapping[int, bytes]) -> tuple[dict[int, bytes], float]:
        """Each addressed device consumes its server message; returns the replies and the
        seconds the devices spent (key agreement, sharing, masking, unmasking)."""
        start = time.perf_counter()
        replies = {pos: self._clients[pos].handle_bytes(data) for pos, data in messages.items()}
        return replies, time.perf_counter() - start

    def end(self) -> None:
        """Forget the round's devices and their secrets."""
        self._clients = {}


@dataclass(frozen=True, eq=False)
class RoundOutcome:
    """The exact modular sum over ``included`` cohort positions, and where time went.

    ``work_seconds`` / ``protocol_seconds`` are device time summed over hosts (training and
    encoding / SecAgg client steps); ``wall_seconds`` is the round as the caller saw it.
    ``lost_hosts`` are the hosts that died or timed out during the round (their devices
    counted as dropouts).
    """

    total: NDArray[Any] = field(repr=False)
    included: tuple[int, ...]
    work_seconds: float
    protocol_seconds: float
    wall_seconds: float
    lost_hosts: tuple[int, ...] = ()


class Executor(Protocol):
    """Runs one secure-aggregation round of client work over a cohort."""

    def aggregate(
        self,
        work: ClientWork,
        users: IntArray,
        config: protocols.SecAggConfig,
        vector_length: int,
        *,
        round_number: int,
        graph_seed: bytes,
        drop: Mapping[str, Iterable[int]] | None = None,
    ) -> RoundOutcome: ...

    def close(self) -> None: ...


class _ShardedExecutor:
    """The driver common to both executors: the server here, devices in shard hosts."""

    def __init__(self, num_hosts: int, shard_size: int) -> None:
        if num_hosts < 1 or shard_size < 1:
            raise ConfigError("need at least one host and a positive shard size")
        self.num_hosts = num_hosts
        self.shard_size = shard_size

    # transport to the hosts: overridden by the Ray executor
    def _begin(self, plans: list[list[tuple[int, int, IntArray]]], *args: Any) -> float:
        raise NotImplementedError

    def _handle(self, batches: list[dict[int, bytes]]) -> list[tuple[dict[int, bytes], float]]:
        raise NotImplementedError

    def _end(self) -> None:
        raise NotImplementedError

    def _lost_hosts(self) -> tuple[int, ...]:
        """Hosts lost during the current round (none for in-process hosts)."""
        return ()

    def aggregate(
        self,
        work: ClientWork,
        users: IntArray,
        config: protocols.SecAggConfig,
        vector_length: int,
        *,
        round_number: int,
        graph_seed: bytes,
        drop: Mapping[str, Iterable[int]] | None = None,
    ) -> RoundOutcome:
        """Run one round; ``drop`` maps a stage name to cohort positions that vanish just
        before replying at that stage (simulated dropouts)."""
        n = len(users)
        if n != config.num_clients:
            raise ConfigError(f"the config is for {config.num_clients} clients, cohort has {n}")
        wall = time.perf_counter()
        starts = range(0, n, self.shard_size)
        plans: list[list[tuple[int, int, IntArray]]] = [[] for _ in range(self.num_hosts)]
        owner = np.empty(n, dtype=np.int64)
        for shard, first in enumerate(starts):
            host = shard % self.num_hosts
            last = min(n, first + self.shard_size)
            plans[host].append((shard, first, users[first:last]))
            owner[first:last] = host
        server = protocols.SecAggServer(
            config,
            vector_length,
            round_number=round_number,
            graph_seed=graph_seed,
        )
        vanish = {protocols.Stage(k): {int(i) for i in v} for k, v in (drop or {}).items()}
        work_seconds = self._begin(plans, work, config, round_number)
        protocol_seconds = 0.0
        try:
            outbound: Mapping[int, Any] = server.start()
            gone: set[int] = set()
            while not server.finished:
                stage = server.stage
                assert stage is not None
                gone |= vanish.get(stage, set())
                encoded: dict[int, bytes] = {}
                batches: list[dict[int, bytes]] = [{} for _ in range(self.num_hosts)]
                for pos, message in outbound.items():
                    if pos in gone:
                        continue
                    data = encoded.get(id(message))
                    if data is None:  # a broadcast is serialized once
                        data = encoded[id(message)] = message.to_bytes()
                    batches[int(owner[pos])][pos] = data
                for replies, seconds in self._handle(batches):
                    protocol_seconds += seconds
                    for pos in sorted(replies):
                        server.receive_bytes(pos, replies[pos])
                outbound = server.advance()
        finally:
            self._end()
        output = server.output()
        return RoundOutcome(
            output.total,
            output.included,
            work_seconds,
            protocol_seconds,
            time.perf_counter() - wall,
            self._lost_hosts(),
        )


class LocalExecutor(_ShardedExecutor):
    """Every shard in this process (the default; deterministic, no dependencies)."""

    def __init__(self, shard_size: int = 500) -> None:
        super().__init__(1, shard_size)
        self._host = ShardHost()

    def _begin(self, plans: list[list[tuple[int, int, IntArray]]], *args: Any) -> float:
        return self._host.begin(args[0], plans[0], args[1], args[2])

    def _handle(self, batches: list[dict[int, bytes]]) -> list[tuple[dict[int, bytes], float]]:
        return [self._host.handle(batches[0])]

    def _end(self) -> None:
        self._host.end()

    def close(self) -> None:
        """Nothing to release."""


def _require_ray() -> Any:
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("--executor ray needs Ray: install privagg with the 'ray' extra")
    import ray

    return ray


class RayExecutor(_ShardedExecutor):
    """Shards on ``num_actors`` stateful Ray actors (one CPU each).

    Connects to ``address`` (an existing cluster, e.g. ``"auto"`` or ``"ray://head:10001"``)
    or starts a local instance with ``num_cpus``; an already initialized Ray in this process
    is used as it is (and left running by :meth:`close`). Client work and secrets stay inside
    the actors; the driver sends server messages and receives replies as bytes. A host that
    dies, or does not answer a call within ``timeout`` seconds, is lost for the round (see
    the module docstring).
    """

    def __init__(
        self,
        num_actors: int = 2,
        shard_size: int = 500,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        timeout: float = 600.0,
    ) -> None:
        super().__init__(num_actors, shard_size)
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        ray = _require_ray()
        self._ray = ray
        self.timeout = float(timeout)
        self._host_errors: tuple[type[BaseException], ...] = (
            ray.exceptions.RayActorError,
            ray.exceptions.ObjectLostError,
        )
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(
                address=address,
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        self._actor = ray.remote(num_cpus=1)(ShardHost)
        self._actors = [self._actor.remote() for _ in range(num_actors)]
        self._lost: set[int] = set()

    @property
    def actors(self) -> tuple[Any, ...]:
        """The Ray actor handles, one per host (host i holds shards i, i + n, ...)."""
        return tuple(self._actors)

    def _lose(self, host: int, why: str) -> None:
        if host in self._lost:
            return
        self._lost.add(host)
        _log.warning("shard host %d lost (%s): its devices drop out of the round", host, why)
        try:  # a stuck actor must not answer later; a dead one is already gone
            self._ray.kill(self._actors[host], no_restart=True)
        except Exception:  # the actor is lost either way
            _log.debug("shard host %d could not be killed", host)

    def _gather(self, calls: Sequence[tuple[int, Any]]) -> dict[int, Any]:
        """The results of the live hosts' ``calls`` (host, object ref), waiting at most
        ``timeout`` seconds in all. A host whose actor died, or that did not answer in
        time, is lost; an exception raised by the client work itself propagates."""
        if not calls:
            return {}
        refs = [ref for _, ref in calls]
        ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=self.timeout)
        done = {ref.hex() for ref in ready}
        results: dict[int, Any] = {}
        for host, ref in calls:
            if ref.hex() not in done:
                self._lose(host, f"no answer within {self.timeout:g} s")
                continue
            try:
                results[host] = self._ray.get(ref, timeout=self.timeout)
            except self._host_errors as exc:
                self._lose(host, type(exc).__name__)
            except self._ray.exceptions.GetTimeoutError:
                self._lose(host, f"no answer within {self.timeout:g} s")
        return results

    def _begin(self, plans: list[list[tuple[int, int, IntArray]]], *args: Any) -> float:
        for host in sorted(self._lost):  # replace the hosts lost in an earlier round
            self._actors[host] = self._actor.remote()
        self._lost = set()
        # One copy in the object store, shared by the actors. Pickled first: Ray would hand
        # its numpy arrays out zero-copy and read-only, but a device's local update may
        # write its own state (e.g. the FCF user factors) in the actor's copy.
        work = self._ray.put(pickle.dumps(args[0], protocol=pickle.HIGHEST_PROTOCOL))
        calls = [
            (host, a.begin.remote(work, plan, args[1], args[2]))
            for host, (a, plan) in enumerate(zip(self._actors, plans, strict=True))
        ]
        seconds = self._gather(calls).values()
        return float(max(seconds, default=0.0))

    def _handle(self, batches: list[dict[int, bytes]]) -> list[tuple[dict[int, bytes], float]]:
        calls = [
            (host, self._actors[host].handle.remote(b))
            for host, b in enumerate(batches)
            if b and host not in self._lost
        ]
        return list(self._gather(calls).values())

    def _end(self) -> None:
        live = [h for h in range(len(self._actors)) if h not in self._lost]
        self._gather([(h, self._actors[h].end.remote()) for h in live])

    def _lost_hosts(self) -> tuple[int, ...]:
        return tuple(sorted(self._lost))

    def close(self) -> None:
        """Stop the actors (and the local Ray instance if this executor started it)."""
        for host, a in enumerate(self._actors):
            if host not in self._lost:
                self._ray.kill(a, no_restart=True)
        self._actors = []
        if self._owns_ray:
            self._ray.shutdown()


def make_executor(name: str, **options: Any) -> Executor:
    """``"local"`` or ``"ray"`` (options go to the executor's constructor)."""
    if name == "local":
        return LocalExecutor(**options)
    if name == "ray":
        return RayExecutor(**options)
    raise ConfigError(f"unknown executor {name!r}; choose 'local' or 'ray'")
