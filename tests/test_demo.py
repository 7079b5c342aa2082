from __future__ import annotations

import pytest

from analysis import cli


def test_secagg_demo_recovers_the_survivors_sum(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli.main(["demo", "--secagg-only", "--clients", "12", "--dim", "257", "--seed", "3"]) == 0
    )
    out = capsys.readouterr().out
    assert "OK" in out
    assert "included 11 clients" in out  # round(0.1 * 12) = 1 client dropped


def test_demo_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--secagg-only", "--clients", "2"]) == cli.EXIT_USAGE
    assert "error" in capsys.readouterr().err


def test_secagg_only_options_need_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--clients", "12"]) == cli.EXIT_USAGE
    assert "--clients only apply with --secagg-only" in capsys.readouterr().err
