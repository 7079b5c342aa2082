"""Distributed DP encoder/decoder: float update → private ring vector → float sum.

Client (:func:`encode`): clip to L2 ≤ c → flatten and zero-pad to a power of two →
randomized Hadamard rotation with the public round seed → scale by 1/γ → conditional
randomized rounding (resampled until ‖x̃‖₂² ≤ the plan's integer bound) → add this
client's noise share (discrete Gaussian N_Z(0, σ²/n_min) or Skellam of variance
μ/n_min) → reduce mod 2^b.

Server (:func:`decode`): centred lift of the aggregate into [−2^(b−1), 2^(b−1)) → ×γ →
inverse rotation → drop the padding. It reports the noise actually present (survivors ×
share) and, by default, refuses an aggregate with fewer shares than the plan's minimum.

A *counts* plan (:func:`dp.planning.plan_distributed_counts`) skips clipping, rotation and
rounding: each contribution must already be a 0/1 vector with at most ``max_ones`` ones
(anything else is refused, never clipped into shape), gets its Skellam share and is reduced
mod 2^b; decoding is the centred lift alone.

Only plain integer numpy arrays (``uint32`` for b ≤ 32, else ``uint64``; values in
[0, 2^b)) cross the boundary, so any
modular sum — a test's ``np.sum(...) % 2**b`` or ``protocols.run_secagg`` — can sit between.
Noise and rounding happen in integers, so a fixed noise stream shifts outputs by exactly
x̃ − x̃' (no floating-point side channel in what leaves the client).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple, NoReturn

import numpy as np
import numpy.typing as npt

from dp.clipping import as_float_update, clip_l2
from dp.errors import DPError, DPValueError, InsufficientNoiseError
from dp.events import PrivacyEvent
from dp.planning import DistributedDPPlan
from dp.rng import NoiseRng, default_rng
from dp.rotation import inverse_rotate, rotate
from dp.samplers import discrete_gaussian, skellam, sqrt_at_most

__all__ = [
    "DEFAULT_ROUNDING_ATTEMPTS",
    "DecodeReport",
    "EncodeReport",
    "EncodedUpdate",
    "PresampledNoise",
    "conditional_round",
    "conditional_round_rows",
    "decode",
    "encode",
    "encode_many",
    "encode_with_report",
    "noise_share",
]

DEFAULT_ROUNDING_ATTEMPTS = 100
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
RingArray = npt.NDArray[np.unsignedinteger[Any]]
_TOP53 = np.uint64(11)
_INT64_SAFE_SQUARE = 2**62


def ring_dtype(bits: int) -> np.dtype[np.unsignedinteger[Any]]:
    """Carrier of Z_{2^bits}: ``uint32`` up to 32 bits, else ``uint64`` (secagg's convention)."""
    return np.dtype(np.uint32) if bits <= 32 else np.dtype(np.uint64)


@dataclass(frozen=True)
class EncodeReport:
    """Client-side diagnostics (never sent): whether clipping and the rounding fallback
    happened, and how many rounding draws were needed."""

    clipped: bool
    rounding_attempts: int
    rounding_fallback: bool
    squared_norm: int
    l2_bound_sq: int


class EncodedUpdate(NamedTuple):
    """What :func:`encode_with_report` returns: ring values, the event, and diagnostics."""

    values: RingArray
    event: PrivacyEvent
    report: EncodeReport


@dataclass(frozen=True)
class DecodeReport:
    """Server-side facts about one decoded aggregate.

    ``realized_noise_std`` / ``planned_noise_std`` are per-coordinate noise standard
    deviations in float units for the actual survivors and for ``min_contributors``;
    ``headroom`` is max |lifted value| / 2^(b−1) (close to 1 means wrap-around was near).
    """

    num_contributors: int
    min_contributors: int
    realized_noise_std: float
    planned_noise_std: float
    meets_plan: bool
    headroom: float


def _squared_norm(x: IntArray) -> int:
    return int(np.dot(x, x))


def conditional_round(
    scaled: FloatArray, l2_bound_sq: int, rng: NoiseRng, max_attempts: int
) -> tuple[IntArray, int, bool]:
    """Randomized rounding (up with probability equal to the fractional part), redrawn until
    the integer squared norm is ≤ ``l2_bound_sq``; after ``max_attempts`` failures the
    vector is truncated toward zero, which never increases any |coordinate|.

    Returns (integers, attempts used, fallback used). Raises if even the fallback violates
    the bound (only possible when the input is not inside the clipped ball).
    """
    if not 0 <= l2_bound_sq < _INT64_SAFE_SQUARE:
        raise DPValueError("l2_bound_sq must be in [0, 2^62)")
    # Every rounding of `scaled` has norm ≤ ‖scaled‖ + √d; below 2^31 its int64 squared norm
    # cannot overflow (an overflow would wrap and could pass the check).
    if not np.isfinite(scaled).all() or (
        math.sqrt(float(np.sum(np.square(scaled)))) + math.sqrt(scaled.size)
        >= math.sqrt(_INT64_SAFE_SQUARE)
    ):
        raise DPValueError("scaled vector is too large for an exact int64 norm check")
    floor = np.floor(scaled)
    frac = scaled - floor
    base = floor.astype(np.int64)
    for attempt in range(1, max_attempts + 1):
        u = (rng.words(scaled.size) >> _TOP53).astype(np.float64) * 2.0**-53
        rounded = base + (u < frac)
        if _squared_norm(rounded) <= l2_bound_sq:
            return rounded, attempt, False
    truncated = np.trunc(scaled).astype(np.int64)
    if _squared_norm(truncated) > l2_bound_sq:
        raise DPError("clipped update exceeds the integer norm bound even when truncated")
    return truncated, max_attempts, True


def noise_share(plan: DistributedDPPlan, rng: NoiseRng) -> IntArray:
    """One client's integer noise share for every padded coordinate."""
    if plan.local_variance == 0:
        return np.zeros(plan.padded_dimension, dtype=np.int64)
    if plan.mechanism == "ddg":
        return discrete_gaussian(plan.local_variance, plan.padded_dimension, rng)
    return skellam(plan.local_variance, plan.padded_dimension, rng)


class PresampledNoise:
    """One client's noise share for ``plan``, drawn ahead of the round (e.g. while idle) so
    that neither its run time nor its cost falls inside the window the server observes.

    Single use: a second :meth:`take` raises (reusing noise across rounds would let the
    server cancel it). Holds secret values: refuses pickling and copying, and its ``repr``
    shows none of them.
    """

    __slots__ = ("_key", "_secure", "_values")

    def __init__(self, plan: DistributedDPPlan, rng: NoiseRng | None = None) -> None:
        noise_rng = default_rng(rng)
        self._values: IntArray | None = noise_share(plan, noise_rng)
        self._key = _noise_key(plan)
        self._secure = noise_rng.secure

    @property
    def secure(self) -> bool:
        """Whether the share came from a secure generator."""
        return self._secure

    def take(self, plan: DistributedDPPlan) -> IntArray:
        """The share (once), after checking it was drawn for this plan's noise."""
        if self._values is None:
            raise DPError("this noise share was already used; draw a fresh one per round")
        if _noise_key(plan) != self._key:
            raise DPValueError("this noise share was drawn for a different plan")
        values, self._values = self._values, None
        return values

    def __repr__(self) -> str:
        state = "used" if self._values is None else "unused"
        return f"PresampledNoise(<{state}>, secure={self._secure})"

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("PresampledNoise holds secret noise and cannot be pickled")

    def __reduce__(self) -> NoReturn:
        raise TypeError("PresampledNoise holds secret noise and cannot be pickled")

    def __copy__(self) -> NoReturn:
        raise TypeError("PresampledNoise is single-use and cannot be copied")

    def __deepcopy__(self, memo: dict[int, Any]) -> NoReturn:
        raise TypeError("PresampledNoise is single-use and cannot be copied")


def _count_rows(matrix: FloatArray, plan: DistributedDPPlan) -> IntArray:
    """The 0/1 rows of a counts plan as int64, or a :class:`DPValueError` naming the
    problem (a value other than 0 or 1, or more ones than the plan's sensitivity allows)."""
    ones = matrix == 1.0
    if not np.all(ones | (matrix == 0.0)):
        raise DPValueError("a counts contribution may hold only 0 and 1")
    most = int(ones.sum(axis=-1).max()) if matrix.size else 0
    if plan.max_ones is None or most > plan.max_ones:
        raise DPValueError(
            f"a counts contribution holds {most} ones, the plan allows {plan.max_ones}"
        )
    counts: IntArray = ones.astype(np.int64)
    return counts


def _noise_key(plan: DistributedDPPlan) -> tuple[str, int, Fraction]:
    return (plan.mechanism, plan.padded_dimension, plan.local_variance)


def encode_with_report(
    update: object,
    plan: DistributedDPPlan,
    *,
    rotation_seed: int | bytes,
    rng: NoiseRng | None = None,
    max_rounding_attempts: int = DEFAULT_ROUNDING_ATTEMPTS,
    noise: PresampledNoise | None = None,
) -> EncodedUpdate:
    """Encode one client's float update into Z_{2^b} with its noise share (see module doc).

    ``update`` may have any shape with ``plan.dimension`` elements; ``rng`` (for rounding
    and, unless ``noise`` is given, the noise) defaults to a fresh
    :class:`~dp.rng.SecureRng`. ``noise`` is a share drawn earlier with
    :class:`PresampledNoise`, keeping the sampler's run time out of the upload window.
    """
    if isinstance(max_rounding_attempts, bool) or max_rounding_attempts < 1:
        raise DPValueError("max_rounding_attempts must be a positive int")
    noise_rng = default_rng(rng)
    if plan.encoding == "counts":
        flat = as_float_update(update).ravel()
        if flat.size != plan.dimension:
            raise DPValueError(
                f"update has {flat.size} elements, the plan expects {plan.dimension}"
            )
        rounded, attempts, fallback, was_clipped = _count_rows(flat, plan), 0, False, False
    else:
        clipped = clip_l2(update, plan.clip_norm)
        flat = clipped.values.ravel()
        if flat.size != plan.dimension:
            raise DPValueError(
                f"update has {flat.size} elements, the plan expects {plan.dimension}"
            )
        padded = np.zeros(plan.padded_dimension, dtype=np.float64)
        padded[: plan.dimension] = flat
        scaled = rotate(padded, rotation_seed, 1.0 / plan.gamma)
        rounded, attempts, fallback = conditional_round(
            scaled, plan.l2_bound_sq, noise_rng, max_rounding_attempts
        )
        was_clipped = clipped.clipped
    if noise is None:
        noisy = rounded + noise_share(plan, noise_rng)
        secure = noise_rng.secure
    else:
        noisy = rounded + noise.take(plan)
        secure = noise_rng.secure and noise.secure
    # Two's complement: masking the low b bits of an int64 is the reduction mod 2^b.
    ring = np.bitwise_and(noisy, plan.modulus - 1, out=noisy).astype(ring_dtype(plan.bits))
    report = EncodeReport(
        clipped=was_clipped,
        rounding_attempts=attempts,
        rounding_fallback=fallback,
        squared_norm=_squared_norm(rounded),
        l2_bound_sq=plan.l2_bound_sq,
    )
    return EncodedUpdate(ring, plan.event(secure=secure), report)


def encode(
    update: object,
    plan: DistributedDPPlan,
    *,
    rotation_seed: int | bytes,
    rng: NoiseRng | None = None,
    noise: PresampledNoise | None = None,
) -> tuple[RingArray, PrivacyEvent]:
    """:func:`encode_with_report` without the diagnostics: (ring values, privacy event)."""
    values, event, _ = encode_with_report(
        update, plan, rotation_seed=rotation_seed, rng=rng, noise=noise
    )
    return values, event


def _check_int64_norm_safe(scaled: FloatArray) -> None:
    """Refuse rows for which a rounding's int64 squared norm could overflow (see
    :func:`conditional_round`): every rounding has norm ≤ ‖row‖ + √d."""
    if not np.isfinite(scaled).all():
        raise DPValueError("scaled vector is too large for an exact int64 norm check")
    norms = np.sqrt(np.sum(np.square(scaled), axis=-1))
    if scaled.size and float(np.max(norms)) + math.sqrt(scaled.shape[-1]) >= math.sqrt(
        _INT64_SAFE_SQUARE
    ):
        raise DPValueError("scaled vector is too large for an exact int64 norm check")


def conditional_round_rows(
    scaled: FloatArray, l2_bound_sq: int, rng: NoiseRng, max_attempts: int
) -> tuple[IntArray, IntArray, npt.NDArray[np.bool_]]:
    """:func:`conditional_round` applied independently to every row of an (n × d) matrix.

    Each attempt draws fresh words for the rows still pending, so row i goes through the
    same accept/redraw/truncate process as a single-vector call: the same distribution,
    only the order in which ``rng``'s words are consumed differs. The norm check is exact:
    squared norms are summed in int64, which cannot overflow because every row passed the
    ‖row‖ + √d < 2^31 check (all partial sums are non-negative and ≤ the total < 2^62).
    Returns (integers, attempts per row, fallback per row).
    """
    if not 0 <= l2_bound_sq < _INT64_SAFE_SQUARE:
        raise DPValueError("l2_bound_sq must be in [0, 2^62)")
    if scaled.ndim != 2:
        raise DPValueError(f"scaled must be a 2-D matrix, got shape {scaled.shape}")
    _check_int64_norm_safe(scaled)
    n, d = scaled.shape
    floor = np.floor(scaled)
    frac = scaled - floor
    base = floor.astype(np.int64)
    out = np.empty((n, d), dtype=np.int64)
    attempts = np.full(n, max_attempts, dtype=np.int64)
    fallback = np.zeros(n, dtype=np.bool_)
    pending = np.arange(n)
    for attempt in range(1, max_attempts + 1):
        if pending.size == 0:
            break
        words = rng.words(pending.size * d).reshape(pending.size, d)
        u = (words >> _TOP53).astype(np.float64) * 2.0**-53
        rounded = base[pending] + (u < frac[pending])
        accepted = np.einsum("ij,ij->i", rounded, rounded) <= l2_bound_sq
        out[pending[accepted]] = rounded[accepted]
        attempts[pending[accepted]] = attempt
        pending = pending[~accepted]
    if pending.size:
        truncated = np.trunc(scaled[pending]).astype(np.int64)
        if bool(np.any(np.einsum("ij,ij->i", truncated, truncated) > l2_bound_sq)):
            raise DPError("clipped update exceeds the integer norm bound even when truncated")
        out[pending] = truncated
        fallback[pending] = True
    return out, attempts, fallback


def _rotate_and_round(
    matrix: FloatArray,
    plan: DistributedDPPlan,
    rotation_seed: int | bytes,
    rng: NoiseRng,
    max_rounding_attempts: int,
) -> IntArray:
    """Clip, pad, rotate and conditionally round every row (the float encodings)."""
    n = matrix.shape[0]
    padded = np.zeros((n, plan.padded_dimension), dtype=np.float64)
    # clip_l2 per row: its exact-norm guarantee (a margin over the rounding error of the
    # norm) is the reason to reuse it rather than re-derive a batched variant; one norm
    # and one scale per row is cheap next to the rotation and the noise.
    for i in range(n):
        padded[i, : plan.dimension] = clip_l2(matrix[i], plan.clip_norm).values
    scaled = rotate(padded, rotation_seed, 1.0 / plan.gamma)
    rounded, _, _ = conditional_round_rows(scaled, plan.l2_bound_sq, rng, max_rounding_attempts)
    return rounded


def encode_many(
    updates: object,
    plan: DistributedDPPlan,
    *,
    rotation_seed: int | bytes,
    rng: NoiseRng | None = None,
    max_rounding_attempts: int = DEFAULT_ROUNDING_ATTEMPTS,
) -> tuple[RingArray, PrivacyEvent]:
    """Encode every row of an (n × ``plan.dimension``) matrix as one client's update.

    Row i of the result (n × ``plan.padded_dimension``, dtype ``ring_dtype(plan.bits)``) is
    distributed exactly as ``encode(updates[i], plan, ...)`` with independent randomness:
    the same exact clipping, public rotation (one batched transform), conditional rounding
    with an exact integer norm check (:func:`conditional_round_rows`) and noise share (one
    sampler call for the whole cohort). Only the order in which ``rng``'s words are consumed
    differs, so a seeded run is not word-for-word the same as a loop over :func:`encode`.
    The event is the per-client event ``encode`` returns. This is for simulating many
    devices in one process; a real device encodes only its own update.
    """
    if isinstance(max_rounding_attempts, bool) or max_rounding_attempts < 1:
        raise DPValueError("max_rounding_attempts must be a positive int")
    noise_rng = default_rng(rng)
    matrix = as_float_update(updates)
    if matrix.ndim != 2 or matrix.shape[1] != plan.dimension:
        raise DPValueError(f"updates must have shape (n, {plan.dimension}), got {matrix.shape}")
    n = matrix.shape[0]
    event = plan.event(secure=noise_rng.secure)
    if n == 0:
        return np.zeros((0, plan.padded_dimension), dtype=ring_dtype(plan.bits)), event
    if plan.encoding == "counts":
        rounded = _count_rows(matrix, plan)
    else:
        rounded = _rotate_and_round(matrix, plan, rotation_seed, noise_rng, max_rounding_attempts)
    if plan.local_variance != 0:
        size = n * plan.padded_dimension
        if plan.mechanism == "ddg":
            noise = discrete_gaussian(plan.local_variance, size, noise_rng)
        else:
            noise = skellam(plan.local_variance, size, noise_rng)
        rounded += noise.reshape(n, plan.padded_dimension)
    ring = np.bitwise_and(rounded, plan.modulus - 1, out=rounded).astype(ring_dtype(plan.bits))
    return ring, event


def _lift(aggregate: object, plan: DistributedDPPlan) -> IntArray:
    arr = np.asarray(aggregate)
    if arr.shape != (plan.padded_dimension,):
        raise DPValueError(f"aggregate must have shape ({plan.padded_dimension},), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise DPValueError(f"aggregate must be integers, got dtype {arr.dtype}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= plan.modulus):
        raise DPValueError(f"aggregate values must lie in [0, 2^{plan.bits})")
    values = arr.astype(np.int64)
    half = plan.modulus // 2
    values[values >= half] -= plan.modulus
    return values


def decode(
    aggregate: object,
    plan: DistributedDPPlan,
    *,
    rotation_seed: int | bytes,
    num_contributors: int,
    strict: bool = True,
) -> tuple[FloatArray, DecodeReport]:
    """Turn the modular sum of ``num_contributors`` encodings into the float sum (length
    ``plan.dimension``) and a :class:`DecodeReport`.

    With ``strict`` (default), an aggregate with fewer than ``plan.min_contributors`` noise
    shares raises :class:`~dp.errors.InsufficientNoiseError`: its noise is below what the
    privacy event promises.
    """
    if isinstance(num_contributors, bool) or not isinstance(num_contributors, int):
        raise DPValueError("num_contributors must be an int")
    if num_contributors < 1:
        raise DPValueError("num_contributors must be positive")
    if strict and num_contributors < plan.min_contributors and plan.local_variance > 0:
        raise InsufficientNoiseError(
            f"only {num_contributors} noise shares reached the aggregate, the plan needs "
            f"{plan.min_contributors}; do not release it"
        )
    lifted = _lift(aggregate, plan)
    if plan.encoding == "counts":
        unrotated = lifted.astype(np.float64)
    else:
        unrotated = inverse_rotate(lifted.astype(np.float64) * plan.gamma, rotation_seed)
    half = plan.modulus // 2
    headroom = float(np.max(np.abs(lifted))) / half if lifted.size else 0.0
    report = DecodeReport(
        num_contributors=num_contributors,
        min_contributors=plan.min_contributors,
        realized_noise_std=plan.gamma * sqrt_at_most(plan.local_variance * num_contributors),
        planned_noise_std=plan.gamma * sqrt_at_most(plan.central_variance),
        meets_plan=num_contributors >= plan.min_contributors,
        headroom=headroom,
    )
    return unrotated[: plan.dimension].copy(), report
