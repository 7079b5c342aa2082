"""The Ray executor releases bit-identical aggregates to the local executor.

Runs on the test session's local Ray instance (the ``ray_runtime`` fixture of
``tests/conftest.py``); skipped with the reason when Ray is missing.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import protocols
import secagg
from dp.planning import plan_distributed_dp
from recsys.data import synthetic_ratings
from recsys.executors import EncodeWork, LocalExecutor, RayExecutor, ShardHost
from recsys.features import item_features
from recsys.federated import DeviceFleet, ItemServer, PopularityTask
from recsys.split import leave_last_out

pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")
USERS, SHARD = 48, 10


@pytest.fixture(scope="module")
def work() -> EncodeWork:
    ratings = synthetic_ratings(USERS, 40, seed=1, mean_activity=12, min_activity=5)
    split = leave_last_out(ratings)
    fleet = DeviceFleet(split.train, item_features(ratings))
    task = PopularityTask(split.train.num_items, cap=10)
    plan = plan_distributed_dp(
        dimension=task.upload_dim,
        expected_contributors=USERS,
        min_contributors=USERS // 2,
        clip_norm=task.clip_norm,
        noise_multiplier=1.0,
        bits=32,
    )
    return EncodeWork(fleet, ItemServer(split.train.num_items), task, plan, 5, 32, noise_seed=9)


@pytest.fixture(scope="module")
def ray_executor(ray_runtime: Any) -> Iterator[RayExecutor]:
    executor = RayExecutor(num_actors=2, shard_size=SHARD)
    yield executor
    executor.close()


def _round(executor: LocalExecutor | RayExecutor, work: EncodeWork, r: int) -> tuple:
    users = np.arange(USERS, dtype=np.int64)
    config = protocols.SecAggConfig(USERS, USERS // 2 + 1, bits=32)
    out = executor.aggregate(
        work,
        users,
        config,
        work.plan.padded_dimension,
        round_number=r,
        graph_seed=hashlib.sha256(b"g%d" % r).digest(),
        drop={"mask": [3, 17, 40], "unmask": [5, 22]},
    )
    return out.total, out.included


@pytest.mark.slow
def test_deploy_ray_matches_local_bit_for_bit(work: EncodeWork, ray_executor: RayExecutor) -> None:
    local = LocalExecutor(shard_size=SHARD)
    users = np.arange(USERS, dtype=np.int64)
    for r in range(2):
        total_l, inc_l = _round(local, work, r)
        total_r, inc_r = _round(ray_executor, work, r)
        assert inc_l == inc_r == tuple(i for i in range(USERS) if i not in (3, 17, 40))
        assert total_l.dtype == total_r.dtype
        assert np.array_equal(total_l, total_r)
        # and both are the exact sum of the encoded client vectors of the included devices
        rows = np.concatenate(
            [work(s, users[f : f + SHARD], r) for s, f in enumerate(range(0, USERS, SHARD))]
        )
        assert np.array_equal(total_l, secagg.ring_sum(rows[list(inc_l)], 32))
    other = _round(local, EncodeWork(**{**work.__dict__, "noise_seed": 10}), 0)[0]
    assert not np.array_equal(other, _round(local, work, 0)[0])  # the seed matters


def test_deploy_shard_secrets_refuse_pickling(work: EncodeWork) -> None:
    host = ShardHost()
    config = protocols.SecAggConfig(USERS, USERS // 2 + 1, bits=32)
    host.begin(work, [(0, 0, np.arange(USERS, dtype=np.int64))], config, 0)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(host)
    host.end()
    assert pickle.loads(pickle.dumps(host)).work_seconds == host.work_seconds
