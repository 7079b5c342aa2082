"""The federated trainer: composes devices, DP encoding, secure aggregation and accounting.

Per round: Poisson-sample a cohort (rate q = cohort / num_users, the rate the accountant
amplifies; q = 1 without a cohort) → local update on every sampled device, vectorised
over the cohort → clip → release through the channel of the privacy mode (distributed-DP
encode → SecAgg / SecAgg+ with simulated dropouts → decode, or the central / non-private
variants) → server step → ledger entry → periodic evaluation.

Releases: the popularity release first (when the model uses it), then the FCF rounds.
The budget split is explicit: the popularity release alone would spend
``popularity_share · ε``; the rounds get the noise that makes the composition of everything
reach ε exactly (calibrated by the ``dp`` accountant). Both are recorded in the ledger.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from dp.accounting import stratum_epsilons
from dp.budget import BudgetPolicy
from dp.events import (
    NonPrivateEvent,
    PoissonSampledEvent,
    PrivacyEvent,
    StratifiedPoissonSampledEvent,
)
from dp.ledger import ADJACENCIES, ADJACENCY_DESCRIPTIONS, PrivacyLedger, Provenance, Signer
from recsys.channels import Channel, ChannelSpec, DropPlan, Release, make_channel
from recsys.context import OnDeviceContext
from recsys.devices import DeviceConfig, DeviceRound, DeviceSimulator
from recsys.errors import ConfigError, ReleaseAborted
from recsys.executors import Executor, make_executor
from recsys.federated import ClientTask
from recsys.metrics import RankingReport, evaluate_ranking
from recsys.privacy import BudgetPlan, plan_budget
from recsys.recommender import FederatedRecommender, ModelConfig
from recsys.sampling import (
    SAMPLERS,
    ClusterCountTask,
    StratifiedConfig,
    calibrate_cluster_noise,
)
from recsys.silo import SiloConfig, SiloResult, train_silo
from recsys.split import Split

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

PrivacyMode = Literal["none", "central", "distributed"]
SecAggMode = Literal["full", "plus", "off"]
PRIVACY_MODES: tuple[str, ...] = ("none", "central", "distributed")
SECAGG_MODES: tuple[str, ...] = ("full", "plus", "off")

__all__ = [
    "PRIVACY_MODES",
    "SECAGG_MODES",
    "RoundRecord",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "communication_summary",
    "open_ledger",
]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (and goes into the summary and the ledger).

    ``rounds`` counts the FCF rounds after the popularity release; ``cohort`` is the expected
    number of devices per round (Poisson sampling), ``None`` for full participation.
    ``group_size`` caps the devices of one SecAgg instance (larger cohorts are aggregated in
    groups whose sums are added before decoding). ``simulation_noise`` swaps the secure
    noise generator for ``dp``'s seeded, explicitly non-secure one, making runs
    bit-identical for a seed (tests, reproductions); the ledger and the report card say so.
    ``executor`` (``"local"`` or ``"ray"``; ``None`` = the in-process simulation) runs the
    devices of each distributed-DP round on a :mod:`recsys.executors` executor, Ray at
    ``ray_address`` (``None`` starts a local Ray instance). ``bits`` is the ring width of
    the distributed-DP encoding (the planner picks the granularity that fits the sum, or
    refuses). ``devices`` simulates heterogeneous devices with a round deadline
    (:mod:`recsys.devices`): its offline and late devices replace the random ``dropout``.
    """

    privacy: PrivacyMode = "distributed"
    epsilon: float = 8.0
    delta: float = 1e-4
    rounds: int = 20
    cohort: int | None = None
    secagg: SecAggMode = "plus"
    dropout: float = 0.1
    seed: int = 0
    popularity_share: float = 0.5
    eval_every: int = 5
    mechanism: Literal["discrete_gaussian", "skellam"] = "discrete_gaussian"
    bits: int = 32
    simulation_noise: bool = False
    group_size: int = 5000
    model: ModelConfig = field(default_factory=ModelConfig)
    silo_users: int = 0
    silo: SiloConfig = field(default_factory=SiloConfig)
    executor: Literal["local", "ray"] | None = None
    ray_address: str | None = None
    devices: DeviceConfig | None = None
    sampler: Literal["uniform", "stratified"] = "uniform"
    stratified: StratifiedConfig = field(default_factory=StratifiedConfig)
    adjacency: Literal["zero-out", "add-remove"] = "zero-out"

    def __post_init__(self) -> None:
        if self.privacy not in PRIVACY_MODES:
            raise ConfigError(f"privacy must be one of {PRIVACY_MODES}, got {self.privacy!r}")
        if self.secagg not in SECAGG_MODES:
            raise ConfigError(f"secagg must be one of {SECAGG_MODES}, got {self.secagg!r}")
        if self.privacy != "none":
            if not (self.epsilon > 0 and math.isfinite(self.epsilon)):
                raise ConfigError(f"epsilon must be positive and finite, got {self.epsilon}")
            if not 0 < self.delta < 1:
                raise ConfigError(f"delta must lie in (0, 1), got {self.delta}")
        if self.rounds < 0:
            raise ConfigError("rounds must be non-negative")
        if self.cohort is not None and self.cohort < 2:
            raise ConfigError("cohort must be at least 2 (secure aggregation needs company)")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout}")
        if not 0 < self.popularity_share < 1:
            raise ConfigError("popularity_share must lie in (0, 1)")
        if self.eval_every < 0:
            raise ConfigError("eval_every must be non-negative")
        if self.silo_users < 0 or self.silo_users == 1:
            raise ConfigError("silo_users must be 0 (no silo) or at least 2")
        if self.silo_users and self.silo.dim != self.model.fcf.dim:
            raise ConfigError("the silo's dimension must equal the FCF dimension")
        if self.group_size < 2:
            raise ConfigError("group_size must be at least 2")
        if self.adjacency not in ADJACENCIES:
            raise ConfigError(f"adjacency must be one of {ADJACENCIES}, got {self.adjacency!r}")
        if self.adjacency == "add-remove" and self.privacy == "distributed":
            # Under add/remove the removed user's own noise share is missing from the
            # neighbouring sum: the sums differ in variance on every coordinate, so the
            # number of noise shares leaks (issue 15 obs. 9); the distributed-DP analyses
            # (Kairouz-Liu-Steinke 2021, Agarwal-Kairouz-Liu 2021) and this accountant
            # prove only the zero-out relation.
            raise ConfigError(
                "adjacency add-remove cannot be charged for distributed DP: the removed "
                "user's own noise share is missing from the neighbouring sum, which changes "
                "the noise variance of every coordinate and is not bounded by the accountant "
                "(proved: zero-out with public participation); use --adjacency zero-out, or "
                "--privacy central (trusted-server noise, where add/remove holds)"
            )
        if self.mechanism not in ("discrete_gaussian", "skellam"):
            raise ConfigError("mechanism must be discrete_gaussian or skellam")
        if self.executor not in (None, "local", "ray"):
            raise ConfigError(f"executor must be local or ray, got {self.executor!r}")
        if self.executor is not None and (self.privacy != "distributed" or self.secagg == "off"):
            raise ConfigError("an executor runs distributed-DP rounds under SecAgg only")
        if self.ray_address is not None and self.executor != "ray":
            raise ConfigError("ray_address needs executor='ray'")
        if (
            isinstance(self.bits, bool)
            or not isinstance(self.bits, int)
            or not 8 <= self.bits <= 62
        ):
            raise ConfigError(f"bits must be an int in [8, 62], got {self.bits!r}")
        if self.devices is not None and not isinstance(self.devices, DeviceConfig):
            raise ConfigError("devices must be a recsys.devices.DeviceConfig")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.sampler == "stratified" and self.cohort is None:
            raise ConfigError("the stratified sampler needs a cohort (expected devices per round)")


