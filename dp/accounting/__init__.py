"""Privacy accounting: backends that interpret :mod:`dp.events`, and the function API.

Backends (one file each, sharing :class:`~dp.accounting.base.Accountant`):

- ``"pld"`` — :class:`~dp.accounting.pld.PldAccountant`: tight, certified bracket, Gaussian
  mechanisms (Poisson-subsampled, heterogeneous phases);
- ``"rdp"`` — :class:`~dp.accounting.rdp.RdpAccountant`: every event type, including the
  distributed discrete Gaussian and Skellam sums;
- ``"skellam-pld"`` — :class:`~dp.accounting.skellam_pld.SkellamPldAccountant`: exact,
  certified bracket for unsampled :class:`~dp.events.DistributedSkellamCountsEvent`
  compositions (integer counts under Skellam noise);
- ``"discrete-pld"`` — :class:`~dp.accounting.discrete_pld.DiscretePldAccountant`: proven
  upper bound for (Poisson-subsampled) distributed discrete Gaussian and Skellam vector and
  counts releases (and Gaussians), through Gaussian dominating pairs;
- ``"auto"`` — :class:`~dp.accounting.auto.AutoAccountant`: a PLD backend when every event
  allows it, RDP otherwise (the backend used is reported with each answer).
"""

from __future__ import annotations

from dp.accounting.auto import AutoAccountant
from dp.accounting.base import (
    Accountant,
    EpsilonBracket,
    SampledMechanism,
    normalize,
    stratum_view,
)
from dp.accounting.discrete_pld import DiscretePldAccountant
from dp.accounting.pld import PldAccountant
from dp.accounting.rdp import RdpAccountant, RdpOrderWarning
from dp.accounting.skellam_pld import SkellamPldAccountant
from dp.accounting.stratified import num_strata, stratum_epsilons
from dp.calibrate import (
    calibrate_event_noise,
    calibrate_noise,
    epsilon,
    epsilon_bracket,
    event_epsilon,
    make_accountant,
    max_sampling_rate,
    max_steps,
)

__all__ = [
    "Accountant",
    "AutoAccountant",
    "DiscretePldAccountant",
    "EpsilonBracket",
    "PldAccountant",
    "RdpAccountant",
    "RdpOrderWarning",
    "SampledMechanism",
    "SkellamPldAccountant",
    "calibrate_event_noise",
    "calibrate_noise",
    "epsilon",
    "epsilon_bracket",
    "event_epsilon",
    "make_accountant",
    "max_sampling_rate",
    "max_steps",
    "normalize",
    "num_strata",
    "stratum_epsilons",
    "stratum_view",
]
