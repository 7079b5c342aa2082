"""Attacks on the federated recommender, from what an honest-but-curious server sees.

* :func:`rated_set_inference` — which items did a client rate, from its own upload: the
  attack reads the support of sparse FedAvg-style uploads, fits the rank-one structure of
  plaintext FCF gradients (Ammad-ud-din et al. 2019: every item row is a multiple of the
  user vector; rated items break the fit), and is left with uniform ring elements against
  privagg's SecAgg-masked dense uploads.
* :func:`membership_inference` — was a user in the training population, from the released
  item model: each user is scored by how highly the release ranks the user's items.
* :func:`round_differencing` — the difference of two aggregates whose cohorts differ by
  one user isolates that user's update (up to the DP noise of both rounds).

Every attack returns a ROC AUC (0.5 = chance) computed by :func:`auc`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from analysis.errors import AuditInputError

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

UploadKind = Literal["sparse", "fcf", "masked"]
UPLOAD_KINDS: tuple[str, ...] = ("sparse", "fcf", "masked")

__all__ = [
    "UPLOAD_KINDS",
    "AttackResult",
    "attack_suite",
    "auc",
    "client_upload",
    "membership_inference",
    "rated_set_inference",
    "rated_set_scores",
    "round_differencing",
]


@dataclass(frozen=True)
class AttackResult:
    """An attack's AUC (0.5 = chance) with the number of positive/negative examples."""

    name: str
    auc: float
    positives: int
    negatives: int
    detail: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "attack": self.name,
            "auc": self.auc,
            "positives": self.positives,
            "negatives": self.negatives,
            **self.detail,
        }


def auc(scores: Any, labels: Any) -> float:
    """ROC AUC of ``scores`` for boolean ``labels`` (Mann–Whitney, ties count half)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.bool_)
    if s.shape != y.shape or s.ndim != 1:
        raise AuditInputError("scores and labels must be 1-D and of equal length")
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        raise AuditInputError("AUC needs both positive and negative examples")
    if not np.all(np.isfinite(s)):
        raise AuditInputError("scores must be finite")
    ranks = stats.rankdata(s)
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def client_upload(
    kind: UploadKind,
    rated: BoolArray,
    user_vec: FloatArray,
    item_factors: FloatArray,
    *,
    alpha: float = 4.0,
    bits: int = 32,
    scale: float = 2.0**16,
) -> FloatArray:
    """What the server receives from one client, flattened (one row per item).

    ``sparse``: gradient rows only for rated items (FedAvg-style sparse upload).
    ``fcf``: plaintext FCF implicit-feedback gradient, dense over all items, with
    confidence 1 + α on rated items. ``masked``: the same FCF gradient quantized into
    Z_2^bits and hidden by a SecAgg pairwise mask (AES-CTR expansion of a fresh 32-byte
    seed from ``os.urandom``), exactly what privagg's server holds before unmasking.
    """
    from secagg.prg import expand_mask
    from secagg.ring import ring_add, to_ring

    if kind not in UPLOAD_KINDS:
        raise AuditInputError(f"kind must be one of {UPLOAD_KINDS}, got {kind!r}")
    pred = item_factors @ user_vec
    pref = rated.astype(np.float64)
    conf = 1.0 + alpha * pref
    grad = ((conf * (pref - pred))[:, None] * user_vec[None, :]).astype(np.float64)
    if kind == "sparse":
        grad[~rated] = 0.0
        return grad.ravel()
    if kind == "fcf":
        return grad.ravel()
    q = to_ring(np.rint(grad.ravel() * scale).astype(np.int64), bits)
    mask = expand_mask(os.urandom(32), q.size, bits=bits)
    return ring_add(q, mask, bits).astype(np.float64)


def rated_set_scores(kind: UploadKind, upload: FloatArray, item_factors: FloatArray) -> FloatArray:
    """The attack's per-item "rated" score from one upload (higher = more likely rated)."""
    n_items, dim = item_factors.shape
    g = np.asarray(upload, dtype=np.float64).reshape(n_items, dim)
    if kind == "sparse":
        return np.asarray(np.linalg.norm(g, axis=1), dtype=np.float64)
    if kind == "fcf":
        # unrated rows satisfy g_i = -(x xᵀ) y_i: fit M on all rows (rated are few), score
        # each row by its residual, projected on the gradient direction to keep its sign
        sol, *_ = np.linalg.lstsq(item_factors, g, rcond=None)
        resid = g - item_factors @ sol
        direction = g.sum(axis=0) if np.any(g) else np.ones(dim)
        norm = np.linalg.norm(direction)
        return np.asarray(resid @ (direction / norm) if norm > 0 else np.linalg.norm(resid, axis=1))
    if kind == "masked":
        # no better test exists against uniform ring elements; use the centered magnitude
        # (the ring size is public; its midpoint separates small positives from negatives)
        half = float(np.ldexp(1.0, int(np.ceil(np.log2(max(float(g.max()), 2.0))))) / 2)
        return np.asarray(-np.abs(g - half).sum(axis=1))
    raise AuditInputError(f"kind must be one of {UPLOAD_KINDS}, got {kind!r}")


