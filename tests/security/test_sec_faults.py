"""Fault injection (checklist F1-F7, F9 and S14): clients vanish at every stage and inside
stages, messages are lost, duplicated, delayed, reordered, truncated or bit-flipped, a
client crashes right after uploading its masked input, the server restarts between rounds.

For every scenario: the round completes with the exact sum of the included inputs or
aborts with a typed reason; no honest masked input that reached the server is lost; the
privacy ledger that records the rounds audits clean; and a curious server that keeps the
whole transcript recovers no individual input (with a positive control proving the attack
code does recover an input once it holds both share kinds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sec_stats
from sec_rounds import FaultyRound, aborts_of, control_attack, transcript_attack

import secagg
from dp.budget import BudgetPolicy
from dp.events import DistributedDiscreteGaussianEvent
from dp.ledger import PrivacyLedger, audit_ledger
from protocols import (
    AbortReason,
    ClientState,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    Stage,
    ThreatModel,
)
from protocols.errors import ConfigError
from protocols.messages import AdvertiseKeys, ClientAbort, EncryptedShares, MaskedInput, decode

SCENARIOS = 400 if sec_stats.long_fuzz() else 48
STAGES = (Stage.ADVERTISE, Stage.SHARE, Stage.MASK, Stage.UNMASK)


def round_event(n: int, t: int) -> DistributedDiscreteGaussianEvent:
    """The privacy event of one round: noise sized for the t honest survivors it needs."""
    return DistributedDiscreteGaussianEvent(
        l2_sensitivity=300.0,
        l1_sensitivity=300.0 * 16,
        local_sigma=400.0,
        dimension=16,
        min_contributors=t,
        expected_contributors=n,
    )


def check_outcome(fr: FaultyRound, x: np.ndarray, ledger: PrivacyLedger, index: int) -> bool:
    """Every invariant of one faulty round; counts the figures. Returns 'completed'."""
    outcome = fr.run()
    cfg = fr.config
    sec_stats.add("scenarios")
    sec_stats.add("faults_injected", len(outcome.faults))
    for reason in aborts_of(outcome):
        sec_stats.abort(reason)
    event = round_event(cfg.num_clients, cfg.threshold)
    if outcome.completed:
        assert outcome.total is not None
        sec_stats.add("rounds_completed")
        expected = secagg.ring_sum(x[list(outcome.included)], cfg.bits)
        assert np.array_equal(outcome.total, expected), outcome.faults
        assert len(outcome.included) >= cfg.threshold
        assert set(outcome.included) <= outcome.intact_masked_senders  # nobody counted twice
        lost = outcome.intact_masked_senders - set(outcome.included)
        sec_stats.add("honest_inputs_lost", len(lost))
        assert not lost, (lost, outcome.faults)
        ledger.record_round(
            round_index=index,
            event=event,
            cohort_size=cfg.num_clients,
            survivors=len(outcome.included),
        )
    else:
        assert outcome.abort is not None
        assert isinstance(outcome.abort.reason, AbortReason)
        sec_stats.add("rounds_aborted")
        ledger.record_round(
            round_index=index, event=event, cohort_size=cfg.num_clients, status="aborted"
        )
    attempts, recovered = transcript_attack(outcome, x)
    sec_stats.add("attack_attempts", attempts)
    sec_stats.add("inputs_recovered", recovered)
    assert recovered == 0, outcome.faults
    if outcome.completed:
        control = control_attack(outcome, x)
        if control is not None:
            assert control, "the positive control must recover the victim's input"
            sec_stats.add("attack_controls_recovered")
    # no honest client ever revealed both share kinds of one owner in this round
    for owner in range(cfg.num_clients):
        kinds = {c.revealed.get(owner) for c in outcome.clients} - {None}
        assert len(kinds) <= 1, (owner, kinds)
    return outcome.completed


@pytest.mark.parametrize("block", range(4))
def test_sec_random_fault_campaign_exact_or_typed_abort(block: int, tmp_path: Path) -> None:
    """F1-F6: random faults on every message; exact survivor sum or typed abort."""
    rng = np.random.default_rng(1000 + block)
    ledger = PrivacyLedger.create(
        tmp_path / "ledger.db", policy=BudgetPolicy(delta=1e-5, target_epsilon=1e6)
    )
    completed = 0
    for index in range(SCENARIOS // 4):
        n = int(rng.integers(4, 10))
        t = int(rng.integers(n // 2 + 1, n + 1))
        d = int(rng.integers(1, 9))
        bits = int(rng.choice([8, 16, 32]))
        threat = ThreatModel.MALICIOUS_SERVER if rng.random() < 0.25 else None
        kwargs = (
            {"bits": bits}
            if threat is None
            else {"bits": bits, "threat_model": threat, "corrupt_fraction": 0.0}
        )
        cfg = SecAggConfig(n, t, **kwargs)  # type: ignore[arg-type]
        x = secagg.to_ring(rng.integers(0, 2**bits, size=(n, d)), bits)
        p = float(rng.choice([0.03, 0.08, 0.2]))
        fr = FaultyRound(x, cfg, rng, p=p, round_number=index)
        completed += check_outcome(fr, x, ledger, index)
    ledger.close()
    report = audit_ledger(tmp_path / "ledger.db")
    assert report.ok, report.problems
    reopened = PrivacyLedger.open(tmp_path / "ledger.db")
    assert reopened.epsilon == ledger.epsilon
    reopened.close()
    assert completed > 0  # the campaign is not all aborts


def test_sec_random_fault_campaign_on_secagg_plus_graphs(tmp_path: Path) -> None:
    """The same invariants on sparse SecAgg+ graphs (t-of-(k+1) share groups)."""
    rng = np.random.default_rng(4242)
    ledger = PrivacyLedger.create(tmp_path / "ledger.db", policy=BudgetPolicy(delta=1e-5))
    index = 0
    while index < SCENARIOS // 4:
        n = int(rng.integers(10, 21))
        k = int(rng.choice([4, 6]))
        t = int(rng.integers(k // 2 + 1, k + 2))
        try:
            cfg = SecAggConfig(n, t, neighbors=k)
        except ConfigError:
            continue
        d = int(rng.integers(1, 6))
        x = secagg.to_ring(rng.integers(0, 2**32, size=(n, d)), 32)
        fr = FaultyRound(
            x,
            cfg,
            rng,
            p=float(rng.choice([0.01, 0.03])),
            round_number=index,
            graph_seed=rng.bytes(32),
        )
        check_outcome(fr, x, ledger, index)
        index += 1
    ledger.close()
    assert audit_ledger(tmp_path / "ledger.db").ok


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.value)
@pytest.mark.parametrize("point", ["vanish_before_reply", "crash_after_send"])
def test_sec_each_client_vanishing_at_each_stage_and_point(
    stage: Stage, point: str, tmp_path: Path
) -> None:
    """F1 deterministic sweep: every client, every stage, before or after its reply."""
    n, t, d = 6, 4, 5
    rng = np.random.default_rng(7)
    x = secagg.to_ring(rng.integers(-(2**20), 2**20, size=(n, d)), 32)
    ledger = PrivacyLedger.create(tmp_path / "l.db", policy=BudgetPolicy(delta=1e-5))
    for victim in range(n):
        fr = FaultyRound(
            x, SecAggConfig(n, t), rng, p=0.0, round_number=victim, forced={(stage, victim): point}
        )
        assert check_outcome(fr, x, ledger, victim)  # one vanishing client never aborts
        included = fr.server.output().included
        sent_masked = stage is Stage.UNMASK or (
            stage is Stage.MASK and point != "vanish_before_reply"
        )
        assert (victim in included) == sent_masked
    ledger.close()
    assert audit_ledger(tmp_path / "l.db").ok


def test_sec_crash_right_after_masked_upload_keeps_the_input() -> None:
    """The client is gone before unmasking; its seed is rebuilt from the others' shares."""
    n, t = 7, 4
    x = secagg.to_ring(np.arange(n * 3).reshape(n, 3) * 977, 32)
    fr = FaultyRound(
        x,
        SecAggConfig(n, t),
        np.random.default_rng(0),
        p=0.0,
        forced={(Stage.MASK, 2): "crash_after_send", (Stage.MASK, 5): "crash_after_send"},
    )
    outcome = fr.run()
    sec_stats.add("scenarios")
    sec_stats.add("faults_injected", 2)
    assert outcome.completed and outcome.included == tuple(range(n))
    assert outcome.total is not None
    assert np.array_equal(outcome.total, secagg.ring_sum(x, 32))
    sec_stats.add("rounds_completed")
    attempts, recovered = transcript_attack(outcome, x)
    sec_stats.add("attack_attempts", attempts)
    sec_stats.add("inputs_recovered", recovered)
    assert recovered == 0


