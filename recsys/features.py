"""Public item features (genres, release-age bins) and the on-device feature model.

The feature model is the personal half of the one-release recommender ("popfeat"): after
the server has released DP popularity counts, each device fits a small multinomial
next-item model on its **own** history,

    P(i | u) ∝ exp(offset_i + w_u · f_i),   offset_i = log(max(pop̃_i, 0) + shrink),

where ``f_i`` are public item features. Observations are weighted towards the user's most
recent items (half-life counted in items) and normalised to one unit of evidence per user;
``w_u`` is fitted by a few damped Newton steps with an L2 penalty and never leaves the
device. The fit is vectorised over a batch of devices, but row ``u`` of every quantity is
computed from user ``u``'s data only.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from recsys.data import Ratings
from recsys.errors import ConfigError
from recsys.split import Interactions

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

__all__ = ["fit_feature_weights", "item_features", "recency_weights"]

# Release-age bins (years before the reference year); the last column flags unknown years.
_AGE_EDGES = (0.5, 1.5, 3.5, 7.5, 27.5)


def item_features(ratings: Ratings, reference_year: float | None = None) -> FloatArray:
    """Public item features: genre flags plus one-hot release-age bins (and "unknown").

    ``reference_year`` defaults to the calendar year of the latest timestamp, i.e. "now" for
    the server at training time. Without metadata, returns an (I × 0) matrix.
    """
    cols: list[FloatArray] = []
    if ratings.item_genres is not None:
        cols.append(np.asarray(ratings.item_genres, dtype=np.float64))
    if ratings.item_years is not None:
        if reference_year is None:
            latest = int(ratings.timestamps.max()) if ratings.num_ratings else 0
            reference_year = 1970.0 + latest / (365.2425 * 86_400)
            reference_year = math.floor(reference_year)
        years = np.asarray(ratings.item_years, dtype=np.float64)
        known = np.isfinite(years)
        age = np.where(known, reference_year - np.where(known, years, 0.0), 0.0)
        bins = np.digitize(age, _AGE_EDGES)
        onehot = np.zeros((ratings.num_items, len(_AGE_EDGES) + 2))
        onehot[np.arange(ratings.num_items), np.where(known, bins, len(_AGE_EDGES) + 1)] = 1.0
        cols.append(onehot)
    if not cols:
        return np.zeros((ratings.num_items, 0))
    return np.hstack(cols)


def recency_weights(train: Interactions, half_life: float) -> FloatArray:
    """Per stored interaction, weight 0.5^(items after it / half_life), normalised per user.

    ``half_life <= 0`` gives uniform weights. Each user's weights sum to one.
    """
    pos = train.positions_from_end().astype(np.float64)
    w = np.power(0.5, pos / half_life) if half_life > 0 else np.ones_like(pos)
    sums = np.repeat(np.add.reduceat(w, train.indptr[:-1]) if len(w) else w, train.counts)
    return w / np.where(sums > 0, sums, 1.0)


def fit_feature_weights(
    observed: FloatArray,
    features: FloatArray,
    offset: FloatArray,
    *,
    l2: float = 0.1,
    iterations: int = 8,
) -> FloatArray:
    """Fit ``w_u`` for a batch of devices (one row of ``observed`` per device).

    ``observed`` (B × I) holds each device's normalised observation weights (rows sum to 1
    or 0), ``features`` (I × k) the public item features and ``offset`` (I,) the released
    popularity prior. Maximises Σ_i obs_ui log P(i|u) − l2/2 ‖w_u‖² by Newton's method.
    """
    if l2 <= 0:
        raise ConfigError("l2 must be positive (it keeps the Newton system well-posed)")
    b, k = observed.shape[0], features.shape[1]
    w = np.zeros((b, k))
    if k == 0 or b == 0:
        return w
    f_mean = observed @ features
    ff = (features[:, :, None] * features[:, None, :]).reshape(len(features), k * k)
    eye = np.eye(k)[None]
    mass = observed.sum(axis=1, keepdims=True)
    for _ in range(iterations):
        z = w @ features.T + offset[None, :]
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        ef = p @ features
        grad = f_mean - mass * ef - l2 * w
        cov = (p @ ff).reshape(b, k, k) - ef[:, :, None] * ef[:, None, :]
        hess = mass[:, :, None] * cov + l2 * eye
        w += np.linalg.solve(hess, grad[..., None])[..., 0]
    return w
