"""The torch entry point and the model-agnostic round loop: training learns, is reproducible
for a seed, stays within ε (ledger audited), refuses an over-budget round before anyone
is sampled, admits clients per user budget, records an aborted round as charged nothing,
and refuses bad input with one clear error."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import privagg
from dp.budget import BudgetPolicy
from dp.cohort import FixedDrops, PoissonCohort
from dp.errors import PrivacyBudgetExceeded
from dp.ledger import PrivacyLedger, audit_ledger
from dp.rng import SimulationRng

pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")


def _clients(n: int = 12, m: int = 24, seed: int = 0) -> list[tuple[Any, Any]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        x = torch.randn(m - (i % 3), 4, generator=g)  # unequal client sizes
        out.append((x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()))
    return out


def _accuracy(model: torch.nn.Module, clients: list[tuple[Any, Any]]) -> float:
    x = torch.cat([c[0] for c in clients])
    y = torch.cat([c[1] for c in clients])
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_training_learns_and_is_reproducible_for_a_seed() -> None:
    clients = _clients()
    params = []
    for _ in range(2):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        result = privagg.train(
            model, clients, rounds=4, epsilon=None, secagg="full", dropout=0.1, seed=3
        )
        params.append(torch.nn.utils.parameters_to_vector(model.parameters()).detach())
        assert result.privacy == "none" and result.epsilon == math.inf
        assert all(r.aborted is None for r in result.rounds)
    assert torch.equal(params[0], params[1])  # bit-identical for a seed
    assert _accuracy(model, clients) > 0.8


def test_dp_training_stays_within_epsilon_and_the_ledger_audits(tmp_path: Path) -> None:
    clients = _clients()
    model = torch.nn.Linear(4, 2)
    ledger = tmp_path / "ledger.sqlite"
    result = privagg.train(
        model,
        clients,
        rounds=3,
        epsilon=4.0,
        delta=1e-5,
        secagg="plus",
        dropout=0.1,
        ledger=ledger,
        seed=2,
    )
    assert 0 < result.epsilon <= 4.0 and result.noise_multiplier > 0
    report = audit_ledger(ledger)
    assert report.ok, report.problems + report.violations
    assert report.rows == 3 and math.isclose(report.final_epsilon, result.epsilon, rel_tol=1e-6)
    included = [r.included for r in result.rounds]
    assert all(0 < k <= len(clients) for k in included)


def test_secure_noise_by_default_and_central_mode() -> None:
    clients = _clients(8, 16)
    model = torch.nn.Linear(4, 2)
    result = privagg.train(model, clients, rounds=1, epsilon=8.0, privacy="central")
    assert result.privacy == "central" and result.epsilon <= 8.0


class _CountingCohort(PoissonCohort):
    draws: list[int]

    def sample(self, population: int) -> Any:
        self.draws.append(population)
        return super().sample(population)


def _rounds(ledger: PrivacyLedger | None, cohort: Any, n: int = 10) -> privagg.PrivateRounds:
    kind = privagg.DistributedDpSum(privagg.SecAggSum("full"), rng=SimulationRng(1))
    return privagg.PrivateRounds(
        kind,
        cohort,
        population=n,
        dimension=3,
        clip_norm=1.0,
        noise_multiplier=2.0,
        delta=1e-5,
        ledger=ledger,
    )


def _task(n: int = 10) -> tuple[Any, Any, list[np.ndarray]]:
    steps: list[np.ndarray] = []

    def local_update(ids: np.ndarray) -> np.ndarray:
        return np.full((len(ids), 3), 3.0)  # norm > clip: the loop clips it

    def server_step(total: np.ndarray, expected: float) -> None:
        steps.append(total)

    return local_update, server_step, steps


def test_an_over_budget_round_is_refused_before_sampling(tmp_path: Path) -> None:
    policy = BudgetPolicy(delta=1e-5, target_epsilon=1.0)
    with PrivacyLedger.create(tmp_path / "l.sqlite", policy=policy) as ledger:
        cohort = _CountingCohort(1.0, SimulationRng(2))
        cohort.draws = []
        loop = _rounds(ledger, cohort)
        local_update, server_step, steps = _task()
        with pytest.raises(PrivacyBudgetExceeded):
            for _ in range(50):
                loop.run_round(local_update, server_step)
        assert len(cohort.draws) == len(steps)  # the refused round sampled nobody
        assert ledger.epsilon <= 1.0


def test_per_user_admission_excludes_clients_over_their_budget(tmp_path: Path) -> None:
    policy = BudgetPolicy(delta=1e-5, user_epsilon=2.0)
    with PrivacyLedger.create(tmp_path / "l.sqlite", policy=policy) as ledger:
        loop = _rounds(ledger, PoissonCohort(0.6, SimulationRng(3)))
        local_update, server_step, _ = _task()
        records = [loop.run_round(local_update, server_step) for _ in range(12)]
        assert any(r.admitted < r.sampled for r in records)  # someone was excluded
        assert max(ledger.user_epsilon(f"device{i}") for i in range(10)) <= 2.0


def test_an_aborted_round_is_recorded_and_charged_nothing(tmp_path: Path) -> None:
    policy = BudgetPolicy(delta=1e-5, target_epsilon=50.0)
    with PrivacyLedger.create(tmp_path / "l.sqlite", policy=policy) as ledger:
        loop = _rounds(ledger, PoissonCohort(1.0, SimulationRng(4)))
        local_update, server_step, steps = _task()
        first = loop.run_round(local_update, server_step)
        eps = ledger.epsilon
        loop.dropouts = FixedDrops({"mask": list(range(9))})
        record = loop.run_round(local_update, server_step)
        assert record.aborted is not None and record.included == 0
        assert ledger.epsilon == eps and len(steps) == 1 and first.aborted is None
        assert [e.status for e in ledger.entries()] == ["released", "aborted"]
        # the released sum is of clipped rows: each of norm 1 (the loop clipped 3·√3)
        assert np.linalg.norm(steps[0]) < first.included * 1.0 + 60


def test_bad_client_data_is_refused() -> None:
    model = torch.nn.Linear(4, 2)
    with pytest.raises(ValueError, match="at least 2 clients"):
        privagg.train(model, _clients(1), rounds=1)
    bad = [(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))] * 3
    with pytest.raises(ValueError, match="targets"):
        privagg.train(model, bad, rounds=1)
