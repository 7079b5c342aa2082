"""Empirical privacy audits in one training run (Steinke, Nasr, Jagielski, NeurIPS 2023).

m canaries are each included independently with probability ½; after one run every
canary gets a score from an attack on what the server sees; the auditor guesses "in" for
the k₊ highest scores and "out" for the k₋ lowest and counts the correct guesses v of
r = k₊ + k₋. If the run is (ε, δ)-DP, v is stochastically dominated by Binomial(r, e^ε/(1+e^ε))
up to an additive 2mδ term (their Theorem 3), so the largest ε whose tail p-value is at most
the significance level is a lower bound on ε at that confidence. The binomial tail search is
hand-written (a few lines over :func:`scipy.stats.binom.sf`) because the only library that
has it (jax_privacy) needs JAX, which this project does not ship.

:func:`audit_gaussian_mechanism` is the self-check on a plain Gaussian mechanism of known ε;
:func:`audit_distributed_dp` audits privagg's distributed-DP release path: canary clients
whose clipped contributions enter the integer sum of a SecAgg round with ``dp``'s own
discrete Gaussian noise, scored by the inner product of what the server decodes with each
canary's direction (white-box "Dirac" canaries, Nasr et al. 2023).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, stats

from analysis.errors import AuditInputError

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

__all__ = [
    "DistributedAudit",
    "OneRunAudit",
    "audit_distributed_dp",
    "audit_gaussian_mechanism",
    "empirical_roc",
    "epsilon_lower_bound",
    "gaussian_canary_scores",
    "gaussian_delta",
    "gaussian_epsilon",
    "gaussian_sigma_for_epsilon",
    "max_epsilon_lower_bound",
    "one_run_audit",
    "one_run_p_value",
    "predicted_tpr",
]


def one_run_p_value(r: int, v: int, epsilon: float, delta: float, m: int) -> float:
    """P-value of "v or more of r guesses correct" under (ε, δ)-DP with m canaries.

    P[Bin(r, p_ε) ≥ v] + 2mδ · max_{1≤i≤v} (P[Bin ≥ v−i] − P[Bin ≥ v]) / i, with
    p_ε = e^ε / (1 + e^ε) (Steinke et al. 2023, Theorem 3).
    """
    if not 0 <= v <= r or m < r or r < 0:
        raise AuditInputError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if v == 0:
        return 1.0
    p = 1.0 / (1.0 + math.exp(-epsilon))
    tail_v = float(stats.binom.sf(v - 1, r, p))  # P[Bin >= v]
    if delta == 0:
        return min(1.0, tail_v)
    i = np.arange(1, v + 1)
    tails = stats.binom.sf(v - i - 1, r, p)  # P[Bin >= v - i]
    slack = float(np.max((tails - tail_v) / i))
    return min(1.0, tail_v + 2.0 * m * delta * slack)


def epsilon_lower_bound(r: int, v: int, m: int, delta: float, significance: float = 0.05) -> float:
    """The largest ε rejected at ``significance`` by v correct of r guesses (0 if none).

    The p-value grows with ε, so the bound is found by bisection to 1e-6.
    """
    if not 0 < significance < 1:
        raise AuditInputError(f"significance must lie in (0, 1), got {significance}")
    if not 0 <= delta < 1:
        raise AuditInputError(f"delta must lie in [0, 1), got {delta}")
    if one_run_p_value(r, v, 0.0, delta, m) > significance:
        return 0.0
    lo, hi = 0.0, 1.0
    while one_run_p_value(r, v, hi, delta, m) <= significance:
        lo, hi = hi, 2 * hi
        if hi > 1e3:
            return math.inf
    while hi - lo > 1e-6:
        mid = 0.5 * (lo + hi)
        if one_run_p_value(r, v, mid, delta, m) <= significance:
            lo = mid
        else:
            hi = mid
    return lo


def max_epsilon_lower_bound(r: int, m: int, delta: float, significance: float = 0.05) -> float:
    """The ideal bound: ε_LB when all r guesses are right (the most r guesses can certify)."""
    return epsilon_lower_bound(r, r, m, delta, significance)


@dataclass(frozen=True)
class OneRunAudit:
    """The result of one one-run audit: guesses, correct guesses and the ε lower bound."""

    canaries: int
    guesses: int
    correct: int
    k_plus: int
    k_minus: int
    delta: float
    significance: float
    epsilon_lower: float
    epsilon_ideal: float
    epsilon_claimed: float | None = None

    @property
    def rejects_claim(self) -> bool:
        """True when the audit proves the claimed ε false (lower bound above it)."""
        return self.epsilon_claimed is not None and self.epsilon_lower > self.epsilon_claimed

    def summary(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "canaries": self.canaries,
            "guesses": self.guesses,
            "correct": self.correct,
            "k_plus": self.k_plus,
            "k_minus": self.k_minus,
            "delta": self.delta,
            "significance": self.significance,
            "epsilon_lower_bound": self.epsilon_lower,
            "epsilon_ideal_bound": self.epsilon_ideal,
            "epsilon_claimed": self.epsilon_claimed,
            "rejects_claim": self.rejects_claim,
        }


def _check_scores(scores: Any, included: Any) -> tuple[FloatArray, BoolArray]:
    s = np.asarray(scores, dtype=np.float64)
    inc = np.asarray(included)
    if s.ndim != 1 or inc.shape != s.shape or s.size < 2:
        raise AuditInputError("scores and included must be 1-D arrays of the same length >= 2")
    if not np.all(np.isfinite(s)):
        raise AuditInputError("scores must be finite")
    if inc.dtype != np.bool_:
        raise AuditInputError("included must be a boolean array")
    return s, inc


def one_run_audit(
    scores: Any,
    included: Any,
    *,
    k_plus: int,
    k_minus: int = 0,
    delta: float,
    significance: float = 0.05,
    epsilon_claimed: float | None = None,
) -> OneRunAudit:
    """Guess "in" for the k₊ highest and "out" for the k₋ lowest scores; bound ε (95 % default).

    ``included`` is the secret coin of each canary (True = it took part in the run); the
    guess sizes must be fixed before looking at the scores for the bound to be valid.
    """
    s, inc = _check_scores(scores, included)
    m = s.size
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus == 0 or k_plus + k_minus > m:
        raise AuditInputError(f"need 0 < k_plus + k_minus <= m, got {k_plus} + {k_minus}, m={m}")
    order = np.argsort(s, kind="stable")
    top = order[m - k_plus :] if k_plus else order[:0]
    bottom = order[:k_minus]
    correct = int(inc[top].sum()) + int((~inc[bottom]).sum())
    r = k_plus + k_minus
    return OneRunAudit(
        canaries=m,
        guesses=r,
        correct=correct,
        k_plus=k_plus,
        k_minus=k_minus,
        delta=delta,
        significance=significance,
        epsilon_lower=epsilon_lower_bound(r, correct, m, delta, significance),
        epsilon_ideal=max_epsilon_lower_bound(r, m, delta, significance),
        epsilon_claimed=epsilon_claimed,
    )


def gaussian_delta(epsilon: float, mu: float) -> float:
    """Exact δ(ε) of a Gaussian mechanism with μ = sensitivity/σ (Balle & Wang 2018)."""
    if mu <= 0:
        return 0.0
    # e^ε·Φ(x) in log space: both factors overflow/underflow for large ε or μ
    second = math.exp(epsilon + float(stats.norm.logcdf(-epsilon / mu - mu / 2)))
    return float(stats.norm.cdf(-epsilon / mu + mu / 2)) - second


def gaussian_epsilon(sigma: float, delta: float) -> float:
    """Exact ε at δ of one Gaussian release with sensitivity 1 and noise σ."""
    mu = 1.0 / sigma
    if gaussian_delta(0.0, mu) <= delta:
        return 0.0
    hi = 1.0
    while gaussian_delta(hi, mu) > delta:
        hi *= 2
    return float(optimize.brentq(lambda e: gaussian_delta(e, mu) - delta, 0.0, hi, xtol=1e-10))


def gaussian_sigma_for_epsilon(epsilon: float, delta: float) -> float:
    """The σ (sensitivity 1) whose exact Gaussian ε at δ equals ``epsilon``."""
    if not (epsilon > 0 and 0 < delta < 1):
        raise AuditInputError("need epsilon > 0 and 0 < delta < 1")
    return float(
        optimize.brentq(lambda s: gaussian_epsilon(s, delta) - epsilon, 0.02, 1e3, xtol=1e-10)
    )


def predicted_tpr(fpr: FloatArray, epsilon: float, delta: float) -> FloatArray:
    """The highest TPR any attack can reach at each FPR against an (ε, δ)-DP mechanism."""
    f = np.asarray(fpr, dtype=np.float64)
    a = math.exp(epsilon) * f + delta
    b = 1.0 - math.exp(-epsilon) * (1.0 - delta - f)
    return np.clip(np.minimum(a, b), 0.0, 1.0)


def empirical_roc(scores: Any, included: Any) -> tuple[FloatArray, FloatArray, float]:
    """The attack's ROC (FPR, TPR over all thresholds) and its AUC (ties count half)."""
    s, inc = _check_scores(scores, included)
    pos = int(inc.sum())
    neg = s.size - pos
    if pos == 0 or neg == 0:
        raise AuditInputError("the ROC needs both included and excluded canaries")
    order = np.argsort(-s, kind="stable")
    tp = np.concatenate([[0], np.cumsum(inc[order])])
    fp = np.concatenate([[0], np.cumsum(~inc[order])])
    tpr = tp / pos
    fpr = fp / neg
    ranks = stats.rankdata(s)
    auc = float((ranks[inc].sum() - pos * (pos + 1) / 2) / (pos * neg))
    return fpr.astype(np.float64), tpr.astype(np.float64), auc


