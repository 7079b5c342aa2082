"""Whole-round attacks by a malicious server (secagg.md §1.5 and §3.6).

The first two tests are the attacks reproduced against flwr 1.42.0 (§3.6): they succeed
there and must fail here. Each attack test has a positive control showing that the
attack code really recovers the victim's input once it holds what it asked for, so a
pass means the *clients* stopped it, not that the attack was broken.
"""

from __future__ import annotations

import numpy as np
import pytest
from adversary import Harvest, MaliciousServer, digest, opened

import secagg
from protocols import (
    AbortReason,
    ProtocolAborted,
    SecAggConfig,
    Stage,
    ThreatModel,
    run_secagg,
)
from protocols.errors import ConfigError
from protocols.messages import (
    ClientAbort,
    ConsistencyRequest,
    ConsistencySignature,
    KeyDirectory,
    MaskedInput,
    ShareDelivery,
    UnmaskRequest,
    UnmaskShares,
)

N, T, D = 7, 4, 16
VICTIM = 0


def private_inputs(n: int = N, d: int = D) -> np.ndarray:
    rng = np.random.default_rng(42)
    return secagg.to_ring(rng.integers(-(2**20), 2**20, size=(n, d)), 32)


def control_unmask(adv: MaliciousServer, victim: int) -> np.ndarray:
    """Positive control: what a non-checking (Flower-like) holder set would give away."""
    t = adv.config.threshold
    holders = [c for c in range(adv.config.num_clients) if c != victim][:t]
    seed_shares = [opened(adv.clients[c]._received[victim][0]) for c in holders]
    key_shares = [opened(adv.clients[c]._received[victim][1]) for c in holders]
    harvest = Harvest(seed_shares, key_shares)
    recovered = adv.unmask_victim(victim, harvest)
    assert recovered is not None
    return recovered


def test_flower_attack_victim_in_both_lists_fails() -> None:
    """§3.6 #1: the server lists the victim as alive *and* dropped to t honest clients."""
    x = private_inputs()
    adv = MaliciousServer(SecAggConfig(N, T), x)
    adv.run_to_unmask()
    assert np.array_equal(control_unmask(adv, VICTIM), x[VICTIM])  # the attack code works
    others = tuple(c for c in range(N) if c != VICTIM)
    request = UnmaskRequest(survivors=tuple(range(N)), dropped=(VICTIM,))
    harvest = adv.harvest(VICTIM, dict.fromkeys(others, request))
    assert adv.unmask_victim(VICTIM, harvest) is None
    assert [a.reason for a in harvest.aborts] == [AbortReason.BOTH_SHARES_REQUESTED] * len(others)
    assert harvest.seed_shares == [] and harvest.key_shares == []


def test_split_dropout_claims_cannot_reach_t_of_both_share_kinds() -> None:
    """The server tells some clients "victim alive" and the others "victim dropped"."""
    x = private_inputs()
    adv = MaliciousServer(SecAggConfig(N, T), x)
    adv.run_to_unmask()
    alive_group = (0, 1, 2, 3)  # victim + 3 others: seed shares
    dropped_group = (4, 5, 6)  # masking-key shares
    requests = dict.fromkeys(alive_group, UnmaskRequest(tuple(range(N)), ()))
    requests.update(
        dict.fromkeys(dropped_group, UnmaskRequest(tuple(c for c in range(N) if c), (VICTIM,)))
    )
    harvest = adv.harvest(VICTIM, requests)
    assert harvest.aborts == []  # each request alone is consistent...
    assert len(harvest.seed_shares) == T and len(harvest.key_shares) == N - T
    # ...but t > n/2 leaves the key shares one short: the victim stays masked.
    assert adv.unmask_victim(VICTIM, harvest) is None
    with pytest.raises(secagg.ShareError):
        secagg.shamir_combine(harvest.key_shares)


