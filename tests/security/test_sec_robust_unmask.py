"""Robust unmasking (issue 15, observation 6): bad shares at unmasking cost no honest input.

Corrupt clients reveal well-formed but wrong seed and / or key shares (or malformed ones,
or none) at the unmasking stage, or deal inconsistent shares as owners. Every bad share
is decoded around (Reed-Solomon, up to floor((m - t) / 2) per secret) or, since each
share opens its dealer's commitment, dropped as a proven lie: the round completes with the
exact sum while t good shares of every secret remain, exactly the deviating clients are
blamed (typed :class:`ShareFault`), and below that the round aborts with
``too_many_bad_shares`` naming them and releases no sum. Nobody honest is ever blamed, and
faulty labels never make an honest client reveal a second share kind.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import sec_stats
from adversary import MaliciousClient, MaliciousServer, falsify, falsify_unmask

import secagg
from protocols import (
    AbortReason,
    AggregateOutput,
    ProtocolAborted,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    ShareFaultCause,
    ShareKind,
    Stage,
    StateError,
    binding,
)
from protocols.messages import (
    ClientAbort,
    EncryptedShares,
    Message,
    ShareDelivery,
    UnmaskRequest,
    UnmaskShares,
    decode,
)

Rewrite = Callable[[UnmaskShares], UnmaskShares]


def run_round(
    n: int,
    t: int,
    rewrites: dict[int, Rewrite],
    drop_at_mask: frozenset[int] = frozenset(),
    neighbors: int | None = None,
    dealers: frozenset[int] = frozenset(),
    victims: int = 1,
) -> tuple[np.ndarray, AggregateOutput | ProtocolAborted, SecAggServer]:
    """One honest-server round in which client c's unmask reply goes through rewrites[c]
    and each client in ``dealers`` deals wrong seed shares to ``victims`` holders."""
    rng = np.random.default_rng(n * 1000 + t)
    x = secagg.to_ring(rng.integers(0, 2**32, size=(n, 6)), 32)
    config = SecAggConfig(n, t, neighbors=neighbors)
    server = SecAggServer(config, 6, graph_seed=bytes(32))
    clients = [SecAggClient(i, config, x[i]) for i in range(n)]
    corrupt = {d: MaliciousClient(clients[d], Stage.SHARE, "inconsistent_dealing") for d in dealers}
    for dealer in corrupt.values():
        dealer.victims = victims
    outbound: dict[int, Message] = dict(server.start())
    try:
        while not server.finished:
            stage = server.stage
            for cid in sorted(outbound):
                if stage is Stage.MASK and cid in drop_at_mask:
                    continue
                if cid in corrupt and stage is Stage.SHARE:
                    for data in corrupt[cid].uploads(outbound[cid], stage):
                        server.receive_bytes(cid, data)
                    continue
                reply = decode(clients[cid].handle_bytes(outbound[cid].to_bytes()))
                if isinstance(reply, UnmaskShares) and cid in rewrites:
                    reply = rewrites[cid](reply)
                server.receive_bytes(cid, reply.to_bytes())
            outbound = dict(server.advance())
    except ProtocolAborted as exc:
        return x, exc, server
    return x, server.output(), server


def wrong(seeds: bool, keys: bool) -> Rewrite:
    return lambda message: falsify_unmask(message, seeds=seeds, keys=keys)


KINDS = {"seed": (True, False), "key": (False, True), "both": (True, True)}


def record(outcome: AggregateOutput | ProtocolAborted, honest_lost: int) -> None:
    sec_stats.add("scenarios")
    sec_stats.add("faults_injected")
    sec_stats.add("honest_inputs_lost", honest_lost)
    if isinstance(outcome, ProtocolAborted):
        sec_stats.add("rounds_aborted")
        sec_stats.abort(f"round:{outcome.stage}:{outcome.reason.value}")
    else:
        sec_stats.add("rounds_completed")


def test_sec_one_bad_share_does_not_abort_the_round() -> None:
    """Observation 6: one client's well-formed wrong seed share used to abort the round
    (reconstruction_failed), losing every honest input; now it is corrected and named."""
    n, t, bad = 10, 6, 4
    x, outcome, server = run_round(n, t, {bad: wrong(True, False)})
    honest = set(range(n)) - {bad}
    record(outcome, 0 if isinstance(outcome, AggregateOutput) else len(honest))
    assert isinstance(outcome, AggregateOutput), f"the round aborted: {outcome}"
    assert honest <= set(outcome.included)
    assert np.array_equal(outcome.total, secagg.ring_sum(x[list(outcome.included)], 32))
    assert outcome.culprits == (bad,) and bad in server.faulty
    # Its lies about others' seeds open no commitment; its own share (which no commitment
    # covers) is off its own polynomial, "as dealt": either way it alone is blamed.
    assert {(f.owner, f.holder, f.kind, f.cause) for f in outcome.share_faults} == {
        (owner, bad, ShareKind.SELF_MASK_SEED, ShareFaultCause.NOT_AS_DEALT) for owner in honest
    } | {(bad, bad, ShareKind.SELF_MASK_SEED, ShareFaultCause.OFF_POLYNOMIAL_AS_DEALT)}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("liars", [1, 2])
def test_sec_up_to_half_the_redundancy_of_wrong_shares_is_corrected(kind: str, liars: int) -> None:
    """n = 13, t = 7, two drop before masking: m = 11 holders answer, RS capacity 2."""
    n, t, dropped = 13, 7, frozenset({0, 12})
    bad = set(range(3, 3 + liars))
    x, outcome, _ = run_round(n, t, dict.fromkeys(bad, wrong(*KINDS[kind])), dropped)
    survivors = set(range(n)) - dropped
    record(outcome, 0 if isinstance(outcome, AggregateOutput) else len(survivors - bad))
    assert isinstance(outcome, AggregateOutput), f"the round aborted: {outcome}"
    assert set(outcome.included) == survivors
    assert np.array_equal(outcome.total, secagg.ring_sum(x[sorted(survivors)], 32))
    assert set(outcome.culprits) == bad
    expected = {
        "seed": {ShareKind.SELF_MASK_SEED},
        "key": {ShareKind.MASKING_KEY},
        "both": {ShareKind.SELF_MASK_SEED, ShareKind.MASKING_KEY},
    }[kind]
    assert {f.kind for f in outcome.share_faults} == expected


@pytest.mark.parametrize("liars", [3, 4])
def test_sec_commitments_correct_beyond_the_code_while_t_good_shares_remain(liars: int) -> None:
    """Three or four liars exceed RS capacity 2 of m = 11, t = 7; every lie fails its
    dealer's commitment, so up to m - t = 4 liars are dropped and the round completes."""
    n, t, dropped = 13, 7, frozenset({0, 12})
    bad = set(range(3, 3 + liars))
    x, outcome, _ = run_round(n, t, dict.fromkeys(bad, wrong(True, True)), dropped)
    survivors = set(range(n)) - dropped
    record(outcome, 0 if isinstance(outcome, AggregateOutput) else len(survivors - bad))
    assert isinstance(outcome, AggregateOutput), f"the round aborted: {outcome}"
    assert np.array_equal(outcome.total, secagg.ring_sum(x[sorted(survivors)], 32))
    assert set(outcome.culprits) == bad