def gaussian_canary_scores(
    canaries: int, sigma: float, rounds: int = 1, seed: int = 0
) -> tuple[FloatArray, BoolArray]:
    """The self-check's canary scores and secret coins: ``rounds`` Gaussian releases summed.

    Seeded NON-SECURE simulation: this audits the analysis, it releases nothing.
    """
    if canaries < 2 or sigma <= 0 or rounds < 1:
        raise AuditInputError("need canaries >= 2, sigma > 0, rounds >= 1")
    sim = np.random.default_rng(seed)  # simulation of the auditor's coins and the noise
    included = sim.random(canaries) < 0.5
    noise = sigma * math.sqrt(rounds) * sim.standard_normal(canaries)
    return rounds * included.astype(np.float64) + noise, included


def audit_gaussian_mechanism(
    *,
    canaries: int,
    sigma: float,
    epsilon_claimed: float,
    delta: float,
    k_plus: int,
    k_minus: int = 0,
    rounds: int = 1,
    seed: int = 0,
    significance: float = 0.05,
) -> OneRunAudit:
    """Self-check: m orthogonal canaries through ``rounds`` Gaussian releases of noise σ.

    Each canary owns one coordinate (sensitivity 1); the attack sums that coordinate over the
    rounds. The noise here is a seeded NON-SECURE simulation: this audits the analysis, it
    releases nothing.
    """
    released, included = gaussian_canary_scores(canaries, sigma, rounds, seed)
    return one_run_audit(
        released,
        included,
        k_plus=k_plus,
        k_minus=k_minus,
        delta=delta,
        significance=significance,
        epsilon_claimed=epsilon_claimed,
    )


