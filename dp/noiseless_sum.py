"""The noiseless private sums: a trusted server's noise, or none.

Devices quantize their clipped updates to a fixed point of 2^-20 clip norms (unbiased
randomized rounding) in a ring wide enough that the cohort's sum cannot wrap; the inner
ring sum adds them; the server lifts the exact sum and, for :class:`CentralDpSum`, adds
exact discrete Gaussian noise (:func:`dp.central.central_gaussian`: lattice + discrete
Gaussian, not porous). :class:`NoDpSum` releases the exact sum (ε = ∞).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dp.central import central_gaussian
from dp.cohort import Dropouts
from dp.distributed import ring_dtype
from dp.errors import DPValueError
from dp.events import NonPrivateEvent, PrivacyEvent
from dp.private_sum import (
    FloatArray,
    PrivateRelease,
    RingArray,
    RingSum,
    Timer,
    UpdateSource,
    aborted_release,
    block_source,
    checked_block,
)
from dp.rng import NoiseRng, SecureRng

__all__ = ["CentralDpSum", "NoDpSum", "plain_bits"]

_TOP53 = np.uint64(11)
# 2^-20 of a clip norm per step keeps rounding far below any DP noise.
_PLAIN_STEPS_PER_CLIP = float(1 << 20)


# --------------------------------------------------------------------------- noiseless kinds
def plain_bits(cohort_size: int) -> int:
    """Ring width of the noiseless fixed point: the sum of the cohort cannot wrap."""
    return min(62, (max(cohort_size, 1) * (int(_PLAIN_STEPS_PER_CLIP) + 1)).bit_length() + 2)


@dataclass(frozen=True)
class _QuantizeRows:
    """Noiseless fixed point with unbiased randomized rounding (rows already clipped)."""

    updates: Callable[[int, int], FloatArray]
    clip_norm: float
    bits: int
    dimension: int
    rng: NoiseRng
    timer: Timer

    def __call__(self, lo: int, hi: int) -> RingArray:
        block = checked_block(self.updates, lo, hi, self.dimension)
        t0 = time.perf_counter()
        # the sensitivity rests on L2-clipped rows: refuse (never silently reshape) others
        norms = np.linalg.norm(block, axis=1)
        if norms.size and float(norms.max()) > self.clip_norm * (1.0 + 1e-9):
            raise DPValueError(
                f"an update of devices {lo}..{hi} has L2 norm {float(norms.max()):.6g} > "
                f"clip_norm {self.clip_norm:g}: clip the updates first"
            )
        scaled = np.clip(block, -self.clip_norm, self.clip_norm) * (
            _PLAIN_STEPS_PER_CLIP / self.clip_norm
        )
        floor = np.floor(scaled)
        uniform = (self.rng.words(scaled.size) >> _TOP53).astype(np.float64) * 2.0**-53
        ints = floor.astype(np.int64) + (uniform.reshape(scaled.shape) < scaled - floor)
        ring: RingArray = np.bitwise_and(ints, (1 << self.bits) - 1).astype(ring_dtype(self.bits))
        self.timer.seconds += time.perf_counter() - t0
        return ring


class _PlainSum:
    """The shared part of the central and non-private kinds: quantize, sum, lift."""

    def __init__(self, inner: RingSum, *, rng: NoiseRng | None = None) -> None:
        if inner.remote:
            raise DPValueError("the noiseless kinds quantize in this process: use a local sum")
        self.inner = inner
        self.rng: NoiseRng = rng if rng is not None else SecureRng()

    def _noisy(
        self, values: FloatArray, clip_norm: float, noise_multiplier: float
    ) -> tuple[FloatArray, PrivacyEvent, float]:
        raise NotImplementedError

    def release(
        self,
        updates: UpdateSource,
        *,
        clip_norm: float,
        noise_multiplier: float,
        expected_contributors: int,
        round_index: int,
        dimension: int | None = None,
        cohort_size: int | None = None,
        count_cap: int | None = None,
        dropouts: Dropouts | None = None,
    ) -> PrivateRelease:
        """Quantize, sum with the inner ring sum, lift and (central) add noise."""
        if not (clip_norm > 0 and math.isfinite(clip_norm)):
            raise DPValueError(f"clip_norm must be positive and finite, got {clip_norm!r}")
        fn, n, dim = block_source(updates, dimension, cohort_size)
        planned = self.planned_event(dim, clip_norm, noise_multiplier, expected_contributors)
        bits = plain_bits(n)
        timer = Timer()
        rows = _QuantizeRows(fn, clip_norm, bits, dim, self.rng, timer)
        ring = self.inner(
            rows,
            cohort_size=n,
            bits=bits,
            length=dim,
            round_index=round_index,
            dropouts=dropouts,
        )
        if ring.total is None or not ring.included:
            return aborted_release(
                n, planned, ring.aborted or "nobody's input reached the sum", ring
            )
        t0 = time.perf_counter()
        lifted = ring.total.astype(np.int64)
        lifted[lifted >= 1 << (bits - 1)] -= 1 << bits
        exact = lifted.astype(np.float64) / (_PLAIN_STEPS_PER_CLIP / clip_norm)
        values, event, noise_std = self._noisy(exact, clip_norm, noise_multiplier)
        return PrivateRelease(
            total=values,
            included=ring.included,
            cohort_size=n,
            event=event,
            planned_event=planned,
            ring=ring,
            noise_std=noise_std,
            encode_seconds=timer.seconds,
            decode_seconds=time.perf_counter() - t0,
            note=ring.note,
        )

    def planned_event(
        self, dimension: int, clip_norm: float, noise_multiplier: float, expected: int
    ) -> PrivacyEvent:
        raise NotImplementedError


class CentralDpSum(_PlainSum):
    """A trusted server adds exact discrete Gaussian noise of std z·c to the exact sum
    (lattice + discrete Gaussian: not porous). The inner sum still hides the updates."""

    def planned_event(
        self, dimension: int, clip_norm: float, noise_multiplier: float, expected: int
    ) -> PrivacyEvent:
        # the central event depends only on (Δ, z, d): probe it on zeros
        _, probe = central_gaussian(
            np.zeros(dimension),
            l2_sensitivity=clip_norm,
            noise_multiplier=noise_multiplier,
            rng=SecureRng(),
        )
        return dataclasses.replace(probe, secure=self.rng.secure)

    def _noisy(
        self, values: FloatArray, clip_norm: float, noise_multiplier: float
    ) -> tuple[FloatArray, PrivacyEvent, float]:
        noisy, event = central_gaussian(
            values, l2_sensitivity=clip_norm, noise_multiplier=noise_multiplier, rng=self.rng
        )
        return noisy, event, noise_multiplier * clip_norm


class NoDpSum(_PlainSum):
    """The exact (quantized) sum: no noise, the event is non-private (ε = ∞)."""

    def planned_event(
        self, dimension: int, clip_norm: float, noise_multiplier: float, expected: int
    ) -> PrivacyEvent:
        return NonPrivateEvent()

    def _noisy(
        self, values: FloatArray, clip_norm: float, noise_multiplier: float
    ) -> tuple[FloatArray, PrivacyEvent, float]:
        return values, NonPrivateEvent(), 0.0