def rated_set_inference(
    kind: UploadKind,
    *,
    users: int = 20,
    items: int = 200,
    dim: int = 8,
    rated_per_user: int = 10,
    seed: int = 0,
) -> AttackResult:
    """Rated-set inference on simulated clients: mean per-user AUC of the item scores.

    Item factors and user vectors are a seeded simulation of a trained model; the upload
    and the attack are :func:`client_upload` and :func:`rated_set_scores`.
    """
    if users < 1 or items < 2 or not 0 < rated_per_user < items:
        raise AuditInputError("need users >= 1 and 0 < rated_per_user < items")
    sim = np.random.default_rng(seed)
    y = sim.standard_normal((items, dim)) / math.sqrt(dim)
    aucs = []
    for _ in range(users):
        x = sim.standard_normal(dim) / math.sqrt(dim)
        rated = np.zeros(items, dtype=np.bool_)
        rated[sim.choice(items, rated_per_user, replace=False)] = True
        upload = client_upload(kind, rated, x, y)
        aucs.append(auc(rated_set_scores(kind, upload, y), rated))
    return AttackResult(
        f"rated-set inference ({kind} uploads)",
        float(np.mean(aucs)),
        users * rated_per_user,
        users * (items - rated_per_user),
        {"upload": kind, "users": users, "items": items, "auc_min": float(np.min(aucs))},
    )


def _histories(n_users: int, n_items: int, per_user: int, sim: np.random.Generator) -> BoolArray:
    # users draw items from a few taste clusters so a released model can memorize them
    clusters = 20
    centers = sim.dirichlet(np.full(n_items, 0.05), size=clusters)
    out = np.zeros((n_users, n_items), dtype=np.bool_)
    for u in range(n_users):
        c = centers[sim.integers(clusters)]
        out[u, sim.choice(n_items, per_user, replace=False, p=c)] = True
    return out


def membership_inference(
    epsilon: float,
    *,
    members: int = 200,
    items: int = 500,
    per_user: int = 20,
    delta: float = 1e-5,
    seed: int = 0,
) -> AttackResult:
    """User membership inference against a released item-popularity model at ``epsilon``.

    The release is each item's count over the members' capped histories plus Gaussian noise
    calibrated by the ``dp`` accountant to (ε, δ) at user level (``inf`` = no noise), the
    DP part of privagg's model. The attack scores a user by the mean released count of the
    user's items; members are the training users, non-members an equal number of fresh
    users from the same distribution. AUC 0.5 means the release reveals nothing.
    """
    import dp

    if members < 2 or per_user < 1 or per_user >= items:
        raise AuditInputError("need members >= 2 and 0 < per_user < items")
    sim = np.random.default_rng(seed)
    hist = _histories(2 * members, items, per_user, sim)
    is_member = np.zeros(2 * members, dtype=np.bool_)
    is_member[:members] = True
    counts = hist[:members].sum(axis=0).astype(np.float64)
    sensitivity = math.sqrt(per_user)
    z = 0.0
    if math.isfinite(epsilon):
        z = _noise_for(epsilon, delta)
        counts = counts + z * sensitivity * sim.standard_normal(items)
    del dp
    scores = (hist * counts[None, :]).sum(axis=1) / per_user
    return AttackResult(
        "membership inference (released popularity model)",
        auc(scores, is_member),
        members,
        members,
        {"epsilon": epsilon, "delta": delta, "noise_multiplier": z, "items": items},
    )


def _noise_for(epsilon: float, delta: float) -> float:
    """The smallest noise multiplier whose single release costs ε at δ (dp accountant)."""
    import dp

    lo, hi = 0.05, 200.0
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        eps = dp.epsilon(noise_multiplier=mid, sampling_rate=1.0, steps=1, delta=delta)
        lo, hi = (mid, hi) if eps > epsilon else (lo, mid)
    return hi


def round_differencing(
    epsilon: float,
    *,
    cohort: int = 50,
    items: int = 300,
    per_user: int = 10,
    delta: float = 1e-5,
    seed: int = 0,
) -> AttackResult:
    """Difference two aggregates whose cohorts differ only by a target user.

    Each round releases the sum of the cohort's item indicator vectors (L2-clipped to
    √per_user) plus Gaussian noise for (ε, δ) per round (``inf`` = none). The server
    subtracts the rounds and scores each item by the difference; the AUC of recovering the
    target's items is 1 without DP and falls to chance with enough noise.
    """
    if cohort < 2 or per_user < 1 or per_user >= items:
        raise AuditInputError("need cohort >= 2 and 0 < per_user < items")
    sim = np.random.default_rng(seed)
    hist = np.zeros((cohort + 1, items), dtype=np.float64)
    for u in range(cohort + 1):
        hist[u, sim.choice(items, per_user, replace=False)] = 1.0
    z = _noise_for(epsilon, delta) if math.isfinite(epsilon) else 0.0
    noise_scale = z * math.sqrt(per_user)
    with_target = hist.sum(axis=0) + noise_scale * sim.standard_normal(items)
    without = hist[1:].sum(axis=0) + noise_scale * sim.standard_normal(items)
    diff = with_target - without
    target = hist[0].astype(np.bool_)
    cos = float(diff @ hist[0] / (np.linalg.norm(diff) * np.linalg.norm(hist[0]) + 1e-300))
    return AttackResult(
        "round differencing (two aggregates, one user apart)",
        auc(diff, target),
        int(target.sum()),
        items - int(target.sum()),
        {"epsilon": epsilon, "noise_multiplier": z, "cosine_with_target": cos},
    )


def attack_suite(epsilons: Sequence[float], seed: int = 0) -> list[AttackResult]:
    """All three attacks: rated-set inference per upload kind, then MI and differencing per ε."""
    kinds: tuple[UploadKind, ...] = ("sparse", "fcf", "masked")
    out = [rated_set_inference(k, seed=seed) for k in kinds]
    for eps in epsilons:
        out.append(membership_inference(eps, seed=seed))
        out.append(round_differencing(eps, seed=seed))
    return out
