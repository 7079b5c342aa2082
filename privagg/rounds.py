"""Private rounds for any task that offers a local update and a server step.

One round: budget check (the planned event against the ledger's global budget, *before*
anyone is sampled) → cohort sampling → per-user admission (the ledger's Rényi filter) →
the private sum of the admitted devices' local updates (clipped here, encoded on the
device, summed by the inner ring sum, decoded once) → server step → charge (the event of
the noise that really reached the sum, wrapped once by the sampler) → ledger. An aborted
round is recorded as aborted and charged nothing.

Nothing here knows what a model is: the task gives ``local_update(device ids) -> (n × D)``
float updates and ``server_step(noisy sum, expected contributors)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dp.accounting import make_accountant
from dp.cohort import Cohort, Dropouts
from dp.events import NonPrivateEvent, PrivacyEvent
from dp.ledger import PrivacyLedger, charged_event
from dp.private_sum import PrivateSum

__all__ = ["LocalUpdate", "PrivateRounds", "RoundRecord", "ServerStep", "clip_rows"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
LocalUpdate = Callable[[IntArray], FloatArray]
"""``device ids -> (n × D)`` float updates, one row per device, computed on the devices."""
ServerStep = Callable[[FloatArray, float], None]
"""``(noisy sum of the updates, expected number of contributors) -> None``."""


def clip_rows(updates: FloatArray, clip_norm: float) -> FloatArray:
    """Each row scaled to L2 norm at most ``clip_norm`` (flat clipping, vectorized)."""
    norms = np.linalg.norm(updates, axis=1, keepdims=True)
    out: FloatArray = updates * np.minimum(1.0, clip_norm / np.maximum(norms, 1e-300))
    return out


@dataclass(frozen=True)
class RoundRecord:
    """One round: who took part, what reached the sum, ε so far, where time went."""

    round: int
    sampled: int
    admitted: int
    included: int
    epsilon: float
    aborted: str | None
    bytes_up: int
    bytes_down: int
    seconds: float


class PrivateRounds:
    """Runs private rounds of one task over a population of ``population`` devices.

    ``private_sum`` is the release kind (e.g. ``DistributedDpSum(SecAggSum("plus"))``),
    ``cohort`` the sampler, ``noise_multiplier`` z (noise std z·clip_norm per coordinate of
    the sum), ``dropouts`` the simulated device losses. With a ``ledger`` every round is
    checked against its budget, admitted per user and recorded; without, ε is accounted
    here with the same accountant (``dp``'s auto backend, add-or-remove-one-device).
    """

    def __init__(
        self,
        private_sum: PrivateSum,
        cohort: Cohort,
        *,
        population: int,
        dimension: int,
        clip_norm: float,
        noise_multiplier: float,
        delta: float,
        dropouts: Dropouts | None = None,
        ledger: PrivacyLedger | None = None,
        device_ids: Callable[[int], str] = lambda i: f"device{i}",
    ) -> None:
        if population < 2:
            raise ValueError("a private round needs a population of at least 2 devices")
        self.private_sum = private_sum
        self.cohort = cohort
        self.population = population
        self.dimension = dimension
        self.clip_norm = clip_norm
        self.noise_multiplier = noise_multiplier
        self.delta = delta
        self.dropouts = dropouts
        self.ledger = ledger
        self.device_ids = device_ids
        self.expected = cohort.expected(population)
        self._accountant = make_accountant("auto")
        self._non_private = False
        self.rounds_run = 0

    def planned_event(self) -> PrivacyEvent:
        """The event one round is planned to charge (sampling included)."""
        event = self.private_sum.planned_event(
            self.dimension, self.clip_norm, self.noise_multiplier, self._expected_int()
        )
        return self.cohort.wrap(event)

    def _expected_int(self) -> int:
        return max(2, round(self.expected))

    @property
    def epsilon(self) -> float:
        """ε (at ``delta``) of every round so far."""
        if self.ledger is not None:
            return float(self.ledger.epsilon)
        if self._non_private:
            return math.inf
        return float(self._accountant.get_epsilon(self.delta)) if self.rounds_run else 0.0

    def run_round(self, local_update: LocalUpdate, server_step: ServerStep) -> RoundRecord:
        """One private round (see the module docstring)."""
        start = time.perf_counter()
        self.rounds_run += 1
        index = self.rounds_run
        planned = self.planned_event()
        if self.ledger is not None:
            self.ledger.check_round(planned)  # raises PrivacyBudgetExceeded before sampling
        sampled = np.flatnonzero(self.cohort.sample(self.population)).astype(np.int64)
        members = sampled
        if self.ledger is not None:
            admission = self.ledger.admit([self.device_ids(int(i)) for i in sampled], planned)
            admitted = set(admission.admitted)
            keep = [self.device_ids(int(i)) in admitted for i in sampled]
            members = sampled[np.asarray(keep, dtype=bool)] if len(sampled) else sampled

        def updates(lo: int, hi: int) -> FloatArray:
            return clip_rows(np.asarray(local_update(members[lo:hi]), float), self.clip_norm)

        release = self.private_sum.release(
            updates,
            clip_norm=self.clip_norm,
            noise_multiplier=self.noise_multiplier,
            expected_contributors=self._expected_int(),
            round_index=index,
            dimension=self.dimension,
            cohort_size=len(members),
            dropouts=self.dropouts,
        )
        if release.total is not None:
            server_step(release.total, self.expected)
        status = "aborted" if release.total is None else "released"
        survivors = len(release.included)
        if self.ledger is not None:
            self.ledger.record_round(
                round_index=index,
                event=planned,
                cohort_size=len(members),
                survivors=survivors if status == "released" else None,
                participants=[self.device_ids(int(members[p])) for p in release.included],
                status=status,
            )
        elif status == "released":
            charged = charged_event(planned, status, survivors)
            if isinstance(charged, NonPrivateEvent):
                self._non_private = True
            else:
                self._accountant.compose(charged)
        return RoundRecord(
            round=index,
            sampled=len(sampled),
            admitted=len(members),
            included=survivors,
            epsilon=self.epsilon,
            aborted=release.aborted,
            bytes_up=release.ring.bytes_up,
            bytes_down=release.ring.bytes_down,
            seconds=time.perf_counter() - start,
        )
