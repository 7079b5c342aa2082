"""The PLD backend: tight, certified ε for (heterogeneous) Poisson-subsampled Gaussians.

Supports Gaussian events, Poisson-sampled (compositions of) Gaussians, NoOp and NonPrivate.
The distributed discrete mechanisms (DDG, Skellam) and discrete Laplace are *not* supported:
their published analyses are RDP bounds, and a Gaussian approximation of their privacy loss
is not a proven upper bound, so they are routed to :class:`~dp.accounting.rdp.RdpAccountant`
(``make_accountant("auto", ...)`` does this) rather than approximated here.
"""

from __future__ import annotations

from dp.accounting.base import CachedBracketAccountant, SampledMechanism
from dp.accounting.pld_analysis import GaussianPhase, PldBracket, gaussian_pld_bracket
from dp.accounting.rdp import gaussian_noise_multiplier
from dp.errors import UnsupportedEventError


class PldAccountant(CachedBracketAccountant[PldBracket]):
    """Privacy-loss-distribution accountant with a certified [ε_lower, ε_upper] bracket."""

    name = "pld"

    def __init__(
        self, *, relative_tolerance: float = 1e-3, absolute_tolerance: float = 1e-3
    ) -> None:
        super().__init__()
        self._rtol = relative_tolerance
        self._atol = absolute_tolerance

    def _check(self, mechanism: SampledMechanism) -> None:
        if gaussian_noise_multiplier(mechanism) is None:
            names = sorted({leaf.type_name for leaf, _ in mechanism.leaves})
            raise UnsupportedEventError(
                f"the PLD accountant supports Gaussian mechanisms only, not {', '.join(names)}; "
                "use the RDP accountant for discrete mechanisms"
            )

    def phases(self) -> list[GaussianPhase]:
        """The composition as (q, σ, steps) phases, merged by identical (q, σ)."""
        merged: dict[tuple[float, float], int] = {}
        for mech, count in self._mechanisms.items():
            sigma = gaussian_noise_multiplier(mech)
            assert sigma is not None  # guaranteed by _check
            key = (mech.sampling_rate, sigma)
            merged[key] = merged.get(key, 0) + count
        return [GaussianPhase(q, s, n) for (q, s), n in sorted(merged.items())]

    def _compute_bracket(self, delta: float, want_lower: bool) -> PldBracket:
        # want_lower=False skips the certified lower end (reported as 0), which costs about
        # as much as the upper end on its finer grid; the upper end is the same
        return gaussian_pld_bracket(
            self.phases(),
            delta,
            relative_tolerance=self._rtol,
            absolute_tolerance=self._atol,
            want_lower=want_lower,
        )

    def _bracket_detail(self, bracket: PldBracket) -> str:
        return (
            f"connect-the-dots PLD, value interval {bracket.value_discretization_interval:.3g}, "
            f"{bracket.fft_points} FFT points, estimated discretization error "
            f"{bracket.error_estimate:.2g}"
        )
