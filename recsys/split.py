"""Per-user interaction histories and the temporal leave-last-out split.

Split rule (published, deterministic): each user's interactions are ordered by
``(timestamp, item id)`` — on MovieLens 100K 415 of 943 test items share their timestamp
with the previous interaction, so the item-id tie-break matters and is part of the
protocol. The last interaction is the test target; with ``holdout="validation"`` the
second-to-last is the target and training stops before it (for hyper-parameter selection
without touching the test item). Users with fewer than ``holdout_position + 1`` interactions
have no target (target = -1) and are excluded from evaluation but keep their history.
Duplicate (user, item) pairs keep their latest occurrence only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from recsys.data import Ratings
from recsys.errors import ConfigError

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

__all__ = ["Interactions", "Split", "leave_last_out"]


@dataclass(frozen=True, eq=False)
class Interactions:
    """Per-user histories in CSR form, each row in temporal order (most recent last)."""

    indptr: IntArray
    items: IntArray
    timestamps: IntArray
    ratings: FloatArray
    num_users: int
    num_items: int

    def __post_init__(self) -> None:
        if self.indptr.shape != (self.num_users + 1,) or self.indptr[-1] != len(self.items):
            raise ConfigError("indptr must have num_users + 1 entries ending at len(items)")

    @property
    def counts(self) -> IntArray:
        """Number of interactions per user."""
        return np.diff(self.indptr)

    @property
    def num_interactions(self) -> int:
        """Total number of interactions."""
        return len(self.items)

    def user_items(self, user: int) -> IntArray:
        """The items of one user in temporal order."""
        return self.items[self.indptr[user] : self.indptr[user + 1]]

    def row_users(self) -> IntArray:
        """For every stored interaction, the user it belongs to."""
        return np.repeat(np.arange(self.num_users, dtype=np.int64), self.counts)

    def positions_from_end(self) -> IntArray:
        """For every stored interaction, how many later interactions its user has (0 = latest)."""
        end = np.repeat(self.indptr[1:], self.counts)
        return end - np.arange(len(self.items), dtype=np.int64) - 1

    def dense(self, users: IntArray, weights: FloatArray | None = None) -> FloatArray:
        """A (len(users) × num_items) matrix: 1 (or ``weights``) where a user interacted."""
        out = np.zeros((len(users), self.num_items))
        starts, ends = self.indptr[users], self.indptr[users + 1]
        lens = ends - starts
        rows = np.repeat(np.arange(len(users)), lens)
        idx = _ranges(starts, lens)
        out[rows, self.items[idx]] = 1.0 if weights is None else weights[idx]
        return out

    def popularity(self) -> FloatArray:
        """Interaction counts per item."""
        return np.bincount(self.items, minlength=self.num_items).astype(np.float64)


def _ranges(starts: IntArray, lens: IntArray) -> IntArray:
    """Concatenation of ``arange(s, s + l)`` for every (s, l), vectorised."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(np.cumsum(lens) - lens, lens)
    return np.repeat(starts, lens) + np.arange(total, dtype=np.int64) - offsets


@dataclass(frozen=True, eq=False)
class Split:
    """Training histories plus one held-out target item per user (-1: no target)."""

    train: Interactions
    targets: IntArray
    target_timestamps: IntArray
    target_ratings: FloatArray
    holdout: str

    @property
    def eval_users(self) -> IntArray:
        """Users that have a target."""
        return np.flatnonzero(self.targets >= 0).astype(np.int64)


def _sorted_unique(ratings: Ratings) -> tuple[IntArray, IntArray, IntArray, FloatArray]:
    order = np.lexsort((ratings.items, ratings.timestamps, ratings.users))
    u, i = ratings.users[order], ratings.items[order]
    t, r = ratings.timestamps[order], ratings.ratings[order]
    # keep the latest occurrence of a repeated (user, item): sort by pair, stable in time
    pair = u * ratings.num_items + i
    by_pair = np.argsort(pair, kind="stable")
    last = np.ones(len(pair), dtype=bool)
    last[by_pair[:-1]] = pair[by_pair[:-1]] != pair[by_pair[1:]]
    return u[last], i[last], t[last], r[last]


def leave_last_out(ratings: Ratings, holdout: Literal["test", "validation"] = "test") -> Split:
    """Temporal leave-last-out split (see the module docstring for the exact rule)."""
    if holdout not in ("test", "validation"):
        raise ConfigError("holdout must be 'test' or 'validation'")
    u, i, t, r = _sorted_unique(ratings)
    n = ratings.num_users
    counts = np.bincount(u, minlength=n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(counts)
    drop = 1 if holdout == "test" else 2  # interactions removed from the end of each history
    need = drop + 1  # a user needs this many interactions to get a target and a history
    has = counts >= need
    pos_from_end = np.repeat(indptr[1:], counts) - np.arange(len(u)) - 1
    keep = ~np.repeat(has, counts) | (pos_from_end >= drop)
    target_idx = indptr[1:] - drop
    targets = np.full(n, -1, dtype=np.int64)
    tstamps = np.zeros(n, dtype=np.int64)
    tratings = np.zeros(n)
    targets[has] = i[target_idx[has]]
    tstamps[has] = t[target_idx[has]]
    tratings[has] = r[target_idx[has]]
    kept_counts = np.bincount(u[keep], minlength=n)
    kept_ptr = np.zeros(n + 1, dtype=np.int64)
    kept_ptr[1:] = np.cumsum(kept_counts)
    train = Interactions(kept_ptr, i[keep], t[keep], r[keep], n, ratings.num_items)
    return Split(train, targets, tstamps, tratings, holdout)
