"""Release channels: how a cohort's uploads become the one aggregate the server sees.

* ``distributed`` (default): every device encodes its clipped upload with ``dp``'s
  distributed-DP plan (rotation, scaling, conditional rounding, a discrete Gaussian or
  Skellam noise share, reduction mod 2^b); the ring vectors are summed by
  ``protocols.run_secagg`` (SecAgg on the full graph or SecAgg+) with simulated dropouts,
  and the server decodes the sum. The event charged is the plan's, with the number of
  noise shares that actually reached the sum. Integer-count releases (a task whose
  ``count_cap`` is set: the popularity release) skip rotation and rounding and always use
  Skellam shares (``dp.plan_distributed_counts``): their sum is an exact Skellam, so the
  accountant charges the exact privacy loss (no RDP slack, no discretization inflation).
* ``central``: a trusted server; devices quantize their clipped uploads (no noise), the
  sum goes through SecAgg as above, and the server adds Gaussian noise of std z·c with
  ``dp.central.central_gaussian`` (lattice + exact discrete Gaussian: not porous).
* ``none``: the exact (quantized) sum, no noise; the event is non-private (ε = ∞).

With an executor (:meth:`Channel.release_on`, ``distributed`` under SecAgg only), the
devices' local update, encoding and SecAgg client steps run on a
:mod:`recsys.executors` executor (in this process or on Ray actors) instead.

:meth:`Channel.release` is the composition stack itself: ``dp.private_sum``'s
``DistributedDpSum`` / ``CentralDpSum`` / ``NoDpSum`` over ``protocols.SecAggSum`` (or
``PlainRingSum``), with this channel's plans injected; the channel wraps the events in its
Poisson sampling, once.

``secagg="off"`` replaces the protocol by a plain modular sum of the same ring vectors —
for speed comparisons only; every release record says so. Dropouts are simulated with a
seeded generator (who drops is not a secret); cohort sampling and noise use the ``dp``
noise generator (secure by default, or ``dp``'s seeded ``SimulationRng`` when asked).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

import protocols
import secagg
from dp.central import central_gaussian
from dp.cohort import Dropouts, FixedDrops, FullCohort, PoissonCohort, SeededDropouts
from dp.distributed import decode
from dp.distributed_sum import DistributedDpSum, plan_release
from dp.errors import DPValueError, PlanningError
from dp.events import NonPrivateEvent, PoissonSampledEvent, PrivacyEvent
from dp.ledger import charged_event
from dp.noiseless_sum import CentralDpSum, NoDpSum
from dp.planning import (
    DistributedDPPlan,
    worst_case_contributors,
)
from dp.private_sum import PrivateSum, RingSum, UpdateSource
from dp.rng import NoiseRng, SecureRng, SimulationRng
from dp.rotation import padded_dimension
from dp.samplers import bernoulli
from protocols.messages import MaskedInput
from protocols.secagg_sum import PlainRingSum, SecAggSum, group_bounds
from recsys.errors import ConfigError, ReleaseAborted
from recsys.executors import EncodeWork, Executor
from recsys.federated import ClientTask, DeviceFleet, ItemServer

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

UploadFn = Callable[[int, int], FloatArray]
"""``(lo, hi) -> uploads`` of devices ``lo..hi-1`` of the cohort."""

DropPlan = Mapping[str, Sequence[int]]
"""SecAgg stage name -> cohort positions of the devices that vanish just before sending that
stage's message (e.g. ``{"advertise": offline, "mask": missed_deadline}``)."""


def _group_plan(plan: DropPlan | None, lo: int, hi: int) -> dict[str, list[int]] | None:
    """The part of a cohort-wide drop plan that falls in the group ``lo..hi-1`` (re-based)."""
    if plan is None:
        return None
    return {s: [int(i) - lo for i in ids if lo <= int(i) < hi] for s, ids in plan.items()}


__all__ = ["Channel", "ChannelSpec", "DropPlan", "Release", "UploadFn", "make_channel"]

