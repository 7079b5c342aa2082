"""Monotonicity (hypothesis) and inverse accounting: never overshoot, within 0.1 %."""

from __future__ import annotations

import json
import math
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dp
from dp.errors import DPValueError

DELTA = 1e-5
PROPS = settings(max_examples=12, deadline=None, derandomize=True)

rates = st.floats(min_value=1e-3, max_value=1.0)
sigmas = st.floats(min_value=0.5, max_value=5.0)
steps = st.integers(min_value=1, max_value=3000)
backends = st.sampled_from(["pld", "rdp"])


def eps(sigma: float, q: float, t: int, acc: str = "pld") -> float:
    return dp.epsilon(noise_multiplier=sigma, sampling_rate=q, steps=t, delta=DELTA, accountant=acc)


@pytest.mark.filterwarnings("ignore::dp.accounting.rdp.RdpOrderWarning")
@PROPS
@given(sigma=sigmas, q=rates, t=steps, extra=st.integers(1, 2000), acc=backends)
def test_epsilon_is_non_decreasing_in_steps(
    sigma: float, q: float, t: int, extra: int, acc: str
) -> None:
    assert eps(sigma, q, t, acc) <= eps(sigma, q, t + extra, acc)


@pytest.mark.filterwarnings("ignore::dp.accounting.rdp.RdpOrderWarning")
@PROPS
@given(sigma=sigmas, q=rates, t=steps, factor=st.floats(1.0, 10.0), acc=backends)
def test_epsilon_is_non_decreasing_in_sampling_rate(
    sigma: float, q: float, t: int, factor: float, acc: str
) -> None:
    assert eps(sigma, q, t, acc) <= eps(sigma, min(1.0, q * factor), t, acc)


@pytest.mark.filterwarnings("ignore::dp.accounting.rdp.RdpOrderWarning")
@PROPS
@given(sigma=sigmas, q=rates, t=steps, factor=st.floats(1.0, 4.0), acc=backends)
def test_epsilon_is_non_increasing_in_noise(
    sigma: float, q: float, t: int, factor: float, acc: str
) -> None:
    assert eps(sigma * factor, q, t, acc) <= eps(sigma, q, t, acc)


@settings(max_examples=6, deadline=None, derandomize=True)
@given(
    target=st.floats(0.3, 12.0),
    q=st.sampled_from([0.001, 0.01, 0.05, 0.3, 1.0]),
    t=st.sampled_from([1, 50, 1000, 10000]),
)
def test_calibrate_noise_never_overshoots_and_is_within_a_tenth_of_a_percent(
    target: float, q: float, t: int
) -> None:
    sigma = dp.calibrate_noise(target_epsilon=target, delta=DELTA, sampling_rate=q, steps=t)
    assert eps(sigma, q, t) <= target
    assert eps(sigma * (1 - 1e-3), q, t) > target


def test_calibrate_noise_matches_dp_accounting_pld_calibration() -> None:
    """research/dp.md §3 (dp-accounting PLD Brent, tol 1e-3 on σ)."""
    for q, t, target, ref in ((0.01, 1000, 1.0, 1.4148), (0.001, 10000, 3.0, 0.5737)):
        sigma = dp.calibrate_noise(target_epsilon=target, delta=DELTA, sampling_rate=q, steps=t)
        assert sigma == pytest.approx(ref, rel=2e-3)


def test_rdp_calibration_is_more_conservative_than_pld() -> None:
    def sigma(acc: str) -> float:
        return dp.calibrate_noise(
            target_epsilon=1.0, delta=DELTA, sampling_rate=0.01, steps=1000, accountant=acc
        )

    assert sigma("rdp") > sigma("pld")
    assert sigma("rdp") == pytest.approx(1.5132, rel=2e-3)


@pytest.mark.parametrize(("sigma", "q", "target"), [(1.0, 0.01, 2.0), (0.8, 0.001, 1.0)])
def test_max_steps_is_exact(sigma: float, q: float, target: float) -> None:
    t = dp.max_steps(noise_multiplier=sigma, sampling_rate=q, target_epsilon=target, delta=DELTA)
    assert t >= 1
    assert eps(sigma, q, t) <= target < eps(sigma, q, t + 1)


def test_max_steps_zero_when_one_step_is_too_much() -> None:
    assert (
        dp.max_steps(noise_multiplier=0.5, sampling_rate=1.0, target_epsilon=1.0, delta=DELTA) == 0
    )


