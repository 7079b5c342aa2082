"""Federated training over the network: the trainer's server side and one device's side.

The server process owns the model: a :class:`~recsys.trainer.Trainer` (recommender, channel,
DP plan, ledger, evaluation) whose devices are remote processes of a per-round
:mod:`protocols.net` job. :class:`NetworkExecutor` is the trainer's executor: each SecAgg
group of a release becomes one network round whose announcement (bound into the SecAgg
session by its digest) carries the cohort and the round's public parameters — the task, the
distributed-DP plan, the rotation seed, the noise mode and the public model state (released
popularity, item factors and biases, active items) — serialized by :func:`pack_arrays`
(a JSON header plus raw little-endian arrays; no pickle). The server decodes the unmasked
sum, takes the server step, records the release in the ledger with the real survivors and
evaluates if it has evaluation data (:func:`serve_training`).

A device (:class:`DeviceTrainer`) holds only its own history (:func:`load_history`: its
``(item, timestamp)`` rows) and computes exactly what the in-process trainer computes for
that user — the task's local update, clipping and ``dp.encode_many`` — with the OS CSPRNG
(``dp.SecureRng``); seeded simulation noise only when the job asks for it *and* the device
was started with ``allow_simulation_noise`` (tests, reproductions). The unchanged SecAgg
client state machine then runs over gRPC.

Sampling: the trainer Poisson-samples every registered device at the fixed rate
q = cohort / population; sampled devices that are not connected (:meth:`AggregationServer.
connected`) are left out before the round starts. That is Poisson sampling at rate q among
the connected devices, and q stays a valid bound for the accountant: an offline user is
included with probability 0 ≤ q, and whether a user is online does not depend on the data.
Fewer devices mean fewer noise shares; the ledger charges the event of the noise shares that
actually reached the sum (as for any dropout).

Bit-identical to the in-process trainer: with simulation noise each device draws its noise
from the generator of (seed, round, its position in the group), which is the layout of
:class:`~recsys.executors.LocalExecutor` with ``shard_size=1``; the same trainer run on that
executor releases the same aggregates bit for bit (no dropouts).
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

import protocols
from dp.errors import DPError
from dp.planning import DistributedDPPlan
from dp.policy import DeviceBudget, DPPolicy, DPPolicyViolation, check_manifest_rule
from protocols.config import ThreatModel, malicious_threshold
from protocols.errors import ConfigError as ProtocolConfigError
from protocols.net.client import RoundInfo
from protocols.net.errors import RoundRefused
from protocols.net.guard import DeviceGuard
from protocols.net.wire import JobSpec, RoundSpec
from protocols.policy import SecAggPolicy
from recsys.errors import ConfigError, DataFormatError, ReleaseAborted
from recsys.executors import ClientWork, EncodeWork, RoundOutcome
from recsys.federated import (
    ClientTask,
    DeviceFleet,
    FCFConfig,
    FCFTask,
    ItemServer,
    PopularityTask,
)
from recsys.split import Interactions, Split

if TYPE_CHECKING:
    from protocols.net.server import AggregationServer
    from recsys.trainer import ProgressFn, Trainer, TrainResult

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

__all__ = [
    "DevicePolicy",
    "DeviceTrainer",
    "NetworkExecutor",
    "NetworkRound",
    "load_history",
    "pack_arrays",
    "population_split",
    "serve_training",
    "split_from_histories",
    "training_job",
    "unpack_arrays",
    "write_histories",
]

_MAGIC = b"PRT1"
_U32 = struct.Struct("<I")
_DTYPES = {"<f8": np.dtype("<f8"), "<i8": np.dtype("<i8")}
_MAX_HEADER = 1 << 20
_HEADER_SLACK = 16 * 1024


# ----------------------------------------------------------------------------- the payload


def pack_arrays(meta: Mapping[str, Any], arrays: Mapping[str, NDArray[Any]]) -> bytes:
    """``PRT1`` · u32 header length · JSON header (``meta`` and the arrays' names, dtypes
    and shapes) · the arrays' raw little-endian bytes in header order. Only float64 and
    int64 arrays; nothing is pickled."""
    specs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in arrays.items():
        a = np.asarray(array)
        kind = "<f8" if a.dtype.kind == "f" else "<i8" if a.dtype.kind in "iu" else None
        if kind is None:
            raise ConfigError(f"array {name!r} has dtype {a.dtype}: only float64/int64 travel")
        data = np.ascontiguousarray(a, dtype=_DTYPES[kind])
        specs.append({"name": name, "dtype": kind, "shape": list(data.shape)})
        blobs.append(data.tobytes())
    head = json.dumps({"meta": dict(meta), "arrays": specs}, sort_keys=True).encode()
    return _MAGIC + _U32.pack(len(head)) + head + b"".join(blobs)


def _bad(reason: str) -> DataFormatError:
    return DataFormatError("training round payload", None, reason)


def unpack_arrays(data: bytes, max_bytes: int) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    """Inverse of :func:`pack_arrays`; anything malformed or larger than ``max_bytes`` is a
    :class:`~recsys.errors.DataFormatError` (checked before any array is built)."""
    if len(data) > max_bytes:
        raise _bad(f"round payload of {len(data)} bytes exceeds {max_bytes}")
    if len(data) < len(_MAGIC) + _U32.size or not data.startswith(_MAGIC):
        raise _bad("not a privagg training payload")
    (length,) = _U32.unpack_from(data, len(_MAGIC))
    off = len(_MAGIC) + _U32.size
    if length > min(_MAX_HEADER, len(data) - off):
        raise _bad("training payload header has a bad length")
    try:
        head = json.loads(data[off : off + length])
        meta, specs = head["meta"], head["arrays"]
        if not isinstance(meta, dict) or not isinstance(specs, list):
            raise TypeError
        layout = [(str(s["name"]), _DTYPES[s["dtype"]], tuple(s["shape"])) for s in specs]
    except (ValueError, KeyError, TypeError):
        raise _bad("training payload carries no valid header") from None
    off += length
    arrays: dict[str, NDArray[Any]] = {}
    for name, dtype, shape in layout:
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
            raise _bad(f"array {name!r} has a bad shape")
        size = math.prod(shape) * dtype.itemsize
        if off + size > len(data):
            raise _bad(f"array {name!r} is truncated")
        arrays[name] = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=off).reshape(
            shape
        )
        off += size
    if off != len(data) or len(arrays) != len(layout):
        raise _bad("training payload has trailing bytes or repeated arrays")
    return meta, arrays


def _plan_fields(plan: DistributedDPPlan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(plan):
        value = getattr(plan, f.name)
        out[f.name] = (
            {"fraction": [value.numerator, value.denominator]}
            if isinstance(value, Fraction)
            else value
        )
    return out


def _plan_from(fields: Mapping[str, Any]) -> DistributedDPPlan:
    values: dict[str, Any] = {}
    for name, value in fields.items():
        values[name] = Fraction(*value["fraction"]) if isinstance(value, dict) else value
    return DistributedDPPlan(**values)


def round_payload(work: EncodeWork, *, population: int, release: int) -> bytes:
    """The public parameters of one release for the devices: the task, the DP plan, the
    rotation seed, the noise mode and the public model state the task's update reads."""
    task, server = work.task, work.server
    meta: dict[str, Any] = {
        "release": release,
        "population": population,
        "num_items": server.num_items,
        "task": task.name,
        "plan": _plan_fields(work.plan),
        "rotation_seed": work.rotation_seed,
        "bits": work.bits,
        "noise_seed": work.noise_seed,
    }
    arrays: dict[str, NDArray[Any]] = {}
    if isinstance(task, PopularityTask):
        meta["cap"] = task.cap
    elif isinstance(task, FCFTask):
        meta["fcf"] = dataclasses.asdict(task.config)
        meta["prior_shrink"] = task.prior_shrink
        if server.item_factors is None or server.item_bias is None:
            raise ConfigError("the server has not initialised the item factors")
        if server.popularity is not None:
            arrays["popularity"] = server.popularity
        arrays["item_factors"] = server.item_factors
        arrays["item_bias"] = server.item_bias
        arrays["active_items"] = server.active_items
    else:
        raise ConfigError(f"task {task.name!r} cannot run over the network")
    return pack_arrays(meta, arrays)


