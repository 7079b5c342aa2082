"""Ranking and rating metrics: full ranking first, sampled negatives only as a labelled option.

Rank convention (pessimistic ties, as in the research baselines): the rank of the target is
the number of candidates scoring strictly higher plus the number of *other* candidates
scoring equal, so a constant model cannot look good. Candidates are every item the user
has not interacted with in training (the target included). With one relevant item,
HR@K = 1[rank < K], NDCG@K = 1/log2(rank + 2) if rank < K else 0, MRR = 1/(rank + 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from recsys.errors import ConfigError
from recsys.split import Split

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
ScoreFn = Callable[[IntArray], FloatArray]

__all__ = [
    "RankingReport",
    "bootstrap_ci",
    "evaluate_ranking",
    "hit_rate",
    "mrr",
    "ndcg",
    "paired_test",
    "ranks_of_targets",
    "rmse",
    "sampled_negatives",
]


def ranks_of_targets(
    scores: FloatArray, exclude: FloatArray | NDArray[np.bool_], targets: IntArray
) -> IntArray:
    """0-based pessimistic rank of each row's target among the non-excluded items.

    ``scores`` is (B × I); ``exclude`` (B × I) is truthy for training items, which are not
    candidates. Raises if a target is excluded or a score is NaN.
    """
    if scores.shape != exclude.shape or scores.shape[0] != len(targets):
        raise ConfigError("scores, exclude and targets must agree in shape")
    if np.isnan(scores).any():
        raise ConfigError("scores contain NaN")
    rows = np.arange(len(targets))
    if np.any(np.asarray(exclude[rows, targets], dtype=bool)):
        raise ConfigError("a target item is among the excluded training items")
    s = np.where(np.asarray(exclude, dtype=bool), -np.inf, scores)
    st = s[rows, targets][:, None]
    higher = (s > st).sum(axis=1)
    ties = (s == st).sum(axis=1) - 1
    ranks: IntArray = (higher + ties).astype(np.int64)
    return ranks


def hit_rate(ranks: IntArray, k: int) -> FloatArray:
    """Per-user HR@k (0/1)."""
    return (ranks < k).astype(np.float64)


def ndcg(ranks: IntArray, k: int) -> FloatArray:
    """Per-user NDCG@k for a single relevant item."""
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def mrr(ranks: IntArray) -> FloatArray:
    """Per-user reciprocal rank."""
    out: FloatArray = np.divide(1.0, ranks + 1.0, dtype=np.float64)
    return out


def rmse(predicted: FloatArray, actual: FloatArray) -> float:
    """Root mean squared error of explicit rating predictions."""
    if predicted.shape != actual.shape or predicted.size == 0:
        raise ConfigError("rmse needs two non-empty arrays of equal shape")
    return float(np.sqrt(np.mean((predicted - actual) ** 2)))


def bootstrap_ci(
    per_user: FloatArray, *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over users."""
    if per_user.size == 0:
        raise ConfigError("bootstrap_ci needs at least one user")
    if not 0.0 < level < 1.0:
        raise ConfigError("level must lie in (0, 1)")
    rng = np.random.default_rng(seed)
    n = per_user.size
    means = np.empty(resamples)
    step = max(1, 2_000_000 // n)
    for lo in range(0, resamples, step):
        hi = min(resamples, lo + step)
        idx = rng.integers(0, n, (hi - lo, n))
        means[lo:hi] = per_user[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def paired_test(
    a: FloatArray, b: FloatArray, *, resamples: int = 20000, seed: int = 0
) -> tuple[float, float]:
    """Paired sign-flip permutation test of per-user metrics: (mean(a - b), two-sided p)."""
    if a.shape != b.shape or a.size == 0:
        raise ConfigError("paired_test needs two non-empty arrays of equal shape")
    diff = a - b
    observed = float(diff.mean())
    rng = np.random.default_rng(seed)
    exceed = 0
    step = max(1, 2_000_000 // diff.size)
    for lo in range(0, resamples, step):
        m = min(step, resamples - lo)
        flips = rng.integers(0, 2, (m, diff.size)) * 2.0 - 1.0
        null = (flips * diff[None, :]).mean(axis=1)
        exceed += int((np.abs(null) >= abs(observed) - 1e-12).sum())
    return observed, (exceed + 1) / (resamples + 1)


def sampled_negatives(split: Split, num_negatives: int = 99, seed: int = 0) -> IntArray:
    """SECONDARY protocol: per evaluated user, ``num_negatives`` items drawn uniformly from items
    the user never interacted with (training or target). Rows of -1 for users without target."""
    train = split.train
    out = np.full((train.num_users, num_negatives), -1, dtype=np.int64)
    rng = np.random.default_rng(seed)
    for u in split.eval_users:
        seen = np.zeros(train.num_items, dtype=bool)
        seen[train.user_items(int(u))] = True
        seen[split.targets[u]] = True
        cand = np.flatnonzero(~seen)
        if len(cand) < num_negatives:
            raise ConfigError(f"user {u} has fewer than {num_negatives} unseen items")
        out[u] = rng.choice(cand, num_negatives, replace=False)
    return out


@dataclass(frozen=True, eq=False)
class RankingReport:
    """Per-user ranks and the derived metrics, with bootstrap confidence intervals."""

    users: IntArray
    ranks: IntArray
    k: int
    protocol: str  # "full" or "sampled-<n>"

    @property
    def hr(self) -> float:
        """Mean HR@k."""
        return float(hit_rate(self.ranks, self.k).mean())

    @property
    def ndcg(self) -> float:
        """Mean NDCG@k."""
        return float(ndcg(self.ranks, self.k).mean())

    @property
    def mrr(self) -> float:
        """Mean reciprocal rank."""
        return float(mrr(self.ranks).mean())

    def per_user(self, metric: str) -> FloatArray:
        """Per-user values of ``"hr"``, ``"ndcg"`` or ``"mrr"``."""
        if metric == "hr":
            return hit_rate(self.ranks, self.k)
        if metric == "ndcg":
            return ndcg(self.ranks, self.k)
        if metric == "mrr":
            return mrr(self.ranks)
        raise ConfigError(f"unknown metric {metric!r}")

    def ci(self, metric: str, *, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
        """Per-user bootstrap confidence interval of a metric."""
        return bootstrap_ci(self.per_user(metric), level=level, seed=seed)

    def summary(self) -> dict[str, float]:
        """HR, NDCG, MRR and their 95% bootstrap intervals, keyed like ``HR@10``."""
        out: dict[str, float] = {}
        for name, key in (("hr", f"HR@{self.k}"), ("ndcg", f"NDCG@{self.k}"), ("mrr", "MRR")):
            value = float(self.per_user(name).mean())
            lo, hi = self.ci(name)
            out[key] = value
            out[key + "_lo"] = lo
            out[key + "_hi"] = hi
        return out


def evaluate_ranking(
    score_fn: ScoreFn,
    split: Split,
    *,
    k: int = 10,
    negatives: IntArray | None = None,
    chunk: int = 1024,
) -> RankingReport:
    """Rank each evaluated user's target with ``score_fn(users) -> (len(users) × I)`` scores.

    Full ranking over all items not in the user's training history (primary); with
    ``negatives`` from :func:`sampled_negatives`, the target is ranked among those only
    (secondary, labelled ``sampled-<n>``). Users are scored in chunks to bound memory.
    """
    if k < 1:
        raise ConfigError("k must be at least 1")
    users = split.eval_users
    ranks = np.empty(len(users), dtype=np.int64)
    num_items = split.train.num_items
    for lo in range(0, len(users), chunk):
        batch = users[lo : lo + chunk]
        scores = np.asarray(score_fn(batch), dtype=np.float64)
        if scores.shape != (len(batch), num_items):
            raise ConfigError(
                f"score_fn returned shape {scores.shape}, expected {(len(batch), num_items)}"
            )
        targets = split.targets[batch]
        if negatives is None:
            exclude = split.train.dense(batch) > 0
        else:
            neg = negatives[batch]
            exclude = np.ones_like(scores, dtype=bool)
            rows = np.arange(len(batch))[:, None]
            exclude[rows, neg] = False
            exclude[np.arange(len(batch)), targets] = False
        ranks[lo : lo + len(batch)] = ranks_of_targets(scores, exclude, targets)
    protocol = "full" if negatives is None else f"sampled-{negatives.shape[1]}"
    return RankingReport(users, ranks, k, protocol)
