"""HKDF-SHA256 (RFC 5869), the single key-derivation function of :mod:`secagg`."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.errors import SecAggValueError

__all__ = ["hkdf_sha256"]

_MAX_OUTPUT_BYTES = 255 * 32  # RFC 5869: at most 255 hash-length blocks


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 extract-and-expand with SHA-256; an empty ``salt`` means 32 zero bytes."""
    if isinstance(length, bool) or not isinstance(length, int):
        raise SecAggValueError(f"length must be an int, got {type(length).__name__}")
    if not 1 <= length <= _MAX_OUTPUT_BYTES:
        raise SecAggValueError(f"HKDF-SHA256 output length must be 1..{_MAX_OUTPUT_BYTES}")
    for value, name in ((ikm, "ikm"), (salt, "salt"), (info, "info")):
        if not isinstance(value, bytes | bytearray):
            raise SecAggValueError(f"{name} must be bytes, got {type(value).__name__}")
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=bytes(salt), info=bytes(info)
    ).derive(bytes(ikm))