@pytest.mark.parametrize(("sigma", "t", "target"), [(1.0, 1000, 2.0), (0.8, 10000, 1.0)])
def test_max_sampling_rate_is_feasible_and_tight(sigma: float, t: int, target: float) -> None:
    q = dp.max_sampling_rate(noise_multiplier=sigma, steps=t, target_epsilon=target, delta=DELTA)
    assert 0 < q < 1
    assert eps(sigma, q, t) <= target < eps(sigma, q * 1.001, t)


def test_max_sampling_rate_caps_at_one() -> None:
    assert (
        dp.max_sampling_rate(noise_multiplier=5.0, steps=1, target_epsilon=10.0, delta=DELTA) == 1.0
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise_multiplier": 0.0},
        {"noise_multiplier": math.inf},
        {"sampling_rate": 1.5},
        {"sampling_rate": 0.0},
        {"steps": -1},
        {"steps": 1.5},
        {"delta": 0.0},
        {"delta": 1.0},
        {"accountant": "gdp"},
    ],
)
def test_epsilon_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {
        "noise_multiplier": 1.0,
        "sampling_rate": 0.01,
        "steps": 10,
        "delta": DELTA,
    }
    with pytest.raises(DPValueError):
        dp.epsilon(**{**base, **kwargs})  # type: ignore[arg-type]


def test_rdp_warns_when_the_optimal_order_is_at_the_grid_edge() -> None:
    """L8: tiny ε wants an order beyond the grid; the value is valid but may be loose."""
    from dp.accounting import RdpOrderWarning

    with pytest.warns(RdpOrderWarning, match="edge of the order grid"):
        eps(50.0, 0.001, 1, "rdp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eps(1.0, 0.01, 1000, "rdp")  # interior optimum: silent


def test_zero_steps_cost_nothing() -> None:
    assert eps(1.0, 0.5, 0) == 0.0
    with pytest.raises(DPValueError):
        dp.calibrate_noise(target_epsilon=1.0, delta=DELTA, sampling_rate=0.1, steps=0)
    with pytest.raises(DPValueError):
        dp.calibrate_noise(target_epsilon=-1.0, delta=DELTA, sampling_rate=0.1, steps=10)


# ---------------------------------------------------------------- CLI
def _cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    from analysis import cli

    assert cli.main(list(argv)) == 0
    payload: dict[str, object] = json.loads(capsys.readouterr().out)
    return payload


def test_cli_epsilon(capsys: pytest.CaptureFixture[str]) -> None:
    from analysis import cli

    out = _cli_json(
        capsys, "epsilon", "-z", "1.5", "-q", "0.04", "-T", "2250", "-d", "1e-5", "--json"
    )
    assert out["epsilon"] == eps(1.5, 0.04, 2250)
    assert out["epsilon_lower"] <= out["epsilon"]  # type: ignore[operator]
    out = _cli_json(
        capsys,
        "epsilon",
        "-z",
        "1.5",
        "-q",
        "0.04",
        "-T",
        "2250",
        "-d",
        "1e-5",
        "--accountant",
        "rdp",
        "--json",
    )
    assert out["epsilon"] == pytest.approx(7.32911117143, rel=1e-9)
    assert cli.main(["epsilon", "-z", "1", "-q", "2", "-T", "10", "-d", "1e-5"]) == 2
    assert "sampling_rate" in capsys.readouterr().err
    assert cli.main(["epsilon", "-z", "1", "-q", "0.1", "-T", "10", "-d", "1e-5"]) == 0
    assert "certified bracket" in capsys.readouterr().out


def test_cli_calibrate_solves_for_the_missing_setting(capsys: pytest.CaptureFixture[str]) -> None:
    from analysis import cli

    out = _cli_json(
        capsys,
        "calibrate",
        "-e",
        "1",
        "-d",
        "1e-5",
        "-q",
        "0.01",
        "-T",
        "1000",
        "--population",
        "10000",
        "--json",
    )
    assert out["solved_for"] == "noise_multiplier"
    assert out["epsilon"] <= 1.0  # type: ignore[operator]
    assert out["expected_cohort"] == pytest.approx(100.0)
    out = _cli_json(capsys, "calibrate", "-e", "2", "-d", "1e-5", "-z", "1", "-q", "0.01", "--json")
    assert out["solved_for"] == "steps" and out["epsilon"] <= 2.0  # type: ignore[operator]
    out = _cli_json(capsys, "calibrate", "-e", "2", "-d", "1e-5", "-z", "1", "-T", "1000", "--json")
    assert out["solved_for"] == "sampling_rate" and out["epsilon"] <= 2.0  # type: ignore[operator]
    assert cli.main(["calibrate", "-e", "2", "-d", "1e-5", "-z", "1"]) == 2
    assert "exactly two" in capsys.readouterr().err
