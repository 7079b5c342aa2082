"""Adversarial protocol tests added by the security suite (S1, S3-S5, S7, S13, S14 gaps).

The fixed-scenario S-tests live in ``tests/protocols``; here a malicious server tells each
client a *random* lie at the unmasking stage (the S1 property over many request patterns,
with a positive control), malicious clients deviate on their uploads, and a replay that
once crashed the server is pinned as a regression test.
"""

from __future__ import annotations

import numpy as np
import pytest
import sec_stats
from adversary import MALICIOUS_CLIENT_MOVES, Harvest, MaliciousClient, MaliciousServer, opened

import secagg
from protocols import (
    AbortReason,
    AggregateOutput,
    ProtocolAborted,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    Stage,
)
from protocols.messages import MaskedInput, UnmaskRequest

LIES = 160 if sec_stats.long_fuzz() else 24


def random_request(rng: np.random.Generator, n: int, victim: int) -> UnmaskRequest:
    """A lie: the victim alive, dropped, both or absent; sometimes a bogus or repeated id."""
    others = [c for c in range(n) if c != victim and rng.random() < 0.9]
    survivors, dropped = list(others), []
    where = int(rng.integers(4))
    if where in (0, 2):
        survivors.append(victim)
    if where in (1, 2):
        dropped.append(victim)
    if rng.random() < 0.15:
        dropped.append(int(rng.integers(n)))
    return UnmaskRequest(tuple(sorted(set(survivors))), tuple(dropped))


@pytest.mark.parametrize("block", range(2))
def test_sec_random_unmask_lies_never_unmask_a_victim(block: int) -> None:
    """S1 over random request patterns, retries included; control proves the attack works."""
    rng = np.random.default_rng(77 + block)
    for _ in range(LIES // 2):
        n = int(rng.integers(4, 9))
        t = int(rng.integers(n // 2 + 1, n + 1))
        x = secagg.to_ring(rng.integers(0, 2**32, size=(n, 3)), 32)
        adv = MaliciousServer(SecAggConfig(n, t), x)
        adv.run_to_unmask()
        victim = int(rng.integers(n))
        held = [  # snapshot before aborting clients wipe their state
            adv.clients[c]._own_shares if c == victim else adv.clients[c]._received[victim]
            for c in range(t)
        ]
        control = Harvest(
            [opened(seed) for seed, _ in held],
            [opened(key) for _, key in held],
        )
        harvest = Harvest()
        for cid in range(n):
            for _attempt in range(int(rng.integers(1, 3))):  # sometimes a retried lie
                got = adv.harvest(victim, {cid: random_request(rng, n, victim)})
                harvest.seed_shares += got.seed_shares
                harvest.key_shares += got.key_shares
                for abort in got.aborts:
                    sec_stats.abort(abort.reason.value)
        sec_stats.add("scenarios")
        sec_stats.add("attack_attempts")
        recovered = adv.unmask_victim(victim, harvest)
        got_back = recovered is not None and np.array_equal(recovered, x[victim])
        sec_stats.add("inputs_recovered", int(got_back))
        assert not got_back
        for client in adv.clients:  # at most one share kind per owner, per client
            assert all(kind is not None for kind in client.revealed.values())
        stolen = adv.unmask_victim(victim, control)
        assert stolen is not None and np.array_equal(stolen, x[victim])
        sec_stats.add("attack_controls_recovered")


def run_with(
    bad: int, stage: Stage, move: str, n: int = 7, t: int = 4
) -> tuple[np.ndarray, object]:
    x = secagg.to_ring(np.arange(n * 4).reshape(n, 4) * 31 + 1, 32)
    cfg = SecAggConfig(n, t)
    server = SecAggServer(cfg, 4, graph_seed=bytes(32))
    clients = [SecAggClient(i, cfg, x[i]) for i in range(n)]
    evil = MaliciousClient(clients[bad], stage, move)
    outbound = server.start()
    try:
        while not server.finished:
            current = server.stage
            assert current is not None
            for cid in sorted(outbound):
                if cid == bad:
                    for data in evil.uploads(outbound[cid], current):
                        server.receive_bytes(cid, data)
                else:
                    server.receive_bytes(cid, clients[cid].handle_bytes(outbound[cid].to_bytes()))
            outbound = server.advance()
    except ProtocolAborted as exc:
        return x, exc
    return x, server.output()


@pytest.mark.parametrize("move", MALICIOUS_CLIENT_MOVES)
@pytest.mark.parametrize("stage", [Stage.SHARE, Stage.MASK, Stage.UNMASK], ids=lambda s: s.value)
def test_sec_malicious_client_cannot_corrupt_the_honest_sum(stage: Stage, move: str) -> None:
    """A deviating client is excluded or ignored; the honest inputs are summed exactly."""
    x, result = run_with(2, stage, move)
    sec_stats.add("scenarios")
    sec_stats.add("faults_injected")
    if isinstance(result, ProtocolAborted):  # pragma: no cover - must not happen at n=7
        sec_stats.abort(result.reason.value)
        pytest.fail(f"one bad client aborted the round: {result}")
    assert hasattr(result, "included") and hasattr(result, "total")
    sec_stats.add("rounds_completed")
    included = result.included
    assert np.array_equal(result.total, secagg.ring_sum(x[list(included)], 32))
    honest = set(range(7)) - {2}
    sec_stats.add("honest_inputs_lost", len(honest - set(included)))
    assert honest <= set(included)  # no honest input lost to one bad client
    blamed = (stage is Stage.UNMASK and move in ("garbage_shares", "wrong_share")) or (
        stage is Stage.SHARE and move == "inconsistent_dealing"
    )
    if blamed:  # the deviating client is named, and nobody else
        assert isinstance(result, AggregateOutput)
        assert result.culprits == (2,)


def test_sec_replay_after_a_client_abort_is_ignored_not_summed() -> None:
    """Regression: a masked input replayed after its client aborted used to be summed
    and then crash the server with StateError at the end of the stage."""
    n, t = 6, 4
    x = secagg.to_ring(np.arange(n * 2).reshape(n, 2) + 3, 32)
    cfg = SecAggConfig(n, t)
    server = SecAggServer(cfg, 2, graph_seed=bytes(32))
    clients = [SecAggClient(i, cfg, x[i]) for i in range(n)]
    outbound = server.start()
    while not server.finished:
        stage = server.stage
        for cid in sorted(outbound):
            reply = clients[cid].handle_bytes(outbound[cid].to_bytes())
            if stage is Stage.MASK and cid == 0:
                from protocols.messages import ClientAbort

                server.receive(ClientAbort(0, Stage.MASK, AbortReason.UNEXPECTED_MESSAGE))
                server.receive_bytes(0, MaskedInput(0, 32, np.ones(2, np.uint32)).to_bytes())
                continue
            server.receive_bytes(cid, reply)
        outbound = server.advance()
    out = server.output()
    assert out.included == (1, 2, 3, 4, 5)
    assert np.array_equal(out.total, secagg.ring_sum(x[1:], 32))
    sec_stats.add("scenarios")
    sec_stats.add("rounds_completed")
