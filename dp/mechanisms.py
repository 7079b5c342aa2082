"""Single-party integer mechanisms that are not part of the distributed pipeline."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import numpy.typing as npt

from dp.errors import DPValueError
from dp.events import DiscreteLaplaceEvent
from dp.rng import NoiseRng, default_rng
from dp.samplers import discrete_laplace, float_at_most

__all__ = ["discrete_laplace_mechanism"]


def discrete_laplace_mechanism(
    values: npt.ArrayLike,
    *,
    l1_sensitivity: int,
    scale: int | Fraction,
    rng: NoiseRng | None = None,
) -> tuple[npt.NDArray[np.int64], DiscreteLaplaceEvent]:
    """Integer query + exact discrete Laplace noise (pure ε = l1_sensitivity / scale)."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise DPValueError(f"values must be integers, got dtype {arr.dtype}")
    if isinstance(l1_sensitivity, bool) or not isinstance(l1_sensitivity, int):
        raise DPValueError("l1_sensitivity must be an int")
    if l1_sensitivity < 0:
        raise DPValueError("l1_sensitivity must be >= 0")
    noise_rng = default_rng(rng)
    noise = discrete_laplace(scale, arr.size, noise_rng).reshape(arr.shape)
    event = DiscreteLaplaceEvent(
        l1_sensitivity=float(l1_sensitivity),
        scale=float_at_most(Fraction(scale)),
        secure=noise_rng.secure,
    )
    return arr.astype(np.int64) + noise, event
