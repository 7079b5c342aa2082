"""Negative tests of the honest client's state machine (checklist S1-S13 of the design).

Each test drives real clients through honest stages with the malicious-server double and
then deviates in exactly one way; the client must abort with a named reason and reveal
no share bytes it should not.
"""

from __future__ import annotations

import numpy as np
import pytest
from adversary import MaliciousServer, digest, replace_delivery

import secagg
from protocols import (
    AbortReason,
    ClientState,
    PeerStatus,
    SecAggClient,
    SecAggConfig,
    ShareKind,
    Stage,
    ThreatModel,
)
from protocols.errors import ConfigError
from protocols.messages import (
    ClientAbort,
    ConsistencyRequest,
    KeyDirectory,
    MaskedInput,
    SetupRequest,
    ShareDelivery,
    UnmaskRequest,
    UnmaskShares,
)

N, T = 7, 4


def inputs(n: int = N, d: int = 5, bits: int = 32) -> np.ndarray:
    return secagg.to_ring(np.arange(n * d).reshape(n, d) * 1000 + 7, bits)


@pytest.fixture
def at_unmask() -> MaliciousServer:
    """A full-graph round where client 6 dropped before sending its masked input."""
    adv = MaliciousServer(SecAggConfig(N, T), inputs())
    adv.run_to_unmask(drop_at_mask=frozenset({6}))
    return adv


def assert_aborted(reply: object, reason: AbortReason) -> None:
    assert isinstance(reply, ClientAbort), reply
    assert reply.reason is reason


# ----------------------------------------------------------------------------- S1


def test_client_refuses_both_shares_when_victim_is_in_both_lists(
    at_unmask: MaliciousServer,
) -> None:
    victim = 0
    request = UnmaskRequest(survivors=(0, 1, 2, 3, 4, 5), dropped=(6, victim))
    for cid in range(1, 6):
        assert_aborted(at_unmask.ask(cid, request), AbortReason.BOTH_SHARES_REQUESTED)
    assert at_unmask.share_bytes_sent() == 0


def test_client_refuses_both_shares_across_retries(at_unmask: MaliciousServer) -> None:
    honest = UnmaskRequest(survivors=(0, 1, 2, 3, 4, 5), dropped=(6,))
    first = at_unmask.ask(1, honest)
    assert isinstance(first, UnmaskShares)
    assert {o for o, _ in first.seed_shares} == {0, 1, 2, 3, 4, 5}
    assert {o for o, _ in first.key_shares} == {6}
    revealed_before = at_unmask.share_bytes_sent()
    # The retry now claims client 0 dropped: its masking-key share must not follow.
    flipped = UnmaskRequest(survivors=(1, 2, 3, 4, 5, 6), dropped=(0,))
    assert_aborted(at_unmask.ask(1, flipped), AbortReason.BOTH_SHARES_REQUESTED)
    assert at_unmask.share_bytes_sent() == revealed_before
    assert at_unmask.clients[1].revealed == {
        **dict.fromkeys((0, 1, 2, 3, 4, 5), ShareKind.SELF_MASK_SEED),
        6: ShareKind.MASKING_KEY,
    }
    assert_aborted(at_unmask.ask(1, honest), AbortReason.BOTH_SHARES_REQUESTED)


def test_identical_retry_gets_the_identical_answer(at_unmask: MaliciousServer) -> None:
    request = UnmaskRequest(survivors=(0, 1, 2, 3, 4, 5), dropped=(6,))
    first = at_unmask.ask(2, request)
    again = at_unmask.ask(2, request)
    assert isinstance(again, UnmaskShares) and again == first
    assert at_unmask.clients[2].state is ClientState.DONE


def test_at_most_one_share_kind_per_peer_whatever_the_requests(
    at_unmask: MaliciousServer,
) -> None:
    requests = [
        UnmaskRequest(survivors=(0, 1, 2, 3, 4, 5), dropped=(6,)),
        UnmaskRequest(survivors=(1, 2, 3, 4, 5), dropped=(0, 6)),
        UnmaskRequest(survivors=(0, 1, 2, 3, 4, 5, 6), dropped=()),
        UnmaskRequest(survivors=(1, 2, 3, 4, 5, 6), dropped=(0,)),
        UnmaskRequest(survivors=(0, 1, 2, 3, 4, 5), dropped=(6, 0)),
    ]
    seen: dict[int, set[str]] = {}
    for cid in range(1, 6):
        for request in requests:
            reply = at_unmask.ask(cid, request)
            if isinstance(reply, UnmaskShares):
                for owner, _ in reply.seed_shares:
                    seen.setdefault(owner, set()).add(f"{cid}:seed")
                for owner, _ in reply.key_shares:
                    seen.setdefault(owner, set()).add(f"{cid}:key")
    for owner, kinds in seen.items():
        holders = {k.split(":")[0] for k in kinds}
        for holder in holders:
            assert not {f"{holder}:seed", f"{holder}:key"} <= kinds, owner


