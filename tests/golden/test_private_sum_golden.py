"""The composition stack (``dp.private_sum`` kinds over ``protocols.SecAggSum`` /
``PlainRingSum``, the cohort sampler wrapping the event) reproduces the recommender
channel's in-process golden releases bit for bit: the same aggregates, included devices,
events and ε, so the channel can be routed through it without changing a released value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dp.cohort import PoissonCohort, SeededDropouts
from dp.distributed_sum import DistributedDpSum
from dp.noiseless_sum import CentralDpSum, NoDpSum
from dp.private_sum import PrivateSum, RingSum
from dp.rng import SimulationRng
from protocols.secagg_sum import PlainRingSum, SecAggSum
from tests.golden.jobs import DELTA, IN_PROCESS_CASES, SEED, D, N, _epsilon, _event_json, _sha
from tests.golden.jobs import uploads as make_uploads

GOLDEN = json.loads(Path(__file__).with_name("golden.json").read_text())
pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")


def _stack(case: str) -> tuple[PrivateSum, int | None]:
    options = dict(IN_PROCESS_CASES[case])
    rng = SimulationRng(SEED)
    inner: RingSum
    if options["secagg"] == "off":
        inner = PlainRingSum(group_size=options.get("group_size", 5000))
    else:
        inner = SecAggSum(
            options["secagg"],
            dropout_rate=0.2,
            group_size=options.get("group_size", 5000),
            seed=SEED,
        )
    if options["privacy"] == "central":
        return CentralDpSum(inner, rng=rng), None
    if options["privacy"] == "none":
        return NoDpSum(inner, rng=rng), None
    mechanism = "ddg" if options["mechanism"] == "discrete_gaussian" else "skellam"
    kind = DistributedDpSum(inner, bits=32, mechanism=mechanism, dropout=0.2, seed=SEED, rng=rng)
    return kind, options.get("count_cap")


@pytest.mark.parametrize("case", sorted(IN_PROCESS_CASES))
def test_private_sum_reproduces_the_channel_golden(case: str) -> None:
    kind, count_cap = _stack(case)
    cohort = PoissonCohort(0.5)
    dropouts = SeededDropouts(0.2, SEED)
    if count_cap is None:
        matrix, clip = make_uploads(N, D, 11), 1.0
    else:
        rng = np.random.default_rng(12)
        matrix = np.zeros((N, D))
        for row in matrix:
            row[rng.choice(D, size=count_cap, replace=False)] = 1.0
        clip = float(np.sqrt(count_cap))
    records: list[dict[str, Any]] = []
    for round_index in (1, 2):
        release = kind.release(
            matrix,
            clip_norm=clip,
            noise_multiplier=0.8,
            expected_contributors=N,
            round_index=round_index,
            count_cap=count_cap,
            dropouts=dropouts,
        )
        assert release.total is not None and release.aborted is None
        charged, planned = cohort.wrap(release.event), cohort.wrap(release.planned_event)
        records.append(
            {
                "total_sha256": _sha(release.total),
                "included": list(release.included),
                "dropped": release.dropped,
                "event": _event_json(charged),
                "planned_event": _event_json(planned),
                "epsilon": _epsilon(charged),
                "noise_std": repr(float(release.noise_std)),
            }
        )
    assert DELTA == 1e-5
    assert records == GOLDEN[f"in_process/{case}"]