@dataclass(frozen=True)
class RoundRecord:
    """One release: what happened, what it cost, how the model scored after it."""

    round: int
    task: str
    sampled: int
    included: int
    dropped: int
    epsilon: float
    noise_multiplier: float
    hr: float | None
    ndcg: float | None
    seconds: float
    local_seconds: float
    encode_seconds: float
    secagg_seconds: float
    decode_seconds: float
    bytes_up: int
    bytes_down: int
    sim_seconds: float | None = None
    offline: int = 0
    late: int = 0

    def as_row(self) -> dict[str, Any]:
        """A flat dict (for ``metrics.csv``)."""
        return asdict(self)


@dataclass(frozen=True)
class TrainResult:
    """Per-round records, the final evaluation and the privacy report card."""

    records: tuple[RoundRecord, ...]
    final: RankingReport
    report_card: dict[str, Any]
    plan: BudgetPlan
    recommender: FederatedRecommender


ProgressFn = Callable[[RoundRecord, int], None]


class Trainer:
    """Runs a :class:`TrainConfig` on a split; the ledger (if given) receives every release.

    Use :func:`open_ledger` to create a ``dp`` ledger whose budget policy and run id state
    the configuration (including the budget split).
    """

    def __init__(
        self,
        split: Split,
        features: FloatArray,
        config: TrainConfig,
        *,
        ledger: PrivacyLedger | None = None,
        silo_ledger_path: str | None = None,
        context: OnDeviceContext | None = None,
    ) -> None:
        n = split.train.num_users
        if config.cohort is not None and config.cohort > n:
            raise ConfigError(f"cohort {config.cohort} is larger than the population ({n} users)")
        if n < 2:
            raise ConfigError("training needs at least 2 users")
        self.split = split
        self.config = config
        self.num_users = n
        self.sampling_rate = 1.0 if config.cohort is None else config.cohort / n
        self.recommender = FederatedRecommender(
            split.train, features, config.model, seed=config.seed
        )
        if context is not None:
            self.recommender.set_context(context)
        tasks = self.recommender.tasks(config.rounds)
        spec = ChannelSpec(
            privacy=config.privacy,
            secagg=config.secagg,
            dropout=config.dropout,
            mechanism=config.mechanism,
            bits=config.bits,
            delta=config.delta,
            seed=config.seed,
            simulation_noise=config.simulation_noise,
            group_size=config.group_size,
            population=n,
        )
        self.channel: Channel = make_channel(spec)
        self.devices: DeviceSimulator | None = None
        self.planned_dropout = config.dropout
        if config.devices is not None:
            # the simulator's expected loss (offline + late) replaces the random dropout rate
            # in the plan: it sizes the noise shares and the SecAgg threshold
            self.devices = DeviceSimulator(n, config.devices, seed=config.seed)
            self.planned_dropout = max(
                (
                    self.devices.expected_dropout(
                        *self.channel.masked_input_size(t.upload_dim, n, t.count_cap)
                    )
                    for t, _ in tasks
                ),
                default=0.0,
            )
            if self.planned_dropout >= 0.5:
                raise ConfigError(
                    f"the device simulation loses {self.planned_dropout:.0%} of the devices "
                    "per round (offline or late): SecAgg needs most of a cohort; raise the "
                    "deadline or the availability"
                )
            spec = dataclasses.replace(spec, dropout=self.planned_dropout)
            self.channel = make_channel(spec)
        by_name = {t.name: t for t, _ in tasks}

        def event_model(name: str, z: float, q: float) -> PrivacyEvent:
            task = by_name[name]
            # sampled rounds expect the configured cohort even when accounted at a higher
            # (stratified worst-case) rate
            expected = self._expected(q if q >= 1.0 else self.sampling_rate)
            return self.channel.planned_event(
                task.upload_dim, task.clip_norm, z, expected, task.count_cap
            )

        self._event_model = event_model
        # stratified sampling: a cluster-size release (its own share of ε), then rates up to
        # accounting_rate = the worst-case per-user rate every FCF round is accounted at
        self.stratifier: ClusterCountTask | None = None
        self.accounting_rate = self.sampling_rate
        self.cluster_noise = 0.0
        fixed: list[PrivacyEvent] = []
        if config.sampler == "stratified":
            self.accounting_rate = min(1.0, config.stratified.max_boost * self.sampling_rate)
            self.stratifier = ClusterCountTask(
                features,
                n,
                config.stratified,
                cohort=self.sampling_rate * n,
                max_rate=self.accounting_rate,
            )
            by_name[self.stratifier.name] = self.stratifier
            if config.privacy != "none":
                self.cluster_noise = calibrate_cluster_noise(
                    lambda z: event_model(ClusterCountTask.name, z, 1.0),
                    epsilon=config.epsilon,
                    delta=config.delta,
                    share=config.stratified.cluster_share,
                )
                fixed.append(event_model(ClusterCountTask.name, self.cluster_noise, 1.0))

        self.plan = plan_budget(
            privacy=config.privacy,
            epsilon=config.epsilon,
            delta=config.delta,
            sampling_rate=self.accounting_rate,
            num_popularity=sum(r for t, r in tasks if t.name == "popularity"),
            num_rounds=sum(r for t, r in tasks if t.name != "popularity"),
            popularity_share=config.popularity_share,
            event_model=event_model,
            extra_events=fixed,
        )
        for task, _ in self.releases():  # refuse a ring too narrow for the calibrated noise
            one_shot = task.name in ("popularity", ClusterCountTask.name)
            self.channel.check_ring(
                task.upload_dim,
                task.clip_norm,
                self._noise(task.name),
                self._expected(1.0 if one_shot else self.sampling_rate),
                task.count_cap,
            )
        self.ledger = ledger
        self.released_events: tuple[PrivacyEvent, ...] = ()
        self.silo_result: SiloResult | None = None
        if config.silo_users:
            if config.silo_users > n:
                raise ConfigError(f"silo_users {config.silo_users} exceeds the population ({n})")
            # the silo holds the logs of the first silo_users users (a partner's data set)
            self.silo_result = train_silo(
                split.train,
                np.arange(config.silo_users, dtype=np.int64),
                config.silo,
                ledger_path=silo_ledger_path,
            )
            if config.model.uses_fcf:
                self.recommender.warm_start(self.silo_result.item_factors)

    def _expected(self, rate: float) -> int:
        """Expected cohort size at a sampling rate (at least 2)."""
        return max(2, round(rate * self.num_users))

    def _cohort(self) -> IntArray:
        everyone = np.arange(self.num_users, dtype=np.int64)
        if self.sampling_rate >= 1.0:
            return everyone
        if self.stratifier is not None and self.stratifier.rates is not None:
            # every device flips its own coin with its own cluster's published rate
            return everyone[self.channel.sample_each(self.stratifier.inclusion_probabilities())]
        chosen = self.channel.sample(self.num_users, self.sampling_rate)
        return everyone[chosen]

    def _strata_rates(self, task_name: str) -> tuple[float, ...] | None:
        """The published per-cluster rates if this task's rounds are stratified."""
        if task_name in ("popularity", ClusterCountTask.name) or self.stratifier is None:
            return None
        rates = self.stratifier.rates
        return None if rates is None or self.sampling_rate >= 1.0 else tuple(rates.tolist())

    def _noise(self, task_name: str) -> float:
        if task_name == "popularity":
            return self.plan.popularity_noise
        return self.cluster_noise if task_name == ClusterCountTask.name else self.plan.round_noise

    def _planned(self, task_name: str, z: float, q: float) -> PrivacyEvent:
        event = self._event_model(task_name, z, q)
        strata = self._strata_rates(task_name)
        if strata is not None and not isinstance(event, NonPrivateEvent):
            event = StratifiedPoissonSampledEvent(strata, event)
        elif q < 1.0 and not isinstance(event, NonPrivateEvent):
            event = PoissonSampledEvent(q, event)
        return event

    def _stratify(self, release: Release, task_name: str) -> Release:
        """Re-state a stratified round's (unsampled) events with the per-cluster rates."""
        strata = self._strata_rates(task_name)
        if strata is None or isinstance(release.planned_event, NonPrivateEvent):
            return release
        return dataclasses.replace(
            release,
            event=StratifiedPoissonSampledEvent(strata, release.event),
            planned_event=StratifiedPoissonSampledEvent(strata, release.planned_event),
        )

    def releases(self) -> list[tuple[ClientTask, int]]:
        """Every release of the run in order (the cluster release before the FCF rounds)."""
        tasks = list(self.recommender.tasks(self.config.rounds))
        if self.stratifier is not None:
            at = next((i for i, (t, _) in enumerate(tasks) if t.name == "fcf"), len(tasks))
            tasks.insert(at, (self.stratifier, 1))
        return tasks

    def run(
        self, progress: ProgressFn | None = None, *, executor: Executor | None = None
    ) -> TrainResult:
        """Train; returns the records and the final full-ranking evaluation.

        With a ledger, every round is checked against its budget *before* devices are
        sampled (``dp`` refuses an over-budget round) and recorded after the release; a
        round whose secure aggregation aborted is recorded as aborted (charged nothing)
        and skipped, except the popularity release, without which the model cannot go on.
        The configured executor (if any) is started here and closed when the run ends.
        ``executor`` overrides it with one the caller owns (and closes), e.g. the devices
        of a networked job (:mod:`recsys.remote`); it needs distributed DP under SecAgg.
        """
        if executor is not None:
            if self.config.privacy != "distributed" or self.config.secagg == "off":
                raise ConfigError("an executor runs distributed-DP rounds under SecAgg only")
            return self._run(progress, executor)
        if self.config.executor is None:
            return self._run(progress, None)
        options = {} if self.config.executor == "local" else {"address": self.config.ray_address}
        executor = make_executor(self.config.executor, **options)
        try:
            return self._run(progress, executor)
        finally:
            executor.close()

    def _run(self, progress: ProgressFn | None, executor: Executor | None) -> TrainResult:
        records: list[RoundRecord] = []
        tasks = self.releases()
        total_rounds = sum(r for _, r in tasks)
        round_index = 0
        events: list[PrivacyEvent] = []
        for task, rounds in tasks:
            z = self._noise(task.name)
            # the popularity and cluster releases always use every device: they are one shot
            one_shot = task.name in ("popularity", ClusterCountTask.name)
            q = 1.0 if one_shot else self.sampling_rate
            q_channel = 1.0 if self._strata_rates(task.name) is not None else q
            planned = self._planned(task.name, z, q)
            for _ in range(rounds):
                round_index += 1
                start = time.perf_counter()
                if self.ledger is not None:
                    self.ledger.check_round(planned)
                cohort = np.arange(self.num_users, dtype=np.int64) if one_shot else self._cohort()
                if len(cohort) < 2:
                    if self.ledger is not None:
                        self.ledger.record_round(
                            round_index=round_index,
                            event=planned,
                            cohort_size=len(cohort),
                            status="aborted",
                        )
                    continue
                device_round: DeviceRound | None = None
                drop_plan: DropPlan | None = None
                if self.devices is not None:
                    values, nbytes = self.channel.masked_input_size(
                        task.upload_dim, len(cohort), task.count_cap
                    )
                    device_round = self.devices.next_round(cohort, values, nbytes)
                    drop_plan = device_round.drop_plan
                local_s = 0.0

                def uploads(
                    lo: int, hi: int, task: ClientTask = task, cohort: IntArray = cohort
                ) -> FloatArray:
                    nonlocal local_s
                    t0 = time.perf_counter()
                    out = task.local_updates(
                        self.recommender.fleet, self.recommender.server, cohort[lo:hi]
                    )
                    local_s += time.perf_counter() - t0
                    return out

                expected = q * self.num_users
                try:
                    release: Release
                    if executor is None:
                        release = self.channel.release(
                            uploads,
                            clip_norm=task.clip_norm,
                            noise_multiplier=z,
                            sampling_rate=q_channel,
                            expected_clients=self._expected(q),
                            round_index=round_index,
                            cohort_size=len(cohort),
                            drop_plan=drop_plan,
                            count_cap=task.count_cap,
                        )
                    else:  # local training happens on the executor: in encode_seconds
                        release = self.channel.release_on(
                            executor,
                            task,
                            self.recommender.fleet,
                            self.recommender.server,
                            cohort,
                            noise_multiplier=z,
                            sampling_rate=q_channel,
                            expected_clients=self._expected(q),
                            round_index=round_index,
                            drop_plan=drop_plan,
                        )
                except ReleaseAborted:
                    if self.ledger is not None:
                        self.ledger.record_round(
                            round_index=round_index,
                            event=planned,
                            cohort_size=len(cohort),
                            status="aborted",
                        )
                    if task.name == "popularity":
                        raise
                    continue
                release = self._stratify(release, task.name)
                task.server_step(
                    self.recommender.server, release.total, expected, noise_std=release.noise_std
                )
                self.recommender.after_step(task)
                events.append(release.event)
                if self.ledger is not None:
                    self.ledger.record_round(
                        round_index=round_index,
                        event=release.planned_event,
                        cohort_size=len(cohort),
                        survivors=release.included,
                        participants=[f"user{cohort[i]}" for i in release.included_positions],
                    )
                    eps = float(self.ledger.epsilon)
                else:
                    eps = self.plan.epsilon_of(events)
                hr = ndcg = None
                every = self.config.eval_every
                if round_index == total_rounds or (every and round_index % every == 0):
                    rep = evaluate_ranking(self.recommender.scores, self.split)
                    hr, ndcg = rep.hr, rep.ndcg
                rec = RoundRecord(
                    round=round_index,
                    task=task.name,
                    sampled=len(cohort),
                    included=release.included,
                    dropped=release.dropped,
                    epsilon=eps,
                    noise_multiplier=z,
                    hr=hr,
                    ndcg=ndcg,
                    seconds=time.perf_counter() - start,
                    local_seconds=local_s,
                    encode_seconds=release.encode_seconds,
                    secagg_seconds=release.secagg_seconds,
                    decode_seconds=release.decode_seconds,
                    bytes_up=release.bytes_up,
                    bytes_down=release.bytes_down,
                    sim_seconds=None if device_round is None else device_round.wall_seconds,
                    offline=0 if device_round is None else len(device_round.offline),
                    late=0 if device_round is None else len(device_round.late),
                )
                records.append(rec)
                if progress is not None:
                    progress(rec, total_rounds)
        self.released_events = tuple(events)
        final = evaluate_ranking(self.recommender.scores, self.split)
        card = self.report_card(records, final)
        return TrainResult(tuple(records), final, card, self.plan, self.recommender)

    def report_card(self, records: list[RoundRecord], final: RankingReport) -> dict[str, Any]:
        """The privacy report card: ε, δ, accountant, rounds, cohort, clip, noise, dropouts."""
        c = self.config
        m = c.model
        return {
            "epsilon": records[-1].epsilon if records else 0.0,
            "epsilon_target": c.epsilon if c.privacy != "none" else math.inf,
            "delta": c.delta,
            "privacy": c.privacy,
            "adjacency": ADJACENCY_DESCRIPTIONS[c.adjacency],
            "accountant": self.plan.accountant,
            "mechanism": self.channel.mechanism_name,
            "secure_noise": not c.simulation_noise,
            "secagg": c.secagg,
            "executor": c.executor or "in-process",
            "releases": len(records),
            "fcf_rounds": sum(
                1 for r in records if r.task not in ("popularity", ClusterCountTask.name)
            ),
            "cohort_expected": c.cohort if c.cohort is not None else self.num_users,
            "sampling_rate": self.sampling_rate,
            "sampler": c.sampler,
            "accounting_sampling_rate": self.accounting_rate,
            "stratified": None
            if self.stratifier is None
            else {
                **self.stratifier.summary(),
                "cluster_noise_multiplier": self.cluster_noise,
                # individual ε of a user who stayed in each cluster; the run's ε is the max
                "stratum_epsilons": list(stratum_epsilons(self.released_events, c.delta))
                if c.privacy != "none"
                else None,
            },
            "population": self.num_users,
            "popularity_cap": m.cap if m.uses_popularity else None,
            "popularity_noise_multiplier": self.plan.popularity_noise,
            "popularity_share_of_epsilon": c.popularity_share if m.uses_fcf else 1.0,
            "clip_norm": m.fcf.clip_norm if m.uses_fcf else None,
            "round_noise_multiplier": self.plan.round_noise,
            "dropout_rate": self.planned_dropout,
            "dropped_total": sum(r.dropped for r in records),
            "encoding_bits": c.bits if c.privacy == "distributed" else None,
            "communication": communication_summary(records),
            "devices": None
            if c.devices is None
            else {
                **asdict(c.devices),
                "planned_dropout_rate": self.planned_dropout,
                "offline_total": sum(r.offline for r in records),
                "late_total": sum(r.late for r in records),
                "simulated_seconds_total": sum(r.sim_seconds or 0.0 for r in records),
                "simulated_round_seconds": [r.sim_seconds for r in records],
            },
            "on_device_context": self.recommender.context_description(),
            "model": m.kind,
            "hyperparameter_search_charged": False,
            "silo": None
            if self.silo_result is None
            else {
                "unit": "record-level (Opacus DP-SGD), NOT composed with the user-level ε",
                "users": self.silo_result.users,
                "records": self.silo_result.records,
                "epsilon": self.silo_result.epsilon,
                "epsilon_opacus_rdp": self.silo_result.epsilon_opacus,
                "delta": c.silo.delta,
                "noise_multiplier": c.silo.noise_multiplier,
                "sampling_rate": self.silo_result.sample_rate,
                "steps": self.silo_result.steps,
            },
            "HR@10": final.hr,
            "NDCG@10": final.ndcg,
        }


