"""Fault injection F8: a Ray actor holding a shard of devices dies or hangs mid-round.

The devices of a lost shard host are dropouts from the stage at which it was lost, and
SecAgg decides the round as for any dropout. So every scenario is checked against a
:class:`LocalExecutor` run in which exactly that host's devices vanish at the same stage:
same included set, bit-identical aggregate (or the same typed abort). Devices whose masked
input reached the server before their host died stay included (no honest input lost), a
stuck actor is cut off by the executor's timeout instead of hanging the round, and the
executor replaces lost actors so the next round runs with every host again.

Runs on the session's Ray instance (``ray_runtime`` in ``tests/conftest.py``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
import sec_stats

import protocols
import secagg
from dp.planning import plan_distributed_dp
from protocols import AbortReason, ProtocolAborted, Stage
from recsys.data import synthetic_ratings
from recsys.executors import EncodeWork, LocalExecutor, RayExecutor, RoundOutcome
from recsys.features import item_features
from recsys.federated import DeviceFleet, ItemServer, PopularityTask
from recsys.split import leave_last_out

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning"),
]

USERS, SHARD, THRESHOLD = 50, 10, 26
STAGES = (Stage.ADVERTISE, Stage.SHARE, Stage.MASK, Stage.UNMASK)
# two hosts, shards dealt round-robin: host 0 holds shards 0, 2, 4 (30 devices), host 1
# holds shards 1 and 3 (20 devices)
HOST1 = tuple(range(10, 20)) + tuple(range(30, 40))
EVERYONE = tuple(range(USERS))


def _confirm_dead(ray: Any, actor: Any) -> None:
    """Kill ``actor`` and wait until Ray reports it dead (``ray.kill`` is asynchronous)."""
    ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return
        except ray.exceptions.GetTimeoutError:
            pass
        time.sleep(0.05)
    raise AssertionError("the killed actor is still alive after 30 s")


class KillingExecutor(RayExecutor):
    """A Ray executor whose host ``victim`` is killed during the next round.

    ``kill_step`` counts the executor's calls to its hosts in a round: 0 = begin (client
    work), 1..4 = the stages of :data:`STAGES`. ``mid_call=False`` kills the actor (and
    waits for its death) before that call is sent; ``True`` kills it right after the call
    was sent, racing the actor's reply, as a crash at a random point inside the stage.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.victim: int | None = None
        self.kill_step = 0
        self.mid_call = False
        self._step = 0

    def arm(self, victim: int, kill_step: int, *, mid_call: bool = False) -> None:
        self.victim, self.kill_step, self.mid_call = victim, kill_step, mid_call

    def _begin(self, plans: Any, *args: Any) -> float:
        self._step = 0
        return super()._begin(plans, *args)

    def _handle(self, batches: list[dict[int, bytes]]) -> list[tuple[dict[int, bytes], float]]:
        self._step += 1
        if self.victim is not None and not self.mid_call and self._step == self.kill_step:
            _confirm_dead(self._ray, self.actors[self.victim])
            self.victim = None
        return super()._handle(batches)

    def _gather(self, calls: Any) -> dict[int, Any]:
        if self.victim is not None and self._step == self.kill_step:
            # begin is always a mid-call kill: the actors are (re)spawned inside _begin
            self._ray.kill(self.actors[self.victim], no_restart=True)
            self.victim = None
        return super()._gather(calls)


@pytest.fixture(scope="module")
def work() -> EncodeWork:
    ratings = synthetic_ratings(USERS, 40, seed=3, mean_activity=12, min_activity=5)
    split = leave_last_out(ratings)
    fleet = DeviceFleet(split.train, item_features(ratings))
    task = PopularityTask(split.train.num_items, cap=10)
    plan = plan_distributed_dp(
        dimension=task.upload_dim,
        expected_contributors=USERS,
        min_contributors=THRESHOLD,
        clip_norm=task.clip_norm,
        noise_multiplier=1.0,
        bits=32,
    )
    return EncodeWork(fleet, ItemServer(split.train.num_items), task, plan, 7, 32, noise_seed=11)


@pytest.fixture(scope="module")
def executor(ray_runtime: Any) -> Iterator[KillingExecutor]:
    ex = KillingExecutor(num_actors=2, shard_size=SHARD, timeout=60.0)
    yield ex
    ex.close()


def _run(
    ex: LocalExecutor | RayExecutor,
    work: EncodeWork,
    r: int,
    drop: Mapping[str, tuple[int, ...]] | None = None,
    threshold: int = THRESHOLD,
) -> RoundOutcome:
    return ex.aggregate(
        work,
        np.arange(USERS, dtype=np.int64),
        protocols.SecAggConfig(USERS, threshold, bits=32),
        work.plan.padded_dimension,
        round_number=r,
        graph_seed=hashlib.sha256(b"f8-%d" % r).digest(),
        drop=drop,
    )


def _exact_sum(work: EncodeWork, r: int, included: tuple[int, ...]) -> np.ndarray:
    users = np.arange(USERS, dtype=np.int64)
    rows = np.concatenate(
        [work(s, users[f : f + SHARD], r) for s, f in enumerate(range(0, USERS, SHARD))]
    )
    return secagg.ring_sum(rows[list(included)], 32)


