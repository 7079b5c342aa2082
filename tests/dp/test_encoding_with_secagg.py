"""Checklist D8: the encoder's ring vectors through real SecAgg (``protocols.run_secagg``,
with a dropout) give bit-for-bit the same aggregate as the plain modular-sum test double,
and the decoder accounts for the actual survivors. (dp itself never imports protocols.)"""

from __future__ import annotations

import numpy as np
import pytest

import dp
from dp.rng import SimulationRng

protocols = pytest.importorskip("protocols")

pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")


def test_secagg_and_plain_modular_sum_agree_with_dropout() -> None:
    n, d = 6, 300
    plan = dp.plan_distributed_dp(
        dimension=d, expected_contributors=n, min_contributors=4, clip_norm=1.0,
        noise_multiplier=1.0, bits=20,
    )  # fmt: skip
    data = np.random.default_rng(0)
    updates = [data.normal(scale=0.1, size=d) for _ in range(n)]
    rng = SimulationRng(1)
    matrix = np.stack([dp.encode(u, plan, rotation_seed=9, rng=rng)[0] for u in updates])
    config = protocols.SecAggConfig(n, 4, bits=plan.bits)
    result = protocols.run_secagg(matrix, config, drop={"mask": [2]}, seed=0)
    included = list(result.included)
    assert 2 not in included and len(included) == n - 1
    plain = matrix[included].astype(np.uint64).sum(axis=0) % np.uint64(plan.modulus)
    assert np.array_equal(np.asarray(result.total, dtype=np.uint64), plain)
    total, report = dp.decode(result.total, plan, rotation_seed=9, num_contributors=len(included))
    assert report.meets_plan
    true = sum(dp.clip_l2(updates[i], 1.0).values for i in included)
    assert np.std(total - true) == pytest.approx(report.realized_noise_std, rel=0.2)
