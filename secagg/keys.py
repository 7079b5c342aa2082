"""X25519 key agreement, HKDF-SHA256 key derivation and session identifiers.

A pairwise key is ``HKDF-SHA256(ikm = X25519(sk_A, pk_B), salt = context,
info = label || min(pk_A, pk_B) || max(pk_A, pk_B))``: both parties derive the same
32 bytes, the label separates uses (mask seed vs. share-encryption key) and the context
(normally :func:`session_id`) binds the key to one round of one session, so keys from a
different session, round or server-sent model are unrelated. Raw 32-byte keys only, no
PEM parsing on the hot path.

Python ``bytes`` cannot be wiped; secret bytes returned here live until garbage
collected. Keep them inside short-lived round state.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from secagg._secret import RefusesPickling, fingerprint
from secagg.errors import SecAggValueError
from secagg.kdf import hkdf_sha256

__all__ = [
    "MASK_SEED_LABEL",
    "PUBLIC_KEY_BYTES",
    "SESSION_LABEL",
    "SHARED_KEY_BYTES",
    "SHARE_KEY_LABEL",
    "AgreementKey",
    "derive_shared_key",
    "random_seed",
    "session_id",
]

PUBLIC_KEY_BYTES = 32
PRIVATE_KEY_BYTES = 32
SHARED_KEY_BYTES = 32
SESSION_LABEL = b"privagg/v1/session"
MASK_SEED_LABEL = b"privagg/v1/pairwise-mask-seed"
"""``label`` for deriving a pairwise mask seed from the masking key pair."""
SHARE_KEY_LABEL = b"privagg/v1/share-encryption-key"
"""``label`` for deriving a pairwise AES-256-GCM key from the encryption key pair."""
_MIN_SEED_BYTES = 16
_MAX_SEED_BYTES = 64


def _check_bytes(value: object, name: str) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise SecAggValueError(f"{name} must be bytes, got {type(value).__name__}")
    return bytes(value)


class AgreementKey(RefusesPickling):
    """An X25519 private key (masking or share-encryption key of one client).

    Its ``repr`` shows only a fingerprint of the public key; pickling raises ``TypeError``.
    """

    __slots__ = ("_private", "_public")

    def __init__(self, private_key: X25519PrivateKey) -> None:
        if not isinstance(private_key, X25519PrivateKey):
            raise SecAggValueError("AgreementKey wraps a cryptography X25519PrivateKey")
        self._private = private_key
        self._public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> AgreementKey:
        """A fresh key pair from the OS CSPRNG (via OpenSSL)."""
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> AgreementKey:
        """Rebuild a key from its 32 raw private bytes (e.g. after Shamir reconstruction)."""
        data = _check_bytes(data, "private key")
        if len(data) != PRIVATE_KEY_BYTES:
            raise SecAggValueError(
                f"an X25519 private key is {PRIVATE_KEY_BYTES} bytes, got {len(data)} bytes"
            )
        return cls(X25519PrivateKey.from_private_bytes(data))

    @property
    def public_bytes(self) -> bytes:
        """The 32-byte raw public key (safe to publish)."""
        return self._public

    def private_bytes_for_sharing(self) -> bytes:
        """The 32 raw private bytes, for Shamir-sharing the masking key. Handle as a secret."""
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def _exchange(self, peer_public: bytes) -> bytes:
        peer_public = _check_bytes(peer_public, "peer public key")
        if len(peer_public) != PUBLIC_KEY_BYTES:
            raise SecAggValueError(
                f"an X25519 public key is {PUBLIC_KEY_BYTES} bytes, got {len(peer_public)} bytes"
            )
        try:
            return self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:
            # OpenSSL refuses an all-zero shared secret, i.e. a low-order peer point.
            raise SecAggValueError(
                "peer public key is a low-order X25519 point (shared secret would be zero)"
            ) from None

    def __repr__(self) -> str:
        return f"AgreementKey(public={fingerprint(self._public)})"


def derive_shared_key(
    private: AgreementKey, peer_public: bytes, *, label: bytes, context: bytes
) -> bytes:
    """Derive a 32-byte pairwise key, identical on both sides of the pair.

    ``HKDF-SHA256(ikm = X25519(private, peer_public), salt = context,
    info = label || min(pk_self, pk_peer) || max(pk_self, pk_peer))``. Use distinct labels
    for distinct purposes and the round's :func:`session_id` as ``context``. Wrong-length
    or low-order peer keys raise :class:`SecAggValueError`.
    """
    if not isinstance(private, AgreementKey):
        raise SecAggValueError(f"private must be an AgreementKey, got {type(private).__name__}")
    label = _check_bytes(label, "label")
    context = _check_bytes(context, "context")
    if not label:
        raise SecAggValueError("label must be non-empty (it separates key purposes)")
    shared = private._exchange(peer_public)
    low, high = sorted((private.public_bytes, bytes(peer_public)))
    return hkdf_sha256(shared, salt=context, info=label + low + high, length=SHARED_KEY_BYTES)


def _u64(value: object, name: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise SecAggValueError(f"{name} must be an int in [0, 2^64), got {value!r}")
    return value.to_bytes(8, "big")


def _prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data


def session_id(
    advertised: Mapping[int, bytes], *, round_number: int, server_digest: bytes
) -> bytes:
    """32-byte SHA-256 session identifier binding keys, round and server-sent content.

    Hashes a canonical, length-prefixed encoding of the label, the (client id, advertised
    key bytes) pairs sorted by id, ``round_number`` and ``server_digest`` (a digest of
    what the server sent: model, config). Any difference in any input changes the id.
    """
    server_digest = _check_bytes(server_digest, "server_digest")
    h = hashlib.sha256(_prefixed(SESSION_LABEL))
    # Big-endian fixed-width ids sort like the integers they encode.
    entries = sorted(
        (_u64(client_id, "client id"), _check_bytes(key, f"advertised key of {client_id!r}"))
        for client_id, key in advertised.items()
    )
    h.update(_u64(len(entries), "number of clients"))
    for encoded_id, key_bytes in entries:
        h.update(encoded_id)
        h.update(_prefixed(key_bytes))
    h.update(_u64(round_number, "round_number"))
    h.update(_prefixed(server_digest))
    return h.digest()


def random_seed(nbytes: int = 32) -> bytes:
    """``nbytes`` (16..64) fresh bytes from the OS CSPRNG (``secrets``)."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int):
        raise SecAggValueError(f"nbytes must be an int, got {type(nbytes).__name__}")
    if not _MIN_SEED_BYTES <= nbytes <= _MAX_SEED_BYTES:
        raise SecAggValueError(
            f"seeds must be {_MIN_SEED_BYTES} to {_MAX_SEED_BYTES} bytes, got {nbytes}"
        )
    return secrets.token_bytes(nbytes)
