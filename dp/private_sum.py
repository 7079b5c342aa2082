"""The private sum as a stage over an injected inner ring sum.

In the spirit of TFF's ``DistributedDpSumFactory(inner_agg_factory=...)``: a private sum
turns a cohort's float updates into one released sum and the privacy event that sum
charges, and it delegates the only part it cannot do itself (summing ring vectors so that
nobody sees an individual one) to an inner :class:`RingSum`. The inner sum is a structural
protocol over plain data (ring rows in; total, included positions, abort reason, bytes and
seconds out), so ``dp`` imports nothing of ``protocols``: ``protocols.SecAggSum`` (SecAgg /
SecAgg+, groups, metering) satisfies it, and so does a plain modular sum.

Kinds (each returns a :class:`PrivateRelease` with its charged event; this module holds
the port, the release and the calibration, the kinds live beside it):

* :class:`dp.distributed_sum.DistributedDpSum`: every device encodes its clipped update
  with the distributed DP plan (its own discrete Gaussian or Skellam noise share, mod 2^b;
  0/1 count uploads use the exact Skellam counts plan); the inner sum adds the ring rows;
  the release is decoded and charged with the noise shares that actually reached it.
* :class:`dp.noiseless_sum.CentralDpSum`: devices quantize without noise, a trusted
  server adds exact discrete Gaussian noise to the decoded sum.
* :class:`dp.noiseless_sum.NoDpSum`: the exact (quantized) sum; non-private (ε = ∞).

Events are *unsampled*: the cohort sampler that drew the cohort wraps them
(:mod:`dp.cohort`), once. :func:`calibrate` is the one noise calibration for any kind and
any sampler. An update goes down once (device: clip, encode, ring row) and comes back
once (server: ring total, decode).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from dp.accounting import make_accountant
from dp.cohort import Cohort, Dropouts
from dp.errors import DPValueError
from dp.events import NonPrivateEvent, NoOpEvent, PrivacyEvent, SelfComposedEvent

__all__ = [
    "PrivateRelease",
    "PrivateSum",
    "RingOutcome",
    "RingRows",
    "RingSum",
    "RingTotal",
    "UpdateSource",
    "calibrate",
]

FloatArray = NDArray[np.float64]
RingArray = NDArray[np.unsignedinteger[Any]]

RingRows = Callable[[int, int], RingArray]
"""``(lo, hi) -> ring rows`` of cohort positions ``lo..hi-1`` (ring dtype of the width)."""

UpdateSource = FloatArray | Callable[[int, int], FloatArray]
"""The (n × D) update matrix, or ``(lo, hi) -> updates`` of cohort positions lo..hi-1 (so a
large cohort is computed, encoded and summed block by block)."""


# --------------------------------------------------------------------------- the port
class RingOutcome(Protocol):
    """What an inner ring sum returns, as plain data (read-only attributes).

    ``total`` is the exact sum mod 2^bits of the rows of ``included`` (cohort positions),
    or ``None`` when the sum aborted (``aborted`` says why; nothing was released).
    ``device_seconds`` is the time spent computing rows where the carrier ran them.
    """

    @property
    def total(self) -> RingArray | None: ...
    @property
    def included(self) -> tuple[int, ...]: ...
    @property
    def aborted(self) -> str | None: ...
    @property
    def bytes_up(self) -> int: ...
    @property
    def bytes_down(self) -> int: ...
    @property
    def seconds(self) -> float: ...
    @property
    def device_seconds(self) -> float: ...
    @property
    def note(self) -> str: ...


@dataclass(frozen=True, eq=False)
class RingTotal:
    """A plain :class:`RingOutcome` (what ``dp`` itself builds, e.g. for an abort)."""

    total: RingArray | None
    included: tuple[int, ...]
    aborted: str | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    seconds: float = 0.0
    device_seconds: float = 0.0
    note: str = ""


class RingSum(Protocol):
    """A sum of ring vectors in which nobody sees an individual one (the inner stage).

    ``rows(lo, hi)`` gives the ring rows of positions ``lo..hi-1`` of a cohort of
    ``cohort_size``; ``dropouts(lo, hi)`` the devices of that block that vanish (a drop
    plan, positions re-based to the block). A carrier that runs ``rows`` on other hosts
    says so with ``remote``: the rows function is then pickled and must carry its own
    noise generator.
    """

    @property
    def remote(self) -> bool: ...

    def min_honest_contributions(self, cohort_size: int, bits: int) -> int:
        """The fewest honest inputs in any sum this stage lets the server learn from a
        cohort of ``cohort_size`` (SecAgg: t − n_C summed over its instances). Noise
        shares are sized for this, never for the expected survivors alone: a server may
        declare everyone but that many dropped."""
        ...

    def __call__(
        self,
        rows: RingRows,
        *,
        cohort_size: int,
        bits: int,
        length: int,
        round_index: int,
        dropouts: Dropouts | None = None,
    ) -> RingOutcome: ...


# --------------------------------------------------------------------------- releases
@dataclass(frozen=True, eq=False)
class PrivateRelease:
    """One private sum as the server sees it: the decoded (noisy) sum and what it cost.

    ``event`` is the charged event (the noise that really reached the sum; ``NoOpEvent``
    when aborted), ``planned_event`` the one planned; both unsampled (the cohort sampler
    wraps them). ``total`` is ``None`` when the inner sum aborted.
    """

    total: FloatArray | None
    included: tuple[int, ...]
    cohort_size: int
    event: PrivacyEvent
    planned_event: PrivacyEvent
    ring: RingOutcome = field(repr=False)
    noise_std: float = 0.0
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0
    note: str = ""

    @property
    def aborted(self) -> str | None:
        """Why nothing was released, or ``None``."""
        return self.ring.aborted

    @property
    def dropped(self) -> int:
        return self.cohort_size - len(self.included)


class PrivateSum(Protocol):
    """A private sum of clipped float updates (one kind of release)."""

    def planned_event(
        self, dimension: int, clip_norm: float, noise_multiplier: float, expected: int
    ) -> PrivacyEvent: ...

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
    ) -> PrivateRelease: ...


def block_source(
    updates: UpdateSource, dimension: int | None, cohort_size: int | None
) -> tuple[Callable[[int, int], FloatArray], int, int]:
    """(block function, cohort size, dimension) of an update source."""
    if callable(updates):
        if cohort_size is None or dimension is None:
            raise DPValueError("cohort_size and dimension are required with an update function")
        return updates, int(cohort_size), int(dimension)
    matrix = np.asarray(updates, dtype=np.float64)
    if matrix.ndim != 2:
        raise DPValueError(f"updates must be an (n × D) matrix, got shape {matrix.shape}")
    return _MatrixBlocks(matrix), matrix.shape[0], matrix.shape[1]


@dataclass(frozen=True)
class _MatrixBlocks:
    matrix: FloatArray

    def __call__(self, lo: int, hi: int) -> FloatArray:
        return self.matrix[lo:hi]


def checked_block(fn: Callable[[int, int], FloatArray], lo: int, hi: int, dim: int) -> FloatArray:
    block = np.asarray(fn(lo, hi), dtype=np.float64)
    if block.shape != (hi - lo, dim):
        raise DPValueError(f"updates of devices {lo}..{hi} have shape {block.shape}")
    if not np.all(np.isfinite(block)):
        raise DPValueError(f"updates of devices {lo}..{hi} hold non-finite values")
    return block


@dataclass
class Timer:
    """Seconds spent encoding (accumulated across blocks)."""

    seconds: float = 0.0


def aborted_release(
    n: int, planned: PrivacyEvent, why: str, ring: RingOutcome | None = None
) -> PrivateRelease:
    """Nothing released: charged nothing (the planned event is kept for the record)."""
    if ring is None or ring.aborted is None:
        ring = RingTotal(
            None,
            (),
            aborted=why,
            bytes_up=0 if ring is None else ring.bytes_up,
            bytes_down=0 if ring is None else ring.bytes_down,
            seconds=0.0 if ring is None else ring.seconds,
        )
    return PrivateRelease(None, (), n, NoOpEvent(), planned, ring, note=why)


# --------------------------------------------------------------------------- calibration
def _epsilon(events: Sequence[PrivacyEvent], delta: float) -> float:
    if any(isinstance(e, NonPrivateEvent) for e in events):
        return math.inf
    accountant = make_accountant("auto")
    for event in events:
        accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def calibrate(
    private_sum: PrivateSum,
    cohort: Cohort,
    *,
    target_epsilon: float,
    delta: float,
    rounds: int,
    dimension: int,
    clip_norm: float,
    expected: int,
    fixed: Sequence[PrivacyEvent] = (),
    lo: float = 0.05,
    hi: float = 5000.0,
) -> float:
    """The smallest noise multiplier z (to 0.2 %) at which ``rounds`` releases of
    ``private_sum`` on cohorts of ``cohort`` (plus the ``fixed`` events) stay within
    ``target_epsilon`` at ``delta`` (``dp``'s auto accountant, add-or-remove-one).

    One search for every kind and sampler: the event of a round is the kind's planned
    event wrapped by the sampler; ε is decreasing in z.
    """
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise DPValueError(f"target_epsilon must be positive and finite, got {target_epsilon!r}")
    if rounds < 1:
        raise DPValueError("rounds must be at least 1")

    def eps(z: float) -> float:
        event = cohort.wrap(private_sum.planned_event(dimension, clip_norm, z, expected))
        return _epsilon([*fixed, SelfComposedEvent(event, rounds)], delta)

    if eps(hi) > target_epsilon:
        raise DPValueError(f"cannot reach ε = {target_epsilon:g} with noise multiplier ≤ {hi:g}")
    if eps(lo) <= target_epsilon:
        return lo
    while hi / lo > 1.002:
        mid = math.sqrt(lo * hi)
        if eps(mid) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi
