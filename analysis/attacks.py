"""Attacks on the federated recommender, from what an honest-but-curious server sees.

* :func:`rated_set_inference` — which items did a client rate, from its own upload: the
  attack reads the support of sparse FedAvg-style uploads, fits the rank-one structure of
  plaintext FCF gradients (Ammad-ud-din et al. 2019: every item row is a multiple of the
  user vector; rated items break the fit), and is left with uniform ring elements against
  privagg's SecAgg-masked dense uploads.
* :func:`membership_inference` — was a user in the training population, from the released
  item model: each user is scored by how highly the release ranks the user's items.
  :func:`membership_inference_on` runs it on real histories (e.g. MovieLens 100K, capped as
  privagg's popularity release caps them, see :func:`capped_histories`): a random half of
  the users are members, the other half held-out non-members, and the AUC comes with a
  DeLong 95 % interval; :func:`membership_study` repeats it over seeds.
* :func:`round_differencing` — the difference of two aggregates whose cohorts differ by
  one user isolates that user's update (up to the DP noise of both rounds).

Every attack returns a ROC AUC (0.5 = chance) computed by :func:`auc` (with
:func:`auc_interval` for its DeLong confidence interval).
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
MIAttack = Literal["count", "calibrated"]
MI_ATTACKS: tuple[MIAttack, ...] = ("count", "calibrated")
MI_GOAL_AUC = 0.55  # issue 7: membership inference AUC at most this at ε = 8
_Z95 = 1.959963984540054  # the two-sided 95 % normal quantile

__all__ = [
    "MI_ATTACKS",
    "MI_GOAL_AUC",
    "UPLOAD_KINDS",
    "AttackResult",
    "MembershipStudy",
    "attack_suite",
    "auc",
    "auc_interval",
    "capped_histories",
    "client_upload",
    "dp_max_auc",
    "membership_inference",
    "membership_inference_on",
    "membership_study",
    "rated_set_inference",
    "rated_set_scores",
    "round_differencing",
]


@dataclass(frozen=True)
class AttackResult:
    """An attack's AUC (0.5 = chance) with the number of positive/negative examples and,
    where computed, its 95 % confidence interval ``ci``."""

    name: str
    auc: float
    positives: int
    negatives: int
    detail: dict[str, Any]
    ci: tuple[float, float] | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-ready view."""
        out = {
            "attack": self.name,
            "auc": self.auc,
            "positives": self.positives,
            "negatives": self.negatives,
            **self.detail,
        }
        if self.ci is not None:
            out["auc_ci95"] = list(self.ci)
        return out


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


def _auc_and_se(scores: Any, labels: Any) -> tuple[float, float]:
    """The AUC and its DeLong (1988) standard error: the variance of the Mann–Whitney
    statistic from its structural components (midranks, so ties count half),
    s²₁₀/m + s²₀₁/n for m positives and n negatives."""
    area = auc(scores, labels)
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.bool_)
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise AuditInputError("a confidence interval needs at least 2 positives and 2 negatives")
    all_ranks = stats.rankdata(s)
    v10 = (all_ranks[y] - stats.rankdata(s[y])) / n  # P(negative < this positive)
    v01 = 1.0 - (all_ranks[~y] - stats.rankdata(s[~y])) / m  # P(positive > this negative)
    return area, math.sqrt(float(np.var(v10, ddof=1)) / m + float(np.var(v01, ddof=1)) / n)


def auc_interval(scores: Any, labels: Any, level: float = 0.95) -> tuple[float, float, float]:
    """(AUC, lower, upper): the AUC with its DeLong normal confidence interval, clipped to
    [0, 1]."""
    if not 0 < level < 1:
        raise AuditInputError("level must lie in (0, 1)")
    area, se = _auc_and_se(scores, labels)
    half = float(stats.norm.ppf(0.5 + level / 2)) * se
    return area, max(0.0, area - half), min(1.0, area + half)


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