def test_sec_wrong_shares_in_a_sparse_graph_are_corrected() -> None:
    """SecAgg+: each owner has its own holders and x-set; the decoder still fixes them."""
    n, t, k = 24, 7, 12
    x, outcome, _ = run_round(n, t, {5: wrong(True, True)}, frozenset({9}), k)
    record(outcome, 0 if isinstance(outcome, AggregateOutput) else n - 2)
    assert isinstance(outcome, AggregateOutput), f"the round aborted: {outcome}"
    assert set(outcome.included) == set(range(n)) - {9}
    assert np.array_equal(outcome.total, secagg.ring_sum(x[list(outcome.included)], 32))
    assert outcome.culprits == (5,)


def test_sec_bad_shares_beyond_capacity_abort_typed_naming_the_senders() -> None:
    """Five liars leave 6 < t = 7 good shares of m = 11: a typed abort that names exactly
    the liars, and no sum at all (never a wrong one)."""
    n, t, dropped = 13, 7, frozenset({0, 12})
    bad = {3, 4, 5, 6, 7}
    _, outcome, server = run_round(n, t, dict.fromkeys(bad, wrong(True, True)), dropped)
    record(outcome, 0)  # an abort loses the round, not an input to a wrong sum
    assert isinstance(outcome, ProtocolAborted)
    assert outcome.reason is AbortReason.TOO_MANY_BAD_SHARES
    assert set(outcome.suspects) == bad
    assert bad <= server.faulty
    with pytest.raises(StateError):
        server.output()


