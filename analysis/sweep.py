"""Privacy-utility sweeps: a resumable, parallel grid of ``privagg train`` runs.

A grid is the product of datasets × ε (``inf`` = no DP) × privacy mode × SecAgg mode ×
dropout rate × cohort size × seed. Each cell runs ``privagg train`` in its own process
(so cells run in parallel and a crash in one cannot corrupt another) into
``RUNS/<cell id>/``; a cell is finished when its ``row.json`` exists, so an interrupted
sweep resumes where it stopped and never reruns finished cells. The row holds the final
metrics, per-round cost, baselines and the ledger check of ``privagg audit`` for that run.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from analysis.errors import SweepError

__all__ = [
    "RESULT_FIELDS",
    "Cell",
    "CellOutcome",
    "Grid",
    "cell_finished",
    "collect_row",
    "read_results",
    "run_grid",
    "write_results",
]

# The tidy schema of results.csv: one row per cell and seed.
RESULT_FIELDS: tuple[str, ...] = (
    "cell",
    "dataset",
    "privacy",
    "epsilon_target",
    "epsilon_spent",
    "delta",
    "secagg",
    "dropout",
    "cohort",
    "seed",
    "model",
    "hr10",
    "hr10_lo",
    "hr10_hi",
    "ndcg10",
    "ndcg10_lo",
    "ndcg10_hi",
    "popularity_hr10",
    "dp_popularity_hr10",
    "als_hr10",
    "releases",
    "seconds_total",
    "seconds_per_round",
    "bytes_up_per_round",
    "bytes_down_per_round",
    "ledger_ok",
    "ledger_final_epsilon",
    "ledger_problems",
)


# Runs exactly ``privagg train`` (same parser, same error handling) without importing the
# other subcommands, so one broken unrelated subcommand cannot fail a whole sweep.
_TRAIN_ENTRY = (
    "import sys, argparse\n"
    "from analysis.commands import train\n"
    "from analysis.cli import _user_error_types\n"
    "p = argparse.ArgumentParser(prog='privagg')\n"
    "train.register(p.add_subparsers(dest='command'))\n"
    "a = p.parse_args(sys.argv[1:])\n"
    "try:\n"
    "    sys.exit(a.func(a))\n"
    "except _user_error_types() as e:\n"
    "    print(f'privagg train: error: {e}', file=sys.stderr)\n"
    "    sys.exit(2)\n"
)


@dataclass(frozen=True)
class Cell:
    """One training run of the grid; ``epsilon = inf`` means no DP (privacy ``none``)."""

    dataset: str
    epsilon: float
    privacy: str
    secagg: str
    dropout: float
    cohort: int | None
    seed: int
    train_args: tuple[str, ...] = ()
    users: int | None = None  # synthetic population size (None: privagg train's default)

    @property
    def effective_privacy(self) -> str:
        return "none" if math.isinf(self.epsilon) else self.privacy

    @property
    def dataset_name(self) -> str:
        if self.dataset == "synthetic":
            return "synthetic" if self.users is None else f"synthetic-{self.users}"
        return os.path.basename(os.path.normpath(self.dataset))

    @property
    def cell_id(self) -> str:
        """A stable, filesystem-safe name: the same cell always maps to the same folder."""
        eps = "inf" if math.isinf(self.epsilon) else f"{self.epsilon:g}"
        extra = ""
        if self.train_args:
            extra = "__" + "_".join(a.lstrip("-").replace("/", "-") for a in self.train_args)
        return (
            f"{self.dataset_name}__{self.effective_privacy}__eps{eps}__{self.secagg}"
            f"__drop{self.dropout:g}__cohort{self.cohort or 'all'}__seed{self.seed}{extra}"
        )

    def command(self, out_dir: str) -> list[str]:
        """The ``privagg train`` invocation of this cell."""
        cmd = [
            sys.executable,
            "-c",
            _TRAIN_ENTRY,
            "train",
            "--data",
            self.dataset,
            "--privacy",
            self.effective_privacy,
            "--secagg",
            self.secagg,
            "--dropout",
            f"{self.dropout:g}",
            "--seed",
            str(self.seed),
            "--out",
            out_dir,
            "--quiet",
        ]
        if not math.isinf(self.epsilon):
            cmd += ["--epsilon", f"{self.epsilon:g}"]
        if self.cohort is not None:
            cmd += ["--cohort", str(self.cohort)]
        if self.users is not None:
            cmd += ["--users", str(self.users)]
        return cmd + list(self.train_args)


@dataclass(frozen=True)
class Grid:
    """The axes of a sweep; :meth:`cells` is their product (seeds vary fastest)."""

    datasets: tuple[str, ...] = ("synthetic",)
    epsilons: tuple[float, ...] = (1.0, 8.0, math.inf)
    privacy: tuple[str, ...] = ("distributed",)
    secagg: tuple[str, ...] = ("plus",)
    dropouts: tuple[float, ...] = (0.1,)
    cohorts: tuple[int | None, ...] = (None,)
    seeds: tuple[int, ...] = (0,)
    train_args: tuple[str, ...] = field(default=())
    users: tuple[int | None, ...] = (None,)

    def __post_init__(self) -> None:
        for name in ("datasets", "epsilons", "privacy", "secagg", "dropouts", "cohorts", "seeds"):
            if not getattr(self, name):
                raise SweepError(f"the grid axis {name!r} is empty")
        for eps in self.epsilons:
            if not eps > 0:
                raise SweepError(f"ε must be positive (or inf), got {eps}")
        for d in self.dropouts:
            if not 0 <= d < 1:
                raise SweepError(f"dropout must lie in [0, 1), got {d}")
        for n in self.users:
            if n is not None and n < 2:
                raise SweepError(f"synthetic users must be at least 2, got {n}")
        for c in self.cohorts:
            if c is not None and c < 2:
                raise SweepError(f"cohort must be at least 2, got {c}")
        bad = set(self.privacy) - {"central", "distributed", "none"}
        if bad:
            raise SweepError(f"unknown privacy mode(s) {sorted(bad)}")
        bad = set(self.secagg) - {"full", "plus", "off"}
        if bad:
            raise SweepError(f"unknown SecAgg mode(s) {sorted(bad)}")

    def cells(self) -> list[Cell]:
        """Every distinct cell; ε = ∞ cells collapse over privacy modes (no DP is no DP)."""
        seen: dict[str, Cell] = {}
        for ds, n, eps, priv, sa, drop, coh, seed in itertools.product(
            self.datasets,
            self.users,
            self.epsilons,
            self.privacy,
            self.secagg,
            self.dropouts,
            self.cohorts,
            self.seeds,
        ):
            users = n if ds == "synthetic" else None  # populations only scale synthetic data
            cell = Cell(ds, eps, priv, sa, drop, coh, seed, self.train_args, users)
            seen.setdefault(cell.cell_id, cell)
        return list(seen.values())


@dataclass(frozen=True)
class CellOutcome:
    """What happened to one cell: its row, or the error that stopped it."""

    cell: Cell
    row: dict[str, Any] | None
    error: str | None
    resumed: bool


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _ledger_check(path: str) -> dict[str, Any]:
    """The ``privagg audit LEDGER`` verdict for one run (chain, replay, budgets)."""
    from dp.ledger import audit_ledger

    report = audit_ledger(path)
    issues = [*report.problems, *report.violations]
    return {
        "ledger_ok": report.ok,
        "ledger_final_epsilon": report.final_epsilon,
        "ledger_problems": "; ".join(issues),
        "ledger_rows": report.rows,
        "ledger_backend": report.backend,
        "ledger_head": report.head_hash,
        "ledger_warnings": list(report.warnings),
    }


def collect_row(cell: Cell, out_dir: str) -> dict[str, Any]:
    """Read one finished ``privagg train`` output folder into a results row."""
    with open(os.path.join(out_dir, "summary.json"), encoding="utf-8") as fh:
        summary = json.load(fh)
    card = summary["report_card"]
    final = summary["final"]
    with open(os.path.join(out_dir, "metrics.csv"), encoding="utf-8", newline="") as fh:
        rounds = list(csv.DictReader(fh))
    base = summary.get("baselines") or {}
    dp_pop = [v["HR@10"] for k, v in base.items() if k.startswith("DP capped popularity")]
    spent = card.get("epsilon")
    row: dict[str, Any] = {
        "cell": cell.cell_id,
        "dataset": cell.dataset_name,
        "privacy": cell.effective_privacy,
        "epsilon_target": cell.epsilon,
        "epsilon_spent": float(spent) if isinstance(spent, int | float) else math.inf,
        "delta": card.get("delta"),
        "secagg": cell.secagg,
        "dropout": cell.dropout,
        "cohort": cell.cohort if cell.cohort is not None else "",
        "seed": cell.seed,
        "model": card.get("model", ""),
        "hr10": final["HR@10"],
        "hr10_lo": final["HR@10_lo"],
        "hr10_hi": final["HR@10_hi"],
        "ndcg10": final["NDCG@10"],
        "ndcg10_lo": final["NDCG@10_lo"],
        "ndcg10_hi": final["NDCG@10_hi"],
        "popularity_hr10": base.get("popularity (non-private)", {}).get("HR@10", ""),
        # the model's own capping rule is the last DP baseline listed by privagg train
        "dp_popularity_hr10": dp_pop[-1] if dp_pop else "",
        "als_hr10": base.get("central ALS (non-private)", {}).get("HR@10", ""),
        "releases": len(rounds),
        "seconds_total": summary["seconds"],
        "seconds_per_round": _mean([float(r["seconds"]) for r in rounds]),
        "bytes_up_per_round": _mean([float(r["bytes_up"]) for r in rounds]),
        "bytes_down_per_round": _mean([float(r["bytes_down"]) for r in rounds]),
    }
    row.update(_ledger_check(os.path.join(out_dir, "ledger.sqlite")))
    row["report_card"] = card
    return row


def cell_finished(cell: Cell, runs_dir: str) -> bool:
    """True when the cell's training finished (its row, or privagg train's outputs, exist).

    ``privagg train`` moves its outputs into place only on success, so a ``summary.json``
    means a finished run even if the sweep that started it died before writing the row.
    """
    out_dir = os.path.join(runs_dir, cell.cell_id)
    return any(os.path.exists(os.path.join(out_dir, f)) for f in ("row.json", "summary.json"))


def _save_row(cell: Cell, out_dir: str) -> dict[str, Any]:
    row: dict[str, Any] = _json_safe(collect_row(cell, out_dir))
    row_path = os.path.join(out_dir, "row.json")
    tmp = row_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(row, fh, indent=1, sort_keys=True)
    os.replace(tmp, row_path)  # atomic: a half-written row never marks a cell done
    return row


def _run_cell(cell: Cell, runs_dir: str) -> CellOutcome:
    out_dir = os.path.join(runs_dir, cell.cell_id)
    row_path = os.path.join(out_dir, "row.json")
    if os.path.exists(row_path):
        with open(row_path, encoding="utf-8") as fh:
            return CellOutcome(cell, json.load(fh), None, resumed=True)
    if os.path.exists(os.path.join(out_dir, "summary.json")):
        return CellOutcome(cell, _save_row(cell, out_dir), None, resumed=True)
    env = dict(os.environ)
    # one BLAS thread per cell: the pool is the parallelism
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # the argv is built by Cell.command from validated grid values, never through a shell
    proc = subprocess.run(  # noqa: S603
        cell.command(out_dir), capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return CellOutcome(cell, None, " | ".join(tail) or f"exit {proc.returncode}", False)
    return CellOutcome(cell, _save_row(cell, out_dir), None, resumed=False)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "-inf" if value < 0 else "nan"
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def run_grid(
    cells: Iterable[Cell],
    runs_dir: str,
    *,
    workers: int = 2,
    on_done: Callable[[CellOutcome], None] | None = None,
) -> list[CellOutcome]:
    """Run every unfinished cell with ``workers`` concurrent processes; return all outcomes.

    Finished cells (``row.json`` present) are read back, not rerun. A failing cell is
    reported in its outcome and does not stop the others.
    """
    if workers < 1:
        raise SweepError(f"workers must be at least 1, got {workers}")
    todo = list(cells)
    os.makedirs(runs_dir, exist_ok=True)
    outcomes: list[CellOutcome] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: set[Future[CellOutcome]] = {pool.submit(_run_cell, c, runs_dir) for c in todo}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                outcome = fut.result()
                outcomes.append(outcome)
                if on_done is not None:
                    on_done(outcome)
    order = {c.cell_id: i for i, c in enumerate(todo)}
    outcomes.sort(key=lambda o: order[o.cell.cell_id])
    return outcomes


def write_results(path: str, rows: Sequence[dict[str, Any]]) -> None:
    """Write the tidy results table (one row per cell and seed) atomically."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RESULT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k, "")) for k in RESULT_FIELDS})
    os.replace(tmp, path)


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "inf" if value == math.inf else f"{value:.6g}"
    return value


def read_results(path: str) -> list[dict[str, Any]]:
    """Read ``results.csv`` back with numbers as floats (``inf`` included)."""
    numeric = {
        "epsilon_target",
        "epsilon_spent",
        "delta",
        "dropout",
        "hr10",
        "hr10_lo",
        "hr10_hi",
        "ndcg10",
        "ndcg10_lo",
        "ndcg10_hi",
        "popularity_hr10",
        "dp_popularity_hr10",
        "als_hr10",
        "seconds_total",
        "seconds_per_round",
        "bytes_up_per_round",
        "bytes_down_per_round",
        "ledger_final_epsilon",
    }
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", newline="") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, Any] = dict(raw)
            for k in numeric:
                v = row.get(k, "")
                row[k] = float(v) if v not in ("", None) else math.nan
            row["seed"] = int(row["seed"])
            row["releases"] = int(row["releases"])
            row["ledger_ok"] = row["ledger_ok"] == "True"
            out.append(row)
    return out
