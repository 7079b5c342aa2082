"""The attack suite: what the server can and cannot learn."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from analysis.attacks import (
    auc,
    auc_interval,
    capped_histories,
    client_upload,
    dp_max_auc,
    membership_inference,
    membership_inference_on,
    membership_study,
    rated_set_inference,
    round_differencing,
)
from analysis.cli import main
from analysis.errors import AuditInputError
from recsys.data import synthetic_ratings
from recsys.features import item_features
from recsys.federated import DeviceFleet, ItemServer, PopularityTask
from recsys.split import leave_last_out


def test_rated_set_inference_sparse_and_plaintext_fcf_leak() -> None:
    assert rated_set_inference("sparse", users=5).auc == 1.0
    assert rated_set_inference("fcf", users=5).auc >= 0.99


def test_rated_set_inference_masked_uploads_at_chance() -> None:
    res = rated_set_inference("masked", users=30, items=200)
    assert abs(res.auc - 0.5) < 0.06


def test_masked_upload_is_uniform_in_the_ring() -> None:
    sim = np.random.default_rng(0)
    y = sim.standard_normal((500, 8))
    rated = np.zeros(500, dtype=np.bool_)
    rated[:10] = True
    up = client_upload("masked", rated, sim.standard_normal(8), y)
    assert up.min() >= 0 and up.max() < 2**32
    assert abs(up.mean() / 2**32 - 0.5) < 0.02


def test_membership_inference_falls_with_noise_and_population() -> None:
    leaky = membership_inference(math.inf, members=50, items=300)
    private = membership_inference(0.5, members=50, items=300)
    assert leaky.auc > 0.6
    assert private.auc < leaky.auc
    assert abs(private.auc - 0.5) < 0.1
    assert private.ci is not None and private.ci[0] < 0.5 < private.ci[1]
    assert leaky.ci is not None and leaky.ci[0] > 0.5


def test_round_differencing_exact_without_dp_chance_with_strong_dp() -> None:
    assert round_differencing(math.inf).auc == 1.0
    aucs = [round_differencing(0.5, seed=s).auc for s in range(5)]
    assert abs(float(np.mean(aucs)) - 0.5) < 0.15


def test_auc_basics_and_errors() -> None:
    assert auc([1.0, 2.0, 3.0, 4.0], [False, False, True, True]) == 1.0
    assert auc([1.0, 1.0], [False, True]) == 0.5
    with pytest.raises(AuditInputError):
        auc([1.0, 2.0], [True, True])
    with pytest.raises(AuditInputError):
        client_upload("bogus", np.zeros(3, bool), np.zeros(2), np.zeros((3, 2)))  # type: ignore[arg-type]


def test_attack_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attack", "--epsilon", "1,inf"]) == 0
    out = capsys.readouterr().out
    assert out.count("AUC") == 7
    assert main(["attack", "--epsilon", "-1"]) == 2


def test_delong_interval_covers_the_true_auc() -> None:
    """Scores N(d, 1) for positives and N(0, 1) for negatives: the true AUC is Φ(d/√2); the
    95 % DeLong interval must cover it in about 95 % of draws and shrink with n."""
    sim = np.random.default_rng(5)
    d, n = 0.5, 150
    true = float(stats.norm.cdf(d / math.sqrt(2)))
    labels = np.arange(2 * n) < n
    covered, widths = 0, []
    for _ in range(300):
        scores = sim.standard_normal(2 * n) + d * labels
        area, lo, hi = auc_interval(scores, labels)
        assert lo <= area <= hi
        covered += lo <= true <= hi
        widths.append(hi - lo)
    assert 0.9 <= covered / 300 <= 0.99
    big_labels = np.arange(8 * n) < 4 * n
    big = auc_interval(sim.standard_normal(8 * n) + d * big_labels, big_labels)
    assert big[2] - big[1] < 0.6 * float(np.mean(widths))  # ~ 1/√4 of the width
    with pytest.raises(AuditInputError):
        auc_interval([1.0, 2.0, 3.0], [True, False, False])


def _histories(users: int = 400) -> np.ndarray:
    return capped_histories(synthetic_ratings(users, 120, seed=4, mean_activity=15), cap=10)


def test_capped_histories_are_what_the_popularity_release_counts() -> None:
    ratings = synthetic_ratings(60, 40, seed=2, mean_activity=14, min_activity=5)
    hist = capped_histories(ratings, cap=6)
    split = leave_last_out(ratings)
    task = PopularityTask(split.train.num_items, cap=6)
    fleet = DeviceFleet(split.train, item_features(ratings))
    uploads = task.local_updates(fleet, ItemServer(split.train.num_items), np.arange(60))
    assert np.array_equal(hist, uploads > 0)
    assert hist.sum(axis=1).max() == 6


def test_membership_inference_on_real_histories_has_power_and_respects_noise() -> None:
    hist = _histories()
    leaky = membership_inference_on(hist, math.inf, seed=1)
    assert leaky.ci is not None and leaky.ci[0] > 0.6  # the attack works without DP
    assert leaky.positives + leaky.negatives == 400
    assert abs(leaky.positives - leaky.negatives) <= 1
    # the calibrated attack is at least as strong as the mean-count attack it replaces
    naive = membership_inference_on(hist, math.inf, seed=1, attack="count")
    assert leaky.auc >= naive.auc
    strong = membership_study(hist, 0.05, seeds=(0, 1, 2))
    assert strong.ci[0] <= 0.5 <= strong.ci[1]  # heavy noise: indistinguishable from chance
    assert strong.noise_multiplier > 10
    given = membership_inference_on(hist, 1.0, seed=0, noise_multiplier=123.0)
    assert given.detail["noise_multiplier"] == 123.0
    with pytest.raises(AuditInputError):
        membership_inference_on(hist[:3], 1.0)
    with pytest.raises(AuditInputError):
        membership_inference_on(hist, 1.0, attack="bogus")  # type: ignore[arg-type]


def test_membership_study_interval_and_goal_verdicts() -> None:
    hist = _histories()
    study = membership_study(hist, math.inf, seeds=(0, 1, 2, 3))
    assert len(study.seed_aucs) == 4
    assert study.auc == pytest.approx(float(np.mean(study.seed_aucs)))
    assert study.ci[0] < study.auc < study.ci[1]
    assert study.goal == "missed"  # no DP: far above 0.55
    fake = dataclasses.replace(study, ci=(0.50, 0.54))
    assert fake.goal == "met"
    assert dataclasses.replace(study, ci=(0.53, 0.57)).goal == "undecided"
    with pytest.raises(AuditInputError):
        membership_study(hist, 1.0, seeds=())


def test_attack_cli_on_a_ratings_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = synthetic_ratings(120, 60, seed=3, mean_activity=12, min_activity=4)
    path = tmp_path / "ratings.csv"
    rows = zip(r.users, r.items, r.ratings, r.timestamps, strict=True)
    path.write_text("".join(f"{u},{i},{x:g},{t}\n" for u, i, x, t in rows))
    assert main(["attack", "--epsilon", "8,inf", "--data", str(path), "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "60 members vs 60 held-out non-members" in out
    assert out.count("calibrated attack") == 2 and out.count("count attack") == 2
    assert "goal ≤ 0.55" in out
    assert main(["attack", "--data", str(tmp_path / "missing.csv")]) == 2


@pytest.mark.parametrize("eps", [0.25, 1.0, 3.0])
def test_dp_max_auc_closed_form_and_bounds_the_measured_attack(eps: float) -> None:
    # pure ε-DP: the best ROC has its kink at FPR = 1 / (1 + e^ε), area e^ε / (1 + e^ε)
    assert dp_max_auc(eps, 0.0) == pytest.approx(math.exp(eps) / (1 + math.exp(eps)), abs=1e-6)
    assert dp_max_auc(eps, 1e-3) > dp_max_auc(eps, 0.0)
    assert dp_max_auc(math.inf, 1e-5) == 1.0
    study = membership_study(_histories(), eps, seeds=(0, 1), delta=1e-4)
    assert study.ci[0] <= dp_max_auc(eps, 1e-4)  # the attack cannot beat what DP allows
