"""What a new user meets in the first hour (issue 19): install, deployment set-up, where
results go, data files, errors instead of tracebacks, silent settings, the demo, the CLI."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from email.parser import Parser
from pathlib import Path

import pytest

from analysis import cli

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--data", "synthetic", "--users", "40", "--items", "30", "--quiet", "--seed", "1"]


def _python(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=300,
    )


# ---------------------------------------------------------------- 1. install without torch


def test_wheel_metadata_has_no_torch_in_the_core(tmp_path: Path) -> None:
    """Build the wheel's metadata from pyproject.toml (setuptools' PEP 517 hook, as pip
    does) and read its requirements: torch/opacus only behind the 'silo' extra."""
    code = (
        "import sys, setuptools.build_meta as b; "
        "print(b.prepare_metadata_for_build_wheel(sys.argv[1]))"
    )
    out = _python(code, str(tmp_path))
    assert out.returncode == 0, out.stderr
    dist_info = tmp_path / out.stdout.strip().splitlines()[-1]
    meta = Parser().parsestr((dist_info / "METADATA").read_text(encoding="utf-8"))
    requires = meta.get_all("Requires-Dist") or []
    core = [r for r in requires if "extra ==" not in r]
    assert core, "the core must have requirements"
    for heavy in ("torch", "opacus", "grpcio", "ray"):
        assert not [r for r in core if r.split()[0].split(">")[0].lower() == heavy], core
    silo = [r for r in requires if 'extra == "silo"' in r]
    assert any(r.startswith("torch") for r in silo) and any(r.startswith("opacus") for r in silo)
    assert "silo" in (meta.get_all("Provides-Extra") or [])


_BLOCK_TORCH = (
    "import sys, importlib.util\n"
    "class Block:  # as if torch, opacus and grpcio were not installed\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'opacus', 'grpc'):\n"
    "            raise ModuleNotFoundError('blocked: ' + name, name=name)\n"
    "sys.meta_path.insert(0, Block())\n"
    "_find = importlib.util.find_spec\n"
    "def find_spec(name, package=None):\n"
    "    if name.split('.')[0] in ('torch', 'opacus', 'grpc'):\n"
    "        return None\n"
    "    return _find(name, package)\n"
    "importlib.util.find_spec = find_spec\n"
)


def test_dp_and_training_run_without_torch_or_opacus(tmp_path: Path) -> None:
    """The core install: RDP (dp_accounting's analysis stands in for Opacus'), PLD and a
    whole DP training run with its FCF rounds, with torch/opacus/grpc unimportable."""
    code = _BLOCK_TORCH + (
        "import dp\n"
        "from analysis.cli import main\n"
        "args = dict(noise_multiplier=1.5, sampling_rate=0.04, steps=2250, delta=1e-5)\n"
        "print(dp.epsilon(**args), dp.epsilon(**args, accountant='rdp'))\n"
        "code = main(['train', '--users', '60', '--items', '30', '--quiet', '--rounds', '2',\n"
        "             '--cohort', '30', '--no-baselines', '--out', sys.argv[1]])\n"
        "assert 'torch' not in sys.modules and 'opacus' not in sys.modules\n"
        "sys.exit(code)\n"
    )
    out = _python(code, str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    pld, rdp = (float(x) for x in out.stdout.splitlines()[0].split())
    assert pld == pytest.approx(6.7688, abs=5e-3)
    assert 7.3291 <= rdp <= 7.3300  # Opacus: 7.32911; never below it
    assert "absl" not in out.stderr and "converge" not in out.stderr
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").read_text().splitlines()))
    assert [r["task"] for r in rows] == ["popularity", "fcf", "fcf"]


def test_silo_mode_without_the_extra_is_one_line_naming_it(tmp_path: Path) -> None:
    code = _BLOCK_TORCH + (
        "from analysis.cli import main\n"
        "sys.exit(main(['train', '--users', '40', '--items', '30', '--silo-users', '10',\n"
        "               '--out', sys.argv[1]]))\n"
    )
    out = _python(code, str(tmp_path / "run"))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "'silo' extra" in lines[0] and "privagg[silo]" in lines[0]


# ---------------------------------------------------------------- 2. deployment set-up

_BLOCK_GRPC = (
    "import sys\nsys.modules['grpc'] = None  # as if grpcio were not installed\n"
    "from analysis.cli import main\nsys.exit(main(sys.argv[1:]))\n"
)


def test_certs_works_without_grpc(tmp_path: Path) -> None:
    out = _python(_BLOCK_GRPC, "certs", "--out", str(tmp_path / "pki"), "--clients", "2")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "pki" / "ca.pem").exists() and (tmp_path / "pki" / "registry.json").exists()


def test_a_missing_extra_is_one_line_naming_it(tmp_path: Path) -> None:
    import numpy as np

    pki = tmp_path / "pki"
    assert _python(_BLOCK_GRPC, "certs", "--out", str(pki), "--clients", "2").returncode == 0
    np.save(tmp_path / "update.npy", np.zeros(4))
    out = _python(
        _BLOCK_GRPC, "client", "--server", "127.0.0.1:1", "--id", "0", "--key",
        str(pki / "client-0.key"), "--ca", str(pki / "ca.pem"),
        "--data", str(tmp_path / "update.npy"),
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert "'net' extra" in lines[0] and "privagg[net]" in lines[0]


# ---------------------------------------------------------------- 3. results never into docs/


def test_study_writes_a_fresh_runs_folder_and_never_smoke_runs_into_docs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from analysis.commands import study

    def fake_study(name: str, out: Path, *, quick: bool) -> None:
        out.mkdir(parents=True)
        (out / f"report_{name}.md").write_text(f"# {name}\n", encoding="utf-8")

    monkeypatch.setattr(study, "run_study", fake_study)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["study", "context", "--quick"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("study-")
    report = (run / "context" / "report_context.md").read_text(encoding="utf-8")
    assert report.startswith(study.SMOKE_BANNER)
    assert study.SMOKE_BANNER in (run / "report.md").read_text(encoding="utf-8")
    assert not (tmp_path / "docs").exists()
    docs = tmp_path / "docs" / "results" / "efficiency"
    assert cli.main(["study", "context", "--quick", "--out", str(docs)]) == 2
    assert "smoke run" in capsys.readouterr().err and not docs.exists()
    # regenerating the committed study is explicit
    assert cli.main(["study", "context", "--out", str(docs)]) == 0
    assert (docs / "context" / "report_context.md").exists()


def test_train_and_demo_default_to_fresh_runs_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = [*SMALL, "--no-baselines"]
    assert cli.main(["train", *args]) == 0
    assert cli.main(["train", *args]) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(r.startswith("train-") for r in runs)
    from analysis.outputs import fresh_out

    assert Path(fresh_out("demo")).parent == Path("runs")


# ---------------------------------------------------------------- 4. data files in train


def test_train_refuses_a_temporal_split_without_timestamps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "no_time.csv"
    data.write_text("".join(f"{u},{i},4\n" for u in range(30) for i in range(u % 5, 12)))
    assert cli.main(["train", "--data", str(data), "--quiet", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no timestamp column" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.filterwarnings("default::recsys.data.DuplicateRowsWarning")
def test_duplicate_rows_are_warned_about_and_counted_in_the_report_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [f"{u}\t{i}\t4\t{1000 * u + i}" for u in range(40) for i in range(u % 7, 14)]
    data = tmp_path / "renamed.tsv"  # u.data's format under another name
    data.write_text("\n".join([*rows, rows[3], rows[10], rows[3]]) + "\n")
    out = tmp_path / "r"
    args = ["train", "--data", str(data), "--quiet", "--no-baselines", "--out", str(out)]
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "dropped 3 exact duplicate" in captured.err
    assert "3 exact duplicate rows dropped" in captured.out
    card = json.loads((out / "summary.json").read_text())["report_card"]
    assert card["duplicate_rows_dropped"] == 3


# ---------------------------------------------------------------- 5. no tracebacks


@pytest.mark.parametrize(
    "argv",
    [
        ["epsilon", "-z", "1", "-q", "0.01", "-T", "1000000000000", "-d", "1e-5"],
        ["calibrate", "-e", "1", "-q", "0.01", "-T", "1000000000000", "-d", "1e-5"],
        ["epsilon", "-z", "1", "-q", "0.01", "-T", "0", "-d", "1e-5"],
    ],
)
def test_huge_or_zero_step_counts_are_one_line_with_the_limit(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--steps" in err[0]
    if "0" not in argv[argv.index("-T") + 1 :][:1]:
        assert "10^9" in err[0]


def _count_ledger_rows(path: Path) -> int:
    """Rows of a (signed) ledger whose chain and replay check out, read without a key."""
    from dp.ledger import audit_ledger

    report = audit_ledger(path)
    assert report.chain_ok and report.replay_ok and not report.tampered, report.problems
    return report.rows


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_train_keeps_partial_results_and_a_consistent_ledger(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    out = tmp_path / "run"
    argv = [
        sys.executable, "-m", "analysis.cli", "train", "--users", "200", "--items", "60",
        "--model", "popfeat+fcf", "--rounds", "400", "--secagg", "off", "--no-baselines",
        "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env) as proc:
        assert proc.stderr is not None
        seen: list[str] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen.append(line)
            if "release" in line and "(fcf)" in line:
                break
        proc.send_signal(sig)
        rest = proc.stderr.read()
        assert proc.wait(timeout=120) == code, "".join(seen) + rest
    assert "Traceback" not in rest
    final = [line for line in rest.strip().splitlines() if line.strip()]
    assert "interrupted" in final[-1] and str(out) in final[-1]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".privagg-train-")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] == sig.name
    rows = list(csv.DictReader((out / "metrics.csv").read_text().splitlines()))
    assert 2 <= len(rows) == summary["completed_releases"] < 401
    # every release made is in the ledger, and the ledger holds nothing else
    assert _count_ledger_rows(out / "ledger.sqlite") == len(rows)
    assert summary["epsilon_spent"] == pytest.approx(float(rows[-1]["epsilon"]), rel=1e-5)


# ---------------------------------------------------------------- 6. silent settings


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--privacy", "none", "--epsilon", "1"], "--epsilon only applies with --privacy"),
        (["--privacy", "none", "--delta", "1e-6"], "--delta only applies"),
        (["--clusters", "4"], "--clusters only applies with --sampler stratified"),
        (["--deadline", "3"], "--deadline only applies with --devices"),
        (["--silo-epochs", "3"], "--silo-epochs only applies with --silo-users"),
        (["--model", "popfeat", "--rounds", "3"], "--rounds 3 would be ignored"),
    ],
)
def test_ignored_flags_are_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    assert cli.main(["train", *SMALL, *extra, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_explicit_rounds_are_run_under_dp_below_the_residual_threshold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    args = ["train", *SMALL, "--rounds", "2", "--active-items", "10", "--no-baselines"]
    assert cli.main([*args, "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "metrics.csv").read_text().splitlines()))
    assert [r["task"] for r in rows] == ["popularity", "fcf", "fcf"]
    card = json.loads((out / "summary.json").read_text())["report_card"]
    assert card["model"] == "popfeat+fcf" and "--rounds 2" in card["model_choice"]
    assert "popfeat + FCF residual as asked" in capsys.readouterr().out
    # without --rounds, auto says that it trains one release and why
    assert cli.main(["train", *SMALL, "--no-baselines", "--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert "one popularity release, no FCF rounds" in printed and "40 < 3000" in printed


def test_delta_above_one_over_n_is_warned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", *SMALL, "--delta", "0.5", "--no-baselines", "--out", str(tmp_path / "r")]
    assert cli.main(args) == 0
    assert "warning: δ = 0.5 ≥ 1/N = 1/40" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["-e", "0.1", "-z", "0.5", "-q", "0.5", "-d", "1e-5"], "no number of rounds"),
        (["-e", "1", "-z", "1", "-q", "0.01", "-d", "1e-5", "--population", "-5"], "population"),
        (["-e", "1", "-z", "0.01", "-T", "1000", "-d", "1e-5", "--population", "1000"], "cohort"),
    ],
)
def test_calibrate_refuses_impossible_requests(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["calibrate", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]


def test_a_long_run_prints_a_pre_flight_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from analysis.commands import train

    monkeypatch.setattr(train, "_LONG_RUN_SECONDS", 0.0)
    args = ["train", *SMALL, "--model", "popfeat+fcf", "--rounds", "3", "--no-baselines"]
    assert cli.main([*args, "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "pre-flight estimate" in err and "for the 2 FCF rounds left" in err


# ---------------------------------------------------------------- 8. the demo


def test_the_demo_job_shows_progress_and_keeps_the_whole_chain() -> None:
    import argparse

    from analysis.commands import demo, train
    from recsys.recommender import RESIDUAL_MIN_USERS, choose_model_kind

    assert "--quiet" not in demo.DEMO_TRAIN_ARGS
    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *demo.DEMO_TRAIN_ARGS])
    train._fill_conditional_defaults(args)
    train._apply_residual_schedule(args)
    assert args.privacy == "distributed" and args.secagg == "plus" and args.dropout > 0
    assert args.users >= RESIDUAL_MIN_USERS
    assert choose_model_kind(args.privacy, args.users) == "popfeat+fcf" and args.rounds > 0


def test_progress_lines_show_epsilon_and_the_metric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a for a in SMALL if a != "--quiet"]
    argv = ["train", *args, "--rounds", "2", "--no-baselines", "--out", str(tmp_path / "r")]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err  # not a terminal: one line per release
    assert "release 1/3 (popularity) ε = " in err and "HR@10 = " in err
    assert "release 3/3 (fcf)" in err


def test_one_release_plot_is_bars_beside_the_baselines(tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert cli.main(["train", *SMALL, "--out", str(out)]) == 0
    from matplotlib import image

    assert image.imread(out / "training.png").shape[0] > 300


def test_readme_says_where_the_cli_is() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert ".venv/bin/privagg" in readme
    assert "privagg[net]" in readme and "privagg[silo]" in readme
    assert readme.count("- Accountants (") == 1  # one bullet, not two contradicting ones


# ---------------------------------------------------------------- 9. polish


def test_top_level_help_imports_no_heavy_module() -> None:
    code = (
        "import sys\nfrom analysis.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('numpy', 'scipy', 'protocols', 'dp', 'recsys') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_every_command_registers_with_the_listed_help_and_no_rst_markup() -> None:
    import argparse

    full = cli.build_parser()
    (sub,) = [a for a in full._actions if isinstance(a, argparse._SubParsersAction)]
    listed = {a.dest: a.help for a in sub._choices_actions}
    assert list(listed) == list(cli.COMMANDS)
    for name, (_, help_text) in cli.COMMANDS.items():
        assert listed[name] == cli.plain_text(help_text), name
        text = sub.choices[name].format_help()
        assert "``" not in text and ":class:" not in text and ":func:" not in text, name
        assert not [line for line in text.splitlines() if line.endswith("::")], name
    attack = sub.choices["attack"].format_help()
    assert "SYNTHETIC" in attack and "one-run audit (Steinke" not in attack


def test_attack_says_its_first_block_is_synthetic(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["attack", "--epsilon", "8"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("attack suite on SYNTHETIC")
