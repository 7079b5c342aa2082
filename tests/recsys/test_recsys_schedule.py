"""The ``auto`` FCF residual schedule of ``privagg train``: per privacy mode, overridable."""

from __future__ import annotations

import argparse

import pytest

from analysis.commands import train
from recsys.recommender import choose_residual_schedule


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--out", "unused", *argv])
    train._apply_residual_schedule(args)
    return args


def test_schedule_depends_on_privacy_mode() -> None:
    free = choose_residual_schedule("none")
    private = [choose_residual_schedule(mode) for mode in ("distributed", "central")]
    assert (free.rounds, free.dim, free.residual_weight) == (15, 8, 0.4)
    for s in private:
        assert (s.rounds, s.dim, s.residual_weight) == (5, 4, 0.2)


@pytest.mark.parametrize(("privacy", "rounds", "dim"), [("none", 15, 8), ("distributed", 5, 4)])
def test_cli_fills_unset_settings_from_the_schedule(privacy: str, rounds: int, dim: int) -> None:
    args = _parse("--privacy", privacy)
    assert (args.rounds, args.dim) == (rounds, dim)


def test_explicit_settings_win_over_the_schedule() -> None:
    args = _parse("--privacy", "none", "--rounds", "3", "--dim", "2", "--residual-weight", "0")
    assert (args.rounds, args.dim, args.residual_weight) == (3, 2, 0.0)
