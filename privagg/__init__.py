"""privagg: private aggregation of any update vector, and private rounds for any model.

The facade over ``dp`` and ``protocols`` (above both in the layering):

* the private sum of a cohort's float updates as a stage over an inner ring sum —
  :class:`DistributedDpSum` / :class:`CentralDpSum` / :class:`NoDpSum` over
  :class:`SecAggSum` (SecAgg or SecAgg+) or :class:`PlainRingSum` — each release with its
  charged privacy event;
* cohort samplers that wrap events once (:class:`PoissonCohort`, :class:`StratifiedCohort`,
  :class:`FullCohort`), seeded dropout simulation, one noise :func:`calibrate`;
* :class:`PrivateRounds`: budget check → sample → admission → private sum → charge →
  ledger, for any task that offers a local update and a server step;
* :func:`train`: federated averaging of any ``torch.nn.Module`` (needs torch; imported on
  first use);
* :mod:`privagg.flower`: distributed DP + SecAgg(+) as a Flower mod and workflow (needs
  ``pip install 'privagg[flower]'``; docs/FLOWER.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dp.cohort import (
    FixedDrops,
    FullCohort,
    PoissonCohort,
    SeededDropouts,
    StratifiedCohort,
)
from dp.distributed_sum import DistributedDpSum
from dp.noiseless_sum import CentralDpSum, NoDpSum
from dp.private_sum import PrivateRelease, PrivateSum, RingSum, calibrate
from privagg.rounds import PrivateRounds, RoundRecord, clip_rows
from protocols.secagg_sum import PlainRingSum, SecAggSum

if TYPE_CHECKING:
    from privagg.fedavg import FederatedResult, train

__all__ = [
    "CentralDpSum",
    "DistributedDpSum",
    "FederatedResult",
    "FixedDrops",
    "FullCohort",
    "NoDpSum",
    "PlainRingSum",
    "PoissonCohort",
    "PrivateRelease",
    "PrivateRounds",
    "PrivateSum",
    "RingSum",
    "RoundRecord",
    "SecAggSum",
    "SeededDropouts",
    "StratifiedCohort",
    "calibrate",
    "clip_rows",
    "train",
]


def __getattr__(name: str) -> Any:
    # the torch entry point is imported on first use: the rest needs no torch
    if name in ("train", "FederatedResult"):
        from privagg import fedavg

        return getattr(fedavg, name)
    raise AttributeError(f"module 'privagg' has no attribute {name!r}")
