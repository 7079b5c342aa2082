"""AES-256-GCM share encryption and Ed25519 signatures: round trips, tampering, replay."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import (
    AEAD_OVERHEAD_BYTES,
    DecryptionError,
    SecAggValueError,
    SignatureError,
    SigningKey,
    encode_associated_data,
    open_sealed,
    seal,
    verify_signature,
)

KEY = bytes(range(32))


def ad(
    *,
    round_number: int = 1,
    session: bytes = b"S" * 32,
    sender: int = 3,
    receiver: int = 7,
    label: bytes = b"privagg/v1/shares",
) -> bytes:
    return encode_associated_data(
        label=label, session=session, round_number=round_number, sender=sender, receiver=receiver
    )


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=64))
def test_round_trip_and_fresh_nonces(plaintext: bytes, associated: bytes) -> None:
    first = seal(KEY, plaintext, associated_data=associated)
    second = seal(KEY, plaintext, associated_data=associated)
    assert len(first) == len(plaintext) + AEAD_OVERHEAD_BYTES
    assert first != second  # a fresh random nonce per message
    assert open_sealed(KEY, first, associated_data=associated) == plaintext
    assert open_sealed(KEY, second, associated_data=associated) == plaintext


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_flipped_bit_is_detected(data: st.DataObject) -> None:
    sealed = bytearray(seal(KEY, b"share payload " * 4, associated_data=ad()))
    position = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    sealed[position] ^= 1 << bit
    with pytest.raises(DecryptionError):
        open_sealed(KEY, bytes(sealed), associated_data=ad())


def test_replay_into_another_round_session_or_pair_fails() -> None:
    sealed = seal(KEY, b"share", associated_data=ad())
    assert open_sealed(KEY, sealed, associated_data=ad()) == b"share"
    for wrong in (
        ad(round_number=2),
        ad(session=b"T" * 32),
        ad(sender=7, receiver=3),
        ad(sender=4),
        ad(label=b"privagg/v1/other"),
        b"",
    ):
        with pytest.raises(DecryptionError, match="authentication failed"):
            open_sealed(KEY, sealed, associated_data=wrong)
    with pytest.raises(DecryptionError):
        open_sealed(os.urandom(32), sealed, associated_data=ad())


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=80))
def test_garbage_ciphertexts_raise_only_decryption_error(garbage: bytes) -> None:
    with pytest.raises(DecryptionError):
        open_sealed(KEY, garbage, associated_data=b"")


def test_short_or_truncated_ciphertexts() -> None:
    sealed = seal(KEY, b"x", associated_data=b"")
    for bad in (b"", sealed[: AEAD_OVERHEAD_BYTES - 1], sealed[:-1], sealed + b"\x00"):
        with pytest.raises(DecryptionError):
            open_sealed(KEY, bad, associated_data=b"")
    with pytest.raises(DecryptionError):
        open_sealed(KEY, "text", associated_data=b"")  # type: ignore[arg-type]


def test_associated_data_encoding_is_injective() -> None:
    assert ad(session=b"ab", label=b"c") != ad(session=b"b", label=b"ca")
    assert ad(sender=1, receiver=2) != ad(sender=2, receiver=1)
    with pytest.raises(SecAggValueError):
        ad(sender=-1)
    with pytest.raises(SecAggValueError):
        ad(round_number=True)


@pytest.mark.parametrize("key", [bytes(16), bytes(31), "k" * 32, None])
def test_bad_keys_are_argument_errors(key: object) -> None:
    with pytest.raises(SecAggValueError, match="32 bytes"):
        seal(key, b"x", associated_data=b"")  # type: ignore[arg-type]
    with pytest.raises(SecAggValueError, match="32 bytes"):
        open_sealed(key, bytes(40), associated_data=b"")  # type: ignore[arg-type]


RFC8032_TEST_1 = {
    "secret": "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    "public": "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    "signature": "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
}


def test_rfc8032_test_1() -> None:
    key = SigningKey.from_private_bytes(bytes.fromhex(RFC8032_TEST_1["secret"]))
    assert key.public_bytes.hex() == RFC8032_TEST_1["public"]
    assert key.sign(b"").hex() == RFC8032_TEST_1["signature"]
    verify_signature(key.public_bytes, b"", bytes.fromhex(RFC8032_TEST_1["signature"]))


def test_sign_verify_and_rejections() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    message = b"round 4 survivors: 0,1,2,5"
    signature = key.sign(message)
    assert len(signature) == 64 and len(key.public_bytes) == 32
    verify_signature(key.public_bytes, message, signature)
    tampered = bytearray(signature)
    tampered[10] ^= 1
    cases = [
        (key.public_bytes, message + b",6", signature),
        (other.public_bytes, message, signature),
        (key.public_bytes, message, bytes(tampered)),
        (key.public_bytes, message, signature[:63]),
        (key.public_bytes[:31], message, signature),
        (b"\xff" * 32, message, signature),  # not a valid curve point encoding
        (key.public_bytes, "text", signature),
    ]
    for public, msg, sig in cases:
        with pytest.raises(SignatureError):
            verify_signature(public, msg, sig)  # type: ignore[arg-type]
    with pytest.raises(SecAggValueError):
        key.sign("text")  # type: ignore[arg-type]
    with pytest.raises(SecAggValueError):
        SigningKey.from_private_bytes(bytes(31))