# ----------------------------------------------------------------------------- S2-S6


def test_client_aborts_if_server_lists_it_as_dropped(at_unmask: MaliciousServer) -> None:
    reply = at_unmask.ask(3, UnmaskRequest(survivors=(0, 1, 2, 4, 5), dropped=(3, 6)))
    assert_aborted(reply, AbortReason.SELF_LISTED_AS_DROPPED)
    reply = at_unmask.ask(4, UnmaskRequest(survivors=(0, 1, 2, 3, 5), dropped=(6,)))
    assert_aborted(reply, AbortReason.SELF_LISTED_AS_DROPPED)


def test_client_aborts_on_unknown_client_id(at_unmask: MaliciousServer) -> None:
    reply = at_unmask.ask(1, UnmaskRequest(survivors=(0, 1, 2, 3, 4, 5), dropped=(6, N)))
    assert_aborted(reply, AbortReason.UNKNOWN_CLIENT)


def test_client_aborts_on_duplicate_client_id(at_unmask: MaliciousServer) -> None:
    reply = at_unmask.ask(1, UnmaskRequest(survivors=(0, 1, 2, 3, 4, 5), dropped=(6, 6)))
    assert_aborted(reply, AbortReason.DUPLICATE_CLIENT)
    reply = at_unmask.ask(2, UnmaskRequest(survivors=(0, 1, 1, 2, 3, 4, 5), dropped=(6,)))
    assert_aborted(reply, AbortReason.DUPLICATE_CLIENT)


def test_client_aborts_when_a_peer_it_saw_drop_earlier_is_relisted() -> None:
    adv = MaliciousServer(SecAggConfig(N, T), inputs())
    adv.start()
    adv.honest_stage()
    adv.honest_stage(skip=frozenset({5}))  # client 5 never sends its shares
    adv.honest_stage()
    assert adv.clients[1].status(5) is PeerStatus.DROPPED_AT_SHARE
    relisted_dropped = UnmaskRequest(survivors=(0, 1, 2, 3, 4, 6), dropped=(5,))
    assert_aborted(adv.ask(1, relisted_dropped), AbortReason.PEER_ALREADY_DROPPED)
    relisted_alive = UnmaskRequest(survivors=(0, 1, 2, 3, 4, 5, 6), dropped=())
    assert_aborted(adv.ask(2, relisted_alive), AbortReason.PEER_ALREADY_DROPPED)
    assert adv.share_bytes_sent() == 0


def test_client_aborts_when_a_known_peer_is_missing_from_both_lists(
    at_unmask: MaliciousServer,
) -> None:
    reply = at_unmask.ask(1, UnmaskRequest(survivors=(0, 1, 2, 3, 4, 5), dropped=()))
    assert_aborted(reply, AbortReason.INCONSISTENT_SURVIVORS)


def test_client_aborts_on_fewer_than_t_survivors_without_sending_share_bytes(
    at_unmask: MaliciousServer,
) -> None:
    request = UnmaskRequest(survivors=(0, 1, 2), dropped=(3, 4, 5, 6))
    for cid in (0, 1, 2):
        assert_aborted(at_unmask.ask(cid, request), AbortReason.TOO_FEW_SURVIVORS)
    assert at_unmask.share_bytes_sent() == 0
    # an aborted client stays silent about shares whatever comes next
    honest = UnmaskRequest(survivors=(0, 1, 2, 3, 4, 5), dropped=(6,))
    assert_aborted(at_unmask.ask(0, honest), AbortReason.TOO_FEW_SURVIVORS)
    assert at_unmask.share_bytes_sent() == 0


def test_client_aborts_on_too_few_keys_before_sharing() -> None:
    adv = MaliciousServer(SecAggConfig(N, T), inputs())
    adv.start()
    adv.honest_stage()
    directory = adv.outbound[0]
    assert isinstance(directory, KeyDirectory)
    keep = [0, 1, 2]  # only 3 < t = 4 clients "advertised"
    small = KeyDirectory(
        tuple(keep),
        b"".join(directory.entry(i)[0] for i in keep),
        b"".join(directory.entry(i)[1] for i in keep),
    )
    assert_aborted(adv.ask(0, small), AbortReason.TOO_FEW_SURVIVORS)


# ----------------------------------------------------------------------------- S9


def _directory_after_advertise() -> tuple[MaliciousServer, KeyDirectory]:
    adv = MaliciousServer(SecAggConfig(N, T), inputs())
    adv.start()
    adv.honest_stage()
    directory = adv.outbound[0]
    assert isinstance(directory, KeyDirectory)
    return adv, directory