def test_sec_partial_liars_and_omissions_are_named() -> None:
    """Liars that lie only about some owners, or leave a share out, are named per share."""
    n, t, dropped = 13, 7, frozenset({0, 12})
    targeted = {1, 2, 3}

    def lie_on_some(message: UnmaskShares) -> UnmaskShares:
        shares = tuple((o, falsify(s) if o in targeted else s) for o, s in message.seed_shares)
        return UnmaskShares(message.sender, shares, message.key_shares)

    def omit_one(message: UnmaskShares) -> UnmaskShares:
        return UnmaskShares(message.sender, message.seed_shares[1:], message.key_shares)

    rewrites: dict[int, Rewrite] = {4: wrong(True, False), 5: lie_on_some, 6: omit_one}
    x, outcome, _ = run_round(n, t, rewrites, dropped)
    record(outcome, 0 if isinstance(outcome, AggregateOutput) else 8)
    assert isinstance(outcome, AggregateOutput), f"the round aborted: {outcome}"
    assert np.array_equal(outcome.total, secagg.ring_sum(x[list(outcome.included)], 32))
    assert outcome.culprits == (4, 5, 6)
    assert {f.owner for f in outcome.share_faults if f.holder == 5} == targeted
    missing = [f for f in outcome.share_faults if f.holder == 6]
    assert [(f.owner, f.cause) for f in missing] == [(1, ShareFaultCause.MISSING)]


def test_sec_too_many_malformed_shares_abort_naming_their_senders() -> None:
    n, t = 10, 6
    bad = {1, 2, 3, 4, 5}

    def garbage(message: UnmaskShares) -> UnmaskShares:
        return UnmaskShares(message.sender, tuple((o, b"x") for o, _ in message.seed_shares), ())

    _, outcome, _ = run_round(n, t, dict.fromkeys(bad, garbage))
    record(outcome, 0)
    assert isinstance(outcome, ProtocolAborted)
    assert outcome.reason is AbortReason.TOO_MANY_BAD_SHARES
    assert set(outcome.suspects) == bad


def test_sec_a_corrupt_dealer_cannot_frame_honest_holders() -> None:
    """Dealer 3 deals wrong (but committed) seed shares to two honest holders. Their
    openings match the commitments, so the server blames the dealer, not them; the
    dealer's seed is decoded from its other shares and the round completes."""
    n, t = 10, 6
    x, outcome, _ = run_round(n, t, {}, dealers=frozenset({3}), victims=2)
    record(outcome, 0 if isinstance(outcome, AggregateOutput) else n - 1)
    assert isinstance(outcome, AggregateOutput), f"the round aborted: {outcome}"
    assert np.array_equal(outcome.total, secagg.ring_sum(x[list(outcome.included)], 32))
    assert set(outcome.included) == set(range(n))
    assert outcome.culprits == (3,)
    assert {f.cause for f in outcome.share_faults} == {ShareFaultCause.OFF_POLYNOMIAL_AS_DEALT}
    assert len({f.holder for f in outcome.share_faults}) == 2  # two honest holders, unblamed


def test_sec_a_corrupt_dealer_beyond_capacity_aborts_naming_only_itself() -> None:
    n, t = 10, 6  # m = 10: capacity 2; three inconsistent shares cannot be decoded
    _, outcome, _ = run_round(n, t, {}, dealers=frozenset({3}), victims=3)
    record(outcome, 0)
    assert isinstance(outcome, ProtocolAborted)
    assert outcome.reason is AbortReason.TOO_MANY_BAD_SHARES
    assert outcome.suspects == (3,)


