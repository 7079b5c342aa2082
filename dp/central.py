"""Central (trusted-server) Gaussian noise that is not porous: discrete, then scaled.

**Trusted server only.** This path is for a server that sees the exact sum, e.g. a
baseline or a deployment without secure aggregation; the distributed path
(:mod:`dp.distributed`) is the one that does not trust the server.

A float Gaussian sample added to a float value has a support that depends on the value
(Mironov 2012; Jin et al. 2022), which can reveal it. Here the value is first mapped to a
lattice γ·Z with γ a power of two (so the division and the final multiplication are
exact in float64), rounded to integers, and an exact discrete Gaussian is added; the
output is γ·(integer). Rounding to nearest can move each coordinate by at most 1/2 more
than the input moves, so the integer L2 sensitivity is Δ/γ + √d; γ is chosen fine enough
that this inflation is ≤ 2^-10 relative, and the event states the actual integer numbers.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from dp.clipping import as_float_update
from dp.errors import DPValueError
from dp.events import DiscreteGaussianEvent
from dp.rng import NoiseRng, default_rng
from dp.samplers import discrete_gaussian, rational_at_least, sqrt_at_most

__all__ = ["central_gaussian", "central_granularity"]

FloatArray = npt.NDArray[np.float64]
_MAX_LATTICE = 2.0**52  # integers up to here are exact in float64
_INFLATION_BITS = 10


def central_granularity(l2_sensitivity: float, dimension: int) -> float:
    """The power of two γ ≤ Δ / (√d · 2^10): fine enough that rounding inflates the integer
    sensitivity Δ/γ + √d by at most 2^-10."""
    target = l2_sensitivity / (math.sqrt(max(dimension, 1)) * 2.0**_INFLATION_BITS)
    return 2.0 ** math.floor(math.log2(target))


def central_gaussian(
    values: object,
    *,
    l2_sensitivity: float,
    noise_multiplier: float,
    rng: NoiseRng | None = None,
    granularity: float | None = None,
) -> tuple[FloatArray, DiscreteGaussianEvent]:
    """Trusted-server Gaussian mechanism: ``values`` + noise of std ≈ z·Δ per coordinate,
    done as γ·(round(values/γ) + N_Z(0, (zΔ/γ)²)); returns (noisy values, event).

    ``l2_sensitivity`` Δ is the float query's L2 sensitivity (e.g. the clip norm for a sum
    of clipped updates). ``granularity`` (a power of two) defaults to
    :func:`central_granularity`.
    """
    x = as_float_update(values)
    for name, value in (("l2_sensitivity", l2_sensitivity), ("noise_multiplier", noise_multiplier)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DPValueError(f"{name} must be a number")
        if not (math.isfinite(value) and value > 0):
            raise DPValueError(f"{name} must be positive and finite, got {value!r}")
    d = max(1, x.size)
    gamma = central_granularity(l2_sensitivity, d) if granularity is None else granularity
    mantissa, _ = math.frexp(gamma)
    if not (math.isfinite(gamma) and gamma > 0 and mantissa == 0.5):
        raise DPValueError(f"granularity must be a positive power of two, got {gamma!r}")
    noise_rng = default_rng(rng)
    scaled = x / gamma  # exact: γ is a power of two (barring underflow to subnormals)
    sigma_int = noise_multiplier * l2_sensitivity / gamma
    if x.size and float(np.max(np.abs(scaled))) + 64 * sigma_int >= _MAX_LATTICE:
        raise DPValueError("values are too large for the lattice; use a coarser granularity")
    variance = rational_at_least(Fraction(sigma_int) ** 2)
    lattice = np.rint(scaled).astype(np.int64)
    noisy = lattice + discrete_gaussian(variance, x.size, noise_rng).reshape(x.shape)
    event = DiscreteGaussianEvent(
        l2_sensitivity=math.nextafter(l2_sensitivity / gamma + math.sqrt(d), math.inf),
        sigma=sqrt_at_most(variance),
        dimension=d,
        secure=noise_rng.secure,
    )
    return noisy.astype(np.float64) * gamma, event
