"""On-device context: private per-user signals that never leave the device.

A device may hold signals its user would never share: demographics (for MovieLens 100K,
``u.user``'s age, gender, occupation and zip code stand in for such metadata) and the time
at which it asks for recommendations. :class:`UserContext` holds them for a simulated
population; :class:`OnDeviceContext` uses them **only in on-device scoring**. Nothing in
this module is read by a client task's ``local_updates``: every upload (the clipped float
update and its distributed-DP ring encoding) is a function of the histories and the public
model only, so changing any context value changes no upload (tested bit for bit).

Where can a lift come from under that constraint? Nobody ever sees (context, behaviour)
pairs of *other* users, so a population-level effect of a per-user constant ("25-year-old
engineers like X") cannot be learned; a constant shift of all item scores changes no
ranking. What a device *can* do is combine its own context with public, context-free
information and fit the combination on its own history:

* **request time × public release dates** — an item released after the moment of the
  request cannot be what the user consumes next; the device hides it (``grace_days``
  slack for coarse dates). On MovieLens the released (DP) popularity counts the whole
  collection window, so early requests are otherwise offered films that do not exist yet.
  Beyond hiding, the device adds bins of each item's age *at the request* (days since its
  public release) to its private feature model, fitted on its own history as of its
  latest event: a user who rates new releases gets them ranked up when they are new.
* **age × public release years** — the device knows how old its user was when each film
  came out (age at release, in bins) and adds those bins to its private feature model,
  fitted on its own history against the released popularity prior (a nostalgia effect, if
  the user has one; the L2 penalty shrinks it to zero otherwise).

Gender, occupation and zip code have no such public counterpart here; they are loaded and
kept on the device but have nothing to combine with, so they are not used (the study
reports this rather than inventing a prior).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from recsys.data import Ratings
from recsys.errors import ConfigError, DataFormatError, DataNotFoundError
from recsys.federated import DeviceFleet, FeatureModelConfig
from recsys.split import Split

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

__all__ = [
    "AGE_AT_RELEASE_EDGES",
    "FRESHNESS_EDGES_DAYS",
    "ContextConfig",
    "OnDeviceContext",
    "UserContext",
    "item_release_times",
    "load_user_context",
    "synthetic_user_context",
]

AGE_AT_RELEASE_EDGES = (0.0, 13.0, 20.0, 30.0, 45.0)
"""Bins of the user's age when an item was released: before birth, childhood, teens, 20s,
30-44, 45+ (a seventh column flags an unknown age or release year)."""

FRESHNESS_EDGES_DAYS = (0.0, 60.0, 180.0, 365.0, 1095.0)
"""Bins of an item's age at the request, in days: unreleased, < 2 months, < 6 months,
< 1 year, < 3 years, older (a seventh column flags an unknown date or time)."""

_HIDDEN = -1e30  # score of an item hidden on the device (below every real score)
_YEAR_SECONDS = 365.2425 * 86_400


@dataclass(frozen=True, eq=False)
class UserContext:
    """Per-device private context of a population of ``num_users`` devices.

    ``age`` in years (NaN unknown), ``gender`` 0 = F / 1 = M / -1 unknown, ``occupation``
    an index into ``occupations`` (-1 unknown), ``region`` the first zip digit (-1 when not
    a US zip), ``request_time`` the Unix time at which each device asks for recommendations
    (0 = unknown). ``reference_time`` is the Unix time at which ``age`` was recorded.
    """

    age: FloatArray
    gender: IntArray
    occupation: IntArray
    region: IntArray
    request_time: IntArray
    reference_time: float
    source: str
    synthetic: bool = False
    occupations: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        n = len(self.age)
        for name in ("gender", "occupation", "region", "request_time"):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"context field {name} must have one entry per user")

    @property
    def num_users(self) -> int:
        """Devices the context describes."""
        return len(self.age)

    def with_request_times(self, request_time: IntArray) -> UserContext:
        """The same devices asking at other times."""
        times = np.asarray(request_time, dtype=np.int64)
        if times.shape != (self.num_users,):
            raise ConfigError("request_time must have one entry per user")
        return UserContext(
            age=self.age,
            gender=self.gender,
            occupation=self.occupation,
            region=self.region,
            request_time=times,
            reference_time=self.reference_time,
            source=self.source,
            synthetic=self.synthetic,
            occupations=self.occupations,
        )


def _request_times(split: Split | None, num_users: int) -> IntArray:
    """Evaluation requests happen when the held-out item was consumed (0 without a target)."""
    if split is None:
        return np.zeros(num_users, dtype=np.int64)
    return np.where(split.targets >= 0, split.target_timestamps, 0).astype(np.int64)


def load_user_context(
    path: str | os.PathLike[str], ratings: Ratings, split: Split | None = None
) -> UserContext:
    """Read ``u.user`` (MovieLens 100K: ``id|age|gender|occupation|zip``) for the users of
    ``ratings`` (``path`` is the file or its folder). Every user of ``ratings`` must have a
    row; malformed rows raise :class:`DataFormatError` with the line."""
    p = os.fspath(path)
    if os.path.isdir(p):
        p = os.path.join(p, "u.user")
    if not os.path.isfile(p):
        raise DataNotFoundError(f"{p}: no u.user file (on-device context needs it)")
    try:
        with open(p, encoding="latin-1") as fh:
            lines = fh.read().splitlines()
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
        raise DataFormatError(p, None, str(exc)) from None
    rows: dict[str, tuple[float, int, str, int]] = {}
    for k, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 5:
            raise DataFormatError(p, k, "expected 5 '|'-separated fields (id|age|gender|occ|zip)")
        uid, age_s, gender_s, occ, zip_code = (f.strip() for f in fields)
        try:
            age = float(age_s)
        except ValueError:
            raise DataFormatError(p, k, f"age {age_s!r} is not a number") from None
        if not (math.isfinite(age) and 0 <= age < 130):
            raise DataFormatError(p, k, f"age {age_s!r} out of range")
        if gender_s not in ("M", "F"):
            raise DataFormatError(p, k, f"gender must be M or F, got {gender_s!r}")
        region = int(zip_code[0]) if zip_code[:5].isdigit() else -1
        rows[uid] = (age, 1 if gender_s == "M" else 0, occ, region)
    missing = [u for u in ratings.user_ids.tolist() if u not in rows]
    if missing:
        raise DataFormatError(p, None, f"{len(missing)} users have no row (e.g. {missing[0]!r})")
    occupations = tuple(sorted({r[2] for r in rows.values()}))
    index = {o: i for i, o in enumerate(occupations)}
    table = [rows[u] for u in ratings.user_ids.tolist()]
    latest = float(ratings.timestamps.max()) if ratings.num_ratings else 0.0
    return UserContext(
        age=np.array([r[0] for r in table], dtype=np.float64),
        gender=np.array([r[1] for r in table], dtype=np.int64),
        occupation=np.array([index[r[2]] for r in table], dtype=np.int64),
        region=np.array([r[3] for r in table], dtype=np.int64),
        request_time=_request_times(split, ratings.num_users),
        reference_time=latest,
        source=p,
        synthetic=False,
        occupations=occupations,
    )


def synthetic_user_context(
    ratings: Ratings, split: Split | None = None, *, seed: int = 0
) -> UserContext:
    """Seeded synthetic demographics (independent of behaviour: the synthetic population
    has no demographic effects to find) plus the evaluation request times."""
    rng = np.random.default_rng([seed, 0xC0C7])
    n = ratings.num_users
    latest = float(ratings.timestamps.max()) if ratings.num_ratings else 0.0
    return UserContext(
        age=rng.integers(15, 70, n).astype(np.float64),
        gender=rng.integers(0, 2, n).astype(np.int64),
        occupation=rng.integers(0, 21, n).astype(np.int64),
        region=rng.integers(0, 10, n).astype(np.int64),
        request_time=_request_times(split, n),
        reference_time=latest,
        source=f"synthetic context (seed={seed})",
        synthetic=True,
        occupations=tuple(f"occupation{i}" for i in range(21)),
    )


def item_release_times(ratings: Ratings, path: str | os.PathLike[str] | None = None) -> FloatArray:
    """Public release time of each item (Unix seconds, NaN unknown): day-resolution dates
    from MovieLens 100K's ``u.item`` when ``path`` (the file or its folder) is given,
    otherwise January 1 of ``ratings.item_years``."""
    out = np.full(ratings.num_items, np.nan)
    if ratings.item_years is not None:
        years = np.asarray(ratings.item_years, dtype=np.float64)
        out = np.where(np.isfinite(years), (years - 1970.0) * _YEAR_SECONDS, np.nan)
        # exact Jan 1 of each known year
        for year in np.unique(years[np.isfinite(years)]):
            stamp = dt.datetime(int(year), 1, 1, tzinfo=dt.UTC).timestamp()
            out[years == year] = stamp
    if path is None:
        return out
    p = os.fspath(path)
    if os.path.isdir(p):
        p = os.path.join(p, "u.item")
    if not os.path.isfile(p):
        raise DataNotFoundError(f"{p}: no u.item file")
    index = {v: k for k, v in enumerate(ratings.item_ids.tolist())}
    with open(p, encoding="latin-1") as fh:
        for k, line in enumerate(fh.read().splitlines(), start=1):
            fields = line.split("|")
            if len(fields) < 3:
                continue
            item = index.get(fields[0].strip())
            if item is None or not fields[2].strip():
                continue
            try:
                date = dt.datetime.strptime(fields[2].strip(), "%d-%b-%Y")
            except ValueError:
                raise DataFormatError(
                    p, k, f"release date {fields[2]!r} is not dd-Mon-yyyy"
                ) from None
            out[item] = date.replace(tzinfo=dt.UTC).timestamp()
    return out


@dataclass(frozen=True)
class ContextConfig:
    """Which context signals the device uses.

    ``request_time`` hides items released more than ``grace_days`` after the request;
    ``freshness`` adds bins of an item's age (days since its public release) at the time of
    the request to the device's feature model, fitted on the device's own history at the
    time of its latest event; ``age`` adds the user's age-at-release bins. ``freshness`` is
    off by default: on MovieLens 100K it lowered HR@10 slightly (not significantly; see
    ``docs/results/efficiency/context``), as one fitting time per device misdates older
    events of its history.
    """

    request_time: bool = True
    freshness: bool = False
    age: bool = True
    grace_days: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.grace_days) and self.grace_days >= 0):
            raise ConfigError("grace_days must be finite and non-negative")


def _fit_per_user(
    observed: FloatArray,
    shared: FloatArray,
    private: FloatArray,
    offset: FloatArray,
    *,
    l2: float,
    iterations: int,
) -> FloatArray:
    """:func:`recsys.features.fit_feature_weights` with extra columns of its own for every
    device: the design of device ``b`` is ``[shared | private[b]]`` (I × (ks + ke)).
    Newton steps on Σ_i obs_ui log softmax(offset + design_u w_u)_i − l2/2 ‖w_u‖²; row ``u``
    from device ``u``'s data only. The shared block's moments go through one matrix
    product for the whole batch."""
    b = observed.shape[0]
    ks, ke = shared.shape[1], private.shape[2]
    k = ks + ke
    w = np.zeros((b, k))
    ff = (shared[:, :, None] * shared[:, None, :]).reshape(shared.shape[0], ks * ks)
    flat_private = private.transpose(0, 2, 1)  # (B × ke × I)

    def moments(weights: FloatArray) -> tuple[FloatArray, FloatArray]:
        """First moment (B × k) and second moment (B × k × k) of the design under
        ``weights`` (B × I) per device."""
        first = np.concatenate(
            [weights @ shared, np.einsum("bi,bic->bc", weights, private)], axis=1
        )
        second = np.empty((b, k, k))
        second[:, :ks, :ks] = (weights @ ff).reshape(b, ks, ks)
        if ke:
            weighted = flat_private * weights[:, None, :]  # (B × ke × I)
            cross = (weighted.reshape(b * ke, -1) @ shared).reshape(b, ke, ks)
            second[:, ks:, :ks] = cross
            second[:, :ks, ks:] = cross.transpose(0, 2, 1)
            second[:, ks:, ks:] = np.einsum("bci,bid->bcd", weighted, private)
        return first, second

    f_mean = moments(observed)[0]
    mass = observed.sum(axis=1, keepdims=True)
    eye = np.eye(k)[None]
    for _ in range(iterations):
        z = w[:, :ks] @ shared.T + np.einsum("bic,bc->bi", private, w[:, ks:]) + offset[None, :]
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        ef, second = moments(p)
        cov = second - ef[:, :, None] * ef[:, None, :]
        hess = mass[:, :, None] * cov + l2 * eye
        grad = f_mean - mass * ef - l2 * w
        w += np.linalg.solve(hess, grad[..., None])[..., 0]
    return w


class OnDeviceContext:
    """The scoring-time use of a :class:`UserContext` (see the module docstring).

    :meth:`fit` runs on every device after the popularity release, like the public-feature
    model, and its weights stay on the device; :meth:`feature_scores` and :meth:`adjust`
    are applied in on-device scoring only.
    """

    def __init__(
        self, context: UserContext, release_times: FloatArray, config: ContextConfig | None = None
    ) -> None:
        self.context = context
        self.release_times = np.asarray(release_times, dtype=np.float64)
        self.config = config or ContextConfig()
        self.weights: FloatArray | None = None
        self._last_event: IntArray | None = None

    @property
    def uses_features(self) -> bool:
        """Whether the device refits its feature model with context columns."""
        return self.config.age or self.config.freshness

    def describe(self) -> dict[str, object]:
        """What the devices use (for the report card)."""
        used: list[str] = []
        if self.config.request_time:
            used.append("request time x public release dates (hide unreleased items)")
        if self.config.freshness:
            used.append("request time x release dates (item-age bins in the device model)")
        if self.config.age:
            used.append("age x public release years (age-at-release bins in the device model)")
        return {
            "source": self.context.source,
            "synthetic": self.context.synthetic,
            "used_on_device": used,
            "kept_unused": ["gender", "occupation", "zip region"],
            "uploaded": "nothing (uploads do not depend on context)",
        }

    def _check(self, fleet: DeviceFleet) -> None:
        if self.context.num_users != fleet.num_users:
            raise ConfigError("the context must describe every device of the fleet")
        if self.release_times.shape != (fleet.num_items,):
            raise ConfigError("release_times must have one entry per item")

    def age_at_release(self, users: IntArray) -> FloatArray:
        """One-hot age-at-release bins, (len(users) × I × len(edges) + 2)."""
        c = self.context
        birth = (c.reference_time - c.age[users] * _YEAR_SECONDS)[:, None]
        age_at = (self.release_times[None, :] - birth) / _YEAR_SECONDS
        return _one_hot(age_at, AGE_AT_RELEASE_EDGES)

    def item_age(self, at: FloatArray) -> FloatArray:
        """One-hot bins of each item's age in days at the times ``at`` (one per device;
        ≤ 0 = unknown time): (len(at) × I × len(edges) + 2); negative ages = unreleased."""
        days = (at[:, None] - self.release_times[None, :]) / 86_400.0
        days = np.where(at[:, None] > 0, days, np.nan)
        return _one_hot(days, FRESHNESS_EDGES_DAYS)

    def private_columns(self, users: IntArray, at: FloatArray) -> FloatArray:
        """Every device's context columns at its time ``at``: age-at-release and/or
        item-age bins, (len(users) × I × ke)."""
        parts = [np.zeros((len(users), len(self.release_times), 0))]
        if self.config.age:
            parts.append(self.age_at_release(users))
        if self.config.freshness:
            parts.append(self.item_age(at))
        return np.concatenate(parts, axis=2)

    def fit(
        self, fleet: DeviceFleet, prior: FloatArray, config: FeatureModelConfig, chunk: int = 64
    ) -> None:
        """Each device refits its feature weights with the context columns against the
        released prior, on its own recency-weighted history, as of its latest event."""
        self._check(fleet)
        train = fleet.train
        last = np.where(train.counts > 0, train.timestamps[np.maximum(train.indptr[1:] - 1, 0)], 0)
        self._last_event = last.astype(np.int64)
        if not self.uses_features:
            self.weights = None
            return
        users = np.arange(fleet.num_users, dtype=np.int64)
        weights: list[FloatArray] = []
        for lo in range(0, fleet.num_users, chunk):
            batch = users[lo : lo + chunk]
            private = self.private_columns(batch, self._last_event[batch].astype(np.float64))
            obs = fleet.recency(batch, config.half_life)
            weights.append(
                _fit_per_user(
                    obs,
                    fleet.features,
                    private,
                    prior,
                    l2=config.l2,
                    iterations=config.newton_iterations,
                )
            )
        self.weights = np.concatenate(weights)

    def _now(self, users: IntArray) -> FloatArray:
        """The request time of each device (its latest event when unknown)."""
        when = self.context.request_time[users].astype(np.float64)
        if self._last_event is not None:
            when = np.where(when > 0, when, self._last_event[users])
        return when

    def feature_scores(self, fleet: DeviceFleet, users: IntArray) -> FloatArray | None:
        """w_u · [f_i, context columns_ui(request time)] for a batch of devices (None: not
        fitted)."""
        if self.weights is None:
            return None
        ks = fleet.features.shape[1]
        w = self.weights[users]
        out: FloatArray = w[:, :ks] @ fleet.features.T
        now = self._now(users)
        for lo in range(0, len(users), 128):  # bounded memory: B x I x ke
            private = self.private_columns(users[lo : lo + 128], now[lo : lo + 128])
            out[lo : lo + 128] += np.einsum("bic,bc->bi", private, w[lo : lo + 128, ks:])
        return out

    def adjust(self, users: IntArray, scores: FloatArray) -> FloatArray:
        """Hide the items released after each device's request time (plus the grace)."""
        if not self.config.request_time:
            return scores
        when = self.context.request_time[users].astype(np.float64)
        cutoff = when + self.config.grace_days * 86_400.0
        hidden = (when[:, None] > 0) & (self.release_times[None, :] > cutoff[:, None])
        out: FloatArray = np.where(hidden, _HIDDEN, scores)
        return out


def _one_hot(values: FloatArray, edges: tuple[float, ...]) -> FloatArray:
    """One-hot bins of ``values`` (B × I) by ``edges`` (np.digitize), NaN in the last
    column: (B × I × len(edges) + 2)."""
    known = np.isfinite(values)
    bins = np.digitize(np.where(known, values, 0.0), edges)
    bins = np.where(known, bins, len(edges) + 1)
    out: FloatArray = np.eye(len(edges) + 2)[bins]
    return out