@dataclass(frozen=True)
class DistributedAudit:
    """The audit of privagg's distributed-DP release path, with the scores for the ROC."""

    audit: OneRunAudit
    scores: FloatArray
    included: BoolArray
    noise_multiplier: float
    rounds: int


def audit_distributed_dp(
    *,
    canaries: int,
    noise_multiplier: float,
    rounds: int,
    delta: float,
    k_plus: int,
    epsilon_claimed: float | None = None,
    clip_norm: float = 1.0,
    scale: float = 64.0,
    honest_clients: int = 100,
    seed: int = 0,
    significance: float = 0.05,
    noise: Literal["discrete_gaussian", "skellam"] = "discrete_gaussian",
) -> DistributedAudit:
    """Audit the SecAgg + distributed discrete Gaussian (or Skellam) path with canary clients.

    Each canary client uploads its clipped Dirac update (``clip_norm`` on its own coordinate,
    quantized with ``scale`` levels per unit) when its coin says so; honest clients upload
    random clipped updates; every client adds its share of discrete Gaussian noise drawn by
    ``dp.discrete_gaussian`` so the sum carries variance (z·c·scale)². SecAgg reveals only
    the modular sum, so that sum is exactly what the server sees. The attack scores each
    canary by its coordinate of the decoded sum, summed over ``rounds``. ``epsilon_claimed``
    defaults to the ``dp`` accountant's ε for ``rounds`` full-participation releases.
    ``noise="skellam"`` draws each share from ``dp.skellam`` with the same variance (the
    distributed Skellam mechanism of Agarwal-Kairouz-Liu 2021).
    """
    import warnings

    import dp
    from dp.rng import NonSecureRandomnessWarning, SimulationRng

    if canaries < 2 or rounds < 1 or noise_multiplier <= 0 or honest_clients < 1:
        raise AuditInputError("need canaries >= 2, rounds >= 1, noise_multiplier > 0")
    if epsilon_claimed is None:
        epsilon_claimed = dp.epsilon(
            noise_multiplier=noise_multiplier, sampling_rate=1.0, steps=rounds, delta=delta
        )
    sim = np.random.default_rng(seed)
    included = sim.random(canaries) < 0.5
    n_clients = int(included.sum()) + honest_clients
    unit = round(clip_norm * scale)
    # rounded up so the realized noise is never below the accountant's
    sigma_share2 = dp.rational_at_least((noise_multiplier * clip_norm * scale) ** 2 / n_clients)
    totals = np.zeros(canaries, dtype=np.int64)
    with warnings.catch_warnings():
        # the simulation generator keeps the self-check reproducible; nothing is released
        warnings.simplefilter("ignore", NonSecureRandomnessWarning)
        rng = SimulationRng(seed)
        for _ in range(rounds):
            agg = np.where(included, unit, 0).astype(np.int64)
            honest = sim.standard_normal((honest_clients, canaries))
            honest *= clip_norm / np.maximum(np.linalg.norm(honest, axis=1, keepdims=True), 1e-12)
            agg += np.rint(honest * scale).astype(np.int64).sum(axis=0)
            # one noise share per client; the sum of shares is what masks the aggregate
            if noise == "skellam":
                shares = dp.skellam(sigma_share2, canaries * n_clients, rng)
            else:
                shares = dp.discrete_gaussian(sigma_share2, canaries * n_clients, rng)
            agg += shares.reshape(n_clients, canaries).sum(axis=0)
            totals += agg
    scores = totals.astype(np.float64) / scale
    audit = one_run_audit(
        scores,
        included,
        k_plus=k_plus,
        delta=delta,
        significance=significance,
        epsilon_claimed=epsilon_claimed,
    )
    return DistributedAudit(audit, scores, included, noise_multiplier, rounds)