def communication_summary(records: list[RoundRecord] | tuple[RoundRecord, ...]) -> dict[str, Any]:
    """Bytes of a run as the protocol metered them: totals, and per device per release
    (each release's bytes over its sampled devices, averaged over releases). Releases run
    on an executor are not metered (0)."""
    up = sum(r.bytes_up for r in records)
    down = sum(r.bytes_down for r in records)
    per_up = [r.bytes_up / r.sampled for r in records if r.sampled]
    per_down = [r.bytes_down / r.sampled for r in records if r.sampled]
    return {
        "bytes_up_total": up,
        "bytes_down_total": down,
        "bytes_total": up + down,
        "bytes_up_per_client_round": sum(per_up) / len(per_up) if per_up else 0.0,
        "bytes_down_per_client_round": sum(per_down) / len(per_down) if per_down else 0.0,
        "device_rounds": sum(r.sampled for r in records),
    }


def open_ledger(
    path: str,
    trainer: Trainer,
    *,
    signing_key: Signer | None = None,
    threat_model: str = "honest-but-curious",
) -> PrivacyLedger:
    """Create the ``dp`` privacy ledger of a run at ``path`` (a new SQLite file).

    The budget policy is the run's (ε, δ) (none for ``privacy="none"``); the run id records
    the explicit budget split and the noise of both kinds of release; the provenance says
    how every release is made (noise source, aggregation, threat model, adjacency).
    ``signing_key`` signs every row and the head (``None``: an unsigned ledger, which a
    strict audit refuses).
    """
    config, plan = trainer.config, trainer.plan
    target = None if config.privacy == "none" else config.epsilon
    run_id = (
        f"privagg-train privacy={config.privacy} secagg={config.secagg} model="
        f"{config.model.kind} popularity_share={config.popularity_share:g} "
        f"z_popularity={plan.popularity_noise:.6g} z_rounds={plan.round_noise:.6g} "
        f"rounds={plan.num_rounds} sampling_rate={plan.sampling_rate:.6g} seed={config.seed}"
    )
    aggregation = {
        "distributed": f"secagg-{config.secagg}",
        "central": "central",
        "none": "none",
    }[config.privacy]
    provenance = Provenance(
        noise="simulated" if config.simulation_noise else "secure",
        aggregation=aggregation,
        threat_model="trusted-server" if config.privacy == "central" else threat_model,
        adjacency=config.adjacency,
    )
    return PrivacyLedger.create(
        path,
        policy=BudgetPolicy(delta=config.delta, target_epsilon=target),
        run_id=run_id,
        signing_key=signing_key,
        provenance=provenance,
    )
