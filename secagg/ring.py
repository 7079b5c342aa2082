"""Arithmetic in the ring Z_{2^bits} on numpy arrays.

Elements are stored as ``uint32`` (``bits <= 32``) or ``uint64`` (``33 <= bits <= 62``).
Because 2^bits divides the carrier's modulus 2^32 or 2^64, numpy's wrap-around integer
arithmetic followed by a mask with ``2^bits - 1`` is exact modular arithmetic, so every
operation is one or two vectorized numpy calls and never loops over coordinates. Inputs
need not be reduced: results are always the correct residue of the inputs' values.
The 62-bit ceiling keeps every centered value and every quantization intermediate inside
``int64``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from secagg.errors import SecAggValueError

__all__ = [
    "MAX_BITS",
    "MIN_BITS",
    "RingArray",
    "centered_lift",
    "check_bits",
    "ring_add",
    "ring_dtype",
    "ring_mask",
    "ring_neg",
    "ring_sub",
    "ring_sum",
    "to_ring",
]

MIN_BITS = 1
MAX_BITS = 62

RingArray: TypeAlias = npt.NDArray[np.unsignedinteger[Any]]
"""A ``uint32`` or ``uint64`` array holding elements of Z_{2^bits}."""


def check_bits(bits: int) -> int:
    """Return ``bits`` if it is an int in [1, 62], else raise :class:`SecAggValueError`."""
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer):
        raise SecAggValueError(f"bits must be an int, got {type(bits).__name__}")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise SecAggValueError(f"bits must be in [{MIN_BITS}, {MAX_BITS}], got {int(bits)}")
    return int(bits)


def ring_dtype(bits: int) -> np.dtype[np.unsignedinteger[Any]]:
    """Carrier dtype of Z_{2^bits}: ``uint32`` for bits <= 32, ``uint64`` up to 62."""
    return np.dtype(np.uint32) if check_bits(bits) <= 32 else np.dtype(np.uint64)


def ring_mask(bits: int) -> int:
    """The integer 2^bits - 1 (the largest ring element)."""
    return (1 << check_bits(bits)) - 1


def _needs_mask(bits: int) -> bool:
    return bits not in (32, 64)


def _check_ring_array(a: object, bits: int, name: str) -> RingArray:
    dtype = ring_dtype(bits)
    if not isinstance(a, np.ndarray) or a.dtype != dtype:
        got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
        raise SecAggValueError(
            f"{name} must be a numpy array of dtype {dtype} for bits={bits} "
            f"(got {got}); convert with secagg.to_ring"
        )
    return a


def _check_out(out: RingArray | None, bits: int) -> None:
    if out is not None:
        _check_ring_array(out, bits, "out")


def to_ring(values: npt.ArrayLike, bits: int) -> RingArray:
    """Reduce an integer array (signed or unsigned, any width) modulo 2^bits.

    Negative values map to their residue (``-1`` becomes ``2^bits - 1``). Float, bool and
    object (Python big int) inputs raise :class:`SecAggValueError` instead of being rounded.
    """
    dtype = ring_dtype(bits)
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise SecAggValueError(
            f"to_ring needs an integer array, got dtype {arr.dtype}; quantize floats first"
        )
    # C integer conversion to an unsigned type is reduction mod 2^(8*itemsize), and
    # 2^bits divides that modulus, so the mask below finishes the reduction exactly.
    ring = arr.astype(dtype, casting="unsafe", copy=True)
    if _needs_mask(bits):
        np.bitwise_and(ring, dtype.type(ring_mask(bits)), out=ring)
    return ring


def _reduce(result: RingArray, bits: int) -> RingArray:
    if _needs_mask(bits):
        np.bitwise_and(result, result.dtype.type(ring_mask(bits)), out=result)
    return result


def ring_add(a: RingArray, b: RingArray, bits: int, *, out: RingArray | None = None) -> RingArray:
    """Return ``(a + b) mod 2^bits`` (into ``out`` if given; ``out`` may alias ``a``)."""
    _check_ring_array(a, bits, "a")
    _check_ring_array(b, bits, "b")
    _check_out(out, bits)
    return _reduce(np.add(a, b, out=out), bits)


def ring_sub(a: RingArray, b: RingArray, bits: int, *, out: RingArray | None = None) -> RingArray:
    """Return ``(a - b) mod 2^bits`` (into ``out`` if given; ``out`` may alias ``a``)."""
    _check_ring_array(a, bits, "a")
    _check_ring_array(b, bits, "b")
    _check_out(out, bits)
    return _reduce(np.subtract(a, b, out=out), bits)


def ring_neg(a: RingArray, bits: int, *, out: RingArray | None = None) -> RingArray:
    """Return ``(-a) mod 2^bits`` (into ``out`` if given)."""
    _check_ring_array(a, bits, "a")
    _check_out(out, bits)
    return _reduce(np.subtract(a.dtype.type(0), a, out=out), bits)


def ring_sum(
    matrix: RingArray | Sequence[RingArray], bits: int, *, out: RingArray | None = None
) -> RingArray:
    """Exact sum mod 2^bits over axis 0 of an ``(n, d)`` ring array (or a sequence of them).

    The carrier's wrap-around accumulation is exact modulo 2^bits for any n, so no
    widening is needed. A sequence of equally shaped arrays is summed without stacking.
    """
    dtype = ring_dtype(bits)
    if isinstance(matrix, np.ndarray):
        _check_ring_array(matrix, bits, "matrix")
        if matrix.ndim < 1 or matrix.shape[0] == 0:
            raise SecAggValueError("ring_sum needs at least one summand along axis 0")
        _check_out(out, bits)
        return _reduce(np.sum(matrix, axis=0, dtype=dtype, out=out), bits)
    summands = list(matrix)
    if not summands:
        raise SecAggValueError("ring_sum needs at least one summand")
    for index, summand in enumerate(summands):
        _check_ring_array(summand, bits, f"summand {index}")
        if summand.shape != summands[0].shape:
            raise SecAggValueError(
                f"summand {index} has shape {summand.shape}, expected {summands[0].shape}"
            )
    _check_out(out, bits)
    if out is None:
        total = summands[0].copy()
    else:
        np.copyto(out, summands[0])
        total = out
    for summand in summands[1:]:
        np.add(total, summand, out=total)
    return _reduce(total, bits)


def centered_lift(
    x: RingArray, bits: int, *, out: npt.NDArray[np.int64] | None = None
) -> npt.NDArray[np.int64]:
    """Map ring elements to signed ``int64`` representatives in [-2^(bits-1), 2^(bits-1)).

    This is the inverse of :func:`to_ring` on that interval: ``to_ring(centered_lift(x))``
    returns ``x`` and ``centered_lift(to_ring(v)) == v`` whenever ``v`` lies in it.
    """
    _check_ring_array(x, bits, "x")
    if out is not None and (not isinstance(out, np.ndarray) or out.dtype != np.int64):
        raise SecAggValueError("out must be an int64 numpy array")
    half = 1 << (bits - 1)
    lifted: npt.NDArray[np.int64]
    if out is None:
        lifted = x.astype(np.int64, casting="unsafe")
    else:
        np.copyto(out, x, casting="unsafe")
        lifted = out
    np.bitwise_and(lifted, ring_mask(bits), out=lifted)
    # Sign extension from bit (bits-1): v ^ half - half is v below half, v - 2^bits above.
    np.bitwise_xor(lifted, half, out=lifted)
    np.subtract(lifted, half, out=lifted)
    return lifted
