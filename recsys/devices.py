"""A heterogeneous-device simulator: who is online, who is slow, who misses the deadline.

Every simulated device gets, once and from a seeded generator (who is slow is simulation,
not a secret):

* a compute speed (log-normal): seconds of local work (local update + distributed-DP
  encoding) per 10^4 upload coordinates, ``compute_median`` at the median device;
* an upload bandwidth (log-normal, bytes/s) and a network round-trip latency (log-normal),
  paid once per SecAgg message round;
* a daily availability window: it is online for a contiguous ``length`` of every day
  starting at a random time (the mean online fraction is ``availability``).

In a round that starts at simulated time ``t`` each cohort device is

* **offline** when ``t`` falls outside its window: it never advertises its keys (a SecAgg
  dropout at stage ``"advertise"``);
* **late** when its compute + masked-input upload + protocol latency, slowed by a per-round
  straggler factor (Pareto with shape ``straggler_shape``: heavy-tailed), exceeds the round
  ``deadline``: it advertised keys and sent its shares but its masked input does not reach
  the server in time (a SecAgg dropout at stage ``"mask"``; the protocol removes its mask
  from the sum with the other devices' shares).

The simulated wall time of a round is the deadline when some online device missed it
(the server waits until the deadline), else the time of the slowest device. Rounds start
``round_interval`` simulated seconds apart (or later, if a round overran the interval).

The plan the trainer uses before training (the expected dropout rate, which sizes the
distributed-DP noise shares and the SecAgg threshold) is estimated by :meth:`expected_dropout`
from a separate generator, so the rounds themselves stay independent of it. The dropouts
that happened are fed through the real SecAgg dropout path; the ledger charges the noise
shares that actually reached the sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from recsys.errors import ConfigError

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

DeviceProfile = Literal["heavy-tail", "uniform"]
DEVICE_PROFILES: tuple[str, ...] = ("heavy-tail", "uniform")
DAY_SECONDS = 86_400.0
PROTOCOL_MESSAGES = 4
"""SecAgg message rounds a device pays latency for (advertise, share, mask, unmask)."""

__all__ = [
    "DAY_SECONDS",
    "DEVICE_PROFILES",
    "DeviceConfig",
    "DeviceRound",
    "DeviceSimulator",
]


@dataclass(frozen=True)
class DeviceConfig:
    """The device population and the round deadline.

    ``profile="uniform"`` gives every device the median speed, bandwidth and latency, no
    straggler slowdown and permanent availability (a control: only the deadline matters).
    """

    profile: DeviceProfile = "heavy-tail"
    deadline: float = 10.0
    compute_median: float = 0.5
    compute_sigma: float = 1.0
    bandwidth_median: float = 250_000.0
    bandwidth_sigma: float = 1.0
    latency_median: float = 0.15
    latency_sigma: float = 0.7
    straggler_shape: float = 1.5
    availability: float = 0.7
    round_interval: float = 3_600.0
    start_time: float = 0.0

    def __post_init__(self) -> None:
        if self.profile not in DEVICE_PROFILES:
            raise ConfigError(f"device profile must be one of {DEVICE_PROFILES}")
        positive = {
            "deadline": self.deadline,
            "compute_median": self.compute_median,
            "bandwidth_median": self.bandwidth_median,
            "latency_median": self.latency_median,
            "straggler_shape": self.straggler_shape,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be positive and finite, got {value}")
        for name, value in (
            ("compute_sigma", self.compute_sigma),
            ("bandwidth_sigma", self.bandwidth_sigma),
            ("latency_sigma", self.latency_sigma),
            ("round_interval", self.round_interval),
            ("start_time", self.start_time),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be finite and non-negative, got {value}")
        if not 0 < self.availability <= 1:
            raise ConfigError(f"availability must lie in (0, 1], got {self.availability}")


@dataclass(frozen=True)
class DeviceRound:
    """What the simulator decided for one round's cohort (positions are cohort positions)."""

    start: float
    offline: IntArray
    late: IntArray
    device_seconds: FloatArray
    wall_seconds: float

    @property
    def drop_plan(self) -> dict[str, list[int]]:
        """The SecAgg drop plan: offline devices never advertise, late ones never send
        their masked input."""
        return {"advertise": self.offline.tolist(), "mask": self.late.tolist()}

    @property
    def dropped(self) -> int:
        """Devices of the cohort whose input is not in the sum."""
        return len(self.offline) + len(self.late)


