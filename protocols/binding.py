"""Domain-separation labels and the exact bytes that get signed, encrypted or hashed.

Every derived key and every signed or authenticated string starts with its own label,
so a value produced for one purpose can never be accepted for another: the pairwise mask
seed and the share-encryption key come from different HKDF labels (revealing a dropped
client's masking key never opens its share ciphertexts), both use the session id as HKDF
salt, and share ciphertexts authenticate (session, round, sender, receiver).

Share commitments. A dealer reveals nothing new by committing to each share it deals:
for holder v and each share kind it publishes ``SHA-256(label_kind || session || dealer ||
holder || nonce || share)`` with a fresh 16-byte nonce that travels to v only inside the
encrypted plaintext (the pair nonce || share is the *opening*). The commitments ride in
front of the ciphertext, authenticated as associated data, so the server stores exactly
what the holder checked. At unmasking the holder reveals the opening of the one kind
asked for; the server can then tell a holder that lies (opening does not match) from a
dealer that dealt an inconsistent share (opening matches, share off the polynomial).
Binding rests on SHA-256 collision resistance, hiding on the secret nonce.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

import numpy as np

import secagg
from protocols.errors import DecodeError

__all__ = [
    "ADVERTISE_LABEL",
    "COMMITMENTS_BYTES",
    "COMMITMENT_BYTES",
    "CONSISTENCY_LABEL",
    "KEY_COMMITMENT_LABEL",
    "MASK_KEY_LABEL",
    "OPENING_NONCE_BYTES",
    "PAIRWISE_MASK_DOMAIN",
    "SEED_COMMITMENT_LABEL",
    "SELF_MASK_DOMAIN",
    "SHARE_AD_LABEL",
    "SHARE_KEY_LABEL",
    "ShareAssociatedData",
    "advertise_payload",
    "consistency_payload",
    "new_opening",
    "opening_commitment",
    "pack_share_plaintext",
    "round_session_id",
    "share_associated_data",
    "share_commitments",
    "share_of_opening",
    "split_committed_ciphertext",
    "unpack_share_plaintext",
]

SHARE_KEY_LABEL = b"privagg/v1/share-encryption-key"
MASK_KEY_LABEL = b"privagg/v1/pairwise-mask-seed"
SELF_MASK_DOMAIN = b"privagg/v1/self-mask"
PAIRWISE_MASK_DOMAIN = b"privagg/v1/pairwise-mask"
SHARE_AD_LABEL = b"privagg/v1/share-ciphertext"
ADVERTISE_LABEL = b"privagg/v1/advertise-keys"
CONSISTENCY_LABEL = b"privagg/v1/consistency-check"
SERVER_VIEW_LABEL = b"privagg/v1/server-view"

SEED_COMMITMENT_LABEL = b"privagg/v1/share-commitment/self-mask-seed"
KEY_COMMITMENT_LABEL = b"privagg/v1/share-commitment/masking-key"
OPENING_NONCE_BYTES = 16
COMMITMENT_BYTES = 32
COMMITMENTS_BYTES = 2 * COMMITMENT_BYTES
"""Both commitments (seed share, key share) in front of each share ciphertext."""

_IDS = struct.Struct("<II")
_LEN = struct.Struct("<I")
_MAX_SHARE_BYTES = 1024


def advertise_payload(
    *, round_number: int, setup_digest: bytes, sender: int, enc_public: bytes, mask_public: bytes
) -> bytes:
    """What a client signs in round 0 (malicious-server mode): its keys in this setup."""
    return b"".join(
        (
            ADVERTISE_LABEL,
            round_number.to_bytes(8, "little"),
            setup_digest,
            sender.to_bytes(4, "little"),
            enc_public,
            mask_public,
        )
    )


def round_session_id(round_number: int, setup_digest: bytes, directory_bytes: bytes) -> bytes:
    """The session id: :func:`secagg.session_id` over everything the server sent.

    The canonical encoding of the key directory (every advertised key, in id order, with
    its signature) is hashed together with the setup digest into ``server_digest``; one
    SHA-256 pass over the directory bytes replaces a per-entry Python loop, which matters
    when each of n clients hashes n keys (SecAgg+ with n in the thousands). It binds
    exactly the same data as passing the keys one by one.
    """
    view = hashlib.sha256(SERVER_VIEW_LABEL + setup_digest + directory_bytes).digest()
    return secagg.session_id({}, round_number=round_number, server_digest=view)


def consistency_payload(session: bytes, survivors: Iterable[int]) -> bytes:
    """What a client signs in the consistency round: the session and the sorted U3."""
    ids = np.asarray(sorted(survivors), dtype="<u4")
    return CONSISTENCY_LABEL + session + len(ids).to_bytes(4, "little") + ids.tobytes()


def share_associated_data(session: bytes, round_number: int, sender: int, receiver: int) -> bytes:
    """Associated data of the share ciphertext ``sender`` -> ``receiver``."""
    return secagg.encode_associated_data(
        label=SHARE_AD_LABEL,
        session=session,
        round_number=round_number,
        sender=sender,
        receiver=receiver,
    )


class ShareAssociatedData:
    """:func:`share_associated_data` for one session, without re-encoding its prefix.

    A client builds 2(n - 1) of these strings per round. The canonical encoding of
    :func:`secagg.encode_associated_data` ends with sender and receiver as big-endian
    u64, so the common prefix is computed once; the constructor checks the shortcut
    against the reference encoding, so a format change fails loudly, never silently.
    """

    _IDS = struct.Struct(">QQ")

    def __init__(self, session: bytes, round_number: int) -> None:
        reference = share_associated_data(session, round_number, 1, 2)
        self._prefix = reference[: -self._IDS.size]
        if self(1, 2) != reference:  # pragma: no cover - guards a secagg format change
            raise RuntimeError("secagg associated-data layout changed")

    def __call__(self, sender: int, receiver: int) -> bytes:
        return self._prefix + self._IDS.pack(sender, receiver)


def pack_share_plaintext(sender: int, receiver: int, seed_share: bytes, key_share: bytes) -> bytes:
    """sender · receiver · len · self-mask-seed share · len · masking-key share."""
    return b"".join(
        (
            _IDS.pack(sender, receiver),
            _LEN.pack(len(seed_share)),
            seed_share,
            _LEN.pack(len(key_share)),
            key_share,
        )
    )


def unpack_share_plaintext(data: bytes) -> tuple[int, int, bytes, bytes]:
    """Strict inverse of :func:`pack_share_plaintext`; :class:`DecodeError` otherwise."""
    try:
        sender, receiver = _IDS.unpack_from(data, 0)
        offset = _IDS.size
        parts = []
        for _ in range(2):
            (size,) = _LEN.unpack_from(data, offset)
            offset += _LEN.size
            if size > _MAX_SHARE_BYTES or offset + size > len(data):
                raise DecodeError("share plaintext truncated or oversized")
            parts.append(data[offset : offset + size])
            offset += size
    except struct.error:
        raise DecodeError("share plaintext truncated") from None
    if offset != len(data):
        raise DecodeError("trailing bytes in share plaintext")
    return int(sender), int(receiver), parts[0], parts[1]


def new_opening(share: bytes) -> bytes:
    """The opening of one share: a fresh nonce from the OS CSPRNG followed by the share."""
    return secagg.random_seed(OPENING_NONCE_BYTES) + share


def opening_commitment(
    label: bytes, session: bytes, dealer: int, holder: int, opening: bytes
) -> bytes:
    """The commitment to ``opening`` dealt by ``dealer`` to ``holder`` (see module doc)."""
    return hashlib.sha256(b"".join((label, session, _IDS.pack(dealer, holder), opening))).digest()


def share_commitments(
    session: bytes, dealer: int, holder: int, seed_opening: bytes, key_opening: bytes
) -> bytes:
    """Seed-share commitment || key-share commitment, as sent in front of the ciphertext."""
    return opening_commitment(
        SEED_COMMITMENT_LABEL, session, dealer, holder, seed_opening
    ) + opening_commitment(KEY_COMMITMENT_LABEL, session, dealer, holder, key_opening)


def split_committed_ciphertext(data: bytes) -> tuple[bytes, bytes]:
    """(commitments, sealed share plaintext); :class:`DecodeError` if too short."""
    if len(data) <= COMMITMENTS_BYTES:
        raise DecodeError("share ciphertext too short to hold its commitments")
    return data[:COMMITMENTS_BYTES], data[COMMITMENTS_BYTES:]


def share_of_opening(opening: bytes) -> bytes:
    """The share encoding inside an opening (the nonce stripped); :class:`DecodeError` if short."""
    if len(opening) <= OPENING_NONCE_BYTES:
        raise DecodeError("share opening too short")
    return opening[OPENING_NONCE_BYTES:]
