"""Central reference models, scored by the same evaluation code as the federated ones.

* :func:`popularity` — training interaction counts (non-private);
* :func:`capped_counts` / :func:`dp_capped_popularity` — user-level DP popularity: every user
  contributes at most ``cap`` items (its most recent, or a random subset), so the count
  vector has L2 sensitivity √cap under add/remove-one-user, and Gaussian noise of standard
  deviation ``noise_multiplier·√cap`` is added by a caller-supplied noise source;
  :func:`private_popularity` releases it with the same exact Skellam count mechanism and
  accountant as the federated popularity release (a fair baseline);
* :func:`als` — implicit-feedback ALS (Hu, Koren, Volinsky 2008), central and non-private,
  with the per-user normal equations batched over users;
* :func:`ease` — EASE (Steck 2019), closed form.

All return a score function ``users -> (len(users) × num_items)`` for
:func:`recsys.metrics.evaluate_ranking`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from dp.events import DistributedSkellamCountsEvent, PrivacyEvent
from dp.rng import NoiseRng, default_rng
from dp.samplers import float_at_most, rational_at_least, skellam
from recsys.errors import ConfigError
from recsys.split import Interactions

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
ScoreFn = Callable[[IntArray], FloatArray]
NoiseFn = Callable[[int, float], FloatArray]
"""``noise(size, std) -> float array`` of i.i.d. N(0, std²) samples."""

__all__ = [
    "als",
    "capped_counts",
    "capped_mask",
    "dp_capped_popularity",
    "ease",
    "popularity",
    "private_popularity",
    "static_scores",
]


def static_scores(item_scores: FloatArray) -> ScoreFn:
    """The same item scores for every user."""
    frozen = np.asarray(item_scores, dtype=np.float64)

    def score(users: IntArray) -> FloatArray:
        return np.broadcast_to(frozen, (len(users), len(frozen))).copy()

    return score


def popularity(train: Interactions) -> ScoreFn:
    """Non-private popularity: the number of training interactions per item."""
    return static_scores(train.popularity())


def capped_mask(
    train: Interactions,
    cap: int,
    mode: Literal["recent", "random"] = "recent",
    rng: np.random.Generator | None = None,
) -> NDArray[np.bool_]:
    """Which stored interactions survive capping each user to ``cap`` items.

    ``recent`` keeps each user's ``cap`` latest items (deterministic); ``random`` keeps a
    uniformly random subset of size ``cap`` (needs ``rng``).
    """
    if cap < 1:
        raise ConfigError("cap must be at least 1")
    if mode == "recent":
        return train.positions_from_end() < cap
    if mode == "random":
        if rng is None:
            raise ConfigError("random capping needs a generator")
        keys = rng.random(train.num_interactions)
        users = train.row_users()
        order = np.lexsort((keys, users))
        starts = np.repeat(train.indptr[:-1], train.counts)
        rank_within = np.empty(train.num_interactions, dtype=np.int64)
        rank_within[order] = np.arange(train.num_interactions) - starts
        return rank_within < cap
    raise ConfigError("mode must be 'recent' or 'random'")


def capped_counts(
    train: Interactions,
    cap: int,
    mode: Literal["recent", "random"] = "recent",
    rng: np.random.Generator | None = None,
) -> FloatArray:
    """Per-item counts when each user contributes at most ``cap`` items (L2 sensitivity √cap)."""
    keep = capped_mask(train, cap, mode, rng)
    return np.bincount(train.items[keep], minlength=train.num_items).astype(np.float64)


def dp_capped_popularity(
    train: Interactions,
    *,
    cap: int,
    noise_multiplier: float,
    noise: NoiseFn,
    mode: Literal["recent", "random"] = "recent",
    rng: np.random.Generator | None = None,
) -> tuple[ScoreFn, FloatArray]:
    """User-level DP popularity: capped counts + N(0, (noise_multiplier·√cap)²) per item.

    Returns the score function and the released noisy counts. The privacy cost is one
    Gaussian mechanism with this noise multiplier (charge it with the ``dp`` accountant).
    """
    if noise_multiplier < 0:
        raise ConfigError("noise_multiplier must be non-negative")
    counts = capped_counts(train, cap, mode, rng)
    std = noise_multiplier * float(np.sqrt(cap))
    released = counts + (noise(train.num_items, std) if std > 0 else 0.0)
    return static_scores(released), released


def _user_solve(
    train: Interactions, users: IntArray, item_f: FloatArray, alpha: float, reg: float
) -> FloatArray:
    """Hu–Koren–Volinsky user step for a batch:
    (VᵀV + α Σ_{i∈I_u} v_i v_iᵀ + λI) u = (1+α) Σ_{i∈I_u} v_i."""
    d = item_f.shape[1]
    x = train.dense(users)
    vv = (item_f[:, :, None] * item_f[:, None, :]).reshape(len(item_f), d * d)
    gram = item_f.T @ item_f + reg * np.eye(d)
    a = gram[None] + alpha * (x @ vv).reshape(len(users), d, d)
    rhs = (1.0 + alpha) * (x @ item_f)
    u: FloatArray = np.linalg.solve(a, rhs[..., None])[..., 0].astype(np.float64)
    return u


def als(
    train: Interactions,
    *,
    factors: int = 32,
    reg: float = 0.1,
    alpha: float = 5.0,
    iterations: int = 15,
    seed: int = 0,
    chunk: int = 2048,
) -> ScoreFn:
    """Central implicit ALS (confidence 1 + α·x_ui, preference x_ui), non-private."""
    if factors < 1 or iterations < 1 or reg <= 0 or alpha < 0:
        raise ConfigError("als needs factors >= 1, iterations >= 1, reg > 0, alpha >= 0")
    rng = np.random.default_rng(seed)
    n, m = train.num_users, train.num_items
    user_f = rng.normal(0.0, 0.01, (n, factors))
    item_f = rng.normal(0.0, 0.01, (m, factors))
    transposed = _transpose(train)
    all_users = np.arange(n, dtype=np.int64)
    all_items = np.arange(m, dtype=np.int64)
    for _ in range(iterations):
        step = max(1, min(chunk, 20_000_000 // max(m * factors, 1)))
        for lo in range(0, n, step):
            b = all_users[lo : lo + step]
            user_f[b] = _user_solve(train, b, item_f, alpha, reg)
        step = max(1, min(chunk, 20_000_000 // max(n * factors, 1)))
        for lo in range(0, m, step):
            b = all_items[lo : lo + step]
            item_f[b] = _user_solve(transposed, b, user_f, alpha, reg)

    def score(users: IntArray) -> FloatArray:
        return user_f[users] @ item_f.T

    return score


def _transpose(train: Interactions) -> Interactions:
    users = train.row_users()
    order = np.argsort(train.items, kind="stable")
    counts = np.bincount(train.items, minlength=train.num_items)
    ptr = np.zeros(train.num_items + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(counts)
    return Interactions(
        ptr,
        users[order],
        train.timestamps[order],
        train.ratings[order],
        train.num_items,
        train.num_users,
    )


def ease(train: Interactions, *, reg: float = 200.0) -> ScoreFn:
    """EASE: B = I − P·diag(1/diag P), P = (XᵀX + λI)⁻¹, zero diagonal; scores X_u B."""
    if reg <= 0:
        raise ConfigError("ease needs reg > 0")
    if train.num_items > 20_000:
        raise ConfigError("ease materialises an item × item matrix; too many items")
    x_all = train.dense(np.arange(train.num_users, dtype=np.int64))
    gram = x_all.T @ x_all + reg * np.eye(train.num_items)
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)

    def score(users: IntArray) -> FloatArray:
        return train.dense(users) @ b

    return score


def private_popularity(
    train: Interactions,
    *,
    cap: int,
    epsilon: float,
    delta: float,
    mode: Literal["recent", "random"] = "recent",
    noise_rng: NoiseRng | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[ScoreFn, FloatArray, PrivacyEvent, float]:
    """DP capped popularity released by a trusted curator with the federated release's
    mechanism: the integer capped counts plus one exact symmetric Skellam draw per item,
    accounted as a :class:`~dp.events.DistributedSkellamCountsEvent` with a single noise
    share (exact PLD), so the baseline gets the same noise for the same ε as the model.

    The noise multiplier is the smallest (to 0.2 %) whose event costs at most ``epsilon`` at
    ``delta`` under the ``dp`` accountant. Returns (scores, released counts, event, z).
    """
    from recsys.privacy import calibrate_single, epsilon_of  # local: avoids an import cycle

    counts = capped_counts(train, cap, mode, rng)
    noise_rng = default_rng(noise_rng)

    def event_at(z: float) -> DistributedSkellamCountsEvent:
        return DistributedSkellamCountsEvent(
            max_ones=cap,
            local_variance=float_at_most(rational_at_least(z * z * cap)),
            dimension=train.num_items,
            min_contributors=1,
            expected_contributors=1,
            secure=noise_rng.secure,
        )

    z = calibrate_single(lambda z: epsilon_of([event_at(z)], delta), epsilon)
    variance = rational_at_least(z * z * cap)
    released = counts + skellam(variance, train.num_items, noise_rng).astype(np.float64)
    return static_scores(released), released, event_at(z), z