class DeviceSimulator:
    """Seeded device population of ``num_users`` devices (see the module docstring)."""

    def __init__(self, num_users: int, config: DeviceConfig, *, seed: int = 0) -> None:
        if num_users < 1:
            raise ConfigError("the device population needs at least one device")
        self.config = config
        self.num_users = num_users
        self.seed = seed
        rng = np.random.default_rng([seed, 0xDE5])
        n = num_users
        c = config
        if c.profile == "uniform":
            self.compute = np.full(n, c.compute_median)
            self.bandwidth = np.full(n, c.bandwidth_median)
            self.latency = np.full(n, c.latency_median)
            self.window_start = np.zeros(n)
            self.window_length = np.full(n, DAY_SECONDS)
        else:
            self.compute = c.compute_median * rng.lognormal(0.0, c.compute_sigma, n)
            self.bandwidth = c.bandwidth_median * rng.lognormal(0.0, c.bandwidth_sigma, n)
            self.latency = c.latency_median * rng.lognormal(0.0, c.latency_sigma, n)
            self.window_start = rng.uniform(0.0, DAY_SECONDS, n)
            # online fraction per device: Beta with mean `availability` (some are nearly
            # always on, some rarely)
            a = c.availability
            frac = rng.beta(4.0 * a, 4.0 * (1.0 - a), n) if a < 1 else np.ones(n)
            self.window_length = frac * DAY_SECONDS
        self.clock = c.start_time
        self._round = 0

    # ------------------------------------------------------------------ population model
    def online(self, users: IntArray, at: float) -> BoolArray:
        """Whether each device is inside its availability window at simulated time ``at``."""
        offset = np.mod(at - self.window_start[users], DAY_SECONDS)
        out: BoolArray = offset < self.window_length[users]
        return out

    def device_seconds(
        self, users: IntArray, upload_values: int, upload_bytes: int, slowdown: FloatArray
    ) -> FloatArray:
        """Simulated compute + masked-input upload + protocol latency of each device."""
        work = self.compute[users] * (upload_values / 1e4)
        send = upload_bytes / self.bandwidth[users]
        out: FloatArray = (work + send) * slowdown + PROTOCOL_MESSAGES * self.latency[users]
        return out

    def _slowdown(self, rng: np.random.Generator, n: int) -> FloatArray:
        if self.config.profile == "uniform":
            return np.ones(n)
        # Pareto (Lomax + 1): 1 at least, heavy right tail
        out: FloatArray = 1.0 + rng.pareto(self.config.straggler_shape, n)
        return out

    def _decide(
        self,
        users: IntArray,
        at: float,
        upload_values: int,
        upload_bytes: int,
        rng: np.random.Generator,
    ) -> tuple[BoolArray, BoolArray, FloatArray]:
        online = self.online(users, at)
        seconds = self.device_seconds(
            users, upload_values, upload_bytes, self._slowdown(rng, len(users))
        )
        late = online & (seconds > self.config.deadline)
        return ~online, late, seconds

    # ------------------------------------------------------------------ rounds
    def next_round(self, cohort: IntArray, upload_values: int, upload_bytes: int) -> DeviceRound:
        """Decide the round of ``cohort`` (user ids) starting at the simulator's clock and
        advance the clock by ``max(round_interval, wall time)``."""
        if upload_values < 0 or upload_bytes < 0:
            raise ConfigError("upload sizes must be non-negative")
        self._round += 1
        rng = np.random.default_rng([self.seed, 0xDE6, self._round])
        start = self.clock
        offline, late, seconds = self._decide(cohort, start, upload_values, upload_bytes, rng)
        included = ~offline & ~late
        if late.any():
            wall = self.config.deadline
        elif included.any():
            wall = float(seconds[included].max())
        else:
            wall = 0.0
        self.clock = start + max(self.config.round_interval, wall)
        return DeviceRound(
            start=start,
            offline=np.flatnonzero(offline).astype(np.int64),
            late=np.flatnonzero(late).astype(np.int64),
            device_seconds=seconds,
            wall_seconds=wall,
        )

    def expected_dropout(self, upload_values: int, upload_bytes: int, samples: int = 24) -> float:
        """Fraction of devices expected to be offline or late in a round: averaged over the
        whole population at ``samples`` round start times spread over a day, with a
        generator separate from the rounds'. Used to plan the noise shares before training."""
        rng = np.random.default_rng([self.seed, 0xDE7])
        users = np.arange(self.num_users, dtype=np.int64)
        lost = 0
        for k in range(samples):
            at = self.config.start_time + k * DAY_SECONDS / samples
            offline, late, _ = self._decide(users, at, upload_values, upload_bytes, rng)
            lost += int(offline.sum() + late.sum())
        return lost / (samples * self.num_users)
