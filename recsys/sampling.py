"""Private active cohort sampling: on-device clustering and stratified Poisson sampling.

FedFast (Muhammad et al., KDD 2020) samples users per cluster, but clusters them on the
server from per-user embeddings, which secure aggregation and DP forbid. Here:

1. **Public centroids.** ``K`` centroids are computed by the server from public data only:
   a seeded k-means over the public item features (genres, release-age bins), weighted by
   the released DP popularity when the model has made that release (post-processing).
2. **On-device assignment.** Each device summarises its own history as the centred,
   normalised mean of the public features of its items and assigns itself to the nearest
   centroid (cosine). The profile and the assignment never leave the device.
3. **One DP release of the cluster sizes.** Every device uploads the one-hot vector of its
   cluster (L2 sensitivity 1) through the run's channel (distributed DP under SecAgg); the
   server learns only the noisy per-cluster counts. Its noise is set so that this release
   alone would spend ``cluster_share · ε``, and the FCF rounds are calibrated so that the
   composition of every release (popularity, clusters, rounds) stays within ε.
4. **Stratified Poisson sampling.** From the noisy counts n̂_s the server publishes one rate
   per cluster: the expected cohort ``C`` is allocated as m_s ∝ n̂_s^a (``allocation`` a:
   1 = proportional, i.e. uniform sampling; 0 = the same number per cluster, so small,
   under-served clusters are sampled more), each rate q_s = m_s / n̂_s capped at
   q_max = min(1, ``max_boost`` · C / N), with the cap's excess re-allocated (water
   filling). Each device flips its own coin with its cluster's rate, so the server never
   needs anyone's cluster. The rates are a function of released quantities only.

Accounting: each user's privacy loss is amplified by its own q_s; a user's cluster depends
on its data, so the run's user-level ε is computed at max_s q_s for every round
(:class:`dp.events.StratifiedPoissonSampledEvent`, read at its largest rate by every
backend) and the FCF noise is calibrated at q_max up front. Stratification therefore pays
twice at equal ε: the cluster release's share, and the noise for q_max > C / N.

Threat model (as for uniform sampling, ``docs/SECURITY.md``): amplification holds only
against an observer who does not learn who was sampled. A server that sees who takes part
learns more here than under uniform sampling: how often a device participates is
correlated with its cluster's rate. Against such a server use the unamplified
per-participation ε (the inner event of each ledger entry), which does not depend on the
rates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dp.events import PrivacyEvent
from recsys.errors import ConfigError
from recsys.federated import ClientTask, DeviceFleet, ItemServer
from recsys.privacy import calibrate_single, epsilon_of

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

SAMPLERS: tuple[str, ...] = ("uniform", "stratified")

__all__ = [
    "SAMPLERS",
    "ClusterCountTask",
    "StratifiedConfig",
    "allocate_rates",
    "assign_clusters",
    "calibrate_cluster_noise",
    "device_profiles",
    "public_centroids",
]


@dataclass(frozen=True)
class StratifiedConfig:
    """Settings of the stratified sampler (used when ``TrainConfig.sampler == "stratified"``).

    ``clusters`` public centroids; ``allocation`` the exponent a of the per-cluster cohort
    m_s ∝ n̂_s^a; ``max_boost`` caps every rate at ``max_boost`` times the uniform rate (the
    rate the accountant charges); ``cluster_share`` is the share of ε the cluster-count
    release would spend alone; ``kmeans_iterations`` and ``seed`` fix the public k-means.
    """

    clusters: int = 8
    allocation: float = 0.5
    max_boost: float = 2.0
    cluster_share: float = 0.05
    kmeans_iterations: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.clusters, bool) or not isinstance(self.clusters, int):
            raise ConfigError("clusters must be an int")
        if self.clusters < 2:
            raise ConfigError("clusters must be at least 2")
        if not (math.isfinite(self.allocation) and 0.0 <= self.allocation <= 1.0):
            raise ConfigError("allocation must lie in [0, 1]")
        if not (math.isfinite(self.max_boost) and self.max_boost >= 1.0):
            raise ConfigError("max_boost must be at least 1")
        if not 0.0 < self.cluster_share < 1.0:
            raise ConfigError("cluster_share must lie in (0, 1)")
        if self.kmeans_iterations < 1:
            raise ConfigError("kmeans_iterations must be at least 1")


def _unit_rows(x: FloatArray) -> FloatArray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: FloatArray = x / np.where(norms > 0, norms, 1.0)
    return out


def public_centroids(
    features: FloatArray,
    k: int,
    *,
    weights: FloatArray | None = None,
    iterations: int = 25,
    seed: int = 0,
) -> FloatArray:
    """``k`` unit-norm centroids (k × F) from **public** item features by seeded spherical
    k-means (k-means++ seeding) on the centred item features, items weighted by ``weights``
    (e.g. the released DP popularity; negative values count as zero)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ConfigError("stratified sampling needs public item features (none available)")
    if k < 2 or k > x.shape[0]:
        raise ConfigError(f"clusters must lie in [2, {x.shape[0]}], got {k}")
    w = np.ones(x.shape[0]) if weights is None else np.maximum(np.asarray(weights, float), 0.0)
    if w.shape != (x.shape[0],) or not np.all(np.isfinite(w)):
        raise ConfigError("weights must be one finite value per item")
    if w.sum() <= 0:
        w = np.ones(x.shape[0])
    center = (w[:, None] * x).sum(axis=0) / w.sum()
    z = _unit_rows(x - center)
    rng = np.random.default_rng([seed, 0x5A4D])
    chosen = [int(rng.choice(len(z), p=w / w.sum()))]
    dist = np.full(len(z), np.inf)
    for _ in range(1, k):  # k-means++ seeding (k is small)
        dist = np.minimum(dist, 1.0 - z @ z[chosen[-1]])
        p = np.maximum(dist, 0.0) * w
        if p.sum() <= 0:
            p = w.copy()
        chosen.append(int(rng.choice(len(z), p=p / p.sum())))
    cent = z[chosen].copy()
    for _ in range(iterations):
        label = np.argmax(z @ cent.T, axis=1)
        sums = np.zeros_like(cent)
        np.add.at(sums, label, w[:, None] * z)
        empty = np.linalg.norm(sums, axis=1) == 0
        sums[empty] = cent[empty]
        new = _unit_rows(sums)
        if np.allclose(new, cent):
            break
        cent = new
    out: FloatArray = np.vstack([cent, center[None, :]])
    return out