def test_sec_server_restart_between_rounds_uses_fresh_keys_and_rejects_replays() -> None:
    """F7 + S10: a restarted server runs round r+1; nothing of round r is reusable."""
    n, t, d = 6, 4, 4
    x = secagg.to_ring(np.arange(n * d).reshape(n, d) + 11, 32)
    first = FaultyRound(x, SecAggConfig(n, t), np.random.default_rng(1), p=0.0, round_number=0)
    old = first.run()
    assert old.completed
    old_uplink = [(stage, cid, data) for stage, cid, data in old.transcript.arrived]
    old_keys: set[bytes] = set()
    for _, _, data in old_uplink:
        message = decode(data)
        if isinstance(message, AdvertiseKeys):
            old_keys |= {message.enc_public, message.mask_public}

    # the server process restarts: new server object, new clients, round 1
    server = SecAggServer(SecAggConfig(n, t), d, round_number=1, graph_seed=bytes(32))
    clients = [SecAggClient(i, SecAggConfig(n, t), x[i]) for i in range(n)]
    outbound = server.start()
    replayed = 0
    while not server.finished:
        stage = server.stage
        assert stage is not None
        for cid in sorted(outbound):
            message = outbound[cid]
            if stage is Stage.MASK and cid == 0:
                # client 0 gets its round-0 share delivery replayed instead: the AEAD
                # associated data binds session and round, so nothing opens
                message = old.transcript.sent[Stage.MASK][0]
            reply = clients[cid].handle_bytes(message.to_bytes())
            if stage is Stage.ADVERTISE:
                keys = decode(reply)
                assert isinstance(keys, AdvertiseKeys)
                assert not {keys.enc_public, keys.mask_public} & old_keys  # no key reuse
            server.receive_bytes(cid, reply)
        for old_stage, cid, data in old_uplink:  # the whole old transcript, replayed
            if old_stage is stage:
                server.receive_bytes(cid, data)
                replayed += 1
        outbound = server.advance()
    out = server.output()
    assert out.included == tuple(range(1, n))
    assert np.array_equal(out.total, secagg.ring_sum(x[1:], 32))
    assert server.client_aborts[0].reason is AbortReason.SHARE_DECRYPTION_FAILED
    sec_stats.abort(AbortReason.SHARE_DECRYPTION_FAILED.value)
    assert server.session_id != old.server.session_id
    assert replayed > 0
    sec_stats.add("scenarios")
    sec_stats.add("faults_injected", replayed)
    sec_stats.add("rounds_completed", 2)


