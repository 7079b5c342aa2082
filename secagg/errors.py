"""Exception hierarchy of :mod:`secagg`.

Every error raised on purpose by this package derives from :class:`SecAggError`; errors
about a bad argument also derive from :class:`ValueError` so generic callers can catch
them. Messages never contain key, seed, share or mask material.
"""

from __future__ import annotations

__all__ = [
    "DecryptionError",
    "OverflowBudgetError",
    "SecAggError",
    "SecAggValueError",
    "ShareError",
    "SignatureError",
]


class SecAggError(Exception):
    """Base class of every error raised by :mod:`secagg`."""


class SecAggValueError(SecAggError, ValueError):
    """An argument has the wrong type, length or range."""


class OverflowBudgetError(SecAggValueError):
    """A (sum of) quantized value(s) could wrap around the ring Z_{2^bits}."""


class ShareError(SecAggError):
    """Shamir shares are malformed, too few, duplicated, mixed or inconsistent."""


class DecryptionError(SecAggError):
    """Authenticated decryption failed: wrong key, tampered data or wrong associated data."""


class SignatureError(SecAggError):
    """An Ed25519 signature (or the public key / signature encoding) is invalid."""
