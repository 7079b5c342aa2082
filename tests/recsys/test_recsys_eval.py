"""Leave-last-out split, metrics against hand-computed cases, and the central baselines."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys import baselines
from recsys.data import Ratings, load_ratings, synthetic_ratings
from recsys.errors import ConfigError
from recsys.metrics import (
    bootstrap_ci,
    evaluate_ranking,
    hit_rate,
    mrr,
    ndcg,
    paired_test,
    ranks_of_targets,
    rmse,
    sampled_negatives,
)
from recsys.split import leave_last_out


def _ratings(rows: list[tuple[int, int, int]], num_users: int, num_items: int) -> Ratings:
    a = np.array(rows, dtype=np.int64)
    return Ratings(
        users=a[:, 0],
        items=a[:, 1],
        ratings=np.ones(len(a)),
        timestamps=a[:, 2],
        num_users=num_users,
        num_items=num_items,
        source="test",
    )


def test_leave_last_out_tie_break_by_item_id() -> None:
    # user 0: items 3 and 1 share the latest timestamp -> order (t, item): 2@5, 1@9, 3@9
    r = _ratings([(0, 3, 9), (0, 2, 5), (0, 1, 9), (1, 0, 1), (1, 4, 2), (2, 4, 7)], 3, 5)
    test = leave_last_out(r)
    assert test.targets.tolist() == [3, 4, -1]
    assert test.train.user_items(0).tolist() == [2, 1]
    assert test.train.user_items(1).tolist() == [0]
    assert test.train.user_items(2).tolist() == [4]  # no target: history kept
    assert test.eval_users.tolist() == [0, 1]
    val = leave_last_out(r, "validation")
    assert val.targets.tolist() == [1, -1, -1]
    assert val.train.user_items(0).tolist() == [2]


def test_leave_last_out_is_deterministic_under_row_permutation() -> None:
    r = synthetic_ratings(200, 80, seed=1, mean_activity=15, min_activity=3)
    perm = np.random.default_rng(0).permutation(r.num_ratings)
    shuffled = Ratings(
        users=r.users[perm],
        items=r.items[perm],
        ratings=r.ratings[perm],
        timestamps=r.timestamps[perm] // 86_400,  # coarse stamps: many ties
        num_users=r.num_users,
        num_items=r.num_items,
        source="perm",
    )
    coarse = Ratings(
        users=r.users,
        items=r.items,
        ratings=r.ratings,
        timestamps=r.timestamps // 86_400,
        num_users=r.num_users,
        num_items=r.num_items,
        source="orig",
    )
    a, b = leave_last_out(coarse), leave_last_out(shuffled)
    assert np.array_equal(a.targets, b.targets)
    assert np.array_equal(a.train.indptr, b.train.indptr)
    assert np.array_equal(a.train.items, b.train.items)
    # the target is the latest (timestamp, item) of each user
    for u in range(0, 200, 17):
        mine = coarse.users == u
        key = coarse.timestamps[mine] * 1000 + coarse.items[mine]
        assert a.targets[u] == coarse.items[mine][np.argmax(key)]


def test_duplicates_keep_latest() -> None:
    r = _ratings([(0, 1, 1), (0, 2, 2), (0, 1, 3), (0, 0, 4)], 1, 3)
    s = leave_last_out(r)
    assert s.train.user_items(0).tolist() == [2, 1]
    assert s.targets.tolist() == [0]


def test_ranks_hand_computed() -> None:
    scores = np.array([[0.9, 0.5, 0.5, 0.1, 0.7], [1.0, 1.0, 1.0, 1.0, 1.0]])
    exclude = np.array([[True, False, False, False, False], [False] * 5])
    targets = np.array([1, 3])
    ranks = ranks_of_targets(scores, exclude, targets)
    # row 0: 0.7 above, one tie (item 2) counted pessimistically -> rank 2
    # row 1: all four others tie -> rank 4
    assert ranks.tolist() == [2, 4]
    assert hit_rate(ranks, 3).tolist() == [1.0, 0.0]
    assert ndcg(ranks, 3).tolist() == [pytest.approx(0.5), 0.0]
    assert ndcg(np.array([0]), 1).tolist() == [1.0]
    assert mrr(ranks).tolist() == [pytest.approx(1 / 3), pytest.approx(1 / 5)]
    with pytest.raises(ConfigError, match="excluded"):
        ranks_of_targets(scores, exclude, np.array([0, 3]))
    with pytest.raises(ConfigError, match="NaN"):
        ranks_of_targets(np.full((2, 5), np.nan), exclude, targets)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(3, 12), st.integers(0, 2**31))
def test_ranks_match_a_reference_loop(rows: int, items: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, (rows, items)).astype(np.float64)  # many ties
    exclude = rng.random((rows, items)) < 0.3
    targets = rng.integers(0, items, rows)
    exclude[np.arange(rows), targets] = False
    got = ranks_of_targets(scores, exclude, targets)
    for r in range(rows):
        t = targets[r]
        cand = [j for j in range(items) if not exclude[r, j] and j != t]
        assert got[r] == sum(scores[r, j] >= scores[r, t] for j in cand)


def test_rmse_bootstrap_and_paired_test() -> None:
    assert rmse(np.array([1.0, 2.0]), np.array([2.0, 4.0])) == pytest.approx(math.sqrt(2.5))
    lo, hi = bootstrap_ci(np.r_[np.ones(50), np.zeros(50)], seed=1)
    assert lo < 0.5 < hi and hi - lo < 0.3
    assert bootstrap_ci(np.ones(10)) == (1.0, 1.0)
    a = np.r_[np.ones(60), np.zeros(40)]
    diff, p = paired_test(a, np.zeros(100), resamples=2000)
    assert diff == pytest.approx(0.6) and p < 0.01
    diff, p = paired_test(a, a.copy(), resamples=2000)
    assert diff == 0.0 and p == 1.0
    with pytest.raises(ConfigError):
        rmse(np.zeros(2), np.zeros(3))


def test_evaluate_full_and_sampled() -> None:
    r = _ratings([(0, 0, 1), (0, 1, 2), (1, 2, 1), (1, 3, 2), (2, 4, 1), (2, 0, 2)], 3, 6)
    split = leave_last_out(r)
    item_scores = np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    report = evaluate_ranking(baselines.static_scores(item_scores), split, k=2)
    # targets 1, 3, 0; training items 0, 2, 4 are not candidates
    # user 0: candidates 1..5, item 1 is best -> rank 0; user 1: 0,1 above -> rank 2;
    # user 2: 0 is best -> rank 0
    assert report.ranks.tolist() == [0, 2, 0]
    assert report.hr == pytest.approx(2 / 3)
    assert report.mrr == pytest.approx((1 + 1 / 3 + 1) / 3)
    summary = report.summary()
    assert summary["HR@2"] == pytest.approx(2 / 3) and summary["HR@2_lo"] <= 2 / 3
    negs = sampled_negatives(split, num_negatives=2, seed=0)
    sampled = evaluate_ranking(baselines.static_scores(item_scores), split, k=2, negatives=negs)
    assert sampled.protocol == "sampled-2"
    assert (sampled.ranks <= report.ranks).all()


def test_baselines_rank_sensibly_on_synthetic() -> None:
    r = synthetic_ratings(600, 150, seed=2, mean_activity=30, min_activity=8)
    split = leave_last_out(r)
    pop = evaluate_ranking(baselines.popularity(split.train), split).hr
    als = evaluate_ranking(baselines.als(split.train, factors=8, iterations=5), split).hr
    ease = evaluate_ranking(baselines.ease(split.train, reg=50.0), split).hr
    rng = np.random.default_rng(0)
    rand = evaluate_ranking(lambda u: rng.random((len(u), 150)), split).hr
    assert rand < pop < max(als, ease)


def test_capped_counts_and_dp_popularity() -> None:
    r = _ratings([(0, 0, 1), (0, 1, 2), (0, 2, 3), (1, 2, 1)], 2, 3)
    train = leave_last_out(r).train  # user 0 keeps items 0, 1; user 1 has no target
    assert baselines.capped_counts(train, 1).tolist() == [0.0, 1.0, 1.0]
    rng = np.random.default_rng(0)
    keep = baselines.capped_mask(train, 1, "random", rng)
    assert keep.sum() == 2
    calls: list[tuple[int, float]] = []

    def noise(size: int, std: float) -> np.ndarray:
        calls.append((size, std))
        return np.full(size, 0.25)

    _, released = baselines.dp_capped_popularity(train, cap=4, noise_multiplier=2.0, noise=noise)
    assert calls == [(3, 4.0)]  # std = z * sqrt(cap)
    assert released.tolist() == [1.25, 1.25, 1.25]
    with pytest.raises(ConfigError):
        baselines.capped_counts(train, 0)


@pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")
def test_private_popularity_uses_the_models_count_mechanism() -> None:
    """The DP popularity baseline gets the federated release's exact Skellam accounting
    (same noise for the same ε: a fair comparison) and integer noise on integer counts."""
    from dp import DistributedSkellamCountsEvent, make_accountant
    from dp.rng import SimulationRng

    r = synthetic_ratings(200, 60, seed=3, mean_activity=10, min_activity=3)
    train = leave_last_out(r).train
    _, released, event, z = baselines.private_popularity(
        train, cap=20, epsilon=1.0, delta=1e-4, noise_rng=SimulationRng(4)
    )
    assert isinstance(event, DistributedSkellamCountsEvent)
    assert (event.max_ones, event.min_contributors, event.dimension) == (20, 1, 60)
    assert event.total_variance <= (z * math.sqrt(20)) ** 2 * (1 + 1e-9)
    accountant = make_accountant("auto").compose(event)
    assert accountant.get_epsilon(1e-4) <= 1.0
    assert accountant.active_backend == "skellam-pld"  # type: ignore[attr-defined]
    assert 3.1 < z < 3.3  # the exact PLD's noise, not RDP's 3.5
    noise = released - baselines.capped_counts(train, 20)
    np.testing.assert_array_equal(noise, np.rint(noise))


def test_ml100k_baseline_anchors(ml100k_dir: Path) -> None:
    split = leave_last_out(load_ratings(ml100k_dir))
    assert split.train.num_interactions == 99_057
    pop = evaluate_ranking(baselines.popularity(split.train), split)
    ease = evaluate_ranking(baselines.ease(split.train, reg=200.0), split)
    assert pop.hr == pytest.approx(0.0498, abs=5e-4)  # research anchor 0.0498
    assert ease.hr == pytest.approx(0.0880, abs=5e-4)  # research anchor 0.0880