def test_sec_duplicate_and_second_masked_input_are_counted_once() -> None:
    """F3: a client's masked input delivered twice, and a *different* second one."""
    n, t = 5, 3
    x = secagg.to_ring(np.arange(n * 2).reshape(n, 2) + 5, 32)
    server = SecAggServer(SecAggConfig(n, t), 2, graph_seed=bytes(32))
    clients = [SecAggClient(i, SecAggConfig(n, t), x[i]) for i in range(n)]
    outbound = server.start()
    while not server.finished:
        stage = server.stage
        for cid in sorted(outbound):
            reply = clients[cid].handle_bytes(outbound[cid].to_bytes())
            server.receive_bytes(cid, reply)
            if stage is Stage.MASK and cid == 1:
                server.receive_bytes(cid, reply)  # duplicate
                message = MaskedInput(1, 32, np.zeros(2, dtype=np.uint32) + 99)
                server.receive_bytes(cid, message.to_bytes())  # a different second one
        outbound = server.advance()
    assert np.array_equal(server.output().total, secagg.ring_sum(x, 32))
    assert server.ignored_messages >= 2
    sec_stats.add("scenarios")
    sec_stats.add("faults_injected", 2)
    sec_stats.add("rounds_completed")


def test_sec_out_of_stage_share_message_aborts_the_client() -> None:
    """F4 across stages: a stage-2 message before stage 1 is a state violation."""
    n, t = 5, 3
    x = secagg.to_ring(np.ones((n, 2), dtype=np.int64), 32)
    client = SecAggClient(0, SecAggConfig(n, t), x[0])
    early = EncryptedShares(1, ()).to_bytes()

    reply = decode(client.handle_bytes(early))
    assert isinstance(reply, ClientAbort) and reply.reason is AbortReason.UNEXPECTED_MESSAGE
    assert client.state is ClientState.ABORTED
    sec_stats.add("faults_injected")
    sec_stats.abort(reply.reason.value)