def device_profiles(fleet: DeviceFleet, users: IntArray, center: FloatArray) -> FloatArray:
    """Each device's taste profile (computed on the device from its own history): the
    centred, unit-norm mean of the public features of the items it interacted with."""
    hist = fleet.history(users)
    counts = np.maximum(hist.sum(axis=1, keepdims=True), 1.0)
    mean = (hist @ fleet.features) / counts
    return _unit_rows(mean - center[None, :])


def assign_clusters(profiles: FloatArray, centroids: FloatArray) -> IntArray:
    """Nearest centroid by cosine (profiles and centroids are unit rows)."""
    label: IntArray = np.argmax(profiles @ centroids.T, axis=1).astype(np.int64)
    return label


def allocate_rates(
    counts: FloatArray, cohort: float, *, allocation: float, max_rate: float
) -> FloatArray:
    """Per-cluster inclusion probabilities from the released (noisy) cluster sizes.

    The expected cohort ``cohort`` is split as m_s ∝ n̂_s^a (n̂_s clamped to ≥ 1), each
    rate q_s = m_s / n̂_s capped at ``max_rate``; the excess of capped clusters is re-split
    among the others (water filling) until Σ n̂_s q_s = cohort or every rate is capped.
    """
    n = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    if n.ndim != 1 or len(n) < 1 or not np.all(np.isfinite(n)):
        raise ConfigError("counts must be a non-empty vector of finite numbers")
    if not 0.0 < max_rate <= 1.0:
        raise ConfigError("max_rate must lie in (0, 1]")
    if cohort <= 0:
        raise ConfigError("cohort must be positive")
    share = n**allocation
    rates = np.zeros_like(n)
    capped = np.zeros(len(n), dtype=bool)
    remaining = float(cohort)
    for _ in range(len(n) + 1):
        free = ~capped
        if not free.any() or remaining <= 0:
            break
        alloc = remaining * share[free] / share[free].sum()
        q = alloc / n[free]
        over = q > max_rate
        if not over.any():
            rates[free] = q
            break
        idx = np.flatnonzero(free)[over]
        rates[idx] = max_rate
        capped[idx] = True
        remaining -= float((n[idx] * max_rate).sum())
    rates[capped] = max_rate
    out: FloatArray = np.clip(rates, 0.0, max_rate)
    return out


