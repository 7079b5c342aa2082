"""Key agreement: RFC 7748 / RFC 5869 known answers, symmetry, binding, rejection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secagg import (
    AgreementKey,
    SecAggValueError,
    derive_shared_key,
    random_seed,
    session_id,
)
from secagg.kdf import hkdf_sha256

VECTORS = Path(__file__).parent / "vectors"
RFC7748 = json.loads((VECTORS / "rfc7748_x25519.json").read_text(encoding="utf-8"))
RFC5869 = json.loads((VECTORS / "rfc5869_hkdf_sha256.json").read_text(encoding="utf-8"))
h = bytes.fromhex


def x25519(scalar: bytes, u: bytes) -> bytes:
    return AgreementKey.from_private_bytes(scalar)._exchange(u)


@pytest.mark.parametrize("case", RFC7748["scalar_multiplication"])
def test_rfc7748_scalar_multiplication(case: dict[str, str]) -> None:
    assert x25519(h(case["scalar"]), h(case["u"])) == h(case["output"])


def test_rfc7748_iterated_1_and_1000() -> None:
    k = u = h(RFC7748["iterated"]["start"])
    for iteration in range(1, 1001):
        k, u = x25519(k, u), k
        if iteration == 1:
            assert k == h(RFC7748["iterated"]["after_1"])
    assert k == h(RFC7748["iterated"]["after_1000"])


def test_rfc7748_diffie_hellman() -> None:
    dh = RFC7748["diffie_hellman"]
    alice = AgreementKey.from_private_bytes(h(dh["alice_private"]))
    bob = AgreementKey.from_private_bytes(h(dh["bob_private"]))
    assert alice.public_bytes == h(dh["alice_public"])
    assert bob.public_bytes == h(dh["bob_public"])
    assert alice._exchange(bob.public_bytes) == bob._exchange(alice.public_bytes) == h(dh["shared"])
    assert alice.private_bytes_for_sharing() == h(dh["alice_private"])


@pytest.mark.parametrize("case", RFC5869["cases"], ids=lambda case: case["name"])
def test_rfc5869_hkdf_sha256(case: dict[str, object]) -> None:
    okm = hkdf_sha256(
        h(str(case["ikm"])),
        salt=h(str(case["salt"])),
        info=h(str(case["info"])),
        length=int(str(case["length"])),
    )
    assert okm == h(str(case["okm"]))


def test_derive_shared_key_is_the_documented_hkdf_of_the_rfc_secret() -> None:
    # privagg's own known answer on top of the RFC 7748 section 6.1 exchange.
    dh = RFC7748["diffie_hellman"]
    alice = AgreementKey.from_private_bytes(h(dh["alice_private"]))
    label, context = b"privagg/v1/test", b"session-context"
    low, high = sorted((h(dh["alice_public"]), h(dh["bob_public"])))
    expected = hkdf_sha256(h(dh["shared"]), salt=context, info=label + low + high, length=32)
    assert derive_shared_key(alice, h(dh["bob_public"]), label=label, context=context) == expected


def test_agreement_is_symmetric_and_bound_to_label_and_context() -> None:
    a, b, c = AgreementKey.generate(), AgreementKey.generate(), AgreementKey.generate()
    ab = derive_shared_key(a, b.public_bytes, label=b"mask", context=b"s1")
    assert len(ab) == 32
    assert ab == derive_shared_key(b, a.public_bytes, label=b"mask", context=b"s1")
    others = {
        derive_shared_key(a, b.public_bytes, label=b"enc", context=b"s1"),
        derive_shared_key(a, b.public_bytes, label=b"mask", context=b"s2"),
        derive_shared_key(a, c.public_bytes, label=b"mask", context=b"s1"),
        derive_shared_key(c, b.public_bytes, label=b"mask", context=b"s1"),
    }
    assert ab not in others and len(others) == 4


@pytest.mark.parametrize("point", RFC7748["low_order_points"]["points"])
def test_low_order_peer_keys_are_rejected(point: str) -> None:
    key = AgreementKey.generate()
    with pytest.raises(SecAggValueError, match="low-order") as info:
        derive_shared_key(key, h(point), label=b"mask", context=b"")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("peer", [b"", bytes(31), bytes(33), "k" * 32, None])
def test_malformed_peer_keys_are_rejected(peer: object) -> None:
    with pytest.raises(SecAggValueError):
        derive_shared_key(AgreementKey.generate(), peer, label=b"mask", context=b"")  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    key = AgreementKey.generate()
    peer = AgreementKey.generate().public_bytes
    with pytest.raises(SecAggValueError, match="label"):
        derive_shared_key(key, peer, label=b"", context=b"")
    with pytest.raises(SecAggValueError, match="AgreementKey"):
        derive_shared_key(X25519PrivateKey.generate(), peer, label=b"m", context=b"")  # type: ignore[arg-type]
    with pytest.raises(SecAggValueError, match="32 bytes"):
        AgreementKey.from_private_bytes(bytes(31))
    with pytest.raises(SecAggValueError):
        AgreementKey(b"not a key")  # type: ignore[arg-type]


def test_session_id_binds_every_input() -> None:
    keys = {0: b"\x01" * 64, 1: b"\x02" * 64, 5: b"\x03" * 64}
    base = session_id(keys, round_number=3, server_digest=b"model-hash")
    assert len(base) == 32
    # Insertion order does not matter; the encoding is canonical.
    assert (
        session_id(dict(reversed(keys.items())), round_number=3, server_digest=b"model-hash")
        == base
    )
    variants = [
        session_id({**keys, 5: b"\x04" * 64}, round_number=3, server_digest=b"model-hash"),
        session_id({0: keys[0], 1: keys[1]}, round_number=3, server_digest=b"model-hash"),
        session_id(
            {0: keys[0], 1: keys[1], 6: keys[5]}, round_number=3, server_digest=b"model-hash"
        ),
        session_id(keys, round_number=4, server_digest=b"model-hash"),
        session_id(keys, round_number=3, server_digest=b"model-hasH"),
        # Moving bytes between adjacent fields must not collide (length prefixes).
        session_id(
            {0: keys[0] + b"\x02", 1: b"\x02" * 63, 5: keys[5]},
            round_number=3,
            server_digest=b"model-hash",
        ),
    ]
    assert base not in variants and len(set(variants)) == len(variants)


@pytest.mark.parametrize(
    ("advertised", "round_number"),
    [({-1: b"k"}, 0), ({"0": b"k"}, 0), ({0: "k"}, 0), ({0: b"k"}, -1), ({0: b"k"}, 1 << 64)],
)
def test_session_id_rejects_bad_inputs(advertised: dict[object, object], round_number: int) -> None:
    with pytest.raises(SecAggValueError):
        session_id(advertised, round_number=round_number, server_digest=b"")  # type: ignore[arg-type]


def test_random_seed() -> None:
    seeds = {random_seed() for _ in range(100)}
    assert len(seeds) == 100 and all(len(s) == 32 for s in seeds)
    assert len(random_seed(16)) == 16 and len(random_seed(64)) == 64
    for bad in (15, 65, 0, True):
        with pytest.raises(SecAggValueError):
            random_seed(bad)
