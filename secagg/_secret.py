"""Shared hygiene for objects that hold secret material.

Secret holders must never cross a pickle boundary (a Ray / multiprocessing queue, a cache
on disk) and must never print their secret. Copies return the same immutable object, so
``copy.deepcopy`` of a larger state does not fail yet never duplicates key material.
"""

from __future__ import annotations

import hashlib
from typing import Any, NoReturn, Self


def fingerprint(public_bytes: bytes) -> str:
    """Short, non-secret identifier of a public key: first 8 bytes of SHA-256, hex."""
    return hashlib.sha256(public_bytes).digest()[:8].hex()


class RefusesPickling:
    """Mixin: pickling raises ``TypeError``; (deep)copy returns ``self``."""

    __slots__ = ()

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds secret material and cannot be pickled")

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds secret material and cannot be pickled")

    def __getstate__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} holds secret material and cannot be pickled")

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self