def test_flower_overflow_case_raises_before_the_round() -> None:
    """§3.6 #2: n = 2,100 clients of 2^22-quantized values cannot be summed in Z_2^32."""
    with pytest.raises(ConfigError, match="ring too narrow"):
        SecAggConfig(2100, 1051, bits=32, max_abs_input=2**22)
    with pytest.raises(ConfigError, match="ring too narrow"):
        SecAggConfig.plus(2100, dropout_rate=0.05, bits=32, max_abs_input=2**22)
    # the same cohort fits a 48-bit ring
    assert SecAggConfig(2100, 1051, bits=48, max_abs_input=2**22).bits == 48


def test_overflow_guard_counts_the_cohort_not_the_neighbourhood() -> None:
    # Flower compares k (neighbours) with 2^32 / 2^22; the bound must use n.
    cfg = SecAggConfig.plus(1000, dropout_rate=0.1)
    assert cfg.group_size < 1024 < 2100
    with pytest.raises(ConfigError):
        SecAggConfig.plus(2100, dropout_rate=0.1, max_abs_input=2**22)


def test_equivocated_key_lists_make_shares_undecryptable() -> None:
    """S8: a man-in-the-middle key for client 1, shown only to clients 4-6."""
    adv = MaliciousServer(SecAggConfig(N, T), private_inputs())
    adv.start()
    adv.honest_stage()
    directory = adv.outbound[0]
    assert isinstance(directory, KeyDirectory)
    mitm = secagg.AgreementKey.generate().public_bytes
    enc = directory.enc_keys[:32] + mitm + directory.enc_keys[64:]
    forged = KeyDirectory(directory.client_ids, enc, directory.mask_keys)
    replies = {c: adv.ask(c, directory if c < 4 else forged) for c in range(N)}
    # The victim of the swap notices its own key changed only if it sees the forgery;
    # everybody else shares under session ids that now differ between the two groups.
    session_a = adv.clients[0].session_id
    session_b = adv.clients[4].session_id
    assert session_a is not None and session_b is not None and session_a != session_b
    for reply in replies.values():
        adv.server.receive(reply)
    deliveries = adv.server.advance()
    outcomes = {c: adv.ask(c, deliveries[c]) for c in range(N)}
    for c, reply in outcomes.items():
        assert isinstance(reply, ClientAbort), c
        assert reply.reason is AbortReason.SHARE_DECRYPTION_FAILED


def test_model_inconsistency_attack_yields_no_aggregate() -> None:
    """Pasquini et al.: the target gets model B, everyone else model A."""
    x = private_inputs()
    adv = MaliciousServer(SecAggConfig(N, T), x, context_digest=digest("model-A"))
    target = MaliciousServer(SecAggConfig(N, T), x, context_digest=digest("model-B"))
    adv.start()
    target_setup = target.server.setup
    replies = {c: adv.ask(c, target_setup if c == VICTIM else adv.server.setup) for c in range(N)}
    for reply in replies.values():
        adv.server.receive(reply)
    adv.outbound = adv.server.advance()
    share_replies = adv.honest_stage()
    assert all(not isinstance(r, ClientAbort) for r in share_replies.values())
    # The target's session differs, so its shares open for nobody and it cannot open
    # theirs: every client aborts instead of masking, and the server gets no aggregate.
    with pytest.raises(ProtocolAborted) as err:
        adv.honest_stage()
    assert err.value.stage == "mask" and err.value.reason is AbortReason.TOO_FEW_SURVIVORS
    reasons = {a.reason for a in adv.server.client_aborts.values()}
    assert set(adv.server.client_aborts) == set(range(N))
    assert reasons == {AbortReason.SHARE_DECRYPTION_FAILED}
    assert adv.masked == {}


def test_model_inconsistency_with_withheld_shares_still_excludes_the_target() -> None:
    """If the server hides the target's shares from others, the target cannot mask."""
    x = private_inputs()
    adv = MaliciousServer(SecAggConfig(N, T), x, context_digest=digest("model-A"))
    target = MaliciousServer(SecAggConfig(N, T), x, context_digest=digest("model-B"))
    adv.start()
    for c in range(N):
        adv.server.receive(adv.ask(c, target.server.setup if c == VICTIM else adv.server.setup))
    adv.outbound = adv.server.advance()
    adv.honest_stage()
    deliveries = adv.outbound
    masked = {}
    for c in range(N):
        delivery = deliveries[c]
        assert isinstance(delivery, ShareDelivery)
        kept = tuple((s, ct) for s, ct in delivery.ciphertexts if VICTIM not in (s, c))
        masked[c] = adv.ask(c, ShareDelivery(kept))
    assert isinstance(masked[VICTIM], ClientAbort)
    assert all(isinstance(masked[c], MaskedInput) for c in range(1, N))