def test_client_aborts_when_its_own_keys_are_altered() -> None:
    adv, directory = _directory_after_advertise()
    forged = secagg.AgreementKey.generate().public_bytes
    enc = forged + directory.enc_keys[32:]
    altered = KeyDirectory(directory.client_ids, enc, directory.mask_keys)
    assert_aborted(adv.ask(0, altered), AbortReason.OWN_KEYS_ALTERED)


def test_client_aborts_when_it_is_missing_from_the_key_list() -> None:
    adv, directory = _directory_after_advertise()
    rest = directory.client_ids[1:]
    without = KeyDirectory(rest, directory.enc_keys[32:], directory.mask_keys[32:])
    assert_aborted(adv.ask(0, without), AbortReason.SELF_LISTED_AS_DROPPED)


def test_client_aborts_on_duplicate_public_keys() -> None:
    adv, directory = _directory_after_advertise()
    enc = directory.enc_keys
    copied = enc[:64] + enc[32:64] + enc[96:]  # client 2 re-uses client 1's key
    assert_aborted(
        adv.ask(0, KeyDirectory(directory.client_ids, copied, directory.mask_keys)),
        AbortReason.DUPLICATE_PUBLIC_KEY,
    )


def test_client_aborts_on_duplicate_or_unknown_ids_in_key_list() -> None:
    adv, directory = _directory_after_advertise()
    ids = list(directory.client_ids)
    dup = KeyDirectory(tuple([*ids[:-1], 1]), directory.enc_keys, directory.mask_keys)
    assert_aborted(adv.ask(0, dup), AbortReason.DUPLICATE_CLIENT)
    unknown = KeyDirectory(tuple([*ids[:-1], N + 3]), directory.enc_keys, directory.mask_keys)
    assert_aborted(adv.ask(1, unknown), AbortReason.UNKNOWN_CLIENT)


def test_client_aborts_on_a_setup_that_differs_from_its_config() -> None:
    adv = MaliciousServer(SecAggConfig(N, T), inputs())
    setup = adv.server.setup
    for change in (
        {"threshold": T - 1},
        {"num_clients": N + 1},
        {"bits": 16},
        {"vector_length": 4},
        {"neighbors": 4},
        {"threat_model": ThreatModel.MALICIOUS_SERVER},
    ):
        fields = {**setup.__dict__, **change}
        client = SecAggClient(0, SecAggConfig(N, T), inputs()[0])
        reply = client.handle(SetupRequest(**fields))
        assert_aborted(reply, AbortReason.CONFIG_MISMATCH)


# ----------------------------------------------------------------------------- S10-S12


def _at_share_delivery(context: bytes = bytes(32), round_number: int = 0) -> MaliciousServer:
    adv = MaliciousServer(
        SecAggConfig(N, T), inputs(), context_digest=context, round_number=round_number
    )
    adv.start()
    adv.honest_stage()
    adv.honest_stage()
    return adv


def _ciphertext(delivery: object, sender: int) -> bytes:
    assert isinstance(delivery, ShareDelivery)
    return dict(delivery.ciphertexts)[sender]


def test_replayed_share_from_another_session_is_rejected() -> None:
    old = _at_share_delivery(round_number=3)
    new = _at_share_delivery(round_number=4)
    replayed = _ciphertext(old.outbound[0], 1)
    delivery = replace_delivery(new.outbound[0], 1, replayed)  # type: ignore[arg-type]
    assert_aborted(new.ask(0, delivery), AbortReason.SHARE_DECRYPTION_FAILED)


def test_misrouted_share_is_rejected() -> None:
    adv = _at_share_delivery()
    for_client_0 = _ciphertext(adv.outbound[0], 1)
    # delivered to client 2 as if client 1 had encrypted it for client 2
    misrouted = replace_delivery(adv.outbound[2], 1, for_client_0)  # type: ignore[arg-type]
    assert_aborted(adv.ask(2, misrouted), AbortReason.SHARE_DECRYPTION_FAILED)
    # delivered to client 0, but attributed to client 3
    from_1 = replace_delivery(adv.outbound[0], 3, for_client_0)  # type: ignore[arg-type]
    assert_aborted(adv.ask(0, from_1), AbortReason.SHARE_DECRYPTION_FAILED)


def test_tampered_share_ciphertext_is_detected() -> None:
    adv = _at_share_delivery()
    good = bytearray(_ciphertext(adv.outbound[0], 1))
    good[20] ^= 0x01
    tampered = replace_delivery(adv.outbound[0], 1, bytes(good))  # type: ignore[arg-type]
    assert_aborted(adv.ask(0, tampered), AbortReason.SHARE_DECRYPTION_FAILED)