_TOP53 = np.uint64(11)
# Scale of the noiseless quantization used by the "none" and "central" modes: 2^-20 of a
# clip norm per step keeps the rounding error far below any DP noise, and the ring width is
# chosen so that the sum of the cohort cannot wrap.
_PLAIN_STEPS_PER_CLIP = float(1 << 20)
MAX_L2_INFLATION = 1.25
"""A ring too narrow for the sum forces a coarse granularity whose rounding inflates the
sensitivity (and so the noise needed for the same ε); past this factor the channel refuses
the bit width instead of silently training on mostly noise."""


@dataclass(frozen=True)
class ChannelSpec:
    """How releases are made (a projection of the trainer configuration)."""

    privacy: Literal["none", "central", "distributed"]
    secagg: Literal["full", "plus", "off"]
    dropout: float
    mechanism: Literal["discrete_gaussian", "skellam"]
    bits: int
    delta: float
    seed: int
    simulation_noise: bool
    group_size: int = 5000
    population: int | None = None  # devices sampled from (None: every release uses all)


@dataclass(frozen=True)
class Release:
    """The server's view of one round: the decoded (noisy) sum and what it cost."""

    total: FloatArray
    included: int
    dropped: int
    event: PrivacyEvent
    planned_event: PrivacyEvent
    included_positions: tuple[int, ...]
    bytes_up: int
    bytes_down: int
    encode_seconds: float
    secagg_seconds: float
    decode_seconds: float
    note: str
    noise_std: float = 0.0  # per-coordinate std of the noise in ``total`` (upload units)


def _uniform(rng: NoiseRng, n: int) -> FloatArray:
    return (rng.words(n) >> _TOP53).astype(np.float64) * 2.0**-53