def test_malicious_mode_consistency_round_catches_survivor_equivocation() -> None:
    cfg = SecAggConfig(N, 5, threat_model=ThreatModel.MALICIOUS_SERVER, corrupt_fraction=0.0)
    adv = MaliciousServer(cfg, private_inputs())
    adv.start()
    adv.honest_stage()
    adv.honest_stage()
    adv.honest_stage()
    assert adv.server.stage is Stage.CONSISTENCY
    everyone = tuple(range(N))
    without_victim = tuple(c for c in everyone if c != VICTIM)
    signatures = {}
    for c in everyone:
        survivors = everyone if c < 4 else without_victim
        reply = adv.ask(c, ConsistencyRequest(survivors))
        assert isinstance(reply, ConsistencySignature)
        signatures[c] = reply.signature
    # Group "victim dropped" gets the other group's signatures: they were made on a
    # different survivor set, so they do not verify and nobody reveals anything.
    forged = tuple((c, signatures[c]) for c in range(4)) + tuple(
        (c, signatures[c]) for c in range(4, N)
    )
    for c in range(4, N):
        reply = adv.ask(c, UnmaskRequest(without_victim, (VICTIM,), forged))
        assert isinstance(reply, ClientAbort) and reply.reason is (
            AbortReason.CONSISTENCY_CHECK_FAILED
        )
    assert adv.share_bytes_sent() == 0


def test_malicious_mode_requires_t_valid_signatures() -> None:
    cfg = SecAggConfig(N, 5, threat_model=ThreatModel.MALICIOUS_SERVER, corrupt_fraction=0.0)
    adv = MaliciousServer(cfg, private_inputs())
    adv.run_to_unmask()
    request = adv.outbound[1]
    assert isinstance(request, UnmaskRequest) and len(request.signatures) == N
    too_few = UnmaskRequest(request.survivors, request.dropped, request.signatures[:4])
    assert isinstance(adv.ask(1, too_few), ClientAbort)
    bad = bytearray(request.signatures[2][1])
    bad[5] ^= 1
    tampered = tuple((c, bytes(bad) if c == 2 else s) for c, s in request.signatures)
    reply = adv.ask(2, UnmaskRequest(request.survivors, request.dropped, tampered))
    assert isinstance(reply, ClientAbort)
    assert reply.reason is AbortReason.CONSISTENCY_CHECK_FAILED
    good = adv.ask(3, request)
    assert isinstance(good, UnmaskShares)


def test_malicious_mode_rejects_forged_advertised_keys() -> None:
    cfg = SecAggConfig(N, 5, threat_model=ThreatModel.MALICIOUS_SERVER, corrupt_fraction=0.0)
    adv = MaliciousServer(cfg, private_inputs())
    adv.start()
    adv.honest_stage()
    directory = adv.outbound[0]
    assert isinstance(directory, KeyDirectory)
    mitm = secagg.AgreementKey.generate().public_bytes
    enc = directory.enc_keys[:32] + mitm + directory.enc_keys[64:]
    forged = KeyDirectory(directory.client_ids, enc, directory.mask_keys, directory.signatures)
    reply = adv.ask(0, forged)
    assert isinstance(reply, ClientAbort) and reply.reason is AbortReason.BAD_SIGNATURE


def test_whole_round_in_malicious_mode_is_exact() -> None:
    cfg = SecAggConfig(N, 5, threat_model=ThreatModel.MALICIOUS_SERVER, corrupt_fraction=0.0)
    x = private_inputs()
    result = run_secagg(x, cfg, drop={"mask": [6], "consistency": [5]})
    assert result.included == (0, 1, 2, 3, 4, 5)
    assert np.array_equal(result.total, secagg.ring_sum(x[:6], 32))
