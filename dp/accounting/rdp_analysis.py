"""Rényi-DP curves of the mechanisms privagg emits (pure functions), and the RDP → (ε, δ)
conversion.

- Poisson-subsampled Gaussian: Opacus' analysis (Mironov, Talwar, Zhang 2019), reused, not
  rewritten: ``opacus.accountants.analysis.rdp``. Its fractional orders are exact (they match
  numerical integration to 6+ digits, ``research/dp.md`` §1.2), unlike dp-accounting 0.6's.
- Sum of n discrete Gaussians (distributed DDG): Kairouz, Liu, Steinke, ICML 2021
  (arXiv 2102.06387), Theorem 1 / Proposition 14.
- Distributed Skellam: Agarwal, Kairouz, Liu, NeurIPS 2021 (arXiv 2110.04995), the
  multi-dimensional Skellam RDP bound (the form used by google-research/federated
  ``distributed_dp`` and reproduced in ``research/dp_worked_numbers.py``).
- One discrete Gaussian: Canonne, Kamath, Steinke 2020: ρ = Δ₂²/(2σ²) zCDP.
- Discrete Laplace (pure ε₀ = Δ₁/scale): ε₀-DP ⇒ (ε₀²/2)-zCDP (Bun & Steinke 2016, Prop. 3.3),
  and trivially D_α ≤ ε₀.
- Poisson subsampling of any of the non-Gaussian mechanisms: the general upper bound of
  Zhu & Wang, ICML 2019 ("Poisson Subsampled Rényi Differential Privacy", Thm. 6), valid at
  integer orders; at a fractional order α the bound at ⌈α⌉ is used (RDP is non-decreasing
  in α), which is conservative. The Mironov et al. formula is Gaussian-specific and is never
  applied to the discrete mechanisms.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from dp.errors import DPValueError

FloatArray = NDArray[np.float64]

# Opacus' default orders, plus larger ones for tiny-ε regimes (dp-accounting uses up to 1024).
ORDERS: FloatArray = np.array(
    [1 + x / 10.0 for x in range(1, 100)]
    + list(range(12, 64))
    + [64, 80, 96, 128, 160, 192, 256, 384, 512, 768, 1024],
    dtype=np.float64,
)


@lru_cache(maxsize=1)
def _opacus_rdp() -> ModuleType:
    """Opacus' RDP analysis module.

    ``import opacus`` pulls in torch (3+ s); the analysis module itself only needs numpy and
    scipy, so it is loaded from its file when possible (instant CLI answers), falling back to
    the ordinary import.
    """
    spec = importlib.util.find_spec("opacus")
    if spec is None:  # the core install has no opacus (torch): dp_accounting's analysis
        return _DPAccountingRdp()
    if spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "accountants/analysis/rdp.py"
        mod_spec = importlib.util.spec_from_file_location("_privagg_opacus_rdp", path)
        if mod_spec is not None and mod_spec.loader is not None and path.exists():
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules.setdefault("_privagg_opacus_rdp", module)
            mod_spec.loader.exec_module(module)
            return module
    from opacus.accountants.analysis import rdp as fallback  # pragma: no cover

    loaded: ModuleType = fallback  # pragma: no cover
    return loaded  # pragma: no cover


class _DPAccountingRdp(ModuleType):
    """Opacus' ``compute_rdp`` face over dp_accounting's Poisson-subsampled Gaussian RDP
    (the same analysis, Mironov et al. 2019), used when opacus is not installed. Where its
    fractional-order series does not converge it returns inf for that order (never a
    smaller bound), so its ε is Opacus' or slightly above (7.32933 vs 7.32911 at q = 0.04,
    z = 1.5, T = 2250, δ = 1e-5); its convergence warnings are kept off the user's screen."""

    def __init__(self) -> None:
        super().__init__("_privagg_dp_accounting_rdp")

    @staticmethod
    def compute_rdp(
        *, q: float, noise_multiplier: float, steps: int, orders: list[float]
    ) -> FloatArray:
        import logging

        from dp_accounting.rdp import rdp_privacy_accountant

        absl = logging.getLogger("absl")
        level = absl.level
        absl.setLevel(logging.ERROR)
        try:
            per_step = rdp_privacy_accountant._compute_rdp_poisson_subsampled_gaussian(
                q, noise_multiplier, np.asarray(orders, dtype=np.float64)
            )
        finally:
            absl.setLevel(level)
        return np.asarray(per_step, dtype=np.float64) * steps


def sampled_gaussian_rdp(
    q: float, noise_multiplier: float, orders: FloatArray = ORDERS
) -> FloatArray:
    """Per-step RDP of the Poisson-subsampled Gaussian at ``orders`` (Opacus' analysis)."""
    module: Any = _opacus_rdp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = module.compute_rdp(
            q=float(q), noise_multiplier=float(noise_multiplier), steps=1, orders=list(orders)
        )
    return np.asarray(values, dtype=np.float64)


def gaussian_rdp(
    noise_multiplier: float, l2_sensitivity: float = 1.0, orders: FloatArray = ORDERS
) -> FloatArray:
    """RDP of a Gaussian mechanism: α·Δ²/(2σ²)."""
    return orders * (l2_sensitivity**2) / (2.0 * noise_multiplier**2)