def model_bytes_bound(num_items: int, dim: int) -> int:
    """An upper bound on :func:`round_payload`'s size for a catalog and FCF dimension."""
    return 8 * num_items * (dim + 3) + _HEADER_SLACK


# ----------------------------------------------------------------------------- device side


def _ordered(items: IntArray, timestamps: IntArray) -> tuple[IntArray, IntArray]:
    """Temporal order with the item-id tie-break of :func:`~recsys.split.leave_last_out`;
    a repeated item keeps its latest occurrence."""
    order = np.lexsort((items, timestamps))
    items, timestamps = items[order], timestamps[order]
    by_item = np.argsort(items, kind="stable")
    last = np.ones(len(items), dtype=bool)
    last[by_item[:-1]] = items[by_item[:-1]] != items[by_item[1:]]
    return items[last], timestamps[last]


def load_history(path: str | Path) -> tuple[IntArray, IntArray]:
    """A device's own history: ``(items, timestamps)`` in temporal order.

    The file holds one ``(item, timestamp)`` row per interaction, item ids being indices
    into the job's public catalog: a ``.npy`` integer array of shape (k, 2) (read with
    ``allow_pickle=False``) or a text file with two integer columns (comma or whitespace
    separated, ``#`` comments). A repeated item keeps its latest occurrence.
    """
    p = Path(path)
    try:
        if p.suffix == ".npy":
            rows = np.load(p, allow_pickle=False)
        else:
            text = p.read_text().replace(",", " ")
            rows = np.array(
                [line.split() for line in text.splitlines() if line.split("#")[0].strip()],
                dtype=np.int64,
            ).reshape(-1, 2)
    except (OSError, ValueError) as exc:
        raise DataFormatError(str(p), None, f"not a device history ({exc})") from None
    if rows.ndim != 2 or rows.shape[1] != 2 or not np.issubdtype(rows.dtype, np.integer):
        raise DataFormatError(
            str(p), None, "a device history is a (k, 2) integer array (item, time)"
        )
    rows = rows.astype(np.int64)
    if len(rows) and rows[:, 0].min() < 0:
        raise DataFormatError(str(p), None, "negative item id")
    return _ordered(rows[:, 0], rows[:, 1])