def _count(out: RoundOutcome, masked_reached: set[int]) -> None:
    """The figures of one completed scenario; asserts that no honest input was lost."""
    sec_stats.add("scenarios")
    sec_stats.add("faults_injected")
    sec_stats.add("hosts_lost", len(out.lost_hosts))
    sec_stats.add("rounds_completed")
    lost = masked_reached - set(out.included)
    sec_stats.add("honest_inputs_lost", len(lost))
    assert not lost


@pytest.mark.parametrize("kill_step", range(len(STAGES) + 1))
def test_sec_f8_dead_actor_is_a_dropout_of_its_devices(
    executor: KillingExecutor, work: EncodeWork, kill_step: int
) -> None:
    """Host 1 is killed before its call at each step: its devices drop out exactly as if
    they vanished at that stage; a device whose masked input the server already holds is
    still summed."""
    stage = STAGES[max(kill_step - 1, 0)]  # a death during client work: gone from the start
    r = 10 + kill_step
    executor.arm(1, kill_step)
    out = _run(executor, work, r)
    local = _run(LocalExecutor(shard_size=SHARD), work, r, drop={stage.value: HOST1})
    assert out.lost_hosts == (1,)
    assert out.included == local.included
    assert np.array_equal(out.total, local.total)
    assert np.array_equal(out.total, _exact_sum(work, r, out.included))
    if stage is Stage.UNMASK:  # masked inputs were in: nothing already aggregated is lost
        assert out.included == EVERYONE
        reached = set(EVERYONE)
    else:
        assert out.included == tuple(i for i in EVERYONE if i not in HOST1)
        reached = set(EVERYONE) - set(HOST1)
    _count(out, reached)


@pytest.mark.parametrize("kill_step", range(1, len(STAGES) + 1))
def test_sec_f8_actor_dying_inside_a_stage(
    executor: KillingExecutor, work: EncodeWork, kill_step: int
) -> None:
    """Host 1 is killed while its call of a stage is in flight: whether or not its replies
    made it, the round equals a local run where its devices vanish at that stage or the
    next one, and is the exact sum of the included inputs."""
    r = 20 + kill_step
    executor.arm(1, kill_step, mid_call=True)
    out = _run(executor, work, r)
    assert out.lost_hosts == (1,)
    local = LocalExecutor(shard_size=SHARD)
    at_stage = _run(local, work, r, drop={STAGES[kill_step - 1].value: HOST1})
    later = (
        _run(local, work, r, drop={STAGES[kill_step].value: HOST1})
        if kill_step < len(STAGES)
        else _run(local, work, r)  # the last replies arrived: only the end call failed
    )
    assert any(
        out.included == o.included and np.array_equal(out.total, o.total) for o in (at_stage, later)
    )
    assert np.array_equal(out.total, _exact_sum(work, r, out.included))
    reached = set(EVERYONE) if kill_step >= 4 else set(EVERYONE) - set(HOST1)
    if kill_step == 3 and out.included == later.included:  # masked inputs got through
        reached = set(EVERYONE)
    _count(out, reached)


def test_sec_f8_losing_a_host_below_the_threshold_aborts_then_recovers(
    executor: KillingExecutor, work: EncodeWork
) -> None:
    """With t = 31 the 30 devices of host 0 cannot finish alone: the round aborts with a
    typed reason, like the local run; the next round gets a fresh host 1 and completes
    with everyone, bit-identical to the local executor."""
    executor.arm(1, 2)  # before the share stage
    with pytest.raises(ProtocolAborted) as ray_abort:
        _run(executor, work, 30, threshold=31)
    with pytest.raises(ProtocolAborted) as local_abort:
        _run(LocalExecutor(shard_size=SHARD), work, 30, {"share": HOST1}, threshold=31)
    assert ray_abort.value.reason is local_abort.value.reason is AbortReason.TOO_FEW_SURVIVORS
    sec_stats.add("scenarios")
    sec_stats.add("faults_injected")
    sec_stats.add("hosts_lost")
    sec_stats.add("rounds_aborted")
    sec_stats.abort(f"round:{ray_abort.value.stage}:{ray_abort.value.reason.value}")
    after = _run(executor, work, 31, threshold=31)
    assert after.lost_hosts == () and after.included == EVERYONE
    assert np.array_equal(
        after.total, _run(LocalExecutor(shard_size=SHARD), work, 31, threshold=31).total
    )
    _count(after, set(EVERYONE))


def test_sec_f8_stuck_actor_cannot_hang_the_round(
    executor: KillingExecutor, work: EncodeWork, ray_runtime: Any
) -> None:
    """Host 1 is busy forever (a call that sleeps for 10 min): the executor waits
    ``timeout`` seconds, kills it and finishes the round with host 0's devices."""
    ray = ray_runtime
    stuck = executor.actors[1].__ray_call__.remote(lambda _host: time.sleep(600))
    executor.timeout = 3.0
    try:
        start = time.monotonic()
        out = _run(executor, work, 40)
        elapsed = time.monotonic() - start
    finally:
        executor.timeout = 60.0
    assert out.lost_hosts == (1,)
    assert elapsed < 30.0
    local = _run(LocalExecutor(shard_size=SHARD), work, 40, drop={"advertise": HOST1})
    assert out.included == local.included == tuple(i for i in EVERYONE if i not in HOST1)
    assert np.array_equal(out.total, local.total)
    with pytest.raises(ray.exceptions.RayActorError):  # it was killed, not left running
        ray.get(stuck, timeout=30)
    _count(out, set(EVERYONE) - set(HOST1))