def ddg_tau(local_sigma: float, n: int) -> float:
    """τ = 10·Σ_{k=1}^{n−1} exp(−2π²σ²·k/(k+1)) (KLS21): a sum of DGs is not exactly a DG."""
    if n <= 1:
        return 0.0
    k = np.arange(1, n, dtype=np.float64)
    return float(10.0 * np.exp(-2.0 * math.pi**2 * local_sigma**2 * k / (k + 1)).sum())


def ddg_sum_rdp(
    *,
    l2_sensitivity: float,
    l1_sensitivity: float,
    local_sigma: float,
    dimension: int,
    n: int,
    orders: FloatArray = ORDERS,
) -> FloatArray:
    """RDP ε(α) of adding the sum of ``n`` independent N_Z(0, σ²)^d noises (KLS21 Thm 1).

    ε(α) = min{ αΔ₂²/(2nσ²) + τd, (α/2)(Δ₂²/(nσ²) + 2Δ₁τ/(√n σ) + τ²d),
                (α/2)(Δ₂/(√n σ) + τ√d)² }.
    """
    if n < 1:
        raise DPValueError(f"the number of noise contributors must be ≥ 1, got {n}")
    tau = ddg_tau(local_sigma, n)
    s2 = n * local_sigma**2
    s = math.sqrt(s2)
    d2, d1, d = l2_sensitivity, l1_sensitivity, float(dimension)
    a = orders
    t1 = a * d2**2 / (2 * s2) + tau * d
    t2 = a / 2 * (d2**2 / s2 + 2 * d1 * tau / s + tau**2 * d)
    t3 = a / 2 * (d2 / s + math.sqrt(d) * tau) ** 2
    return np.minimum(np.minimum(t1, t2), t3)


def skellam_rdp(
    *, l2_sensitivity: float, l1_sensitivity: float, variance: float, orders: FloatArray = ORDERS
) -> FloatArray:
    """RDP ε(α) of adding symmetric Skellam noise of per-coordinate ``variance`` μ (AKL21).

    ε(α) ≤ αΔ₂²/(2μ) + min{((2α−1)Δ₂² + 6Δ₁)/(4μ²), 3Δ₁/(2μ)}, evaluated at ⌈α⌉ (the bound
    is stated for integer orders; RDP is non-decreasing in α).
    """
    a = np.ceil(orders)
    d2, d1, mu = l2_sensitivity, l1_sensitivity, variance
    extra = np.minimum(((2 * a - 1) * d2**2 + 6 * d1) / (4 * mu**2), 3 * d1 / (2 * mu))
    return a * d2**2 / (2 * mu) + extra


def pure_dp_rdp(epsilon0: float, orders: FloatArray = ORDERS) -> FloatArray:
    """RDP implied by pure ε₀-DP: min(ε₀, α·ε₀²/2)."""
    return np.minimum(epsilon0, orders * epsilon0**2 / 2.0)


_INT_MAX = int(ORDERS.max())
INTEGER_ORDERS: FloatArray = np.arange(2, _INT_MAX + 1, dtype=np.float64)


def poisson_subsampled_rdp(base_at_integers: FloatArray, q: float) -> FloatArray:
    """Zhu & Wang 2019 general upper bound for Poisson subsampling at rate q, on ORDERS.

    ``base_at_integers`` is the mechanism's RDP at INTEGER_ORDERS (2, 3, …, max). A
    fractional order α gets the bound at ⌈α⌉ (orders < 2 get the bound at 2).
    """
    eps_at = np.full(_INT_MAX + 1, np.inf)
    eps_at[2:] = base_at_integers
    needed = sorted({max(math.ceil(o), 2) for o in ORDERS})
    if q >= 1.0:
        return np.array([eps_at[max(math.ceil(o), 2)] for o in ORDERS], dtype=np.float64)
    log_q, log_1q = math.log(q), math.log1p(-q)
    out_int: dict[int, float] = {}
    for a in needed:
        head = [
            (a - 1) * log_1q + math.log(a * q - q + 1),
            math.log(a * (a - 1) / 2) + 2 * log_q + (a - 2) * log_1q + eps_at[2],
        ]
        terms = np.array(head)
        if a >= 3:
            ell = np.arange(3, a + 1)
            log_comb = (
                special.gammaln(a + 1) - special.gammaln(ell + 1) - special.gammaln(a - ell + 1)
            )
            more = (
                math.log(3) + log_comb + (a - ell) * log_1q + ell * log_q + (ell - 1) * eps_at[ell]
            )
            terms = np.concatenate([terms, more])
        top = float(terms.max())
        bound = (top + math.log(float(np.exp(terms - top).sum()))) / (a - 1)
        out_int[a] = min(bound, float(eps_at[a]))
    return np.array([out_int[max(math.ceil(o), 2)] for o in ORDERS], dtype=np.float64)


def rdp_to_epsilon(rdp: FloatArray, delta: float) -> tuple[float, float]:
    """(ε, optimal order) from an RDP curve on ORDERS: Balle et al. 2020 Thm 21 (as Opacus)."""
    with np.errstate(invalid="ignore", over="ignore"):
        eps = (
            rdp - (math.log(delta) + np.log(ORDERS)) / (ORDERS - 1) + np.log((ORDERS - 1) / ORDERS)
        )
    eps = np.where(np.isnan(eps), np.inf, eps)
    i = int(np.argmin(eps))
    return max(float(eps[i]), 0.0), float(ORDERS[i])
