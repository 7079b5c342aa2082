"""The federated recommender: which releases it makes, and how devices score items.

Kinds:

* ``popfeat`` — one capped popularity release, then the on-device public-feature model
  (the research probe's "popfeat"): score_ui = log(pop̃_i + shrink) + w_u · f_i.
* ``fcf`` — FCF-style MF alone: score_ui = b_i + u · v_i.
* ``popfeat+fcf`` — the popularity release, then FCF rounds on the residual x − p̂; the
  device adds the standardised residual, weighted by ``residual_weight``, to popfeat.

Scoring runs on the devices: each device solves its own user factor against the final
public item factors (FedRecon-style, so users never sampled still get a factor) and
combines it with its private feature weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from recsys.errors import ConfigError
from recsys.federated import (
    ClientTask,
    DeviceFleet,
    FCFConfig,
    FCFTask,
    FeatureModelConfig,
    ItemServer,
    PopularityTask,
)
from recsys.split import Interactions

if TYPE_CHECKING:
    from recsys.context import OnDeviceContext

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

ModelKind = Literal["popfeat", "fcf", "popfeat+fcf"]
MODEL_KINDS: tuple[str, ...] = ("popfeat", "fcf", "popfeat+fcf")

__all__ = [
    "MODEL_KINDS",
    "RESIDUAL_MIN_USERS",
    "FederatedRecommender",
    "ModelConfig",
    "ResidualSchedule",
    "choose_model_kind",
    "choose_residual_schedule",
]


@dataclass(frozen=True)
class ModelConfig:
    """What to train: the kind, the popularity cap and the two sub-models' settings."""

    kind: ModelKind = "popfeat+fcf"
    cap: int = 20
    features: FeatureModelConfig = field(default_factory=FeatureModelConfig)
    fcf: FCFConfig = field(default_factory=FCFConfig)

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"model kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        if self.cap < 1:
            raise ConfigError("cap must be at least 1")
        if self.kind == "fcf" and self.fcf.active_items is not None:
            raise ConfigError(
                "fcf.active_items picks items by the popularity release; the 'fcf' kind has none"
            )

    @property
    def uses_popularity(self) -> bool:
        """Whether the model starts with the popularity release."""
        return self.kind in ("popfeat", "popfeat+fcf")

    @property
    def uses_fcf(self) -> bool:
        """Whether the model runs FCF rounds."""
        return self.kind in ("fcf", "popfeat+fcf")