def _mi_scores(
    hist: BoolArray,
    is_member: BoolArray,
    epsilon: float,
    delta: float,
    sensitivity: float,
    sim: np.random.Generator,
    attack: MIAttack,
    noise_multiplier: float | None = None,
) -> tuple[FloatArray, float]:
    """Release the members' item counts at (ε, δ) and score every user; returns (scores, z).

    ``count``: the mean released count of the user's items. ``calibrated``: the per-item
    likelihood-ratio statistic of a Gaussian model, Σ over the user's items of
    (released − expected) / (expected + σ²), where "expected" is the count the release
    would show without the user, estimated from the rest of the population (an attacker
    who knows the population's item popularity, minus the target) and σ the release noise
    (public: the accountant's noise multiplier × sensitivity). A member adds 1 to each of
    its items; rare items, where that 1 stands out, weigh most. ``noise_multiplier``
    overrides the accountant's single-release noise for (ε, δ) (e.g. a run's own plan).
    """
    if attack not in MI_ATTACKS:
        raise AuditInputError(f"attack must be one of {MI_ATTACKS}, got {attack!r}")
    h = hist.astype(np.float64)
    counts = h[is_member].sum(axis=0)
    z = 0.0
    if math.isfinite(epsilon):
        z = _noise_for(epsilon, delta) if noise_multiplier is None else noise_multiplier
        if not z > 0:
            raise AuditInputError("noise_multiplier must be positive")
        counts = counts + z * sensitivity * sim.standard_normal(hist.shape[1])
    per_user = np.maximum(h.sum(axis=1), 1.0)
    if attack == "count":
        return (h @ counts) / per_user, z
    population = h.sum(axis=0)
    share = float(is_member.sum()) / max(len(hist) - 1, 1)
    expected = share * (population[None, :] - h)  # per user: the population without it
    weight = 1.0 / (expected + (z * sensitivity) ** 2 + 1.0)  # +1: the user's own count
    return np.asarray((h * (counts[None, :] - expected) * weight).sum(axis=1)), z


def membership_inference(
    epsilon: float,
    *,
    members: int = 200,
    items: int = 500,
    per_user: int = 20,
    delta: float = 1e-5,
    seed: int = 0,
    attack: MIAttack = "calibrated",
) -> AttackResult:
    """User membership inference against a released item-popularity model at ``epsilon``,
    on simulated users.

    The release is each item's count over the members' capped histories plus Gaussian noise
    calibrated by the ``dp`` accountant to (ε, δ) at user level (``inf`` = no noise), the
    DP part of privagg's model. The attack (see :func:`_mi_scores`) scores each user;
    members are the training users, non-members an equal number of fresh users from the
    same distribution. AUC 0.5 means the release reveals nothing; ``ci`` is its DeLong 95 %
    interval.
    """
    if members < 2 or per_user < 1 or per_user >= items:
        raise AuditInputError("need members >= 2 and 0 < per_user < items")
    sim = np.random.default_rng(seed)
    hist = _histories(2 * members, items, per_user, sim)
    is_member = np.zeros(2 * members, dtype=np.bool_)
    is_member[:members] = True
    scores, z = _mi_scores(hist, is_member, epsilon, delta, math.sqrt(per_user), sim, attack)
    area, lo, hi = auc_interval(scores, is_member)
    return AttackResult(
        "membership inference (released popularity model)",
        area,
        members,
        members,
        {"epsilon": epsilon, "delta": delta, "noise_multiplier": z, "items": items},
        (lo, hi),
    )


def dp_max_auc(epsilon: float, delta: float) -> float:
    """The largest AUC any membership attack can reach against an (ε, δ)-DP release: the
    area under the highest ROC that (ε, δ) allows
    (:func:`analysis.audit_empirical.predicted_tpr`); 1 for ε = ∞."""
    from analysis.audit_empirical import predicted_tpr

    if not math.isfinite(epsilon):
        return 1.0
    fpr = np.linspace(0.0, 1.0, 20_001)
    return float(np.trapezoid(predicted_tpr(fpr, epsilon, delta), fpr))


def capped_histories(ratings: Any, cap: int = 20) -> BoolArray:
    """Each user's ``cap`` most recent training items (leave-last-out split), one row per
    user: exactly what privagg's popularity release counts (``recsys.PopularityTask``)."""
    from recsys.split import leave_last_out

    if cap < 1:
        raise AuditInputError("cap must be at least 1")
    train = leave_last_out(ratings).train
    keep = (train.positions_from_end() < cap).astype(np.float64)
    users = np.arange(train.num_users, dtype=np.int64)
    return np.asarray(train.dense(users, keep) > 0)


