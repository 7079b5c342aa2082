"""Distributed DP against a malicious server (S16) and an empirical privacy audit (R3 at the
mechanism level).

S16, "only t survivors": the server declares every client but t dropped and one of the t
is corrupt and adds no noise. The released sum must still carry the noise the ledger
charged for, because plan and event are sized for ``min_contributors = t - n_C`` honest
shares, not for the expected cohort.

R3: a canary user's presence is guessed from released aggregates (a distinguishing
attack); the ε lower bound it certifies (Clopper-Pearson, 95 %) must stay below the
accounted ε, and the same attack on the noiseless pipeline must exceed it (power check).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import sec_stats
from scipy import stats

import dp
import secagg
from dp.budget import BudgetPolicy
from dp.calibrate import make_accountant
from dp.ledger import PrivacyLedger, audit_ledger
from dp.rotation import rotate
from protocols import SecAggConfig, ThreatModel, run_secagg

DELTA = 1e-5


def lift(ring: np.ndarray, bits: int) -> np.ndarray:
    values = ring.astype(np.int64)
    values[values >= 1 << (bits - 1)] -= 1 << bits
    return values


def test_sec_only_t_survivors_still_carry_the_charged_noise(tmp_path: Path) -> None:
    n, corrupt = 8, 1
    cfg = SecAggConfig(n, 6, threat_model=ThreatModel.MALICIOUS_SERVER, corrupt_fraction=1 / 8)
    t = cfg.threshold
    min_honest = t - corrupt
    plan = dp.plan_distributed_dp(
        dimension=1024,
        expected_contributors=n,
        min_contributors=min_honest,
        clip_norm=1.0,
        noise_multiplier=1.0,
        bits=32,
    )
    # Honest clients encode a zero update: what survives the sum is exactly their noise.
    encoded = [dp.encode(np.zeros(1024), plan, rotation_seed=5)[0] for _ in range(n)]
    encoded[0] = np.zeros(plan.padded_dimension, dtype=np.uint32)  # corrupt: withholds noise
    x = np.stack(encoded)
    survivors = list(range(t))  # the server "loses" everybody else
    result = run_secagg(x, cfg, drop={"mask": list(range(t, n))})
    assert result.included == tuple(survivors)
    noise = lift(result.total, 32).astype(np.float64)
    # Sample variance of 1024 coordinates of a sum of min_honest shares: within ~4.4 %
    # of the planned central variance; 0.8 leaves a > 4 sigma margin.
    assert float(np.var(noise)) >= 0.8 * float(plan.central_variance)
    _, report = dp.decode(result.total, plan, rotation_seed=5, num_contributors=t)
    assert report.meets_plan
    event = plan.event(secure=True)
    path = tmp_path / "l.db"
    ledger = PrivacyLedger.create(path, policy=BudgetPolicy(delta=DELTA))
    entry = ledger.record_round(round_index=0, event=event, cohort_size=n, survivors=t)
    assert not entry.below_plan
    charged = make_accountant("auto").compose(event).get_epsilon(DELTA)
    optimistic = dp.plan_distributed_dp(
        dimension=1024,
        expected_contributors=n,
        min_contributors=n,  # as if every expected client were honest and present
        clip_norm=1.0,
        noise_multiplier=1.0,
        bits=32,
    )
    naive = make_accountant("auto").compose(optimistic.event(secure=True)).get_epsilon(DELTA)
    assert ledger.epsilon == pytest.approx(charged, rel=1e-9)
    assert optimistic.local_variance < plan.local_variance  # smaller shares per client...
    assert naive <= charged * 1.0001  # ...so its ε is never larger than the honest bound
    ledger.close()
    assert audit_ledger(path).ok
    sec_stats.add("scenarios")
    sec_stats.add("rounds_completed")
    sec_stats.add("attack_attempts")


def clopper_pearson(successes: int, trials: int, alpha: float = 0.05) -> tuple[float, float]:
    low = 0.0 if successes == 0 else stats.beta.ppf(alpha / 2, successes, trials - successes + 1)
    high = (
        1.0
        if successes == trials
        else stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes)
    )
    return float(low), float(high)


def audit_epsilon(with_noise: bool, trials: int) -> tuple[float, float]:
    """(ε lower bound from a canary distinguisher, accounted ε) for one distributed round."""
    contributors, d, seed = 10, 16, 3
    plan = dp.plan_distributed_dp(
        dimension=d,
        expected_contributors=contributors,
        min_contributors=contributors,
        clip_norm=1.0,
        noise_multiplier=2.0,
        bits=32,
    )
    canary = np.zeros(d)
    canary[0] = 1.0  # a user at the clip norm, in a fixed direction
    direction = rotate(canary, seed, 1.0 / plan.gamma)
    rng = dp.SecureRng()

    def released(present: bool) -> np.ndarray:
        others = (
            dp.discrete_gaussian(plan.local_variance, (contributors - 1) * d, rng)
            .reshape(contributors - 1, d)
            .sum(axis=0)
            if with_noise
            else np.zeros(d, dtype=np.int64)
        )
        if present:
            if with_noise:
                mine = lift(dp.encode(canary, plan, rotation_seed=seed, rng=rng)[0], 32)
            else:
                mine = np.rint(direction).astype(np.int64)
        else:
            mine = (
                dp.discrete_gaussian(plan.local_variance, d, rng)
                if with_noise
                else np.zeros(d, dtype=np.int64)
            )
        return (others + mine).astype(np.float64)

    def statistic(present: bool, count: int) -> np.ndarray:
        return np.array([released(present) @ direction for _ in range(count)])

    half = trials // 2
    threshold = float(np.quantile(statistic(False, half), 0.95))  # calibrated on fresh data
    tpr_hits = int(np.sum(statistic(True, half) > threshold))
    fpr_hits = int(np.sum(statistic(False, half) > threshold))
    tpr_low, _ = clopper_pearson(tpr_hits, half)
    _, fpr_high = clopper_pearson(fpr_hits, half)
    lower = math.log(max(tpr_low - DELTA, 1e-12) / fpr_high)
    accounted = make_accountant("auto").compose(plan.event(secure=True)).get_epsilon(DELTA)
    sec_stats.add("attack_attempts", trials)
    return lower, accounted


def test_sec_canary_audit_stays_below_the_accounted_epsilon() -> None:
    trials = 4000 if sec_stats.long_fuzz() else 800
    lower, accounted = audit_epsilon(with_noise=True, trials=trials)
    assert lower <= accounted, (lower, accounted)
    sec_stats.add("scenarios")


def test_sec_canary_audit_has_power_without_noise() -> None:
    lower, accounted = audit_epsilon(with_noise=False, trials=800)
    assert lower > accounted, (lower, accounted)  # the attack would catch missing noise
    sec_stats.add("scenarios")
    sec_stats.add("attack_controls_recovered")


def test_sec_secagg_changes_nothing_but_who_sees_what() -> None:
    """D8: the SecAgg sum equals the plain modular sum of the same encodings."""
    plan = dp.plan_distributed_dp(
        dimension=32,
        expected_contributors=6,
        min_contributors=4,
        clip_norm=1.0,
        noise_multiplier=1.0,
        bits=32,
    )
    rng = np.random.default_rng(2)
    x = np.stack([dp.encode(rng.normal(size=32), plan, rotation_seed=1)[0] for _ in range(6)])
    result = run_secagg(x, SecAggConfig(6, 4), drop={"share": [5]})
    assert np.array_equal(result.total, secagg.ring_sum(x[:5], 32))
