"""SecAgg as the inner ring sum of a private sum (``dp.private_sum.RingSum``).

:class:`SecAggSum` sums a cohort's ring rows with SecAgg on the full graph or SecAgg+
(Bell et al. 2020; the full graph when the cohort is too small for a sparse one), in
groups of at most ``group_size`` devices (one protocol instance each, their totals added
mod 2^bits), and meters bytes and seconds. It answers in plain data (``RingTotal``): an
aborted instance is an ``aborted`` reason, not an exception, so the private sum charges
nothing for it. The devices run in this process (:func:`protocols.run_secagg`, every
message encoded and strictly decoded) or, with ``carrier``, on a sharded carrier (any
object with the ``aggregate`` method of :class:`ShardCarrier`, e.g. the in-process or Ray
executors): the ring rows are then computed where the devices are.

:class:`PlainRingSum` is the same port without any protection (a modular sum of the
rows): for speed comparisons only, and it says so in every note.

``seed`` fixes only public simulation choices (the SecAgg+ graph); keys, seeds and masks
always come from the OS CSPRNG.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

import secagg
from protocols.config import SecAggConfig
from protocols.errors import ConfigError, ProtocolAborted
from protocols.round import run_secagg

__all__ = [
    "PlainRingSum",
    "RingTotal",
    "SecAggSum",
    "ShardCarrier",
    "ShardOutcome",
    "group_bounds",
]

IntArray = npt.NDArray[np.int64]
RingRows = Callable[[int, int], npt.NDArray[Any]]
"""``(lo, hi) -> ring rows`` of cohort positions ``lo..hi-1``."""
Dropouts = Callable[[int, int], Mapping[str, Iterable[int]]]
"""``(lo, hi) -> drop plan`` of that block (stage name -> block positions)."""


@dataclass(frozen=True, eq=False)
class RingTotal:
    """The plain-data answer of a ring sum (``dp.private_sum.RingOutcome``, structurally:
    protocols does not import dp). ``total`` is ``None`` when the sum aborted."""

    total: npt.NDArray[Any] | None
    included: tuple[int, ...]
    aborted: str | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    seconds: float = 0.0
    device_seconds: float = 0.0
    note: str = ""


class ShardOutcome(Protocol):
    """What a sharded carrier reports for one instance."""

    total: npt.NDArray[Any]
    included: tuple[int, ...]
    work_seconds: float
    protocol_seconds: float


class ShardCarrier(Protocol):
    """Runs one SecAgg instance whose devices live on shard hosts (server side here)."""

    def aggregate(
        self,
        work: Callable[[int, IntArray, int], npt.NDArray[Any]],
        users: IntArray,
        config: SecAggConfig,
        vector_length: int,
        *,
        round_number: int,
        graph_seed: bytes,
        drop: Mapping[str, Iterable[int]] | None = None,
    ) -> ShardOutcome: ...


def group_bounds(n: int, group_size: int) -> list[tuple[int, int]]:
    """Cohort positions of each SecAgg instance: blocks of at most ``group_size`` (a lone
    last device joins the previous block: nobody is aggregated alone)."""
    group = max(2, group_size)
    bounds = [(lo, min(n, lo + group)) for lo in range(0, n, group)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < 2:
        bounds[-2] = (bounds[-2][0], n)
        bounds.pop()
    return bounds


@dataclass(frozen=True)
class _BlockWork:
    """A carrier's client work from a rows function: the shard's users are the cohort
    positions ``lo..hi-1`` (shards are contiguous), so its rows are ``rows(lo, hi)``."""

    rows: RingRows
    bits: int

    def __call__(self, shard: int, users: IntArray, round_number: int) -> npt.NDArray[Any]:
        lo, hi = int(users[0]), int(users[-1]) + 1
        out: npt.NDArray[Any] = np.asarray(self.rows(lo, hi)).astype(secagg.ring_dtype(self.bits))
        return out


def _drop_plan(dropouts: Dropouts | None, lo: int, hi: int) -> dict[str, list[int]]:
    if dropouts is None:
        return {}
    return {stage: [int(i) for i in ids] for stage, ids in dropouts(lo, hi).items()}


class SecAggSum:
    """SecAgg (``mode="full"``) or SecAgg+ (``"plus"``) as a ``dp`` ring sum.

    ``dropout_rate`` is the dropout the SecAgg+ graph is sized for (the simulated
    dropouts themselves come with each call); ``group_size`` caps one instance.
    """

    def __init__(
        self,
        mode: Literal["full", "plus"] = "plus",
        *,
        dropout_rate: float = 0.1,
        group_size: int = 5000,
        seed: int = 0,
        carrier: ShardCarrier | None = None,
    ) -> None:
        if mode not in ("full", "plus"):
            raise ConfigError(f"mode must be 'full' or 'plus', got {mode!r}")
        if not 0 <= dropout_rate < 1:
            raise ConfigError(f"dropout_rate must lie in [0, 1), got {dropout_rate!r}")
        if group_size < 2:
            raise ConfigError("group_size must be at least 2")
        self.mode = mode
        self.dropout_rate = dropout_rate
        self.group_size = group_size
        self.seed = seed
        self.carrier = carrier
        self._configs: dict[tuple[int, int], SecAggConfig] = {}

    @property
    def remote(self) -> bool:
        """Whether the rows are computed on the carrier's hosts (then pickled)."""
        return self.carrier is not None

    def min_honest_contributions(self, cohort_size: int, bits: int) -> int:
        """t − n_C summed over the cohort's instances: the fewest honest inputs in any sum
        the protocol lets the server unmask (:attr:`SecAggConfig.min_honest_survivors`)."""
        if cohort_size < 2:
            return max(0, cohort_size)
        return sum(
            self.config(hi - lo, bits).min_honest_survivors
            for lo, hi in group_bounds(cohort_size, self.group_size)
        )

    def config(self, n: int, bits: int) -> SecAggConfig:
        """The configuration of one instance of ``n`` devices (SecAgg+ when configured and
        the group is large enough for a sparse graph, else the full graph, t = ⌊n/2⌋ + 1).
        Cached: finding the SecAgg+ degree evaluates the graph's tail bounds."""
        key = (n, bits)
        if key not in self._configs:
            self._configs[key] = self._config(n, bits)
        return self._configs[key]

    def _config(self, n: int, bits: int) -> SecAggConfig:
        if self.mode == "plus":
            try:
                return SecAggConfig.plus(n, dropout_rate=self.dropout_rate, bits=bits)
            except ConfigError:
                pass  # cohort too small for a sparse graph: the full graph is the answer
        try:
            return SecAggConfig(n, n // 2 + 1, bits=bits, dropout_rate=self.dropout_rate)
        except ConfigError:
            # a tiny group (e.g. the last two devices of a cohort) cannot expect the full
            # dropout rate and keep t = ⌊n/2⌋ + 1: the rate only checks the expectation, the
            # protocol still tolerates dropouts down to t (and aborts below it)
            return SecAggConfig(n, n // 2 + 1, bits=bits)

    def __call__(
        self,
        rows: RingRows,
        *,
        cohort_size: int,
        bits: int,
        length: int,
        round_index: int,
        dropouts: Dropouts | None = None,
    ) -> RingTotal:
        """Sum the rows of ``cohort_size`` devices, group by group."""
        n = cohort_size
        if n < 2:
            return RingTotal(None, (), aborted=f"only {n} device(s) in the cohort")
        total: npt.NDArray[Any] | None = None
        included: list[int] = []
        up = down = 0
        seconds = device_seconds = 0.0
        note = f"secagg={self.mode}"
        if self.carrier is not None:
            note += f" on {type(self.carrier).__name__}"
        for lo, hi in group_bounds(n, self.group_size):
            config = self.config(hi - lo, bits)
            drop = _drop_plan(dropouts, lo, hi)
            try:
                if self.carrier is None:
                    block = rows(lo, hi)
                    start = time.perf_counter()
                    sub_round = round_index * 7919 + lo
                    result = run_secagg(
                        np.asarray(block).astype(secagg.ring_dtype(bits), copy=False),
                        config,
                        drop=drop,
                        seed=self.seed * 1_000_003 + sub_round,
                        round_number=sub_round,
                    )
                    seconds += time.perf_counter() - start
                    part, members = result.total, result.included
                    up += sum(s.upload_bytes for s in result.stages)
                    down += sum(s.download_bytes for s in result.stages)
                else:
                    label = f"privagg/channel/graph/{self.seed}/{round_index}/{lo}".encode()
                    outcome = self.carrier.aggregate(
                        _BlockWork(rows, bits),
                        np.arange(lo, hi, dtype=np.int64),
                        config,
                        length,
                        round_number=round_index,
                        graph_seed=hashlib.sha256(label).digest(),
                        drop=drop,
                    )
                    part, members = outcome.total, outcome.included
                    seconds += outcome.protocol_seconds
                    device_seconds += outcome.work_seconds
            except ProtocolAborted as exc:
                return RingTotal(
                    None,
                    (),
                    aborted=f"secure aggregation aborted ({exc})",
                    bytes_up=up,
                    bytes_down=down,
                    seconds=seconds,
                    device_seconds=device_seconds,
                )
            part = np.asarray(part).astype(secagg.ring_dtype(bits))
            total = part if total is None else secagg.ring_add(total, part, bits)
            included.extend(lo + int(p) for p in members)
        return RingTotal(
            total,
            tuple(included),
            bytes_up=up,
            bytes_down=down,
            seconds=seconds,
            device_seconds=device_seconds,
            note=note,
        )


class PlainRingSum:
    """A plain modular sum of the rows: **no protection**, for speed comparisons only.

    The bytes are the packed rows the server would receive in the clear.
    """

    def __init__(self, group_size: int = 5000) -> None:
        self.group_size = group_size

    @property
    def remote(self) -> bool:
        """The rows are computed in this process."""
        return False

    def min_honest_contributions(self, cohort_size: int, bits: int) -> int:
        """No floor of its own: the server sees every row anyway (speed comparisons only)."""
        return cohort_size

    def __call__(
        self,
        rows: RingRows,
        *,
        cohort_size: int,
        bits: int,
        length: int,
        round_index: int,
        dropouts: Dropouts | None = None,
    ) -> RingTotal:
        n = cohort_size
        if n < 2:
            return RingTotal(None, (), aborted=f"only {n} device(s) in the cohort")
        total: npt.NDArray[Any] | None = None
        included: list[int] = []
        up = 0
        seconds = 0.0
        for lo, hi in group_bounds(n, self.group_size):
            block = np.asarray(rows(lo, hi)).astype(secagg.ring_dtype(bits), copy=False)
            start = time.perf_counter()
            keep = np.ones(hi - lo, dtype=bool)
            for stage, ids in _drop_plan(dropouts, lo, hi).items():
                if stage != "unmask":  # a device lost while unmasking is still in the sum
                    keep[list(ids)] = False
            if keep.any():
                part = secagg.ring_sum(block[keep], bits)
                total = part if total is None else secagg.ring_add(total, part, bits)
            up += int(keep.sum()) * block.shape[1] * ((bits + 7) // 8)
            included.extend(lo + int(i) for i in np.flatnonzero(keep))
            seconds += time.perf_counter() - start
        if total is None:
            return RingTotal(None, (), aborted="every device dropped out")
        return RingTotal(
            total,
            tuple(included),
            bytes_up=up,
            seconds=seconds,
            note="secagg=off: plain sum (speed comparison only)",
        )