def membership_inference_on(
    histories: Any,
    epsilon: float,
    *,
    delta: float = 1e-4,
    seed: int = 0,
    attack: MIAttack = "calibrated",
    sensitivity: float | None = None,
    noise_multiplier: float | None = None,
) -> AttackResult:
    """Membership inference on real users: a seeded random half of ``histories`` (one 0/1
    row per user) are the members whose capped histories the release counts, the other
    half are held-out non-members. ``sensitivity`` is the release's L2 sensitivity (default
    √(largest history), i.e. √cap for capped histories); ``noise_multiplier`` that of a
    given run (default: the accountant's for one release at (ε, δ)). The AUC comes with its
    DeLong 95 % interval."""
    hist = np.asarray(histories, dtype=np.bool_)
    if hist.ndim != 2 or hist.shape[0] < 8 or hist.shape[1] < 2:
        raise AuditInputError("histories must be a (users >= 8) × (items >= 2) 0/1 matrix")
    active = hist.any(axis=1)
    hist = hist[active]
    if sensitivity is None:
        sensitivity = math.sqrt(float(hist.sum(axis=1).max()))
    if not sensitivity > 0:
        raise AuditInputError("sensitivity must be positive")
    sim = np.random.default_rng(seed)
    n = len(hist)
    is_member = np.zeros(n, dtype=np.bool_)
    is_member[sim.permutation(n)[: n // 2]] = True
    scores, z = _mi_scores(
        hist, is_member, epsilon, delta, sensitivity, sim, attack, noise_multiplier
    )
    area, se = _auc_and_se(scores, is_member)
    lo, hi = max(0.0, area - _Z95 * se), min(1.0, area + _Z95 * se)
    return AttackResult(
        f"membership inference ({attack} attack, released popularity model)",
        area,
        int(is_member.sum()),
        int((~is_member).sum()),
        {
            "epsilon": epsilon,
            "delta": delta,
            "noise_multiplier": z,
            "sensitivity": sensitivity,
            "items": hist.shape[1],
            "seed": seed,
            "attack_variant": attack,
            "auc_se": se,
        },
        (lo, hi),
    )


@dataclass(frozen=True)
class MembershipStudy:
    """Membership inference at one ε over several seeds (member splits and noise draws).

    ``auc`` is the mean over seeds; ``ci`` is mean ± 1.96 × the mean per-seed DeLong
    standard error, *not* divided by √seeds, because every seed reuses the same users (the
    finite population, not the split, limits what the data can show). ``goal`` says where
    :data:`MI_GOAL_AUC` stands: ``met`` (the whole interval is below it), ``missed`` (the
    whole interval is above it) or ``undecided`` (it lies inside the interval).
    """

    epsilon: float
    attack: str
    members: int
    non_members: int
    seed_aucs: tuple[float, ...]
    auc: float
    ci: tuple[float, float]
    noise_multiplier: float

    @property
    def goal(self) -> str:
        if self.ci[1] <= MI_GOAL_AUC:
            return "met"
        if self.ci[0] > MI_GOAL_AUC:
            return "missed"
        return "undecided"


def membership_study(
    histories: Any,
    epsilon: float,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    delta: float = 1e-4,
    attack: MIAttack = "calibrated",
    sensitivity: float | None = None,
    noise_multiplier: float | None = None,
) -> MembershipStudy:
    """:func:`membership_inference_on` for every seed, summarized (see
    :class:`MembershipStudy`)."""
    if not seeds:
        raise AuditInputError("need at least one seed")
    runs = [
        membership_inference_on(
            histories,
            epsilon,
            delta=delta,
            seed=s,
            attack=attack,
            sensitivity=sensitivity,
            noise_multiplier=noise_multiplier,
        )
        for s in seeds
    ]
    aucs = np.array([r.auc for r in runs])
    se = float(np.mean([r.detail["auc_se"] for r in runs]))
    mean = float(aucs.mean())
    return MembershipStudy(
        epsilon,
        attack,
        runs[0].positives,
        runs[0].negatives,
        tuple(float(a) for a in aucs),
        mean,
        (max(0.0, mean - _Z95 * se), min(1.0, mean + _Z95 * se)),
        float(runs[0].detail["noise_multiplier"]),
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
