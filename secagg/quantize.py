"""Float <-> ring quantization with an explicit overflow budget.

``quantize`` clips each coordinate to [-clip, clip], multiplies by ``scale`` and rounds
to a neighbouring integer at random, up with probability equal to the fractional part,
so the rounding is unbiased (E[q] = clip(x) * scale) and |q - clip(x) * scale| < 1.
The rounding bits come from an AES-CTR stream keyed by a fresh OS-CSPRNG seed, never
from numpy's global generator. Signed integers are stored in Z_{2^bits} by wrap-around;
``dequantize`` undoes this with the centered lift, which is correct as long as the true
integer sum stays inside [-2^(bits-1), 2^(bits-1)). :func:`check_sum_fits` proves that
before any data is processed. Stochastic rounding is not DP noise.

Error bound: for n clients with inputs inside [-clip, clip],
``|dequantize(sum of n quantized) - sum of inputs| < n / scale`` per coordinate.
"""

from __future__ import annotations

import math
import secrets

import numpy as np
import numpy.typing as npt

from secagg.errors import OverflowBudgetError, SecAggValueError
from secagg.prg import expand_mask
from secagg.ring import RingArray, centered_lift, check_bits, to_ring

__all__ = [
    "check_sum_fits",
    "dequantize",
    "max_quantized_abs",
    "quantize",
    "required_bits",
    "sum_error_bound",
]

_ROUNDING_DOMAIN = b"privagg/v1/quantize-rounding"
_UNIFORM_BITS = 53  # float64 mantissa: uniform draws in [0, 1) on a 2^-53 grid


def _positive_finite(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise SecAggValueError(f"{name} must be a real number, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result) or result <= 0:
        raise SecAggValueError(f"{name} must be positive and finite, got {result!r}")
    return result


def _non_negative_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise SecAggValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def max_quantized_abs(clip: float, scale: float) -> int:
    """Largest |q| that :func:`quantize` can output for these ``clip`` and ``scale``."""
    # quantize computes clip(x) * scale in float64, which is monotone, so no product
    # exceeds the float64 value of clip * scale; rounding up adds at most one ulp of 1.
    return math.ceil(_positive_finite(clip, "clip") * _positive_finite(scale, "scale"))


def required_bits(num_summands: int, max_abs_value: int) -> int:
    """Smallest ring width whose centered range holds a sum of that many such values."""
    num_summands = _non_negative_int(num_summands, "num_summands")
    max_abs_value = _non_negative_int(max_abs_value, "max_abs_value")
    return (num_summands * max_abs_value).bit_length() + 1


def check_sum_fits(*, num_summands: int, max_abs_value: int, bits: int) -> None:
    """Raise :class:`OverflowBudgetError` unless ``num_summands * max_abs_value < 2^(bits-1)``.

    Under that condition a sum of ``num_summands`` integers of magnitude at most
    ``max_abs_value`` lies strictly inside the centered range of Z_{2^bits}, so the
    modular sum lifts back to the exact integer sum: it cannot wrap. Call it before a
    round with the cohort size (not the neighbourhood size) and include any noise tail.
    """
    bits = check_bits(bits)
    if isinstance(num_summands, bool) or not isinstance(num_summands, int | np.integer):
        raise SecAggValueError(f"num_summands must be an int, got {num_summands!r}")
    if num_summands < 1:
        raise SecAggValueError(f"num_summands must be at least 1, got {int(num_summands)}")
    max_abs_value = _non_negative_int(max_abs_value, "max_abs_value")
    worst = int(num_summands) * max_abs_value
    limit = 1 << (bits - 1)
    if worst >= limit:
        raise OverflowBudgetError(
            f"a sum of {int(num_summands)} values of magnitude up to {max_abs_value} can "
            f"reach {worst}, outside the centered range |sum| < 2^{bits - 1} = {limit} of "
            f"Z_2^{bits}; need bits >= {required_bits(int(num_summands), max_abs_value)}, "
            f"or a smaller clip/scale, or fewer summands"
        )


def sum_error_bound(*, num_summands: int, scale: float) -> float:
    """Strict bound ``num_summands / scale`` on the per-coordinate error of a decoded sum.

    Holds for inputs inside [-clip, clip] (clipping error of larger inputs is extra).
    """
    if isinstance(num_summands, bool) or not isinstance(num_summands, int) or num_summands < 1:
        raise SecAggValueError(f"num_summands must be a positive int, got {num_summands!r}")
    return num_summands / _positive_finite(scale, "scale")


def _uniform01(size: int) -> npt.NDArray[np.float64]:
    words = expand_mask(secrets.token_bytes(32), size, bits=62, domain=_ROUNDING_DOMAIN)
    np.right_shift(words, np.uint64(62 - _UNIFORM_BITS), out=words)
    return words.astype(np.float64) * (2.0**-_UNIFORM_BITS)


def quantize(x: npt.ArrayLike, *, clip: float, scale: float, bits: int) -> RingArray:
    """Clip to [-clip, clip], scale, round at random without bias, and wrap into Z_{2^bits}.

    Raises :class:`SecAggValueError` for non-finite or non-real input and
    :class:`OverflowBudgetError` if even one quantized value could not be lifted back
    (``max_quantized_abs(clip, scale) >= 2^(bits-1)``).
    """
    bits = check_bits(bits)
    max_abs = max_quantized_abs(clip, scale)
    check_sum_fits(num_summands=1, max_abs_value=max_abs, bits=bits)
    values = np.asarray(x)
    if values.dtype.kind not in "biuf":
        raise SecAggValueError(f"x must be a real-valued array, got dtype {values.dtype}")
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise SecAggValueError("x contains NaN or infinity")
    clip_f, scale_f = float(clip), float(scale)
    scaled = np.clip(values, -clip_f, clip_f)
    np.multiply(scaled, scale_f, out=scaled)
    lower = np.floor(scaled)
    np.subtract(scaled, lower, out=scaled)  # fractional part in [0, 1)
    round_up = _uniform01(values.size).reshape(values.shape) < scaled
    integers = lower.astype(np.int64)
    np.add(integers, round_up, out=integers, casting="unsafe")
    return to_ring(integers, bits)


def dequantize(ring_sum: RingArray, *, scale: float, bits: int) -> npt.NDArray[np.float64]:
    """Centered lift of a (sum of) quantized vector(s), divided by ``scale``."""
    scale_f = _positive_finite(scale, "scale")
    return centered_lift(ring_sum, check_bits(bits)).astype(np.float64) / scale_f
