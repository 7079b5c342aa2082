"""Federated recommender models behind one client interface.

Split of state (the point of the design):

* :class:`DeviceFleet` simulates the devices. It holds every user's training history and
  every piece of user state (feature weights ``w_u``, user factor ``u``). It is the only
  object that reads them; nothing in it is ever handed to the server.
* :class:`ItemServer` holds the public, item-side model: the released popularity, item
  factors and biases, and the server optimizer state. It only ever receives the
  (noisy, securely aggregated) sum of uploads, never a per-user array.
* A :class:`ClientTask` is one kind of federated release. ``local_updates`` runs on the
  devices of a cohort (vectorised over the cohort) and returns **dense** uploads of a fixed
  length ``upload_dim`` that depends on the item table only (a sparse upload would reveal
  which items the user rated), each clipped to L2 norm ``clip_norm``; ``server_step``
  turns the aggregate into a new public model.

Tasks: :class:`PopularityTask` (one capped popularity release; its L2 sensitivity is √cap)
and :class:`FCFTask` (FCF-style implicit matrix factorization: the device solves its user
factor in closed form against the broadcast item factors and uploads the clipped dense
gradient of the item factors and biases; the server applies FedAvg, momentum or Adam).
After the popularity release each device fits its public-feature model
(:mod:`recsys.features`), which costs no privacy.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from recsys.denoise import denoised_log_counts
from recsys.errors import ConfigError
from recsys.features import fit_feature_weights, recency_weights
from recsys.split import Interactions

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

__all__ = [
    "ClientTask",
    "DeviceFleet",
    "FCFConfig",
    "FCFTask",
    "FeatureModelConfig",
    "ItemServer",
    "PopularityTask",
    "clip_rows",
]


def clip_rows(updates: FloatArray, clip_norm: float) -> FloatArray:
    """Scale each row to L2 norm at most ``clip_norm`` (flat clipping, per device)."""
    norms = np.linalg.norm(updates, axis=1, keepdims=True)
    scale = np.minimum(1.0, clip_norm / np.maximum(norms, 1e-300))
    out: FloatArray = updates * scale
    return out


@dataclass(frozen=True)
class FeatureModelConfig:
    """The on-device public-feature model fitted after the popularity release."""

    half_life: float = 10.0
    l2: float = 0.1
    shrink: float = 10.0
    newton_iterations: int = 8

    def __post_init__(self) -> None:
        if self.l2 <= 0 or self.shrink <= 0 or self.newton_iterations < 1:
            raise ConfigError("feature model needs l2 > 0, shrink > 0, newton_iterations >= 1")


@dataclass(frozen=True)
class FCFConfig:
    """FCF-style implicit MF: dimension, confidence α, user ridge, clip, server optimizer."""

    dim: int = 8
    alpha: float = 5.0
    user_reg: float = 0.1
    clip_norm: float = 1.0
    optimizer: Literal["fedavg", "momentum", "adam"] = "adam"
    learning_rate: float = 0.03
    momentum: float = 0.9
    residual_weight: float = 0.3
    init_scale: float = 0.1
    active_items: int | None = None

    def __post_init__(self) -> None:
        if self.dim < 1 or self.alpha < 0 or self.user_reg <= 0 or self.clip_norm <= 0:
            raise ConfigError("FCF needs dim >= 1, alpha >= 0, user_reg > 0, clip_norm > 0")
        if self.optimizer not in ("fedavg", "momentum", "adam"):
            raise ConfigError("optimizer must be fedavg, momentum or adam")
        if self.learning_rate <= 0 or not 0 <= self.momentum < 1:
            raise ConfigError("learning_rate must be > 0 and momentum in [0, 1)")
        if self.active_items is not None and self.active_items < 1:
            raise ConfigError("active_items must be positive (or None for the whole catalog)")


# ----------------------------------------------------------------------------- server side


class ItemServer:
    """The public item-side model; receives only aggregates."""

    def __init__(self, num_items: int) -> None:
        self.num_items = num_items
        self.popularity: FloatArray | None = None
        self.item_factors: FloatArray | None = None
        self.item_bias: FloatArray | None = None
        self._first_moment: FloatArray | None = None
        self._second_moment: FloatArray | None = None
        self._steps = 0
        self.active_items: IntArray = np.arange(num_items, dtype=np.int64)
        self.popularity_noise_std = 0.0
        self._priors: dict[tuple[int, float, float], FloatArray] = {}

    def prior(self, shrink: float) -> FloatArray | None:
        """The item offset from the released counts: E[log(c + shrink) | pop̃] under the
        empirical-Bayes prior of the counts (:mod:`recsys.denoise`), which is
        log(max(pop̃, 0) + shrink) for an exact release. Post-processing only."""
        if self.popularity is None:
            return None
        key = (hash(self.popularity.tobytes()), self.popularity_noise_std, shrink)
        if key not in self._priors:
            self._priors = {
                key: denoised_log_counts(self.popularity, self.popularity_noise_std, shrink)
            }
        return self._priors[key]

    def init_factors(self, dim: int, scale: float, features: FloatArray, seed: int) -> None:
        """Public initialisation of item factors from public features (plus seeded noise)."""
        rng = np.random.default_rng(seed)
        v = rng.normal(0.0, scale * 0.1, (self.num_items, dim))
        if features.shape[1]:
            norm = np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1.0)
            f = features / norm * scale
            f = f - f.mean(axis=0)
            take = min(dim, f.shape[1])
            v[:, :take] += f[:, :take]
        self.item_factors = v
        self.item_bias = np.zeros(self.num_items)
        self._first_moment = np.zeros((len(self.active_items), dim + 1))
        self._second_moment = np.zeros((len(self.active_items), dim + 1))
        self._steps = 0

    def choose_active_items(self, count: int | None) -> None:
        """The public item subset the residual model trains on: the ``count`` most popular
        items by the *released* counts (post-processing), or every item."""
        if count is None or count >= self.num_items or self.popularity is None:
            self.active_items = np.arange(self.num_items, dtype=np.int64)
            return
        order = np.lexsort((np.arange(self.num_items), -self.popularity))
        self.active_items = np.sort(order[:count]).astype(np.int64)

    def apply_gradient(self, grad: FloatArray, config: FCFConfig) -> None:
        """One server optimizer step on the packed (A × (d+1)) gradient [∂V | ∂b] of the
        active items (all items unless a subset was chosen)."""
        if self.item_factors is None or self.item_bias is None:
            raise ConfigError("item factors are not initialised")
        assert self._first_moment is not None and self._second_moment is not None
        self._steps += 1
        lr = config.learning_rate
        if config.optimizer == "fedavg":
            step = lr * grad
        elif config.optimizer == "momentum":
            self._first_moment = config.momentum * self._first_moment + grad
            step = lr * self._first_moment
        else:  # Adam (Kingma & Ba) as the adaptive server optimizer (FedAdam, Reddi et al.)
            b1, b2 = 0.9, 0.999
            self._first_moment = b1 * self._first_moment + (1 - b1) * grad
            self._second_moment = b2 * self._second_moment + (1 - b2) * grad * grad
            m_hat = self._first_moment / (1 - b1**self._steps)
            v_hat = self._second_moment / (1 - b2**self._steps)
            step = lr * m_hat / (np.sqrt(v_hat) + 1e-8)
        active = self.active_items
        self.item_factors[active] -= step[:, :-1]
        self.item_bias[active] -= step[:, -1]


# ----------------------------------------------------------------------------- device side


class DeviceFleet:
    """Simulated devices: every user's history and local state; nothing here goes to the server."""

    def __init__(self, train: Interactions, features: FloatArray) -> None:
        if features.shape[0] != train.num_items:
            raise ConfigError("features must have one row per item")
        self.train = train
        self.features = np.asarray(features, dtype=np.float64)
        self.num_users = train.num_users
        self.num_items = train.num_items
        self.feature_weights: FloatArray | None = None
        self.user_factors: FloatArray | None = None
        self._recency: dict[float, FloatArray] = {}

    def history(self, users: IntArray) -> FloatArray:
        """Dense 0/1 histories of a batch of devices (used on those devices only)."""
        return self.train.dense(users)

    def recency(self, users: IntArray, half_life: float) -> FloatArray:
        """Dense recency weights of a batch of devices (rows sum to 1)."""
        if half_life not in self._recency:
            self._recency[half_life] = recency_weights(self.train, half_life)
        return self.train.dense(users, self._recency[half_life])

    def fit_feature_models(
        self, prior: FloatArray, config: FeatureModelConfig, chunk: int = 1024
    ) -> None:
        """Every device fits ``w_u`` on its own history against the released prior."""
        k = self.features.shape[1]
        self.feature_weights = np.zeros((self.num_users, k))
        users = np.arange(self.num_users, dtype=np.int64)
        for lo in range(0, self.num_users, chunk):
            batch = users[lo : lo + chunk]
            obs = self.recency(batch, config.half_life)
            self.feature_weights[batch] = fit_feature_weights(
                obs, self.features, prior, l2=config.l2, iterations=config.newton_iterations
            )

    def solve_user_factors(
        self,
        users: IntArray,
        item_factors: FloatArray,
        item_bias: FloatArray,
        target_offset: FloatArray,
        config: FCFConfig,
        items: IntArray | None = None,
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Closed-form local user step for a batch; returns (U, X, residual targets R).

        Minimises Σ_i c_ui (r_ui − b_i − u·v_i)² + λ‖u‖², c_ui = 1 + α x_ui, r_ui = x_ui − p_i,
        over ``items`` (default: all; the factor arrays are given for those items only).
        """
        d = item_factors.shape[1]
        x = self.history(users)
        if items is not None:
            x = x[:, items]
        r = x - target_offset[None, :] - item_bias[None, :]
        vv = (item_factors[:, :, None] * item_factors[:, None, :]).reshape(-1, d * d)
        a = (item_factors.T @ item_factors)[None] + config.alpha * (x @ vv).reshape(-1, d, d)
        a += config.user_reg * np.eye(d)[None]
        rhs = ((1.0 + config.alpha * x) * r) @ item_factors
        u: FloatArray = np.linalg.solve(a, rhs[..., None])[..., 0].astype(np.float64)
        if self.user_factors is None:
            self.user_factors = np.zeros((self.num_users, d))
        self.user_factors[users] = u
        return u, x, r


# ----------------------------------------------------------------------------- client tasks


class ClientTask(abc.ABC):
    """One kind of federated release: local update on devices, server step on the aggregate."""

    name: str

    @property
    def count_cap(self) -> int | None:
        """For uploads that are 0/1 vectors with at most this many ones (counts), the cap;
        ``None`` for float uploads. Counts are released without rotation or rounding."""
        return None

    @property
    @abc.abstractmethod
    def upload_dim(self) -> int:
        """Length of every device's dense upload (a function of the item table only)."""

    @property
    @abc.abstractmethod
    def clip_norm(self) -> float:
        """L2 bound of every upload: the user-level sensitivity of the summed release."""

    @abc.abstractmethod
    def local_updates(self, fleet: DeviceFleet, server: ItemServer, cohort: IntArray) -> FloatArray:
        """Uploads of the cohort's devices, (len(cohort) × upload_dim), each norm ≤ clip_norm."""

    @abc.abstractmethod
    def server_step(
        self, server: ItemServer, total: FloatArray, expected_clients: float, noise_std: float = 0.0
    ) -> None:
        """Update the public model from the (noisy) sum of uploads; ``noise_std`` is the
        per-coordinate std of the noise the sum carries (0 for an exact sum)."""


class PopularityTask(ClientTask):
    """One capped popularity release: each device uploads the 0/1 indicator of its ``cap``
    most recent items (dense over the catalog), so the L2 sensitivity is √cap."""

    name = "popularity"

    def __init__(self, num_items: int, cap: int = 20) -> None:
        if cap < 1:
            raise ConfigError("cap must be at least 1")
        self._num_items = num_items
        self.cap = cap

    @property
    def count_cap(self) -> int | None:
        return self.cap

    @property
    def upload_dim(self) -> int:
        return self._num_items

    @property
    def clip_norm(self) -> float:
        return math.sqrt(self.cap)

    def local_updates(self, fleet: DeviceFleet, server: ItemServer, cohort: IntArray) -> FloatArray:
        keep = fleet.train.positions_from_end() < self.cap
        return fleet.train.dense(cohort, keep.astype(np.float64))

    def server_step(
        self, server: ItemServer, total: FloatArray, expected_clients: float, noise_std: float = 0.0
    ) -> None:
        # The counts are a sum, not a mean: the prior needs their scale, not their average.
        server.popularity = np.asarray(total, dtype=np.float64).copy()
        server.popularity_noise_std = float(noise_std)


class FCFTask(ClientTask):
    """FCF-style MF round; with a released popularity, it fits the residual x − p."""

    name = "fcf"

    def __init__(self, num_items: int, config: FCFConfig, prior_shrink: float = 10.0) -> None:
        self._num_items = num_items
        self.config = config
        self.prior_shrink = prior_shrink

    @property
    def num_active(self) -> int:
        """Items the residual model trains on (fixed before training: it sizes the upload)."""
        n = self.config.active_items
        return self._num_items if n is None else min(n, self._num_items)

    @property
    def upload_dim(self) -> int:
        return self.num_active * (self.config.dim + 1)

    @property
    def clip_norm(self) -> float:
        return self.config.clip_norm

    def target_offset(self, server: ItemServer, num_users: int) -> FloatArray:
        """p_i: the released popularity rate (public after the release), else zero."""
        if server.popularity is None:
            return np.zeros(self._num_items)
        return np.clip(np.maximum(server.popularity, 0.0) / max(num_users, 1), 0.0, 1.0)

    def local_updates(self, fleet: DeviceFleet, server: ItemServer, cohort: IntArray) -> FloatArray:
        if server.item_factors is None or server.item_bias is None:
            raise ConfigError("the server has not initialised the item factors")
        active = server.active_items
        if len(active) != self.num_active:
            raise ConfigError("the server's active item set does not match the upload size")
        v, b = server.item_factors[active], server.item_bias[active]
        p = self.target_offset(server, fleet.num_users)[active]
        u, x, r = fleet.solve_user_factors(cohort, v, b, p, self.config, active)
        err = (1.0 + self.config.alpha * x) * (r - u @ v.T)
        grad_v = -2.0 * err[:, :, None] * u[:, None, :]
        grad_b = -2.0 * err
        packed = np.concatenate([grad_v, grad_b[:, :, None]], axis=2)
        return clip_rows(packed.reshape(len(cohort), -1), self.config.clip_norm)

    def server_step(
        self, server: ItemServer, total: FloatArray, expected_clients: float, noise_std: float = 0.0
    ) -> None:
        if expected_clients <= 0:
            raise ConfigError("expected_clients must be positive")
        grad = np.asarray(total, dtype=np.float64).reshape(self.num_active, self.config.dim + 1)
        server.apply_gradient(grad / expected_clients, self.config)
