"""The sweep: resumable grid, tidy CSV schema, plots and report on a tiny synthetic grid."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pytest

from analysis.cli import main
from analysis.errors import SweepError
from analysis.sweep import RESULT_FIELDS, Grid, read_results

TINY = "--users 120 --items 40 --rounds 1 --simulation-noise --no-baselines"


def _sweep(out: Path, *extra: str) -> int:
    return main(
        [
            "sweep",
            "--epsilon",
            "2,inf",
            "--seeds",
            "0,1",
            "--train-args",
            TINY,
            "--workers",
            "2",
            "--out",
            str(out),
            "--quiet",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep")
    assert _sweep(out) == 0
    return out


def test_grid_collapses_no_dp_over_privacy_modes() -> None:
    grid = Grid(epsilons=(1.0, math.inf), privacy=("central", "distributed"), seeds=(0, 1))
    cells = grid.cells()
    ids = [c.cell_id for c in cells]
    assert len(ids) == len(set(ids)) == 2 * 2 + 2  # ε=∞ is one cell per seed, not two
    assert sum(c.effective_privacy == "none" for c in cells) == 2


def test_population_axis_scales_only_synthetic_data(tmp_path: Path) -> None:
    grid = Grid(datasets=("synthetic", str(tmp_path)), users=(1000, 10_000), epsilons=(1.0,))
    names = sorted(c.dataset_name for c in grid.cells())
    assert names == sorted(["synthetic-1000", "synthetic-10000", tmp_path.name])
    cell = next(c for c in grid.cells() if c.users == 10_000)
    cmd = cell.command("out")
    assert cmd[cmd.index("--users") + 1] == "10000"
    assert cmd[cmd.index("--epsilon") + 1] == "1"


def test_scaling_section_compares_each_population_with_its_non_private_model() -> None:
    from analysis.report import scaling_section

    def row(ds: str, priv: str, eps: float, hr: float, seed: int = 0) -> dict[str, object]:
        return {
            "dataset": ds,
            "privacy": priv,
            "secagg": "plus",
            "dropout": 0.1,
            "cohort": "",
            "seed": seed,
            "epsilon_target": eps,
            "epsilon_spent": eps,
            "hr10": hr,
            "ndcg10": hr,
            "popularity_hr10": "",
            "dp_popularity_hr10": "",
            "seconds_per_round": 1.0,
            "bytes_up_per_round": 1.0,
            "ledger_ok": True,
        }

    rows = [
        row("synthetic-1000", "distributed", 1.0, 0.1),
        row("synthetic-1000", "none", math.inf, 0.2),
        row("synthetic-10000", "distributed", 1.0, 0.19),
        row("synthetic-10000", "none", math.inf, 0.2),
    ]
    text = "\n".join(scaling_section(rows))
    assert "| 1000 | distributed | all | 1 | 0.1000 | 0.2000 | 50 % | 50 % |" in text
    assert "| 10000 | distributed | all | 1 | 0.1900 | 0.2000 | 95 % | 95 % |" in text
    assert "not measured by this grid" in text
    assert scaling_section(rows[:2]) == []
    # the 10^5 point decides the goal; per-seed shares pair runs on the same population
    big = [
        row("synthetic-100000", "distributed", 1.0, 0.18, seed=0),
        row("synthetic-100000", "distributed", 1.0, 0.16, seed=1),
        row("synthetic-100000", "none", math.inf, 0.2, seed=0),
        row("synthetic-100000", "none", math.inf, 0.2, seed=1),
    ]
    text = "\n".join(scaling_section(rows + big))
    assert "| 100000 | distributed | all | 1 | 0.1700 | 0.2000 | 85 % | 90 %, 80 % |" in text
    assert "≥ 90 % of the non-private HR@10: missed (85 % of the mean over 2 seed(s)" in text
    big[1]["hr10"] = 0.2
    assert ": met (95 %" in "\n".join(scaling_section(rows + big))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilons": ()},
        {"epsilons": (0.0,)},
        {"dropouts": (1.0,)},
        {"cohorts": (1,)},
        {"privacy": ("bogus",)},
        {"secagg": ("nope",)},
    ],
)
def test_grid_rejects_bad_axes(kwargs: dict[str, object]) -> None:
    with pytest.raises(SweepError):
        Grid(**kwargs)  # type: ignore[arg-type]


def test_csv_schema_one_row_per_cell_and_seed(tiny_sweep: Path) -> None:
    with open(tiny_sweep / "results.csv", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == RESULT_FIELDS
    rows = read_results(str(tiny_sweep / "results.csv"))
    assert len(rows) == 4
    assert sorted((r["privacy"], r["seed"]) for r in rows) == [
        ("distributed", 0),
        ("distributed", 1),
        ("none", 0),
        ("none", 1),
    ]
    for r in rows:
        assert 0.0 <= r["hr10_lo"] <= r["hr10"] <= r["hr10_hi"] <= 1.0
        assert r["ledger_ok"] is True
        assert r["bytes_up_per_round"] > 0 and r["seconds_per_round"] > 0
        if r["privacy"] == "distributed":
            assert r["epsilon_spent"] <= r["epsilon_target"] + 1e-9
            assert r["ledger_final_epsilon"] == pytest.approx(r["epsilon_spent"], rel=1e-6)
        else:
            assert math.isinf(r["epsilon_target"])


def test_plots_and_report_exist_with_sane_size(tiny_sweep: Path) -> None:
    from PIL import Image

    for name, (w, h) in {"tradeoff.png": (650, 450), "cost.png": (800, 450)}.items():
        path = tiny_sweep / name
        assert path.stat().st_size > 5_000
        with Image.open(path) as im:
            assert im.size[0] >= w and im.size[1] == h
    report = (tiny_sweep / "report.md").read_text(encoding="utf-8")
    assert "## synthetic" in report and "tradeoff.png" in report
    assert report.count("| OK |") >= 4  # each run's ledger check is in the report
    assert "privagg sweep" in report
    # the one-run empirical audit of the DP configuration, with its ROC figure
    assert "Empirical one-run audits" in report and "| consistent |" in report
    assert (tiny_sweep / "audit_roc.png").stat().st_size > 5_000


def test_resume_does_not_rerun_finished_cells(tiny_sweep: Path) -> None:
    import shutil

    runs = tiny_sweep / "runs"

    def stamps(name: str) -> dict[str, int]:
        return {d: os.stat(runs / d / name).st_mtime_ns for d in os.listdir(runs)}

    rows0, summaries0 = stamps("row.json"), stamps("summary.json")
    interrupted, orphaned = sorted(rows0)[:2]
    shutil.rmtree(runs / interrupted)  # interrupted before the cell finished: rerun it
    os.remove(runs / orphaned / "row.json")  # trained, but the sweep died before its row
    assert _sweep(tiny_sweep) == 0
    rows1, summaries1 = stamps("row.json"), stamps("summary.json")
    assert summaries1[interrupted] != summaries0[interrupted]  # retrained
    assert summaries1[orphaned] == summaries0[orphaned]  # not retrained, row recovered
    assert rows1[orphaned] != rows0[orphaned]
    for d in rows0:
        if d not in (interrupted, orphaned):
            assert rows1[d] == rows0[d] and summaries1[d] == summaries0[d]
    assert len(read_results(str(tiny_sweep / "results.csv"))) == 4


def test_report_only_trains_nothing(tiny_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "partial"
    code = main(
        [
            "sweep",
            "--epsilon",
            "2,4,inf",
            "--seeds",
            "0,1",
            "--train-args",
            TINY,
            "--runs",
            str(tiny_sweep / "runs"),
            "--out",
            str(out),
            "--quiet",
            "--report-only",
            "--audit-canaries",
            "0",
        ]
    )
    assert code == 0
    assert len(read_results(str(out / "results.csv"))) == 4  # the ε = 4 cells never ran
    assert not any("eps4" in d for d in os.listdir(tiny_sweep / "runs"))


def test_failed_cell_is_reported_not_fatal(tmp_path: Path) -> None:
    # a cohort larger than the population makes privagg train refuse: exit 1, others still run
    code = main(
        [
            "sweep",
            "--epsilon",
            "2",
            "--cohort",
            "all,500",
            "--train-args",
            TINY,
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert code == 1
    rows = read_results(str(tmp_path / "results.csv"))
    assert len(rows) == 1 and rows[0]["cohort"] == ""


def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--epsilon", "x", "--out", str(tmp_path)]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["sweep", "--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2


def test_membership_section_uses_each_runs_release_on_real_users(tmp_path: Path) -> None:
    """The report's membership-inference table: one line per configuration and attack, with
    the run's own z, an interval around the AUC and the goal verdict; synthetic data and
    models without a popularity release are skipped."""
    from analysis.commands.sweep import MI_SEEDS, membership_section
    from recsys.data import synthetic_ratings

    r = synthetic_ratings(150, 60, seed=5, mean_activity=12, min_activity=4)
    path = tmp_path / "tiny.csv"
    lines = zip(r.users, r.items, r.ratings, r.timestamps, strict=True)
    path.write_text("".join(f"{u},{i},{x:g},{t}\n" for u, i, x, t in lines))

    def row(eps: float, seed: int, z: float, cap: int | None) -> dict[str, object]:
        card = {"popularity_cap": cap, "popularity_noise_multiplier": z, "delta": 1e-4}
        privacy = "none" if math.isinf(eps) else "distributed"
        return {"dataset": "tiny.csv", "privacy": privacy, "secagg": "plus", "seed": seed,
                "epsilon_target": eps, "report_card": card}  # fmt: skip

    rows = [row(8.0, 1, 0.6, 10), row(8.0, 0, 0.6, 10), row(math.inf, 0, 0.0, 10)]
    rows.append(row(2.0, 0, 2.0, None))  # FCF-only model: no popularity release to attack
    out = membership_section(rows, ("synthetic", str(path)))
    table = [ln for ln in out if ln.startswith("| distributed") or ln.startswith("| none")]
    assert len(table) == 4  # (ε = 8, ∞) × (count, calibrated)
    assert all(" | 0.6 | 10 | " in ln for ln in table if ln.startswith("| distributed"))
    assert all(ln.split(" | ")[-1].rstrip(" |") in ("met", "missed", "undecided") for ln in table)
    assert "Membership inference on the users of tiny.csv" in out[0]
    assert f"{len(MI_SEEDS)} seeds" in " ".join(out)
    assert membership_section(rows, ("synthetic",)) == []
