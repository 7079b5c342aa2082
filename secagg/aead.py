"""Authenticated encryption of Shamir shares: AES-256-GCM with bound associated data.

``seal`` draws a fresh 96-bit nonce from the OS CSPRNG per message and prepends it; with
random nonces one key can safely seal up to 2^32 messages, far above the one message per
(pair, round) the protocols need. The associated data should come from
:func:`encode_associated_data`, which binds purpose, session, round, sender and receiver,
so a ciphertext replayed into another round, session or pair fails to open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secagg.errors import DecryptionError, SecAggValueError

__all__ = [
    "AEAD_KEY_BYTES",
    "AEAD_OVERHEAD_BYTES",
    "encode_associated_data",
    "open_sealed",
    "seal",
]

AEAD_KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
AEAD_OVERHEAD_BYTES = NONCE_BYTES + TAG_BYTES


def _check_key(key: object) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != AEAD_KEY_BYTES:
        raise SecAggValueError(f"an AES-256-GCM key must be {AEAD_KEY_BYTES} bytes")
    return bytes(key)


def _check_bytes(value: object, name: str) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise SecAggValueError(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)


def seal(key: bytes, plaintext: bytes, *, associated_data: bytes) -> bytes:
    """Encrypt and authenticate: ``nonce (12 B) || AES-256-GCM(plaintext) || tag (16 B)``."""
    aesgcm = AESGCM(_check_key(key))
    plaintext = _check_bytes(plaintext, "plaintext")
    associated_data = _check_bytes(associated_data, "associated_data")
    nonce = os.urandom(NONCE_BYTES)
    return nonce + aesgcm.encrypt(nonce, plaintext, associated_data)


def open_sealed(key: bytes, ciphertext: bytes, *, associated_data: bytes) -> bytes:
    """Inverse of :func:`seal`; any failure (short input included) is :class:`DecryptionError`."""
    aesgcm = AESGCM(_check_key(key))
    associated_data = _check_bytes(associated_data, "associated_data")
    if not isinstance(ciphertext, bytes | bytearray):
        raise DecryptionError("ciphertext must be bytes")
    if len(ciphertext) < AEAD_OVERHEAD_BYTES:
        raise DecryptionError(
            f"ciphertext is {len(ciphertext)} bytes, shorter than nonce + tag "
            f"({AEAD_OVERHEAD_BYTES} bytes)"
        )
    nonce = bytes(ciphertext[:NONCE_BYTES])
    try:
        return aesgcm.decrypt(nonce, bytes(ciphertext[NONCE_BYTES:]), associated_data)
    except InvalidTag:
        raise DecryptionError(
            "authentication failed: wrong key, tampered ciphertext or wrong associated data"
        ) from None


def _u64(value: object, name: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise SecAggValueError(f"{name} must be an int in [0, 2^64), got {value!r}")
    return value.to_bytes(8, "big")


def encode_associated_data(
    *, label: bytes, session: bytes, round_number: int, sender: int, receiver: int
) -> bytes:
    """Canonical associated data: length-prefixed label and session, then round, sender, receiver.

    The encoding is injective, so two different tuples never produce the same bytes.
    """
    label = _check_bytes(label, "label")
    session = _check_bytes(session, "session")
    return b"".join(
        (
            len(label).to_bytes(8, "big"),
            label,
            len(session).to_bytes(8, "big"),
            session,
            _u64(round_number, "round_number"),
            _u64(sender, "sender"),
            _u64(receiver, "receiver"),
        )
    )
