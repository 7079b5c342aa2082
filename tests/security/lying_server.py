"""A malicious aggregation server for the untrusted-server tests (issue 15, observations 1-5).

:class:`LyingServer` is the real :class:`~protocols.net.AggregationServer` (gRPC, TLS, the
unchanged SecAgg server state machine) with two additions a real server does not have:

* :meth:`LyingServer.announce` runs a round whose *announcement* (cohort, threshold,
  neighbours, DP plan) is whatever the test says, while its own SecAgg state machine runs a
  configuration the honest code accepts — the server lies to the devices, not to itself;
* every message a device sends is recorded per (client, round, stage) *before* the protocol
  sees it, so a test can prove that a device which refused an announcement sent nothing
  (in particular no masked input) for that round;
* the key-advertisement stage of an announced round stays open (up to ``hold_seconds``)
  until every device of ``watch`` has processed the round's setup — so a slow device on a
  loaded machine is never simply skipped past a lie — and closes as soon as they all have.

It also builds the payloads of the lies: a popularity release of the device trainer with any
plan (:func:`popularity_payload`), e.g. noise multiplier 0 and a cap equal to the catalogue.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from dp.planning import DistributedDPPlan, plan_distributed_counts
from protocols.config import SecAggConfig, Stage
from protocols.net import AggregationServer, RoundOutcome, RoundSpec
from protocols.net.wire import NO_STAGE, encode_round, stage_key
from recsys.executors import EncodeWork
from recsys.federated import ItemServer, PopularityTask
from recsys.remote import round_payload

STAGES = tuple(Stage)


class LyingServer(AggregationServer):
    """An AggregationServer that announces lies and records what each device sends."""

    def __init__(self, *args: Any, hold_seconds: float = 60.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: Counter[tuple[int, int, Stage]] = Counter()
        self.watch: frozenset[int] = frozenset()
        self.hold_seconds = hold_seconds
        self._seen_key: dict[int, int] = {}

    def _next_for(self, cid: int, seen: int, context: Any) -> Any:
        with self._cv:
            self._seen_key[cid] = max(seen, self._seen_key.get(cid, 0))
            self._cv.notify_all()
        return super()._next_for(cid, seen, context)

    def _wait(self, ready: Callable[[], bool], seconds: float) -> None:
        current = self._current
        if not self.watch or current is None or current[1] != 0:
            super()._wait(ready, seconds)
            return
        key = stage_key(current[0], 0)
        watched = self.watch & set(self._cohort)

        def processed() -> bool:
            return ready() or all(self._seen_key.get(c, 0) >= key for c in watched)

        super()._wait(processed, max(seconds, self.hold_seconds))

    def _accept(self, cid: int, round_number: int, stage: int, payload: bytes) -> None:
        if stage != NO_STAGE:
            self.sent[(cid, round_number, STAGES[stage])] += 1
        super()._accept(cid, round_number, stage, payload)

    def announce(self, round_number: int, spec: RoundSpec, own: SecAggConfig) -> RoundOutcome:
        """Announce ``spec`` to the devices, run ``own`` (a valid configuration over the
        same cohort) on the server side. Waits first until every watched device is online
        again (a device that sat out the previous round missed its deadline)."""
        self._wait(lambda: not (self.watch & self._offline), self.hold_seconds)
        outcome = self._round(
            round_number,
            tuple(spec.cohort),
            own,
            spec.vector_length,
            announcement=encode_round(spec),
        )
        self.outcomes.append(outcome)
        return outcome

    def messages_from(self, cid: int, round_number: int) -> dict[Stage, int]:
        """Messages the server received from ``cid`` in ``round_number``, by stage."""
        return {s: n for (c, r, s), n in self.sent.items() if c == cid and r == round_number}


def counts_plan(
    num_items: int,
    *,
    cap: int,
    noise_multiplier: float,
    min_contributors: int,
    expected: int,
) -> DistributedDPPlan:
    """A popularity (counts) plan with the given noise, cap and sizing."""
    return plan_distributed_counts(
        dimension=num_items,
        max_ones=cap,
        expected_contributors=expected,
        min_contributors=min_contributors,
        max_contributors=expected + 8,
        noise_multiplier=noise_multiplier,
        bits=32,
    )


def popularity_payload(
    plan: DistributedDPPlan, *, cap: int, num_items: int, population: int, release: int
) -> bytes:
    """The round payload of a popularity release with ``plan`` (what the trainer sends)."""
    task = PopularityTask(num_items, cap)
    work = EncodeWork(None, ItemServer(num_items), task, plan, 0, 32, None)  # type: ignore[arg-type]
    return round_payload(work, population=population, release=release)