def test_duplicate_unknown_or_own_sender_in_delivery_aborts() -> None:
    adv = _at_share_delivery()
    delivery = adv.outbound[0]
    assert isinstance(delivery, ShareDelivery)
    first = delivery.ciphertexts[0]
    assert_aborted(
        adv.ask(0, ShareDelivery((*delivery.ciphertexts, first))), AbortReason.DUPLICATE_CLIENT
    )
    assert_aborted(adv.ask(1, ShareDelivery(((N + 1, b"x" * 40),))), AbortReason.UNKNOWN_CLIENT)
    assert_aborted(adv.ask(2, ShareDelivery(((2, first[1]),))), AbortReason.MISROUTED_SHARE)


def test_shares_from_fewer_than_t_peers_abort_before_masking() -> None:
    adv = _at_share_delivery()
    delivery = adv.outbound[0]
    assert isinstance(delivery, ShareDelivery)
    few = ShareDelivery(delivery.ciphertexts[: T - 2])
    assert_aborted(adv.ask(0, few), AbortReason.TOO_FEW_SURVIVORS)


# ----------------------------------------------------------------------------- S13


def test_out_of_order_messages_abort() -> None:
    adv = MaliciousServer(SecAggConfig(N, T), inputs())
    adv.start()
    unmask = UnmaskRequest(survivors=(0, 1, 2, 3), dropped=())
    assert_aborted(adv.ask(0, unmask), AbortReason.UNEXPECTED_MESSAGE)
    adv2 = MaliciousServer(SecAggConfig(N, T), inputs())
    adv2.start()
    adv2.honest_stage()
    assert_aborted(adv2.ask(0, adv2.server.setup), AbortReason.UNEXPECTED_MESSAGE)
    assert_aborted(adv2.ask(1, ConsistencyRequest((0, 1))), AbortReason.UNEXPECTED_MESSAGE)


def test_garbage_bytes_abort_the_client_with_a_typed_reason() -> None:
    adv = MaliciousServer(SecAggConfig(N, T), inputs())
    adv.start()
    assert_aborted(adv.ask_raw(0, b"\x00garbage"), AbortReason.MALFORMED_MESSAGE)
    assert adv.clients[0].state is ClientState.ABORTED


def test_masked_input_is_four_bytes_per_coordinate() -> None:
    adv = MaliciousServer(SecAggConfig(N, T), inputs(d=1000))
    adv.start()
    adv.honest_stage()
    adv.honest_stage()
    replies = adv.honest_stage()
    masked = replies[0]
    assert isinstance(masked, MaskedInput)
    assert len(masked.to_bytes()) == 4 * 1000 + 13


def test_client_constructor_validates_its_arguments() -> None:
    cfg = SecAggConfig(N, T)
    with pytest.raises(ConfigError):
        SecAggClient(N, cfg, inputs()[0])
    with pytest.raises(ConfigError):
        SecAggClient(0, cfg, np.zeros(5, dtype=np.int64))
    malicious = SecAggConfig(N, 6, threat_model=ThreatModel.MALICIOUS_SERVER, corrupt_fraction=0.0)
    with pytest.raises(ConfigError):
        SecAggClient(0, malicious, inputs()[0])


def test_stage_names_are_the_documented_ones() -> None:
    assert [s.value for s in Stage] == ["advertise", "share", "mask", "consistency", "unmask"]


def test_context_digest_binds_the_session() -> None:
    a = _at_share_delivery(context=digest("model-a"))
    b = _at_share_delivery(context=digest("model-b"))
    assert a.server.session_id != b.server.session_id


def test_client_aborts_on_a_low_order_public_key_instead_of_raising() -> None:
    adv, directory = _directory_after_advertise()
    enc = directory.enc_keys[:32] + bytes(32) + directory.enc_keys[64:]  # client 1: u = 0
    reply = adv.ask(0, KeyDirectory(directory.client_ids, enc, directory.mask_keys))
    assert_aborted(reply, AbortReason.INVALID_PUBLIC_KEY)


def test_server_drops_a_client_that_advertises_an_unusable_key() -> None:
    from protocols import run_secagg
    from protocols.messages import AdvertiseKeys, decode
    from protocols.transport import Direction, InMemoryTransport

    def poison(direction: Direction, stage: Stage, cid: int, data: bytes) -> bytes | None:
        if direction is Direction.TO_SERVER and stage is Stage.ADVERTISE and cid == 3:
            m = decode(data)
            assert isinstance(m, AdvertiseKeys)
            return AdvertiseKeys(m.sender, m.enc_public, bytes(32)).to_bytes()
        return data

    x = inputs()
    result = run_secagg(x, SecAggConfig(N, T), transport=InMemoryTransport([poison]))
    assert 3 not in result.included and result.client_aborts == {}
    assert np.array_equal(result.total, secagg.ring_sum(x[list(result.included)], 32))
