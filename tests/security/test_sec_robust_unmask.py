"""Robust unmasking (issue 15, observation 6): bad shares at unmasking cost no honest input.

Corrupt clients reveal well-formed but wrong seed and / or key shares (or malformed ones)
at the unmasking stage. Within the code's capacity, floor((m - t) / 2) wrong shares per
secret, the round completes with the exact sum and exactly the senders are marked faulty;
beyond it the round aborts with a typed reason, names only proven senders and releases no
sum. A coordinated shift that defeats the decoder is stopped by the integrity tag (nobody
honest is named), and faulty labels never make an honest client reveal a second share kind.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import sec_stats
from adversary import MaliciousServer, falsify, falsify_unmask

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
)
from protocols.messages import ClientAbort, Message, UnmaskRequest, UnmaskShares, decode

Rewrite = Callable[[UnmaskShares], UnmaskShares]


def run_round(
    n: int,
    t: int,
    rewrites: dict[int, Rewrite],
    drop_at_mask: frozenset[int] = frozenset(),
    neighbors: int | None = None,
) -> tuple[np.ndarray, AggregateOutput | ProtocolAborted, SecAggServer]:
    """One honest-server round in which client c's unmask reply goes through rewrites[c]."""
    rng = np.random.default_rng(n * 1000 + t)
    x = secagg.to_ring(rng.integers(0, 2**32, size=(n, 6)), 32)
    config = SecAggConfig(n, t, neighbors=neighbors)
    server = SecAggServer(config, 6, graph_seed=bytes(32))
    clients = [SecAggClient(i, config, x[i]) for i in range(n)]
    outbound: dict[int, Message] = dict(server.start())
    try:
        while not server.finished:
            stage = server.stage
            for cid in sorted(outbound):
                if stage is Stage.MASK and cid in drop_at_mask:
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
        sec_stats.abort(outcome.reason.value)
    else:
        sec_stats.add("rounds_completed")


def test_sec_one_bad_share_does_not_abort_the_round() -> None:
    """Observation 6: one client's well-formed wrong seed share used to abort the round
    (reconstruction_failed), losing every honest input; now it is corrected and named."""
    n, t, bad = 10, 6, 4
    x, outcome, server = run_round(n, t, {bad: wrong(True, False)})
    honest = set(range(n)) - {bad}
    lost = 0 if isinstance(outcome, AggregateOutput) else len(honest)
    record(outcome, lost)
    assert isinstance(outcome, AggregateOutput), f"the round aborted: {outcome}"
    assert honest <= set(outcome.included)
    assert np.array_equal(outcome.total, secagg.ring_sum(x[list(outcome.included)], 32))
    assert outcome.faulty_holders == (bad,) and bad in server.faulty
    assert {(f.holder, f.kind, f.cause) for f in outcome.share_faults} == {
        (bad, ShareKind.SELF_MASK_SEED, ShareFaultCause.OFF_POLYNOMIAL)
    }
    assert {f.owner for f in outcome.share_faults} == set(range(n))  # it lied on every seed


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("liars", [1, 2])
def test_sec_up_to_half_the_redundancy_of_wrong_shares_is_corrected(kind: str, liars: int) -> None:
    """n = 13, t = 7, two drop before masking: m = 11 holders answer, capacity 2."""
    n, t, dropped = 13, 7, frozenset({0, 12})
    bad = set(range(3, 3 + liars))
    x, outcome, _ = run_round(n, t, dict.fromkeys(bad, wrong(*KINDS[kind])), dropped)
    survivors = set(range(n)) - dropped
    honest = survivors - bad
    record(outcome, 0 if isinstance(outcome, AggregateOutput) else len(honest))
    assert isinstance(outcome, AggregateOutput), f"the round aborted: {outcome}"
    assert set(outcome.included) == survivors
    assert np.array_equal(outcome.total, secagg.ring_sum(x[sorted(survivors)], 32))
    assert set(outcome.faulty_holders) == bad
    kinds = {f.kind for f in outcome.share_faults}
    expected = {
        "seed": {ShareKind.SELF_MASK_SEED},
        "key": {ShareKind.MASKING_KEY},
        "both": {ShareKind.SELF_MASK_SEED, ShareKind.MASKING_KEY},
    }[kind]
    assert kinds == expected