def write_histories(
    train: Interactions, directory: str | Path, pattern: str = "device-{id}.npy"
) -> list[Path]:
    """Write every user's training history as a device file (user u -> client id u): how
    to hand a data set to simulated devices of a networked job."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for user in range(train.num_users):
        lo, hi = int(train.indptr[user]), int(train.indptr[user + 1])
        rows = np.stack([train.items[lo:hi], train.timestamps[lo:hi]], axis=1).astype(np.int64)
        path = out / pattern.format(id=user)
        np.save(path, rows, allow_pickle=False)
        paths.append(path)
    return paths


def _interactions(histories: Sequence[tuple[IntArray, IntArray]], num_items: int) -> Interactions:
    counts = np.array([len(items) for items, _ in histories], dtype=np.int64)
    indptr = np.zeros(len(histories) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(counts)
    items = np.concatenate([h[0] for h in histories]) if histories else np.zeros(0, np.int64)
    stamps = np.concatenate([h[1] for h in histories]) if histories else np.zeros(0, np.int64)
    if len(items) and items.max() >= num_items:
        raise ConfigError(f"a history names item {int(items.max())} of a {num_items}-item catalog")
    return Interactions(indptr, items, stamps, np.ones(len(items)), len(histories), num_items)


def split_from_histories(
    histories: Sequence[tuple[IntArray, IntArray]], targets: IntArray, num_items: int
) -> Split:
    """An evaluation split from device histories (one per client id) and held-out targets
    (-1: none) — the operator's own evaluation data, never the devices' files."""
    if targets.shape != (len(histories),):
        raise ConfigError("need one target per device history")
    if len(targets) and (targets.max() >= num_items or targets.min() < -1):
        raise ConfigError("targets must be item ids of the catalog or -1")
    n = len(histories)
    return Split(
        _interactions(histories, num_items),
        targets.astype(np.int64),
        np.zeros(n, dtype=np.int64),
        np.zeros(n),
        "test",
    )


def population_split(population: int, num_items: int) -> Split:
    """The server's split without evaluation data: ``population`` users it knows nothing
    about (no histories, no targets)."""
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    return split_from_histories(
        [empty] * population, np.full(population, -1, dtype=np.int64), num_items
    )


class _OneDevice(DeviceFleet):
    """A fleet of one: this device's history as user 0, with the public population size
    (the FCF target offset divides the released counts by it)."""

    def __init__(self, history: Interactions, population: int) -> None:
        super().__init__(history, np.zeros((history.num_items, 0)))
        self.num_users = population

    def solve_user_factors(
        self,
        users: IntArray,
        item_factors: FloatArray,
        item_bias: FloatArray,
        target_offset: FloatArray,
        config: FCFConfig,
        items: IntArray | None = None,
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        if self.user_factors is None:  # one row: this device's own factor
            self.user_factors = np.zeros((1, item_factors.shape[1]))
        return super().solve_user_factors(
            users, item_factors, item_bias, target_offset, config, items
        )


@dataclass(frozen=True)
class DevicePolicy:
    """A device's own policy, both halves composed: the SecAgg rules (checked on the
    announcement by :class:`~protocols.net.guard.DeviceGuard`; here they give t − n_C, the
    fewest honest noise shares of any sum the server may release) and the DP rules with the
    device's ε budget file, checked on the round's plan before anything is encoded."""

    secagg: SecAggPolicy
    dp: DPPolicy
    budget: DeviceBudget | None = None
    guard: DeviceGuard | None = None  # its pinned manifest's DP rule is checked too

    def admit(self, plan: DistributedDPPlan, info: RoundInfo) -> float | None:
        """Check ``plan`` for the round of ``info`` and charge the device budget (before
        the upload); the device's total ε after the charge (None without a budget).
        Raises :class:`RoundRefused` naming the rule."""
        try:
            config = info.spec.secagg_config(info.job)
        except ProtocolConfigError as exc:
            raise RoundRefused(f"bad round announcement: {exc}") from None
        floor = self.secagg.honest_floor(config)
        try:
            event = self.dp.check_plan(plan, floor)
            if self.guard is not None and self.guard.manifest is not None:
                check_manifest_rule(plan, self.guard.manifest.rule)
            if self.budget is None:
                return None
            return self.budget.charge(event, label=f"round {info.round_number}")
        except DPPolicyViolation as exc:
            raise RoundRefused(str(exc)) from None
        except DPError as exc:  # the accountant cannot interpret the plan's event
            raise RoundRefused(f"refused by device policy [dp.noise]: {exc}") from None


@dataclass
class DeviceTrainer:
    """One device's side of a networked training job: its history, its local update.

    Call it with each round's :class:`~protocols.net.RoundInfo` (it is the ``round_inputs``
    of :func:`protocols.net.run_device`): it rebuilds the round's task, public model and DP
    plan from the announcement, computes its local update and its distributed-DP encoding
    (secure noise unless the job asks for simulation noise and ``allow_simulation_noise``),
    and returns the ring vector. ``last_vector`` keeps the latest one (for tests).
    """

    items: IntArray
    timestamps: IntArray
    allow_simulation_noise: bool = False
    last_vector: NDArray[Any] | None = field(default=None, repr=False)
    rounds: list[int] = field(default_factory=list)
    policy: DevicePolicy | None = None
    epsilon_spent: float | None = None

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        allow_simulation_noise: bool = False,
        policy: DevicePolicy | None = None,
    ) -> DeviceTrainer:
        """A device whose history is the file at ``path`` (see :func:`load_history`);
        ``policy`` (the safe default of ``privagg client``, or the operator's) refuses
        rounds whose DP plan it does not accept."""
        items, stamps = load_history(path)
        return cls(items, stamps, allow_simulation_noise, policy=policy)

    def __call__(self, info: RoundInfo) -> NDArray[Any]:
        try:
            meta, arrays = unpack_arrays(info.spec.payload, info.job.model_bytes or (1 << 30))
            work, release = self._work(meta, arrays, info.job)
        except (DataFormatError, ConfigError, KeyError, TypeError, ValueError) as exc:
            raise RoundRefused(f"bad training round: {exc}") from None
        if work.plan.padded_dimension != info.spec.vector_length:
            raise RoundRefused("the announced vector length is not the plan's")
        if self.policy is not None:
            if (
                isinstance(work.task, PopularityTask)
                and work.task.cap > self.policy.dp.max_count_cap
            ):
                raise RoundRefused(
                    f"refused by device policy [dp.cap]: a popularity cap of {work.task.cap} "
                    f"exceeds {self.policy.dp.max_count_cap}"
                )
            # checked and charged before encoding: nothing leaves without its charge on disk
            self.epsilon_spent = self.policy.admit(work.plan, info)
        vector: NDArray[Any] = work(info.position, np.zeros(1, dtype=np.int64), release)[0]
        self.last_vector = vector
        self.rounds.append(info.round_number)
        return vector

    def _work(
        self, meta: Mapping[str, Any], arrays: Mapping[str, NDArray[Any]], job: JobSpec
    ) -> tuple[EncodeWork, int]:
        num_items, population = int(meta["num_items"]), int(meta["population"])
        if population != job.num_clients:
            raise ConfigError("the round's population is not the job's")
        if len(self.items) and self.items.max() >= num_items:
            raise ConfigError(f"this device's history names items beyond the {num_items} known")
        noise_seed = meta["noise_seed"]
        if noise_seed is not None and not self.allow_simulation_noise:
            raise RoundRefused(
                "the server asks for seeded (non-secure) simulation noise; this device only "
                "encodes with secure noise (allow it for tests with --simulation-noise)"
            )
        plan = _plan_from(meta["plan"])
        if int(meta["bits"]) != job.bits or plan.bits != job.bits:
            raise ConfigError("the round's ring is not the job's")
        history = Interactions(
            np.array([0, len(self.items)], dtype=np.int64),
            self.items,
            self.timestamps,
            np.ones(len(self.items)),
            1,
            num_items,
        )
        fleet = _OneDevice(history, population)
        server = ItemServer(num_items)
        task: ClientTask
        if meta["task"] == "popularity":
            task = PopularityTask(num_items, int(meta["cap"]))
        elif meta["task"] == "fcf":
            task = FCFTask(num_items, FCFConfig(**meta["fcf"]), float(meta["prior_shrink"]))
            server.item_factors = np.array(arrays["item_factors"], dtype=np.float64)
            server.item_bias = np.array(arrays["item_bias"], dtype=np.float64)
            server.active_items = np.array(arrays["active_items"], dtype=np.int64)
            if "popularity" in arrays:
                server.popularity = np.array(arrays["popularity"], dtype=np.float64)
            shapes = (server.item_factors.shape, server.item_bias.shape)
            if shapes != ((num_items, task.config.dim), (num_items,)):
                raise ConfigError("the public model does not fit the catalog")
            active = server.active_items
            if len(active) and (active.min() < 0 or active.max() >= num_items):
                raise ConfigError("active items outside the catalog")
        else:
            raise ConfigError(f"unknown task {meta['task']!r}")
        if task.upload_dim != plan.dimension:
            raise ConfigError("the plan's dimension is not the task's upload")
        seed = None if noise_seed is None else int(noise_seed)
        work = EncodeWork(fleet, server, task, plan, int(meta["rotation_seed"]), job.bits, seed)
        return work, int(meta["release"])


# ----------------------------------------------------------------------------- server side


@dataclass(frozen=True, eq=False)
class NetworkRound:
    """One network round as the operator sees it: the release it belongs to, the sampled
    and announced cohorts (client ids), who was summed, the ring sum (or the abort)."""

    round_number: int
    release: int
    task: str
    sampled: int
    cohort: tuple[int, ...]
    included: tuple[int, ...]
    total: NDArray[Any] | None = field(repr=False)
    aborted: str | None
    seconds: float

    def as_row(self, *, with_total: bool) -> dict[str, Any]:
        """A JSON-ready dict (the ring sum only if asked: it is as long as the upload)."""
        row: dict[str, Any] = {
            "round": self.round_number,
            "release": self.release,
            "task": self.task,
            "sampled": self.sampled,
            "cohort": list(self.cohort),
            "included": list(self.included),
            "status": "aborted" if self.aborted else "ok",
            "seconds": round(self.seconds, 4),
        }
        if self.aborted:
            row["reason"] = self.aborted
        if with_total and self.total is not None:
            row["total"] = [int(v) for v in self.total]
        return row


class NetworkExecutor:
    """The trainer's executor whose devices are the clients of a per-round network job.

    ``server`` is a started :class:`~protocols.net.AggregationServer` of a per-round
    :class:`~protocols.net.JobSpec` whose client ids are the trainer's user indices;
    ``secagg_config(m)`` gives the SecAgg configuration of a cohort of m devices (the
    channel's rule) for cohorts reduced to their connected devices. Simulated dropouts
    (``drop``) are ignored: the network has real ones. ``on_round`` sees every round.
    """

    def __init__(
        self,
        server: AggregationServer,
        secagg_config: Callable[[int], protocols.SecAggConfig],
        *,
        on_round: Callable[[NetworkRound], None] | None = None,
    ) -> None:
        if not server.job.per_round:
            raise ConfigError("a training job needs a per-round network job")
        self.server = server
        self._config_for = secagg_config
        self._on_round = on_round
        self._next = 0
        self.rounds: list[NetworkRound] = []

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
        """One network round of ``work`` among the connected devices of ``users``."""
        if not isinstance(work, EncodeWork):
            raise ConfigError("a networked job runs the recommender's EncodeWork only")
        wall = time.perf_counter()
        users = np.asarray(users, dtype=np.int64)
        if len(users) > 1 and np.any(np.diff(users) <= 0):
            raise ConfigError("the cohort must list user ids in increasing order")
        online = np.fromiter(self.server.connected(), dtype=np.int64)
        keep = np.flatnonzero(np.isin(users, online))
        cohort = users[keep]
        number, self._next = self._next, self._next + 1
        job = self.server.job
        record: dict[str, Any] = {
            "round_number": number,
            "release": round_number,
            "task": work.task.name,
        }
        if len(cohort) < max(2, job.threshold):
            reason = (
                f"{len(cohort)} of {len(users)} sampled devices are connected, below the "
                f"job's minimum cohort of {max(2, job.threshold)}"
            )
            self._record(
                NetworkRound(
                    **record,
                    sampled=len(users),
                    cohort=tuple(cohort.tolist()),
                    included=(),
                    total=None,
                    aborted=reason,
                    seconds=time.perf_counter() - wall,
                )
            )
            raise ReleaseAborted(f"release {round_number}: {reason}")
        if len(cohort) != len(users) or job.threat() is ThreatModel.MALICIOUS_SERVER:
            config = self._round_config(len(cohort))
        payload = round_payload(work, population=job.num_clients, release=round_number)
        spec = RoundSpec(
            tuple(int(u) for u in cohort),
            config.threshold,
            vector_length,
            config.neighbors,
            payload,
        )
        outcome = self.server.run_round(number, spec, graph_seed=graph_seed)
        self._record(
            NetworkRound(
                **record,
                sampled=len(users),
                cohort=spec.cohort,
                included=outcome.included,
                total=outcome.total,
                aborted=outcome.aborted,
                seconds=outcome.seconds,
            )
        )
        if outcome.aborted is not None or outcome.total is None:
            raise ReleaseAborted(
                f"release {round_number}: the network round aborted ({outcome.aborted})"
            )
        position = {int(u): i for i, u in enumerate(users)}
        included = tuple(position[cid] for cid in outcome.included)
        seconds = time.perf_counter() - wall
        return RoundOutcome(outcome.total, included, 0.0, outcome.seconds, seconds)

    def _round_config(self, size: int) -> protocols.SecAggConfig:
        """The configuration of a round of ``size`` devices: the channel's rule, except in
        malicious-server mode, where only the full graph with t > (n + n_C)/2 is valid."""
        job = self.server.job
        if job.threat() is not ThreatModel.MALICIOUS_SERVER:
            return self._config_for(size)
        gamma = job.corrupt_fraction or 0.0
        return protocols.SecAggConfig(
            size,
            min(size, malicious_threshold(size, gamma)),
            bits=job.bits,
            threat_model=ThreatModel.MALICIOUS_SERVER,
            corrupt_fraction=gamma,
        )

    def _record(self, row: NetworkRound) -> None:
        self.rounds.append(row)
        if self._on_round is not None:
            self._on_round(row)

    def close(self) -> None:
        """The server belongs to the caller: nothing to release here."""


def training_job(
    trainer: Trainer,
    *,
    min_cohort: int = 2,
    threat_model: str | None = None,
    corrupt_fraction: float | None = None,
) -> JobSpec:
    """The per-round network job of a trainer: its population, ring, vector and model caps
    (``corrupt_fraction``: required in malicious-server mode)."""
    c = trainer.config
    if c.privacy != "distributed" or c.secagg == "off":
        raise ConfigError("a networked training job needs privacy='distributed' under SecAgg")
    if c.silo_users:
        raise ConfigError("a networked training job has no silo")
    if c.sampler != "uniform" or c.devices is not None or trainer.recommender.context is not None:
        # real devices bring their own availability and context; the stratified sampler's
        # cluster release has no device runner yet
        raise ConfigError(
            "a networked training job uses uniform sampling, real devices and no simulated context"
        )
    tasks = trainer.recommender.tasks(c.rounds)
    longest = max(t.upload_dim for t, _ in tasks)
    vector = 1 << max(0, (longest - 1).bit_length())  # the rotation pads to a power of two
    model = trainer.config.model
    extra: dict[str, Any] = {} if threat_model is None else {"threat_model": threat_model}
    if corrupt_fraction is not None:
        extra["corrupt_fraction"] = corrupt_fraction
    return JobSpec(
        num_clients=trainer.num_users,
        threshold=min_cohort,
        vector_length=vector,
        rounds=max(1, sum(r for _, r in tasks)),
        bits=c.bits,
        per_round=True,
        model_bytes=model_bytes_bound(trainer.split.train.num_items, model.fcf.dim),
        **extra,
    )


def serve_training(
    server: AggregationServer,
    trainer: Trainer,
    *,
    progress: ProgressFn | None = None,
    on_round: Callable[[NetworkRound], None] | None = None,
    evaluate: bool = True,
) -> tuple[TrainResult, list[NetworkRound]]:
    """Run a trainer against the devices of a started per-round ``server``: wait for the
    devices to join (the server's join deadline), train, tell the devices the job is done.
    Without evaluation data (``evaluate=False``) the trainer's final evaluation covers no
    user and its metrics are NaN."""
    executor = NetworkExecutor(server, trainer.channel.secagg_config, on_round=on_round)
    server.wait_for_clients()
    try:
        with warnings.catch_warnings():
            if not evaluate:
                warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
                warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
            result = trainer.run(progress, executor=executor)
    finally:
        server.finish()
    return result, executor.rounds