class Channel:
    """Encodes, securely aggregates and decodes; also samples cohorts and models events."""

    def __init__(self, spec: ChannelSpec) -> None:
        self.spec = spec
        self.rng: NoiseRng = SimulationRng(spec.seed) if spec.simulation_noise else SecureRng()
        self._dropout_sim = SeededDropouts(spec.dropout, spec.seed)
        self._plans: dict[tuple[int, float, float, int, int | None], DistributedDPPlan] = {}
        self._floors: dict[int, int] = {}  # expected cohort -> t - n_C of its groups
        self._private_sum = self._make_private_sum()

    def _make_private_sum(self) -> PrivateSum:
        """The release stage: dp's private sum of the configured kind over SecAgg(+)."""
        spec = self.spec
        inner: RingSum = (
            PlainRingSum(spec.group_size)
            if spec.secagg == "off"
            else SecAggSum(
                spec.secagg, dropout_rate=spec.dropout, group_size=spec.group_size, seed=spec.seed
            )
        )
        if spec.privacy == "central":
            return CentralDpSum(inner, rng=self.rng)
        if spec.privacy == "none":
            return NoDpSum(inner, rng=self.rng)
        return DistributedDpSum(
            inner,
            bits=spec.bits,
            mechanism="ddg" if spec.mechanism == "discrete_gaussian" else "skellam",
            dropout=spec.dropout,
            population=spec.population,
            seed=spec.seed,
            rng=self.rng,
            planner=self.plan,  # one plan per release, sized by this channel
        )

    @property
    def mechanism_name(self) -> str:
        """Human-readable name of the noise mechanism."""
        if self.spec.privacy == "none":
            return "none"
        if self.spec.privacy == "central":
            return "central Gaussian (trusted server)"
        name = "discrete Gaussian" if self.spec.mechanism == "discrete_gaussian" else "Skellam"
        return f"distributed {name} under SecAgg (count releases: exact Skellam)"

    # ------------------------------------------------------------------ sampling and planning
    def sample(self, population: int, rate: float) -> BoolArray:
        """Poisson sampling: each device joins independently with probability ``rate``."""
        if not 0 < rate <= 1:
            raise ConfigError("sampling rate must lie in (0, 1]")
        chosen: BoolArray = _uniform(self.rng, population) < rate
        return chosen

    def sample_each(self, probabilities: FloatArray) -> BoolArray:
        """Heterogeneous Poisson sampling: device i joins independently with its own
        probability ``probabilities[i]`` (each device flips its own coin; exact Bernoulli)."""
        try:
            return bernoulli(probabilities, self.rng)
        except DPValueError as exc:
            raise ConfigError(f"bad inclusion probabilities: {exc}") from None

    def min_contributors(self, expected: int) -> int:
        """Noise shares the plan guarantees: the fewest honest survivors the protocol lets
        the server release (t − n_C summed over the release's SecAgg groups, see
        :func:`dp.planning.worst_case_contributors`), and never more than
        :meth:`survivors_bound` (the event is re-stated if fewer arrive). Without SecAgg
        (``secagg="off"``, speed comparisons) only the statistical bound applies.
        """
        bound = self.survivors_bound(expected)
        if self.spec.secagg == "off" or expected < 2:
            return bound
        floor = self._floors.get(expected)
        if floor is None:  # cached: the SecAgg+ parameter search is not free
            threshold = corrupt = 0
            for lo, hi in self._groups(expected):
                config = self._secagg_config(hi - lo, None)
                threshold += config.threshold
                corrupt += config.corrupt_clients
            floor = self._floors[expected] = threshold - corrupt
        return worst_case_contributors(floor, 0, bound)

    def survivors_bound(self, expected: int) -> int:
        """The expected survivors minus 4 standard deviations of their count.

        Survivors of a Poisson cohort are Binomial(N, q(1 − p)) with q = expected / N:
        variance E(1 − p)(1 − q(1 − p)), which is the dropout variance E·p(1 − p) at q = 1
        and also bounds heterogeneous (stratified) sampling of the same mean rate (Jensen).
        Leaving out the cohort-size term would make every smaller-than-expected cohort
        release less noise than planned (and overspend ε).
        """
        p = self.spec.dropout
        population = self.spec.population
        q = 1.0 if population is None else min(1.0, expected / max(population, 1))
        variance = expected * (1.0 - p) * (1.0 - q * (1.0 - p))
        survivors = expected * (1.0 - p) - 4.0 * math.sqrt(variance)
        return max(1, min(expected, math.floor(survivors)))

    def _max_contributors(self, expected: int) -> int:
        return expected + math.ceil(6 * math.sqrt(expected)) + 8

    def counts_encoding(self, count_cap: int | None, expected: int) -> bool:
        """Whether a release of 0/1 uploads with at most ``count_cap`` ones is planned with
        the counts encoding: whenever the counts of every possible contributor fit in a
        quarter of the ring. :meth:`plan` still falls back to the rotated encoding if the
        noise would not fit in the rest (only for noise far beyond any useful ε)."""
        return count_cap is not None and self._max_contributors(expected) < 2 ** (
            self.spec.bits - 2
        )

    def plan(
        self,
        dimension: int,
        clip_norm: float,
        noise_multiplier: float,
        expected: int,
        count_cap: int | None = None,
    ) -> DistributedDPPlan:
        """The distributed-DP plan of a release (cached: identical rounds share one plan).

        ``count_cap`` marks uploads that are 0/1 vectors with at most that many ones (their
        ``clip_norm`` must then be √count_cap): see :meth:`counts_encoding`.
        """
        counts = self.counts_encoding(count_cap, expected)
        key = (dimension, clip_norm, noise_multiplier, expected, count_cap if counts else None)
        if key in self._plans:
            return self._plans[key]
        if counts:
            assert count_cap is not None
            if not math.isclose(clip_norm, math.sqrt(count_cap)):
                raise ConfigError("a counts release must have clip_norm = √count_cap")
        plan = plan_release(
            dimension,
            clip_norm,
            noise_multiplier,
            expected,
            count_cap if counts else None,
            min_contributors=self.min_contributors(expected),
            max_contributors=self._max_contributors(expected),
            bits=self.spec.bits,
            mechanism="ddg" if self.spec.mechanism == "discrete_gaussian" else "skellam",
        )
        self._plans[key] = plan
        return plan

    def check_ring(
        self,
        dimension: int,
        clip_norm: float,
        noise_multiplier: float,
        expected: int,
        count_cap: int | None = None,
    ) -> None:
        """Refuse a ring too narrow for this release (raises :class:`PlanningError`): one
        whose granularity inflates the sensitivity by more than :data:`MAX_L2_INFLATION`."""
        if self.spec.privacy != "distributed":
            return
        plan = self.plan(dimension, clip_norm, noise_multiplier, expected, count_cap)
        if plan.l2_inflation > MAX_L2_INFLATION:
            raise PlanningError(
                f"{plan.bits} bits: holding the sum of {plan.max_contributors} contributors of "
                f"{dimension} coordinates (noise multiplier {noise_multiplier:.3g}) needs a "
                f"granularity that inflates the L2 sensitivity by {plan.l2_inflation:.3f} > "
                f"{MAX_L2_INFLATION} (more noise for the same ε); use more bits"
            )

    def masked_input_size(
        self, dimension: int, cohort: int, count_cap: int | None = None
    ) -> tuple[int, int]:
        """(ring coordinates, wire bytes) of one device's masked input in a release of
        uploads of ``dimension`` values by ``cohort`` devices: the SecAgg ``"mask"`` message
        as :mod:`protocols.messages` serializes it."""
        if self.spec.privacy == "distributed":
            counts = self.counts_encoding(count_cap, cohort)
            length = dimension if counts else padded_dimension(dimension)
            bits = self.spec.bits
        else:
            length, bits = dimension, self._plain_bits(max(cohort, 2))
        vector = np.zeros(length, dtype=secagg.ring_dtype(bits))
        return length, len(MaskedInput(0, bits, vector).to_bytes())

    def planned_event(
        self,
        dimension: int,
        clip_norm: float,
        noise_multiplier: float,
        expected: int,
        count_cap: int | None = None,
    ) -> PrivacyEvent:
        """The event one release at this noise would produce (before sampling)."""
        secure = self.rng.secure
        if self.spec.privacy == "none":
            return NonPrivateEvent()
        if self.spec.privacy == "central":
            # the event of dp's central path depends only on (Δ, z, d): probe it on zeros
            _, probe = central_gaussian(
                np.zeros(dimension),
                l2_sensitivity=clip_norm,
                noise_multiplier=noise_multiplier,
                rng=SecureRng(),
            )
            return dataclasses.replace(probe, secure=secure)
        plan = self.plan(dimension, clip_norm, noise_multiplier, expected, count_cap)
        return plan.event(secure=secure)

    # ------------------------------------------------------------------ one release
    def _secagg_config(self, n: int, max_abs: int | None) -> protocols.SecAggConfig:
        p = self.spec.dropout
        bits = self.spec.bits if self.spec.privacy == "distributed" else self._plain_bits(n)
        if self.spec.secagg == "plus":
            try:
                return protocols.SecAggConfig.plus(n, dropout_rate=p, bits=bits)
            except protocols.ConfigError:
                pass  # cohort too small for a sparse graph: the full graph is the answer
        return protocols.SecAggConfig(n, n // 2 + 1, bits=bits, dropout_rate=p)

    def secagg_config(self, n: int) -> protocols.SecAggConfig:
        """The SecAgg configuration of a group of ``n`` devices (SecAgg+ when configured
        and the group is large enough for a sparse graph, else the full graph)."""
        return self._secagg_config(n, None)

    @staticmethod
    def _plain_bits(n: int) -> int:
        return min(62, secagg.required_bits(n, int(_PLAIN_STEPS_PER_CLIP) + 1) + 1)

    def _stage_drops(self, n: int, plan: DropPlan | None) -> dict[str, list[int]]:
        """The drop plan of one SecAgg instance: the given one (e.g. the device simulator's
        deadline misses), or the seeded random dropouts of ``spec.dropout``."""
        if plan is not None:
            return {stage: sorted(int(i) for i in ids) for stage, ids in plan.items()}
        return self._dropout_sim(0, n)

    def _groups(self, n: int) -> list[tuple[int, int]]:
        """Cohort positions of each SecAgg instance (the private sum's grouping)."""
        return group_bounds(n, self.spec.group_size)

    def _decode_distributed(
        self,
        total: NDArray[np.uint64],
        plan: DistributedDPPlan,
        rotation_seed: int,
        included: int,
        sampling_rate: float,
        note: str,
    ) -> tuple[FloatArray, PrivacyEvent, PrivacyEvent, str]:
        """Decode a distributed-DP aggregate: (values, planned event, charged event, note).

        The noise in the values has per-coordinate std :func:`_noise_std` (the rotation is
        orthonormal, so rotated noise keeps its variance)."""
        values, report = decode(
            total, plan, rotation_seed=rotation_seed, num_contributors=included, strict=False
        )
        planned: PrivacyEvent = plan.event(secure=self.rng.secure)
        if sampling_rate < 1.0:
            planned = PoissonSampledEvent(sampling_rate, planned)
        # Fewer noise shares than planned: charge what the aggregate really contains.
        charged = charged_event(planned, "released", included)
        if not report.meets_plan:
            note += "; fewer noise shares than planned"
        return values, planned, charged, note

    def release_on(
        self,
        executor: Executor,
        task: ClientTask,
        fleet: DeviceFleet,
        server: ItemServer,
        cohort: IntArray,
        *,
        noise_multiplier: float,
        sampling_rate: float,
        expected_clients: int,
        round_index: int,
        drop_plan: DropPlan | None = None,
    ) -> Release:
        """:meth:`release` of a distributed-DP round whose devices run on ``executor``.

        Each group of the cohort (user ids ``cohort``) is one executor round: the devices
        compute ``task``'s local update, encode it with ``dp.encode_many`` and run the SecAgg
        client; the server side and the decoding are the same as in :meth:`release`. With
        ``simulation_noise`` every (group, round, shard) gets its own seeded generator, so
        the aggregate does not depend on where the shards run. Bytes are not metered here.
        """
        if self.spec.privacy != "distributed" or self.spec.secagg == "off":
            raise ConfigError("an executor runs distributed-DP releases under SecAgg only")
        n = len(cohort)
        if n < 2:
            raise ReleaseAborted(f"round {round_index}: only {n} device(s) in the cohort")
        plan = self.plan(
            task.upload_dim, task.clip_norm, noise_multiplier, expected_clients, task.count_cap
        )
        if n > plan.max_contributors:
            raise ReleaseAborted(
                f"round {round_index}: {n} devices exceed the ring plan ({plan.max_contributors})"
            )
        rotation_seed = (self.spec.seed << 20) ^ round_index
        bits = self.spec.bits
        total: NDArray[np.uint64] | None = None
        positions: list[int] = []
        work_s = protocol_s = 0.0
        for lo, hi in self._groups(n):
            noise_seed = self.spec.seed * 1_000_003 + lo if self.spec.simulation_noise else None
            work = EncodeWork(fleet, server, task, plan, rotation_seed, bits, noise_seed)
            drop = self._stage_drops(hi - lo, _group_plan(drop_plan, lo, hi))
            label = f"privagg/channel/graph/{self.spec.seed}/{round_index}/{lo}".encode()
            try:
                outcome = executor.aggregate(
                    work,
                    cohort[lo:hi],
                    self._secagg_config(hi - lo, None),
                    plan.padded_dimension,
                    round_number=round_index,
                    graph_seed=hashlib.sha256(label).digest(),
                    drop=drop,
                )
            except protocols.ProtocolAborted as exc:
                raise ReleaseAborted(
                    f"round {round_index}: secure aggregation aborted ({exc})"
                ) from exc
            part = outcome.total.astype(secagg.ring_dtype(bits))
            total = part if total is None else secagg.ring_add(total, part, bits)
            positions.extend(lo + p for p in outcome.included)
            work_s += outcome.work_seconds
            protocol_s += outcome.protocol_seconds
        assert total is not None
        t0 = time.perf_counter()
        note = f"secagg={self.spec.secagg} on {type(executor).__name__}"
        values, planned, charged, note = self._decode_distributed(
            total, plan, rotation_seed, len(positions), sampling_rate, note
        )
        return Release(
            total=values,
            included=len(positions),
            dropped=n - len(positions),
            event=charged,
            planned_event=planned,
            included_positions=tuple(positions),
            bytes_up=0,
            bytes_down=0,
            encode_seconds=work_s,
            secagg_seconds=protocol_s,
            decode_seconds=time.perf_counter() - t0,
            note=note,
            noise_std=_noise_std(plan, len(positions)),
        )

    def release(
        self,
        uploads: FloatArray | UploadFn,
        *,
        clip_norm: float,
        noise_multiplier: float,
        sampling_rate: float,
        expected_clients: int,
        round_index: int,
        cohort_size: int | None = None,
        drop_plan: DropPlan | None = None,
        count_cap: int | None = None,
    ) -> Release:
        """Run one release of a cohort's uploads and decode the aggregate.

        ``count_cap`` marks 0/1 uploads with at most that many ones (see :meth:`plan`).

        ``uploads`` is the (n × D) upload matrix, or a function ``(lo, hi) -> uploads`` of
        devices ``lo..hi-1`` of a cohort of ``cohort_size``: large cohorts are then computed,
        encoded and securely aggregated in groups of at most ``spec.group_size`` devices
        (one SecAgg instance each), and only the modular sum of the group sums is decoded.
        ``drop_plan`` (cohort positions per SecAgg stage) replaces the seeded random dropouts
        of ``spec.dropout``: the device simulator's offline and late devices.

        The release is ``dp.private_sum``'s (distributed, central or none) over
        ``protocols.SecAggSum`` (or the plain sum of ``secagg="off"``); the Poisson sampling
        of the cohort wraps its events here, once.
        """
        source: UpdateSource
        if callable(uploads):
            if cohort_size is None:
                raise ConfigError("cohort_size is required with an upload function")
            n, source = cohort_size, _FirstBlock(uploads, n=cohort_size, group=self.spec.group_size)
            dimension: int | None = source.dimension()
        else:
            n, source, dimension = uploads.shape[0], uploads, None
        if n < 2:
            raise ReleaseAborted(f"round {round_index}: only {n} device(s) in the cohort")
        dropouts: Dropouts = self._dropout_sim if drop_plan is None else FixedDrops(drop_plan)
        try:
            release = self._private_sum.release(
                source,
                clip_norm=clip_norm,
                noise_multiplier=noise_multiplier,
                expected_contributors=expected_clients,
                round_index=round_index,
                dimension=dimension,
                cohort_size=n,
                count_cap=count_cap,
                dropouts=dropouts,
            )
        except DPValueError as exc:
            raise ConfigError(str(exc)) from None
        if release.total is None:
            raise ReleaseAborted(f"round {round_index}: {release.aborted}")
        sampler = PoissonCohort(sampling_rate, self.rng) if sampling_rate < 1.0 else FullCohort()
        return Release(
            total=release.total,
            included=len(release.included),
            dropped=release.dropped,
            event=sampler.wrap(release.event),
            planned_event=sampler.wrap(release.planned_event),
            included_positions=release.included,
            bytes_up=release.ring.bytes_up,
            bytes_down=release.ring.bytes_down,
            encode_seconds=release.encode_seconds,
            secagg_seconds=release.ring.seconds,
            decode_seconds=release.decode_seconds,
            note=release.note,
            noise_std=release.noise_std,
        )


class _FirstBlock:
    """An upload function whose first SecAgg group is computed once, early, to learn the
    upload length (the private sum plans the release before it asks for any block)."""

    def __init__(self, fn: UploadFn, *, n: int, group: int) -> None:
        self.fn = fn
        self.first = group_bounds(n, group)[0]
        self.block: FloatArray | None = None

    def dimension(self) -> int:
        self.block = np.asarray(self.fn(*self.first), dtype=np.float64)
        if self.block.ndim != 2:
            raise ConfigError(f"uploads of devices {self.first} have shape {self.block.shape}")
        return int(self.block.shape[1])

    def __call__(self, lo: int, hi: int) -> FloatArray:
        if (lo, hi) == self.first and self.block is not None:
            block, self.block = self.block, None
            return block
        return np.asarray(self.fn(lo, hi), dtype=np.float64)


def _noise_std(plan: DistributedDPPlan, included: int) -> float:
    """Per-coordinate noise std of a decoded distributed sum of ``included`` shares."""
    return plan.gamma * math.sqrt(float(plan.local_variance) * included)


def make_channel(spec: ChannelSpec) -> Channel:
    """Build the channel of a specification."""
    if spec.privacy not in ("none", "central", "distributed"):
        raise ConfigError(f"unknown privacy mode {spec.privacy!r}")
    return Channel(spec)
