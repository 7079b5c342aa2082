"""Ed25519 signatures for the consistency-check round (and signed key advertisements)."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from secagg._secret import RefusesPickling, fingerprint
from secagg.errors import SecAggValueError, SignatureError

__all__ = ["SIGNATURE_BYTES", "VERIFY_KEY_BYTES", "SigningKey", "verify_signature"]

VERIFY_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_PRIVATE_KEY_BYTES = 32


class SigningKey(RefusesPickling):
    """An Ed25519 private key. ``repr`` shows a public-key fingerprint; pickling raises."""

    __slots__ = ("_private", "_public")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise SecAggValueError("SigningKey wraps a cryptography Ed25519PrivateKey")
        self._private = private_key
        self._public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key from the OS CSPRNG (via OpenSSL)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> SigningKey:
        """Rebuild a key from its 32-byte RFC 8032 seed."""
        if not isinstance(data, bytes | bytearray) or len(data) != _PRIVATE_KEY_BYTES:
            raise SecAggValueError(f"an Ed25519 private key is {_PRIVATE_KEY_BYTES} bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(bytes(data)))

    @property
    def public_bytes(self) -> bytes:
        """The 32-byte raw verification key."""
        return self._public

    def sign(self, message: bytes) -> bytes:
        """Deterministic 64-byte Ed25519 signature of ``message``."""
        if not isinstance(message, bytes | bytearray):
            raise SecAggValueError(f"message must be bytes, got {type(message).__name__}")
        return self._private.sign(bytes(message))

    def __repr__(self) -> str:
        return f"SigningKey(public={fingerprint(self._public)})"


def verify_signature(public_bytes: bytes, message: bytes, signature: bytes) -> None:
    """Return if ``signature`` is valid for ``message`` under ``public_bytes``.

    Every failure, including a malformed key or signature, raises :class:`SignatureError`,
    so callers handle one error for anything a peer may have forged.
    """
    if not isinstance(public_bytes, bytes | bytearray) or len(public_bytes) != VERIFY_KEY_BYTES:
        raise SignatureError(f"an Ed25519 public key must be {VERIFY_KEY_BYTES} bytes")
    if not isinstance(signature, bytes | bytearray) or len(signature) != SIGNATURE_BYTES:
        raise SignatureError(f"an Ed25519 signature must be {SIGNATURE_BYTES} bytes")
    if not isinstance(message, bytes | bytearray):
        raise SignatureError("message must be bytes")
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public_bytes)).verify(
            bytes(signature), bytes(message)
        )
    except (InvalidSignature, ValueError):
        raise SignatureError("invalid Ed25519 signature") from None