def audit_skellam_counts(
    *,
    canaries: int,
    total_variance: float,
    rounds: int,
    delta: float,
    k_plus: int,
    epsilon_claimed: float,
    honest_clients: int = 100,
    seed: int = 0,
    significance: float = 0.05,
) -> DistributedAudit:
    """Audit the integer count release (distributed Skellam counts) with canary clients.

    Each canary contributes a one on its own coordinate (a count of 1: the unit a user moves
    a count by) when its coin says so; the coordinates are canary items that no honest
    client counts, so honest clients contribute only their noise shares; every client adds
    a Skellam share drawn by ``dp.skellam`` so the summed noise has variance at
    least ``total_variance`` (the guaranteed variance of the release, from its event). The
    attack scores each canary by its count, summed over ``rounds`` releases.
    """
    import warnings

    import dp
    from dp.rng import NonSecureRandomnessWarning, SimulationRng

    if canaries < 2 or rounds < 1 or total_variance <= 0 or honest_clients < 1:
        raise AuditInputError("need canaries >= 2, rounds >= 1, total_variance > 0")
    sim = np.random.default_rng(seed)
    included = sim.random(canaries) < 0.5
    n_clients = int(included.sum()) + honest_clients
    # rounded up so the realized noise is never below the release's guaranteed variance
    share_variance = dp.rational_at_least(total_variance / n_clients)
    totals = np.zeros(canaries, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonSecureRandomnessWarning)
        rng = SimulationRng(seed)
        for _ in range(rounds):
            agg = included.astype(np.int64)  # canary items: only their canary counts them
            shares = dp.skellam(share_variance, canaries * n_clients, rng)
            agg += shares.reshape(n_clients, canaries).sum(axis=0)
            totals += agg
    scores = totals.astype(np.float64)
    audit = one_run_audit(
        scores,
        included,
        k_plus=k_plus,
        delta=delta,
        significance=significance,
        epsilon_claimed=epsilon_claimed,
    )
    return DistributedAudit(audit, scores, included, math.sqrt(total_variance), rounds)
