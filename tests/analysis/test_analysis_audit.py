"""One-run audit (Steinke–Nasr–Jagielski 2023): bound computation and self-checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from analysis.audit_empirical import (
    audit_distributed_dp,
    audit_gaussian_mechanism,
    empirical_roc,
    epsilon_lower_bound,
    gaussian_epsilon,
    gaussian_sigma_for_epsilon,
    max_epsilon_lower_bound,
    one_run_audit,
    one_run_p_value,
    predicted_tpr,
)
from analysis.cli import main
from analysis.errors import AuditInputError


@pytest.mark.parametrize(("r", "expected"), [(10, 1.05), (100, 3.49), (1000, 5.81), (10_000, 8.11)])
def test_ideal_bound_matches_closed_form(r: int, expected: float) -> None:
    # all-correct with δ = 0: p_ε^r = α  →  ε = logit(α^(1/r))  (dp.md §2)
    closed = math.log(0.05 ** (1 / r) / (1 - 0.05 ** (1 / r)))
    got = max_epsilon_lower_bound(r, 10 * r, 0.0)
    assert got == pytest.approx(closed, abs=1e-5)
    assert got == pytest.approx(expected, abs=0.005)


def test_bound_is_the_largest_rejected_epsilon() -> None:
    r, v, m = 200, 150, 5000
    eps = epsilon_lower_bound(r, v, m, 1e-6)
    assert one_run_p_value(r, v, eps, 1e-6, m) <= 0.05 < one_run_p_value(r, v, eps + 1e-4, 1e-6, m)
    # δ = 0 reduces to the plain binomial tail
    p = 1 / (1 + math.exp(-1.0))
    assert one_run_p_value(r, v, 1.0, 0.0, m) == pytest.approx(stats.binom.sf(v - 1, r, p))


def test_chance_guessing_certifies_nothing() -> None:
    assert epsilon_lower_bound(100, 50, 1000, 1e-5) == 0.0


def test_delta_term_weakens_the_bound() -> None:
    assert max_epsilon_lower_bound(1000, 100_000, 1e-5) < max_epsilon_lower_bound(1000, 100_000, 0)


def test_exact_gaussian_calibration_roundtrip() -> None:
    # σ column of dp.md §2's table
    for eps, sigma in [(1, 3.73), (2, 1.99), (4, 1.08), (8, 0.60)]:
        s = gaussian_sigma_for_epsilon(eps, 1e-5)
        assert s == pytest.approx(sigma, abs=0.006)
        assert gaussian_epsilon(s, 1e-5) == pytest.approx(eps, abs=1e-6)


def test_self_check_gaussian_known_epsilon_lands_on_idealized_numbers() -> None:
    # dp.md §2: ε_true = 4, m = 10⁴, r = 100 → ≈ 1.93 (mean of 20 runs); ε_true = 1 → 0.33
    sigma4 = gaussian_sigma_for_epsilon(4.0, 1e-5)
    lbs = [
        audit_gaussian_mechanism(
            canaries=10_000, sigma=sigma4, epsilon_claimed=4.0, delta=1e-5, k_plus=100, seed=s
        ).epsilon_lower
        for s in range(5)
    ]
    assert 1.4 <= float(np.mean(lbs)) <= 2.5
    assert max(lbs) < 4.0  # a correct mechanism is never rejected here
    sigma1 = gaussian_sigma_for_epsilon(1.0, 1e-5)
    lb1 = np.mean(
        [
            audit_gaussian_mechanism(
                canaries=10_000, sigma=sigma1, epsilon_claimed=1.0, delta=1e-5, k_plus=100, seed=s
            ).epsilon_lower
            for s in range(5)
        ]
    )
    assert 0.0 <= lb1 <= 0.8


def test_self_check_broken_noise_is_rejected() -> None:
    sigma = gaussian_sigma_for_epsilon(4.0, 1e-5)
    broken = audit_gaussian_mechanism(
        canaries=10_000, sigma=sigma / 10, epsilon_claimed=4.0, delta=1e-5, k_plus=3000, seed=1
    )
    assert broken.rejects_claim and broken.epsilon_lower > 6.0
    honest = audit_gaussian_mechanism(
        canaries=10_000, sigma=sigma, epsilon_claimed=4.0, delta=1e-5, k_plus=3000, seed=1
    )
    assert not honest.rejects_claim


def test_self_check_uncharged_rounds_are_rejected() -> None:
    # 100 releases happen but the accountant charged one: the true ε is far above 4
    sigma = gaussian_sigma_for_epsilon(4.0, 1e-5)
    audit = audit_gaussian_mechanism(
        canaries=10_000,
        sigma=sigma,
        epsilon_claimed=4.0,
        delta=1e-5,
        k_plus=3000,
        rounds=100,
        seed=2,
    )
    assert audit.rejects_claim


def test_distributed_path_consistent_and_broken_rejected() -> None:
    ok = audit_distributed_dp(
        canaries=2000,
        noise_multiplier=1.0,
        rounds=3,
        delta=1e-5,
        k_plus=100,
        honest_clients=10,
        seed=0,
    )
    assert ok.audit.epsilon_claimed is not None and not ok.audit.rejects_claim
    assert 0.0 < ok.audit.epsilon_lower <= ok.audit.epsilon_ideal
    broken = audit_distributed_dp(
        canaries=2000,
        noise_multiplier=0.05,
        rounds=3,
        delta=1e-5,
        k_plus=900,
        honest_clients=10,
        seed=0,
        epsilon_claimed=2.0,
    )
    assert broken.audit.rejects_claim


def test_roc_and_predicted_curve() -> None:
    sim = np.random.default_rng(0)
    inc = sim.random(2000) < 0.5
    fpr, tpr, area = empirical_roc(inc + sim.standard_normal(2000), inc)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert area == pytest.approx(stats.norm.cdf(1 / math.sqrt(2)), abs=0.03)
    grid = np.linspace(0, 1, 11)
    curve = predicted_tpr(grid, 1.0, 0.0)
    assert np.all(curve >= grid - 1e-12) and np.all(curve <= 1)


@pytest.mark.parametrize("bad", [dict(k_plus=0), dict(k_plus=11), dict(k_plus=-1, k_minus=2)])
def test_bad_audit_inputs(bad: dict[str, int]) -> None:
    inc = np.arange(10) % 2 == 0
    with pytest.raises(AuditInputError):
        one_run_audit(np.arange(10.0), inc, delta=0.0, **bad)
    with pytest.raises(AuditInputError):
        one_run_audit(np.arange(10.0), inc.astype(int), k_plus=1, delta=0.0)


def test_cli_exit_codes_and_outputs(tmp_path: Path) -> None:
    assert (
        main(
            [
                "audit-empirical",
                "--mechanism",
                "gaussian",
                "--canaries",
                "2000",
                "--guesses",
                "50",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert (tmp_path / "roc.png").stat().st_size > 5000 and (tmp_path / "audit.json").exists()
    assert (
        main(
            [
                "audit-empirical",
                "--mechanism",
                "gaussian",
                "--canaries",
                "4000",
                "--guesses",
                "1500",
                "--noise-scale",
                "0.1",
            ]
        )
        == 1
    )
    assert main(["audit-empirical", "--mechanism", "distributed"]) == 2


def test_audit_empirical_flag_is_the_same_audit_as_the_alias(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`privagg audit --empirical` runs the one-run audit (same output as the
    `audit-empirical` alias for the same seed); `--delta` feeds the audit's δ."""
    common = ["--mechanism", "gaussian", "--canaries", "1000", "--guesses", "40", "--seed", "3"]
    assert main(["audit", "--empirical", *common, "--out", str(tmp_path / "a")]) == 0
    flag = capsys.readouterr().out
    assert main(["audit-empirical", *common, "--out", str(tmp_path / "b")]) == 0
    alias = capsys.readouterr().out
    assert "ε lower bound" in flag
    assert flag.replace(str(tmp_path / "a"), "") == alias.replace(str(tmp_path / "b"), "")
    a = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert a == json.loads((tmp_path / "b" / "audit.json").read_text())
    assert a["delta"] == 1e-5  # the empirical default when --delta is not given
    assert main(["audit", "--empirical", *common, "--delta", "1e-3"]) == 0
    assert "δ = 0.001" in capsys.readouterr().out
    # a broken pipeline is rejected through the flag as well
    broken = ["--canaries", "4000", "--guesses", "1500", "--noise-scale", "0.1"]
    assert main(["audit", "--empirical", "--mechanism", "gaussian", *broken]) == 1


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["audit"], "give a LEDGER"),
        (["audit", "--empirical", "some.db"], "not a LEDGER"),
        (["audit", "--empirical", "--json"], "--json only apply"),
        (["audit", "--empirical", "--strict", "--no-cross-check"], "--strict, --no-cross-check"),
        (["audit", "--empirical", "--mechanism", "distributed"], "--from-run"),
        (["audit", "--empirical", "--canaries", "1"], "--canaries"),
        (["audit", "ledger.db", "--canaries", "50", "--seed", "2"], "--canaries, --seed only"),
    ],
)
def test_audit_empirical_flag_usage_errors_exit_2(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("privagg audit: error:") and fragment in err
    assert err.count("\n") == 1


def _tiny_run(out: Path, *extra: str) -> None:
    argv = ["train", "--data", "synthetic", "--users", "40", "--items", "30", "--quiet"]
    argv += ["--no-baselines", "--unsigned", "--eval-every", "0", *extra, "--out", str(out)]
    assert main(argv) == 0


def test_from_run_audits_the_released_mechanism(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The canary audit simulates what the run's ledger says was released (issue 16: it
    audited the discrete-Gaussian float path of a run that released Skellam counts)."""
    from analysis.commands.audit_empirical import run_release

    _tiny_run(tmp_path / "counts", "--model", "popfeat", "--epsilon", "1")
    _tiny_run(tmp_path / "sk", "--model", "popfeat+fcf", "--rounds", "1", "--mechanism", "skellam")
    _tiny_run(tmp_path / "ddg", "--model", "popfeat+fcf", "--rounds", "1")
    counts = run_release(str(tmp_path / "counts"))
    assert counts.mechanism == "skellam_counts" and counts.rounds == 1
    assert counts.total_variance > 0
    assert run_release(str(tmp_path / "sk")).mechanism == "skellam"
    assert run_release(str(tmp_path / "ddg")).mechanism == "discrete_gaussian"
    capsys.readouterr()
    common = ["--canaries", "400", "--guesses", "20"]
    assert main(["audit", "--empirical", "--from-run", str(tmp_path / "counts"), *common]) == 0
    assert "Skellam count release" in capsys.readouterr().out
    assert main(["audit", "--empirical", "--from-run", str(tmp_path / "sk"), *common]) == 0
    assert "(skellam)" in capsys.readouterr().out
    # broken noise on the count path is still rejected
    broken = ["--canaries", "2000", "--guesses", "300", "--noise-scale", "0.02"]
    assert main(["audit", "--empirical", "--from-run", str(tmp_path / "counts"), *broken]) == 1


def test_from_run_refuses_what_it_cannot_simulate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _tiny_run(tmp_path / "central", "--privacy", "central", "--model", "popfeat")
    assert main(["audit", "--empirical", "--from-run", str(tmp_path / "central")]) == 2
    err = capsys.readouterr().err
    assert "simulates the distributed" in err and err.count("\n") == 1
    (tmp_path / "central" / "ledger.sqlite").unlink()
    assert main(["audit", "--empirical", "--from-run", str(tmp_path / "central")]) == 2
    assert "cannot read the run's ledger" in capsys.readouterr().err
