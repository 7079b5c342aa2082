"""Randomized Walsh–Hadamard rotation with a public seed ("flattening", Kairouz et al. 2021).

The rotation R = H·D/√d (D diagonal random signs, H the Walsh–Hadamard matrix) is
orthonormal, so it keeps L2 norms, and it spreads any vector's energy evenly over the
coordinates, which keeps the per-coordinate range (hence the ring size) small and makes
rounding errors isotropic. The signs are **public**: every client and the server must apply
the same rotation, and privacy never rests on them (the noise is what is secret). They are
derived with SHAKE-256 from the public round seed and a domain label, so they are identical
on every platform and numpy version. An adversary who knows the seed can only choose
updates that rotate badly (larger range, possible wrap-around of the sum); that is a
utility issue, and a malicious client can break utility anyway.

The transform is an iterative, vectorized fast Walsh–Hadamard transform: O(d log d), one
numpy pass per level, no Python loop over coordinates.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from dp.errors import DPValueError

__all__ = [
    "ROTATION_LABEL",
    "fwht",
    "inverse_rotate",
    "padded_dimension",
    "rotate",
    "rotation_signs",
]

ROTATION_LABEL = b"privagg/v1/dp/hadamard-signs"
FloatArray = npt.NDArray[np.float64]


def padded_dimension(d: int) -> int:
    """The smallest power of two ≥ ``d`` (the Hadamard transform needs one)."""
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise DPValueError(f"dimension must be a positive int, got {d!r}")
    return 1 << (d - 1).bit_length()


def _seed_bytes(seed: int | bytes) -> bytes:
    if isinstance(seed, bytes | bytearray):
        return bytes(seed)
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
        return seed.to_bytes(max(1, (seed.bit_length() + 7) // 8), "big")
    raise DPValueError("rotation_seed must be a non-negative int or bytes")


def rotation_signs(seed: int | bytes, d: int) -> FloatArray:
    """±1.0 signs for dimension ``d`` (a power of two), from SHAKE-256(label ‖ seed)."""
    material = _seed_bytes(seed)
    xof = hashlib.shake_256(ROTATION_LABEL + len(material).to_bytes(4, "big") + material)
    bits = np.unpackbits(np.frombuffer(xof.digest((d + 7) // 8), dtype=np.uint8))[:d]
    signs: FloatArray = 1.0 - 2.0 * bits.astype(np.float64)
    return signs


def fwht(x: FloatArray) -> FloatArray:
    """Unnormalized Walsh–Hadamard transform of the last axis (length a power of two).

    Radix-4 butterflies (two levels per pass over memory) between two ping-pong buffers.
    """
    d = x.shape[-1]
    if d < 1 or d & (d - 1):
        raise DPValueError(f"Hadamard length must be a power of two, got {d}")
    lead = x.shape[:-1]
    src = np.array(x, dtype=np.float64, copy=True).reshape(-1, d)
    dst = np.empty_like(src)
    rows = src.shape[0]
    h = 1
    if (d.bit_length() - 1) % 2:  # odd number of levels: one radix-2 pass first
        s2, t2 = src.reshape(rows, -1, 2, 1), dst.reshape(rows, -1, 2, 1)
        np.add(s2[:, :, 0], s2[:, :, 1], out=t2[:, :, 0])
        np.subtract(s2[:, :, 0], s2[:, :, 1], out=t2[:, :, 1])
        src, dst = dst, src
        h = 2
    p = np.empty((rows, d // 4)) if d >= 4 else src
    q = np.empty_like(p)
    while h < d:
        s4, t4 = src.reshape(rows, -1, 4, h), dst.reshape(rows, -1, 4, h)
        pv, qv = p.reshape(rows, -1, h), q.reshape(rows, -1, h)
        a, b, c, e = s4[:, :, 0], s4[:, :, 1], s4[:, :, 2], s4[:, :, 3]
        np.add(a, b, out=pv)
        np.add(c, e, out=qv)
        np.add(pv, qv, out=t4[:, :, 0])
        np.subtract(pv, qv, out=t4[:, :, 2])
        np.subtract(a, b, out=pv)
        np.subtract(c, e, out=qv)
        np.add(pv, qv, out=t4[:, :, 1])
        np.subtract(pv, qv, out=t4[:, :, 3])
        src, dst = dst, src
        h *= 4
    out: FloatArray = src.reshape(*lead, d)
    return out


def rotate(x: FloatArray, seed: int | bytes, scale: float = 1.0) -> FloatArray:
    """``scale``·R·x for a vector whose length is a power of two: H(D x)·scale/√d (the
    scaling is folded into the signs, so it costs no extra pass)."""
    d = x.shape[-1]
    out: FloatArray = fwht(x * (rotation_signs(seed, d) * (scale / np.sqrt(d))))
    return out


def inverse_rotate(y: FloatArray, seed: int | bytes) -> FloatArray:
    """Rᵀ·y = D·H(y)/√d (H is symmetric and H² = d·I)."""
    d = y.shape[-1]
    out: FloatArray = fwht(y) * (rotation_signs(seed, d) / np.sqrt(d))
    return out