class FederatedRecommender:
    """Devices + item server + the tasks of the chosen model kind."""

    def __init__(
        self, train: Interactions, features: FloatArray, config: ModelConfig, *, seed: int = 0
    ) -> None:
        self.config = config
        self.fleet = DeviceFleet(train, features)
        self.server = ItemServer(train.num_items)
        self.popularity_task = PopularityTask(train.num_items, config.cap)
        self.fcf_task = FCFTask(train.num_items, config.fcf, config.features.shrink)
        self._seed = seed
        self._warm: FloatArray | None = None
        self.context: OnDeviceContext | None = None
        if config.uses_fcf:
            self.server.init_factors(config.fcf.dim, config.fcf.init_scale, features, seed)

    def tasks(self, fcf_rounds: int) -> Sequence[tuple[ClientTask, int]]:
        """The releases in order: (task, number of rounds)."""
        plan: list[tuple[ClientTask, int]] = []
        if self.config.uses_popularity:
            plan.append((self.popularity_task, 1))
        if self.config.uses_fcf and fcf_rounds > 0:
            plan.append((self.fcf_task, fcf_rounds))
        return plan

    def after_step(self, task: ClientTask) -> None:
        """On-device work that follows a server step (free: uses released data only)."""
        if task is self.popularity_task:
            prior = self.server.prior(self.config.features.shrink)
            assert prior is not None
            self.fleet.fit_feature_models(prior, self.config.features)
            if self.context is not None:
                self.context.fit(self.fleet, prior, self.config.features)
            if self.config.uses_fcf:
                self.server.choose_active_items(self.config.fcf.active_items)
                self.server.init_factors(
                    self.config.fcf.dim,
                    self.config.fcf.init_scale,
                    self.fleet.features,
                    self._seed,
                )
                self._apply_warm_start()

    def set_context(self, context: OnDeviceContext) -> None:
        """Private on-device context (:mod:`recsys.context`), used in on-device scoring
        only: no client task reads it, so no upload depends on it."""
        self.context = context

    def context_description(self) -> dict[str, object] | None:
        """What on-device context the devices use (None: none)."""
        return None if self.context is None else self.context.describe()

    def warm_start(self, item_factors: FloatArray) -> None:
        """Start the item factors from an already released model (e.g. a silo's DP-SGD
        item factors), rescaled to the configured initial scale."""
        if item_factors.shape != (self.fleet.num_items, self.config.fcf.dim):
            raise ConfigError("warm-start factors must be (num_items × fcf.dim)")
        self._warm = item_factors.copy()
        self._apply_warm_start()

    def _apply_warm_start(self) -> None:
        if self._warm is None or self.server.item_factors is None:
            return
        rms = float(np.sqrt(np.mean(self._warm**2))) or 1.0
        self.server.item_factors = self._warm * (self.config.fcf.init_scale / rms)

    def scores(self, users: IntArray) -> FloatArray:
        """Item scores computed on each device of ``users`` (a batch)."""
        n_items = self.fleet.num_items
        total = np.zeros((len(users), n_items))
        if self.config.uses_popularity:
            prior = self.server.prior(self.config.features.shrink)
            if prior is not None:
                total += prior[None, :]
                private = (
                    None if self.context is None else self.context.feature_scores(self.fleet, users)
                )
                if private is not None:
                    total += private
                elif self.fleet.feature_weights is not None:
                    total += self.fleet.feature_weights[users] @ self.fleet.features.T
        if self.config.uses_fcf:
            v, b = self.server.item_factors, self.server.item_bias
            assert v is not None and b is not None
            active = self.server.active_items
            p = self.fcf_task.target_offset(self.server, self.fleet.num_users)[active]
            u, _, _ = self.fleet.solve_user_factors(
                users, v[active], b[active], p, self.config.fcf, active
            )
            residual = np.zeros((len(users), n_items))
            residual[:, active] = u @ v[active].T + b[active][None, :]
            if self.config.uses_popularity:
                std = residual.std(axis=1, keepdims=True)
                residual = residual / np.where(std > 0, std, 1.0)
                total += self.config.fcf.residual_weight * residual
            else:
                total += residual
        if self.context is not None:
            total = self.context.adjust(users, total)
        return total


RESIDUAL_MIN_USERS = 3_000
"""Population from which ``auto`` adds the FCF residual under DP. Measured (full ranking,
leave-last-out, distributed DP, 10 FCF rounds): on ML-100K (943 users) user-level DP noise
drowns the residual (it lowers HR@10, as in the research notes §3.3); on synthetic
populations of 3·10^3, 10^4 and 10^5 users it raises HR@10 at ε = 8 and at ε = 1 (paired
per-user tests, p ≤ 0.001). Between 943 and 3000 users it is unmeasured, so the threshold
sits at the smallest population where it was seen to pay."""


def choose_model_kind(privacy: str, num_users: int) -> ModelKind:
    """The ``auto`` model: popfeat + FCF residual without DP or with a large population;
    the one-release popfeat model under DP for small populations."""
    if privacy == "none" or num_users >= RESIDUAL_MIN_USERS:
        return "popfeat+fcf"
    return "popfeat"


@dataclass(frozen=True)
class ResidualSchedule:
    """How many FCF rounds the residual gets, its factor dimension and its weight."""

    rounds: int
    dim: int
    residual_weight: float


def choose_residual_schedule(privacy: str) -> ResidualSchedule:
    """The ``auto`` residual schedule. Without DP a round costs only time, so the residual
    trains longer and wider: chosen on the ML-100K *validation* item (second-to-last, never
    the test item) from a grid of 42 non-private configurations (dim 4/8, 5/15/30 rounds,
    weight 0/0.1/0.2/0.4, server lr 0.03/0.1, prior shrink 3/10), where dim 8, 15 rounds and
    weight 0.4 scored HR@10 0.124 against 0.105 for the DP schedule. Under DP every round
    adds noise and spends budget: 5 rounds of dim 4 at weight 0.2 (chosen on synthetic
    populations, where the residual is used under DP)."""
    if privacy == "none":
        return ResidualSchedule(rounds=15, dim=8, residual_weight=0.4)
    return ResidualSchedule(rounds=5, dim=4, residual_weight=0.2)