def test_sec_wrong_shares_in_a_sparse_graph_are_corrected() -> None:
    """SecAgg+: each owner has its own holders and x-set; the decoder still fixes them."""
    n, t, k = 24, 7, 12
    bad = {5}
    x, outcome, _ = run_round(n, t, dict.fromkeys(bad, wrong(True, True)), frozenset({9}), k)
    record(outcome, 0 if isinstance(outcome, AggregateOutput) else n - 2)
    assert isinstance(outcome, AggregateOutput), f"the round aborted: {outcome}"
    assert set(outcome.included) == set(range(n)) - {9}
    assert np.array_equal(outcome.total, secagg.ring_sum(x[list(outcome.included)], 32))
    assert outcome.faulty_holders == (5,)


def test_sec_bad_shares_beyond_capacity_abort_typed_and_never_release_a_wrong_sum() -> None:
    """Three liars among m = 11 (capacity 2): a typed abort, no sum, no honest client named."""
    n, t, dropped = 13, 7, frozenset({0, 12})
    bad = {3, 4, 5}
    _, outcome, server = run_round(n, t, dict.fromkeys(bad, wrong(True, True)), dropped)
    record(outcome, 0)  # an abort loses the round, not an input to a wrong sum
    assert isinstance(outcome, ProtocolAborted)
    assert outcome.reason is AbortReason.TOO_MANY_BAD_SHARES
    assert set(outcome.suspects) <= bad  # only proven senders are ever named
    with pytest.raises(StateError):
        server.output()


def test_sec_liars_proven_on_one_secret_are_ignored_on_the_others() -> None:
    """Two liars lie on every seed, a third only on some: the first pass proves the two
    on the secrets it can decode, the second pass erases their shares everywhere and then
    corrects the third. The round completes and all three are named."""
    n, t, dropped = 13, 7, frozenset({0, 12})
    targeted = {1, 2, 3}

    def lie_on_some(message: UnmaskShares) -> UnmaskShares:
        shares = tuple((o, falsify(s) if o in targeted else s) for o, s in message.seed_shares)
        return UnmaskShares(message.sender, shares, message.key_shares)

    rewrites: dict[int, Rewrite] = {4: wrong(True, False), 5: wrong(True, False), 6: lie_on_some}
    x, outcome, _ = run_round(n, t, rewrites, dropped)
    record(outcome, 0 if isinstance(outcome, AggregateOutput) else 8)
    assert isinstance(outcome, AggregateOutput), f"the round aborted: {outcome}"
    assert np.array_equal(outcome.total, secagg.ring_sum(x[list(outcome.included)], 32))
    assert outcome.faulty_holders == (4, 5, 6)


def test_sec_too_many_malformed_shares_abort_naming_their_senders() -> None:
    """Malformed shares are erasures and always attributable: when fewer than t usable
    shares remain the abort names exactly their senders."""
    n, t = 10, 6
    bad = {1, 2, 3, 4, 5}

    def garbage(message: UnmaskShares) -> UnmaskShares:
        return UnmaskShares(message.sender, tuple((o, b"x") for o, _ in message.seed_shares), ())

    _, outcome, _ = run_round(n, t, dict.fromkeys(bad, garbage))
    record(outcome, 0)
    assert isinstance(outcome, ProtocolAborted)
    assert outcome.reason is AbortReason.TOO_MANY_BAD_SHARES
    assert set(outcome.suspects) == bad


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
    assert all(isinstance(a, ClientAbort) for a in harvest.aborts)
    sec_stats.add("scenarios")
    sec_stats.add("attack_attempts")
    sec_stats.add("inputs_recovered", int(adv.unmask_victim(victim, harvest) is not None))
