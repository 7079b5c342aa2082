"""The "auto" backend: the tightest backend every composed event allows.

- every event a (Poisson-subsampled) Gaussian → the PLD backend (``"pld"``);
- every event an unsampled :class:`~dp.events.DistributedSkellamCountsEvent` → the exact
  Skellam PLD backend (``"skellam-pld"``);
- every event a (Poisson-subsampled) distributed discrete Gaussian, Skellam vector or counts
  release, a central discrete Gaussian or a Gaussian, in any mix → the Gaussian-dominated
  PLD (``"discrete-pld"``, a proven upper bound, :mod:`dp.accounting.discrete_pld`);
- anything else (discrete Laplace, noise too small or a Skellam variance too large for the
  discrete-pld certificate) → RDP (``"rdp"``) for the whole composition.

NoOp and NonPrivate events fit every backend.
"""

from __future__ import annotations

from dp.accounting.base import Accountant, EpsilonBracket, SampledMechanism
from dp.accounting.discrete_pld import DiscretePldAccountant
from dp.accounting.pld import PldAccountant
from dp.accounting.rdp import RdpAccountant
from dp.accounting.skellam_pld import SkellamPldAccountant
from dp.events import PrivacyEvent


class AutoAccountant(Accountant):
    """Tight PLD accounting while every composed event allows it (Gaussian-only, unsampled
    Skellam counts only, or the Gaussian-dominated discrete releases); RDP for the whole
    composition as soon as none fits. Answers name the backend used."""

    name = "auto"

    def __init__(self) -> None:
        super().__init__()
        self._pld = PldAccountant()
        self._skellam = SkellamPldAccountant()
        self._discrete = DiscretePldAccountant()
        self._rdp = RdpAccountant()
        self._pld_ok = True
        self._skellam_ok = True
        self._discrete_ok = True

    def _check(self, mechanism: SampledMechanism) -> None:
        self._rdp._check(mechanism)  # RDP supports a superset of both PLD backends

    def compose(self, event: PrivacyEvent, count: int = 1) -> AutoAccountant:
        super().compose(event, count)  # validates (transactional) and records
        self._rdp.compose(event, count)
        if self._pld_ok and self._pld.supports(event):
            self._pld.compose(event, count)
        else:
            self._pld_ok = False
        if self._skellam_ok and self._skellam.supports(event):
            self._skellam.compose(event, count)
        else:
            self._skellam_ok = False
        if self._discrete_ok and self._discrete.supports(event):
            self._discrete.compose(event, count)
        else:
            self._discrete_ok = False
        return self

    @property
    def active_backend(self) -> str:
        """``"pld"``, ``"skellam-pld"``, ``"discrete-pld"`` or ``"rdp"``: the backend that
        answers for the current composition (``"pld"`` while nothing but NoOp/NonPrivate
        was composed)."""
        tight = self._tight()
        return self._rdp.name if tight is None else tight.name

    def _tight(self) -> Accountant | None:
        if self._pld_ok:
            return self._pld
        if self._skellam_ok:
            return self._skellam
        return self._discrete if self._discrete_ok else None

    def get_epsilon(self, delta: float) -> float:
        trivial = self._trivial(delta)
        if trivial is not None:
            return trivial.epsilon_upper
        tight = self._tight()
        if tight is not None:
            return tight.get_epsilon(delta)
        # RDP's get_epsilon warns when the optimal order sits at the grid's edge; as before,
        # the auto backend reports RDP's bound without that warning
        return self._rdp.get_epsilon_bracket(delta).epsilon_upper

    def get_epsilon_bracket(self, delta: float) -> EpsilonBracket:
        trivial = self._trivial(delta)
        if trivial is not None:
            return trivial
        return (self._tight() or self._rdp).get_epsilon_bracket(delta)