class ClusterCountTask(ClientTask):
    """The cluster-size release: each device uploads the one-hot vector of its own cluster
    (L2 norm 1), the server keeps the noisy sum (per-cluster counts) and derives the rates.

    Device side: :attr:`device_strata` simulates each device's memory of its own cluster
    (used by the device to flip its own inclusion coin); the server side only reads
    :attr:`counts` and :attr:`rates`.
    """

    name = "clusters"

    def __init__(
        self,
        features: FloatArray,
        num_users: int,
        config: StratifiedConfig,
        *,
        cohort: float,
        max_rate: float,
    ) -> None:
        if not 0.0 < max_rate <= 1.0 or cohort <= 0:
            raise ConfigError("the stratified sampler needs cohort > 0 and max_rate in (0, 1]")
        self.config = config
        self.cohort = float(cohort)
        self.max_rate = float(max_rate)
        self._features = np.asarray(features, dtype=np.float64)
        self.num_users = num_users
        self.centroids: FloatArray | None = None
        self.center: FloatArray | None = None
        self.device_strata: IntArray = np.zeros(num_users, dtype=np.int64)
        self.counts: FloatArray | None = None
        self.rates: FloatArray | None = None

    @property
    def upload_dim(self) -> int:
        return self.config.clusters

    @property
    def count_cap(self) -> int | None:
        return 1

    @property
    def clip_norm(self) -> float:
        return 1.0

    def prepare(self, server: ItemServer) -> None:
        """Server: the public centroids (features weighted by the released popularity)."""
        full = public_centroids(
            self._features,
            self.config.clusters,
            weights=server.popularity,
            iterations=self.config.kmeans_iterations,
            seed=self.config.seed,
        )
        self.centroids, self.center = full[:-1], full[-1]

    def local_updates(self, fleet: DeviceFleet, server: ItemServer, cohort: IntArray) -> FloatArray:
        if self.centroids is None or self.center is None:
            self.prepare(server)
        assert self.centroids is not None and self.center is not None
        label = assign_clusters(device_profiles(fleet, cohort, self.center), self.centroids)
        self.device_strata[cohort] = label  # stays on each device
        out: FloatArray = np.zeros((len(cohort), self.config.clusters))
        out[np.arange(len(cohort)), label] = 1.0
        return out

    def server_step(
        self, server: ItemServer, total: FloatArray, expected_clients: float, noise_std: float = 0.0
    ) -> None:
        """Server: keep the noisy counts and publish the per-cluster rates (post-processing)."""
        self.counts = np.asarray(total, dtype=np.float64).copy()
        self.rates = allocate_rates(
            self.counts, self.cohort, allocation=self.config.allocation, max_rate=self.max_rate
        )

    def inclusion_probabilities(self) -> FloatArray:
        """Each device's own inclusion probability (its cluster's published rate); used by
        the device to flip its own coin. Raises before the rates exist."""
        if self.rates is None:
            raise ConfigError("the cluster rates have not been published yet")
        out: FloatArray = self.rates[self.device_strata]
        return out

    def summary(self) -> dict[str, Any]:
        """What the server knows (noisy counts, published rates) and the settings."""
        return {
            "clusters": self.config.clusters,
            "allocation_exponent": self.config.allocation,
            "max_rate": self.max_rate,
            "expected_cohort": self.cohort,
            "cluster_share_of_epsilon": self.config.cluster_share,
            "released_counts": None if self.counts is None else self.counts.tolist(),
            "rates": None if self.rates is None else self.rates.tolist(),
        }


def calibrate_cluster_noise(
    event_of: Callable[[float], PrivacyEvent], *, epsilon: float, delta: float, share: float
) -> float:
    """Noise multiplier at which the cluster-size release alone spends ``share · ε``."""
    return calibrate_single(lambda z: epsilon_of([event_of(z)], delta), share * epsilon)
