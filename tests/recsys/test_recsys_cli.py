"""``privagg train``: outputs, report card, and one clear line + exit 2 on bad arguments."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from analysis.cli import main

SMALL = ["--data", "synthetic", "--users", "40", "--items", "30", "--quiet", "--seed", "1"]


def test_train_writes_every_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "train",
            *SMALL,
            "--rounds",
            "2",
            "--model",
            "popfeat+fcf",
            "--active-items",
            "10",
            "--secagg",
            "full",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "ledger.sqlite",
        "metrics.csv",
        "summary.json",
        "training.png",
    ]
    rows = list(csv.DictReader((out / "metrics.csv").read_text().splitlines()))
    assert [r["task"] for r in rows] == ["popularity", "fcf", "fcf"]
    assert all(r["hr10"] != "" and float(r["bytes_up"]) > 0 for r in rows)
    eps = [float(r["epsilon"]) for r in rows]
    assert eps == sorted(eps) and eps[-1] <= 8.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["synthetic"] is True
    card = summary["report_card"]
    assert card["secagg"] == "plus" or card["secagg"] == "full"
    assert card["delta"] == 1e-4 and card["accountant"].startswith("privagg dp")
    assert "DP capped popularity (ε=8, 50 random)" in summary["baselines"]
    assert "DP capped popularity (ε=8, 20 recent)" in summary["baselines"]
    assert len(summary["per_user_ranks"]) == summary["report_card"]["population"]
    printed = capsys.readouterr().out
    assert "privacy report card" in printed and "SYNTHETIC" in printed
    assert "central ALS (non-private)" in printed
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".privagg-train-")]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--epsilon", "0"], "--epsilon"),
        (["--epsilon", "-2"], "--epsilon"),
        (["--delta", "1"], "--delta"),
        (["--delta", "1.5"], "--delta"),
        (["--cohort", "41"], "larger than the population"),
        (["--dropout", "1"], "--dropout"),
        (["--data", "/nonexistent/ratings.csv"], "no such file"),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    out = tmp_path / "run"
    code = main(["train", *SMALL, *extra, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_malformed_data_file_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "r.csv"
    bad.write_text("1,2,5,10\n1,3,x,11\n")
    code = main(["train", "--data", str(bad), "--quiet", "--out", str(tmp_path / "run")])
    assert code == 2
    assert "r.csv:2" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_silo_mode_writes_its_own_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "train",
            *SMALL,
            "--rounds",
            "1",
            "--model",
            "popfeat+fcf",
            "--secagg",
            "off",
            "--active-items",
            "10",
            "--silo-users",
            "25",
            "--silo-epochs",
            "1",
            "--no-baselines",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert (out / "ledger_silo.sqlite").exists() and (out / "ledger.sqlite").exists()
    card = json.loads((out / "summary.json").read_text())["report_card"]
    assert card["silo"]["users"] == 25
    assert card["silo"]["unit"].startswith("record-level")
    assert "RECORD-level" in capsys.readouterr().out
