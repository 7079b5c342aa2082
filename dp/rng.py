"""Randomness for DP noise: a secure default and an explicitly non-secure simulation twin.

Every random bit that a privacy claim rests on (noise, randomized rounding) comes from a
:class:`NoiseRng`. Both implementations expose the same primitive, uniform 64-bit words,
and the samplers build everything else from those words with exact arithmetic.

* :class:`SecureRng` (the default) is AES-256 in counter mode over an all-zero plaintext,
  keyed with ``os.urandom(32)``; it rekeys from the OS every :data:`RESEED_BYTES` bytes and
  after ``fork`` (a child must never replay its parent's stream). It accepts **no seed**:
  passing one raises :class:`~dp.errors.InsecureRandomnessError`. It refuses pickling and
  its ``repr`` shows no key material. Global seeds (``numpy``, ``torch``) cannot affect it.
* :class:`SimulationRng` is numpy's PCG64 with a seed, for tests and reproducible
  simulations only. It reports ``secure = False``, which every mechanism copies into its
  privacy event, and it emits :class:`NonSecureRandomnessWarning` once per instance.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any, NoReturn, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dp.errors import DPValueError, InsecureRandomnessError

__all__ = [
    "RESEED_BYTES",
    "NoiseRng",
    "NonSecureRandomnessWarning",
    "SecureRng",
    "SimulationRng",
    "default_rng",
]

RESEED_BYTES = 1 << 30
"""Keystream bytes drawn under one AES key before :class:`SecureRng` rekeys from the OS."""

_CHUNK_WORDS = 1 << 15  # 256 KiB of keystream per cipher call: stays in L2 cache
_ZEROS = memoryview(bytes(_CHUNK_WORDS * 8))
_LITTLE_ENDIAN = sys.byteorder == "little"


class NonSecureRandomnessWarning(UserWarning):
    """A seeded, non-cryptographic generator produced DP noise (simulation only)."""


@runtime_checkable
class NoiseRng(Protocol):
    """Source of uniform 64-bit words for DP noise; ``secure`` is copied into privacy events."""

    @property
    def secure(self) -> bool:
        """True only for a CSPRNG that cannot be seeded."""
        ...

    def words(self, n: int) -> npt.NDArray[np.uint64]:
        """``n`` independent uniform words in [0, 2^64)."""
        ...

    def word(self) -> int:
        """One uniform word in [0, 2^64) as a Python int (for the rare exact slow paths)."""
        ...


def _check_count(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or int(n) < 0:
        raise DPValueError(f"word count must be a non-negative int, got {n!r}")
    return int(n)


class SecureRng:
    """CSPRNG for DP noise: AES-256-CTR keystream keyed from ``os.urandom``; takes no seed.

    Passing any argument (a seed) raises :class:`InsecureRandomnessError`: a seeded noise
    generator makes the noise predictable to whoever knows the seed, which voids DP.
    """

    __slots__ = ("_cipher", "_drawn", "_pid")

    def __init__(self, *args: object, **kwargs: object) -> None:
        if args or kwargs:
            raise InsecureRandomnessError(
                "SecureRng takes no seed: DP noise must be unpredictable. Use "
                "SimulationRng(seed) for reproducible, explicitly non-secure simulations."
            )
        self._rekey()

    def _rekey(self) -> None:
        key = os.urandom(32)
        self._cipher = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._drawn = 0
        self._pid = os.getpid()

    @property
    def secure(self) -> bool:
        return True

    def words(self, n: int) -> npt.NDArray[np.uint64]:
        n = _check_count(n)
        if os.getpid() != self._pid:  # forked: never share the parent's keystream
            self._rekey()
        out = np.empty(n, dtype=np.uint64)
        raw = out.view(np.uint8)
        done = 0
        while done < n:
            if self._drawn >= RESEED_BYTES:
                self._rekey()
            take = min(_CHUNK_WORDS, n - done, (RESEED_BYTES - self._drawn + 7) // 8)
            nbytes = take * 8
            raw[done * 8 : done * 8 + nbytes] = np.frombuffer(
                self._cipher.update(_ZEROS[:nbytes]), dtype=np.uint8
            )
            self._drawn += nbytes
            done += take
        if not _LITTLE_ENDIAN:  # pragma: no cover - byte order only changes which word is which
            out.byteswap(inplace=True)
        return out

    def word(self) -> int:
        return int(self.words(1)[0])

    def __repr__(self) -> str:
        return "SecureRng(<os.urandom-keyed AES-256-CTR>)"

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("SecureRng holds a secret key and cannot be pickled")

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecureRng holds a secret key and cannot be pickled")

    def __copy__(self) -> NoReturn:
        raise TypeError("SecureRng cannot be copied: a copy would replay the same noise")

    def __deepcopy__(self, memo: dict[int, Any]) -> NoReturn:
        raise TypeError("SecureRng cannot be copied: a copy would replay the same noise")


class SimulationRng:
    """Seeded, **non-secure** generator (numpy PCG64) for tests and reproducible simulations.

    Events produced with it carry ``secure=False``; a :class:`NonSecureRandomnessWarning` is
    issued the first time it produces randomness.
    """

    __slots__ = ("_bitgen", "_seed", "_warned")

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise DPValueError(f"SimulationRng seed must be a non-negative int, got {seed!r}")
        self._seed = int(seed)
        self._bitgen = np.random.PCG64(self._seed)
        self._warned = False

    @property
    def secure(self) -> bool:
        return False

    def _warn_once(self) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(
                "SimulationRng is a seeded, non-cryptographic generator: the DP noise it "
                "produces is NOT secure and its privacy events are marked secure=False",
                NonSecureRandomnessWarning,
                stacklevel=3,
            )

    def words(self, n: int) -> npt.NDArray[np.uint64]:
        n = _check_count(n)
        self._warn_once()
        out: npt.NDArray[np.uint64] = self._bitgen.random_raw(n).astype(np.uint64, copy=False)
        return out

    def word(self) -> int:
        self._warn_once()
        return int(self._bitgen.random_raw())

    def __repr__(self) -> str:
        return f"SimulationRng(seed={self._seed}, secure=False)"


def default_rng(rng: NoiseRng | None) -> NoiseRng:
    """``rng`` itself, or a fresh :class:`SecureRng` when ``None`` (secure by default)."""
    if rng is None:
        return SecureRng()
    if not isinstance(rng, NoiseRng):
        raise DPValueError(f"rng must be a NoiseRng, got {type(rng).__name__}")
    return rng