def test_sec_a_holder_never_accepts_a_share_that_opens_no_commitment() -> None:
    """A dealer that sends a holder a share other than the one it committed to (to blame
    the holder later) is caught on arrival: the holder aborts with a typed reason and
    never reveals that share, so it cannot be framed with it."""
    n, t = 6, 4
    x = secagg.to_ring(np.arange(n * 2).reshape(n, 2) + 1, 32)
    adv = MaliciousServer(SecAggConfig(n, t), x)
    adv.start()
    adv.honest_stage()  # advertise
    replies = adv.honest_stage()  # share
    dealt = replies[0]
    assert isinstance(dealt, EncryptedShares)
    holder, blob = dealt.ciphertexts[0]
    commitments, sealed = binding.split_committed_ciphertext(blob)
    other = bytes(binding.COMMITMENT_BYTES) + commitments[binding.COMMITMENT_BYTES :]
    delivery = adv.outbound[holder]
    assert isinstance(delivery, ShareDelivery)
    # The dealer's own AEAD key would authenticate a different commitment; with the
    # server's copy the holder sees a failed decryption, with a re-sealed one a mismatch.
    tampered = ShareDelivery(
        tuple((s, other + sealed if s == 0 else c) for s, c in delivery.ciphertexts)
    )
    reply = adv.ask(holder, tampered)
    assert isinstance(reply, ClientAbort)
    assert reply.reason in (
        AbortReason.SHARE_DECRYPTION_FAILED,
        AbortReason.SHARE_COMMITMENT_MISMATCH,
    )
    sec_stats.add("scenarios")
    sec_stats.abort(reply.reason.value)


def test_sec_a_dealer_committing_to_another_share_gets_the_holder_to_refuse() -> None:
    """The re-sealed variant: the holder decrypts fine but the commitment does not open."""
    n, t = 6, 4
    x = secagg.to_ring(np.arange(n * 2).reshape(n, 2) + 1, 32)
    config = SecAggConfig(n, t)
    server = SecAggServer(config, 2, graph_seed=bytes(32))
    clients = [SecAggClient(i, config, x[i]) for i in range(n)]
    outbound = dict(server.start())
    for stage in (Stage.ADVERTISE, Stage.SHARE):
        for cid in sorted(outbound):
            data = clients[cid].handle_bytes(outbound[cid].to_bytes())
            if stage is Stage.SHARE and cid == 0:
                data = recommit(clients[0], decode(data))
            server.receive_bytes(cid, data)
        outbound = dict(server.advance())
    victim = 1
    reply = decode(clients[victim].handle_bytes(outbound[victim].to_bytes()))
    assert isinstance(reply, ClientAbort)
    assert reply.reason is AbortReason.SHARE_COMMITMENT_MISMATCH
    sec_stats.add("scenarios")
    sec_stats.abort(reply.reason.value)


def recommit(dealer: SecAggClient, message: Message) -> bytes:
    """Client 0's shares with a commitment to another seed opening for holder 1."""
    assert isinstance(message, EncryptedShares) and dealer.session_id is not None
    assert dealer._setup is not None
    associated = binding.ShareAssociatedData(dealer.session_id, dealer._setup.round_number)
    out = []
    for holder, blob in message.ciphertexts:
        if holder == 1:
            key = dealer._share_keys[holder]
            commitments, sealed = binding.split_committed_ciphertext(blob)
            plain = secagg.open_sealed(
                key, sealed, associated_data=associated(0, holder) + commitments
            )
            _, _, seed_opening, key_opening = binding.unpack_share_plaintext(plain)
            lie = binding.share_commitments(
                dealer.session_id, 0, holder, falsify(seed_opening), key_opening
            )
            blob = lie + secagg.seal(key, plain, associated_data=associated(0, holder) + lie)
        out.append((holder, blob))
    return EncryptedShares(0, tuple(out)).to_bytes()


def test_sec_faulty_labels_never_get_an_honest_client_to_reveal_both_share_kinds() -> None:
    """A malicious server that 'explains' a faulty holder by re-listing a survivor as
    dropped (to collect its masking-key shares too) is refused by every honest client;
    robust decoding itself never asks anyone for another share."""
    n, t = 8, 5
    x = secagg.to_ring(np.arange(n * 3).reshape(n, 3) + 7, 32)
    adv = MaliciousServer(SecAggConfig(n, t), x)
    adv.run_to_unmask()
    first = {cid: adv.ask(cid, request) for cid, request in sorted(adv.outbound.items())}
    assert all(isinstance(reply, UnmaskShares) for reply in first.values())
    victim = 0
    survivors = tuple(c for c in range(n) if c != victim)
    relabel = UnmaskRequest(survivors, (victim,))
    harvest = adv.harvest(victim, dict.fromkeys(range(1, n), relabel))
    assert harvest.key_shares == []
    assert {a.reason for a in harvest.aborts} == {AbortReason.BOTH_SHARES_REQUESTED}
    sec_stats.add("scenarios")
    sec_stats.add("attack_attempts")
    sec_stats.add("inputs_recovered", int(adv.unmask_victim(victim, harvest) is not None))
