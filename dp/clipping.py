"""Per-user L2 clipping of a whole update, and adaptive clipping (Andrew et al. 2021).

:func:`clip_l2` guarantees ‖result‖₂ ≤ c for the *exact* real norm of the float64 output,
not only for a rounded estimate of it: the norm is computed without overflow or underflow
(scaled by the largest magnitude), and the scale factor carries a safety margin larger than
the worst-case rounding error of that computation (Higham's bound γ_d for a length-d dot
product). NaN or infinity is rejected with :class:`~dp.errors.NonFiniteUpdateError`;
a norm-ratio clip would silently propagate NaN into the aggregate.

:class:`AdaptiveClipping` follows Andrew, Thakkar, McMahan, Ramaswamy (NeurIPS 2021): each
client reports the bit 1{‖Δ‖ ≤ C}, the server releases a noisy count of those bits, and C
moves geometrically toward the target quantile. The count is released with discrete
Gaussian noise (integers, so it can ride in the same secure sum) and its privacy cost is
returned as an event, to be composed with the update's own event by the accountant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from dp.errors import DPValueError, NonFiniteUpdateError
from dp.events import DiscreteGaussianEvent, DistributedDiscreteGaussianEvent
from dp.rng import NoiseRng, default_rng
from dp.samplers import discrete_gaussian, rational_at_least, sqrt_at_most

__all__ = [
    "AdaptiveClipping",
    "ClipResult",
    "as_float_update",
    "clip_l2",
    "l2_norm",
]

FloatArray = npt.NDArray[np.float64]
_EPS = 2.0**-53
_MIN_CLIP = 1e-200  # below this, subnormal rounding could exceed the relative margin


def as_float_update(update: object) -> FloatArray:
    """``update`` as a float64 array (a copy), rejecting non-numeric and non-finite input."""
    try:
        arr = np.asarray(update)
    except Exception as exc:  # e.g. ragged nested sequences
        raise DPValueError(f"update is not an array: {type(exc).__name__}") from None
    if arr.dtype.kind not in "biuf":
        raise DPValueError(f"update must be real numbers, got dtype {arr.dtype}")
    out = np.array(arr, dtype=np.float64)
    if out.size and not np.isfinite(out).all():
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise NonFiniteUpdateError(f"update has {bad} non-finite (NaN or infinite) entries")
    return out


def _scaled_norm(values: FloatArray) -> tuple[float, float]:
    """(a, r) with ‖values‖₂ ≈ a·r, a = max |v|; neither overflows nor underflows."""
    flat = values.ravel()
    if flat.size == 0:
        return 0.0, 0.0
    a = float(np.max(np.abs(flat)))
    if a == 0.0:
        return 0.0, 0.0
    y = flat / a
    # np.sum's pairwise summation (not BLAS dot: its thread pool stalls on a busy machine).
    return a, math.sqrt(float(np.sum(np.square(y, out=y))))


def l2_norm(update: object) -> float:
    """The L2 norm of a finite update, without intermediate overflow (may be ``inf`` only if
    the norm itself exceeds the float range)."""
    a, r = _scaled_norm(as_float_update(update))
    with np.errstate(over="ignore"):
        return float(np.float64(a) * np.float64(r))


@dataclass(frozen=True)
class ClipResult:
    """What :func:`clip_l2` returns: the clipped update and what clipping did.

    ``values``: the update after clipping (float64, the input's shape), with
    ``‖values‖₂ ≤ clip_norm`` exactly, not only up to rounding. ``clip_norm``: the bound
    applied. ``norm``: the L2 norm of the update *before* clipping (``inf`` if it
    overflows float64). ``scale``: the factor applied, in (0, 1]; 1.0 when the update was
    already inside the ball. ``clipped``: whether it was scaled down (``scale < 1``), e.g.
    to count the clipped fraction for adaptive clipping.
    """

    values: FloatArray
    clip_norm: float
    norm: float
    scale: float

    @property
    def clipped(self) -> bool:
        """True when the update was scaled down."""
        return self.scale < 1.0


def _check_clip_norm(clip_norm: float) -> float:
    if isinstance(clip_norm, bool) or not isinstance(clip_norm, int | float | np.floating):
        raise DPValueError(f"clip_norm must be a number, got {type(clip_norm).__name__}")
    c = float(clip_norm)
    if not (math.isfinite(c) and c >= _MIN_CLIP):
        raise DPValueError(f"clip_norm must be finite and >= {_MIN_CLIP}, got {clip_norm!r}")
    return c


def clip_l2(update: object, clip_norm: float) -> ClipResult:
    """Scale ``update`` so that its exact L2 norm is at most ``clip_norm`` (shape kept).

    Returns a :class:`ClipResult` (``.values`` is the clipped update; ``.norm``, ``.scale``
    and ``.clipped`` say what clipping did). Updates already inside the ball (with a margin
    for rounding) are returned unchanged; others are scaled by c·(1 − η)/‖u‖ with η above
    the rounding error of the norm. NaN or Inf entries raise ``NonFiniteUpdateError``; a
    clip norm that is not a finite positive number (≥ 1e-200) raises ``DPValueError``.

    >>> import numpy as np
    >>> r = clip_l2(np.array([3.0, 4.0]), clip_norm=1.0)
    >>> r.norm, r.clipped, bool(np.linalg.norm(r.values) <= 1.0)
    (5.0, True, True)
    """
    c = _check_clip_norm(clip_norm)
    values = as_float_update(update)
    a, r = _scaled_norm(values)
    # The computed r² = Σ(v/a)² has relative error ≤ (d + 4)·2^-53 (division, dot product,
    # sqrt); η doubles that and adds room for the final scaling's rounding.
    eta = 2.0 * (values.size + 8) * _EPS
    limit = c * (1.0 - eta)
    with np.errstate(over="ignore"):
        norm = float(np.float64(a) * np.float64(r))
    if a == 0.0 or r <= limit / a:
        return ClipResult(values=values, clip_norm=c, norm=norm, scale=1.0)
    factor = limit / r  # applied to v/a, whose entries are ≤ 1: no overflow
    clipped = (values / a) * factor
    return ClipResult(values=clipped, clip_norm=c, norm=norm, scale=min(1.0, (factor / a)))


@dataclass(frozen=True)
class AdaptiveClipping:
    """Quantile-tracking clip norm (Andrew et al. 2021) with a discrete-Gaussian count.

    ``target_quantile`` is the fraction of updates that should be unclipped (0.5 = median),
    ``learning_rate`` the geometric step η, ``count_stddev`` the noise σ_b on the count of
    unclipped updates (Andrew et al. recommend expected_clients / 20), and
    ``expected_clients`` the public denominator of the fraction.
    """

    target_quantile: float = 0.5
    learning_rate: float = 0.2
    count_stddev: float = 1.0
    expected_clients: int = 100

    def __post_init__(self) -> None:
        if not 0.0 < self.target_quantile < 1.0:
            raise DPValueError("target_quantile must be in (0, 1)")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0.0):
            raise DPValueError("learning_rate must be positive and finite")
        if not (math.isfinite(self.count_stddev) and self.count_stddev > 0.0):
            raise DPValueError("count_stddev must be positive and finite")
        if isinstance(self.expected_clients, bool) or self.expected_clients < 1:
            raise DPValueError("expected_clients must be a positive int")

    @staticmethod
    def indicator(update_norm: float, clip_norm: float) -> int:
        """The client's bit 1{‖Δ‖ ≤ C} (sensitivity 1 under add/remove of a client)."""
        if not (isinstance(update_norm, int | float) and update_norm >= 0.0):
            raise DPValueError("update_norm must be a non-negative number")
        return int(update_norm <= _check_clip_norm(clip_norm))

    @property
    def count_variance(self) -> Fraction:
        """σ_b² as the exact rational the sampler uses (rounded up)."""
        return rational_at_least(self.count_stddev**2)

    def count_event(self, *, secure: bool) -> DiscreteGaussianEvent:
        """Privacy event of one central noisy count (sensitivity 1, dimension 1)."""
        return DiscreteGaussianEvent(
            l2_sensitivity=1.0,
            sigma=sqrt_at_most(self.count_variance),
            dimension=1,
            secure=secure,
        )

    def noisy_count(
        self, indicators: npt.ArrayLike, rng: NoiseRng | None = None
    ) -> tuple[int, DiscreteGaussianEvent]:
        """Trusted-server path: Σ bits + N_Z(0, σ_b²), and its event."""
        bits = np.asarray(indicators)
        if bits.ndim != 1 or (bits.size and not np.isin(bits, (0, 1)).all()):
            raise DPValueError("indicators must be a 1-D array of 0/1 bits")
        noise_rng = default_rng(rng)
        noise = int(discrete_gaussian(self.count_variance, 1, noise_rng)[0])
        return int(bits.sum()) + noise, self.count_event(secure=noise_rng.secure)

    def indicator_share(
        self, update_norm: float, clip_norm: float, min_contributors: int, rng: NoiseRng
    ) -> tuple[int, DistributedDiscreteGaussianEvent]:
        """Distributed path: this client's bit plus its share N_Z(0, σ_b²/n_min) of the count
        noise, for summing under secure aggregation, and the event of the released sum."""
        if isinstance(min_contributors, bool) or min_contributors < 1:
            raise DPValueError("min_contributors must be a positive int")
        local = rational_at_least(Fraction(self.count_variance) / min_contributors)
        noise = int(discrete_gaussian(local, 1, rng)[0])
        event = DistributedDiscreteGaussianEvent(
            l2_sensitivity=1.0,
            l1_sensitivity=1.0,
            local_sigma=sqrt_at_most(local),
            dimension=1,
            min_contributors=min_contributors,
            expected_contributors=max(self.expected_clients, min_contributors),
            secure=rng.secure,
        )
        return self.indicator(update_norm, clip_norm) + noise, event

    def update(self, clip_norm: float, noisy_count: float) -> float:
        """Next clip norm: C·exp(−η(b̃ − γ)) with b̃ = noisy_count / expected_clients."""
        c = _check_clip_norm(clip_norm)
        fraction = float(noisy_count) / self.expected_clients
        return c * math.exp(-self.learning_rate * (fraction - self.target_quantile))

    def value_noise_multiplier(self, total_noise_multiplier: float) -> float:
        """z for the update sum so that update and count together cost like one Gaussian of
        multiplier ``total_noise_multiplier``: z_v = (z⁻² − (σ_b/1)⁻²)^(-1/2)."""
        z = float(total_noise_multiplier)
        if not (math.isfinite(z) and z > 0.0):
            raise DPValueError("total_noise_multiplier must be positive")
        rest = z**-2 - self.count_stddev**-2
        if rest <= 0.0:
            raise DPValueError(
                f"count_stddev {self.count_stddev} is too small for total multiplier {z}: "
                "the count alone would use the whole budget"
            )
        return float(rest**-0.5)
