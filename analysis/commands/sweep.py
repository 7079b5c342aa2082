"""``privagg sweep``: a resumable, parallel privacy-utility grid of ``privagg train`` runs.

The grid is the product of the comma-separated lists given for ``--data``, ``--epsilon``
(``inf`` = no DP), ``--privacy``, ``--secagg``, ``--dropout``, ``--cohort`` (``all`` =
full participation) and ``--seeds``. Each cell trains in its own process (``--workers``
at a time) into ``RUNS/<cell>/`` (default ``OUT/runs``, git-ignored); finished cells are
never rerun, so rerunning the same command after an interruption resumes. Writes into
``--out``: ``results.csv`` (one row per cell and seed), ``tradeoff.png``, ``cost.png`` and
``report.md`` (tables, findings, each run's privacy report card and ledger check).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from typing import Any

from analysis.audit_empirical import DistributedAudit
from analysis.errors import AnalysisError, SweepError
from analysis.outputs import fresh_out
from analysis.report import plot_cost, plot_tradeoff, write_report
from analysis.sweep import CellOutcome, Grid, cell_finished, run_grid, write_results

EXIT_OK = 0
EXIT_FAILED_CELLS = 1
EXIT_USAGE = 2


def register(subparsers: Any) -> None:
    """Add the ``sweep`` subcommand."""
    p = subparsers.add_parser(
        "sweep",
        help="privacy-utility grid over ε, privacy/SecAgg mode, dropout, cohort and seeds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", default="synthetic", help="comma-separated datasets (synthetic)")
    p.add_argument("--epsilon", default="1,8,inf", help="comma-separated ε; inf = no DP")
    p.add_argument("--privacy", default="distributed", help="comma-separated: distributed,central")
    p.add_argument("--secagg", default="plus", help="comma-separated: plus,full,off")
    p.add_argument("--dropout", default="0.1", help="comma-separated dropout rates")
    p.add_argument("--cohort", default="all", help="comma-separated cohort sizes; all = everyone")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument(
        "--users",
        default="default",
        help="comma-separated synthetic population sizes (scaling study); default = train's",
    )
    p.add_argument("--workers", type=int, default=2, help="concurrent training processes (2)")
    p.add_argument(
        "--train-args",
        default="",
        help="extra arguments passed to every privagg train run, e.g. '--rounds 3 --users 500'",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output folder: results.csv, PNGs, report.md (default: a fresh runs/sweep-<time>)",
    )
    p.add_argument("--runs", default=None, help="per-cell run folders (default OUT/runs)")
    p.add_argument(
        "--audit-canaries",
        type=int,
        default=2000,
        help="canaries of the one-run empirical audit of each DP configuration (0 = skip)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: write the outputs from the cells finished so far",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError as exc:
        raise SweepError(f"--{what}: {exc}") from None
    if any(math.isnan(v) for v in values):
        raise SweepError(f"--{what} contains nan")
    return values


def _ints(text: str, what: str, allow_all: bool = False) -> tuple[int | None, ...]:
    out: list[int | None] = []
    for t in (t.strip() for t in text.split(",") if t.strip()):
        if allow_all and t == "all":
            out.append(None)
            continue
        try:
            out.append(int(t))
        except ValueError:
            raise SweepError(f"--{what}: not an integer: {t!r}") from None
    return tuple(out)


def _words(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def grid_from_args(args: argparse.Namespace) -> Grid:
    """The grid described by the command-line lists (validated by :class:`Grid`)."""
    seeds = tuple(s for s in _ints(args.seeds, "seeds") if s is not None)
    return Grid(
        datasets=_words(args.data),
        epsilons=_floats(args.epsilon, "epsilon"),
        privacy=_words(args.privacy),
        secagg=_words(args.secagg),
        dropouts=_floats(args.dropout, "dropout"),
        cohorts=_ints(args.cohort, "cohort", allow_all=True),
        seeds=seeds,
        train_args=tuple(shlex.split(args.train_args)),
        users=(None,) if args.users == "default" else _ints(args.users, "users"),
    )


def audit_section(
    rows: list[dict[str, Any]], runs_dir: str, canaries: int, out_dir: str
) -> list[str]:
    """A one-run empirical audit per DP configuration and ε (first seed), as markdown lines.

    Canary clients go through the run's own noise multiplier and number of releases on the
    SecAgg + distributed discrete Gaussian path; the lower bound is set beside the run's
    claimed ε and the ideal bound for that many guesses. The ROC of the audit with the
    largest claimed ε is drawn against its predicted trade-off curve in ``audit_roc.png``.
    """
    from analysis.audit_empirical import audit_distributed_dp
    from analysis.commands.audit_empirical import plot_roc, run_noise_parameters

    guesses = max(1, min(100, canaries // 20))
    lines = [
        "## Empirical one-run audits (Steinke, Nasr, Jagielski 2023)",
        "",
        f"{canaries} canary clients (each included with probability ½) pass through each "
        "configuration's own noise multiplier and releases on the SecAgg + distributed "
        f"discrete Gaussian path; the attack guesses the top {guesses} inner products with "
        "the canary directions. 95 % lower bounds; regenerate one with `privagg "
        "audit --empirical --from-run RUN`.",
        "",
        "| run | z | releases | claimed ε | audited ε ≥ | ideal bound | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    seen: set[tuple[str, str, str, float]] = set()
    best: DistributedAudit | None = None
    for r in sorted(rows, key=lambda r: int(r["seed"])):
        if r["privacy"] == "none":
            continue
        key = (str(r["dataset"]), str(r["privacy"]), str(r["secagg"]), float(r["epsilon_target"]))
        if key in seen:
            continue
        seen.add(key)
        z, rounds, claimed, delta = run_noise_parameters(os.path.join(runs_dir, str(r["cell"])))
        res = audit_distributed_dp(
            canaries=canaries,
            noise_multiplier=z,
            rounds=rounds,
            delta=delta,
            k_plus=guesses,
            epsilon_claimed=claimed,
            honest_clients=20,
            seed=int(r["seed"]),
        )
        if best is None or (res.audit.epsilon_claimed or 0) > (best.audit.epsilon_claimed or 0):
            best = res
        res_audit = res.audit
        verdict = "REJECTED" if res_audit.rejects_claim else "consistent"
        lines.append(
            f"| {r['cell']} | {z:.3g} | {rounds} | {claimed:.3f} | {res_audit.epsilon_lower:.3f} "
            f"| {res_audit.epsilon_ideal:.3f} | {verdict} |"
        )
    if best is not None:
        mu = math.sqrt(best.rounds) / best.noise_multiplier
        plot_roc(os.path.join(out_dir, "audit_roc.png"), best.scores, best.included, best.audit, mu)
        lines += [
            "",
            "![audit ROC vs the claimed trade-off curve](audit_roc.png)",
            "",
            "The attack's ROC (canary inner products) of the audit with the largest claimed ε, "
            "below the most any attack may reach under the claimed (ε, δ) (dashed) and the "
            "accountant's Gaussian trade-off curve for the run's noise (dash-dotted).",
        ]
    return [*lines, ""]


MI_SEEDS = tuple(range(10))


def membership_section(rows: list[dict[str, Any]], datasets: tuple[str, ...]) -> list[str]:
    """Membership inference on the real users of each dataset given as a path, as markdown.

    For every DP configuration and ε whose model releases the capped popularity, the
    release is simulated with that run's own noise multiplier, cap and δ (from its report
    card) on a random half of the users (the members); the other half are held-out
    non-members. Both attacks of :func:`analysis.attacks.membership_study`, over
    :data:`MI_SEEDS`, with the AUC's 95 % interval and where the goal of issue 7 stands.
    """
    from analysis.attacks import (
        MI_ATTACKS,
        MI_GOAL_AUC,
        capped_histories,
        dp_max_auc,
        membership_study,
    )
    from recsys.data import load_ratings

    lines: list[str] = []
    for path in datasets:
        if path == "synthetic":
            continue
        name = os.path.basename(os.path.normpath(path))
        configs: dict[tuple[str, str, float], dict[str, Any]] = {}
        for r in sorted(rows, key=lambda r: int(r["seed"])):
            card = r.get("report_card") or {}
            if r["dataset"] != name or not card.get("popularity_cap"):
                continue
            configs.setdefault(
                (str(r["privacy"]), str(r["secagg"]), float(r["epsilon_target"])), card
            )
        if not configs:
            continue
        ratings = load_ratings(path)
        histories: dict[int, Any] = {}
        table: list[str] = []
        members = non_members = 0
        for (privacy, secagg, eps), card in sorted(configs.items(), key=lambda kv: kv[0][2]):
            cap = int(card["popularity_cap"])
            if cap not in histories:
                histories[cap] = capped_histories(ratings, cap)
            z = float(card.get("popularity_noise_multiplier") or 0.0)
            delta = float(card.get("delta") or 1e-4)
            bound = dp_max_auc(eps, delta)
            for attack in MI_ATTACKS:
                st = membership_study(
                    histories[cap],
                    eps,
                    seeds=MI_SEEDS,
                    delta=delta,
                    attack=attack,
                    noise_multiplier=z if math.isfinite(eps) else None,
                )
                members, non_members = st.members, st.non_members
                eps_text = "∞" if math.isinf(eps) else f"{eps:g}"
                table.append(
                    f"| {privacy} | {secagg} | {eps_text} | {st.noise_multiplier:.3g} | {cap} | "
                    f"{attack} | {st.auc:.3f} [{st.ci[0]:.3f}, {st.ci[1]:.3f}] | "
                    f"{min(st.seed_aucs):.3f}–{max(st.seed_aucs):.3f} | {bound:.3f} | "
                    f"{st.goal} |"
                )
        lines += [
            f"## Membership inference on the users of {name}",
            "",
            f"Who trained the model? For each configuration, the released capped popularity "
            f"(each user's `cap` most recent training items, the run's own noise multiplier z "
            f"and δ) is recomputed over a random half of the {members + non_members} users "
            f"(the {members} members); the other {non_members} are held-out non-members. "
            f"{len(MI_SEEDS)} seeds draw the split and the noise. Two attacks score each user: "
            "`count` (mean released count of the user's items) and `calibrated` (the "
            "per-item Gaussian likelihood-ratio statistic: released minus expected count over "
            "expected count + noise variance, summed over the user's items, with the expected "
            "count taken from all other users: an attacker who knows the population's item "
            "popularity, which DP must withstand). AUC is the mean over seeds; the interval is "
            "mean ± 1.96 × the per-split DeLong standard error (not divided by √seeds: the "
            "splits reuse the same users). Goal (issue 7): AUC ≤ "
            f"{MI_GOAL_AUC} at ε = 8; `met` = the whole interval is below it, `missed` = "
            "the whole interval is above it, `undecided` = it lies inside. Regenerate the "
            f"numbers alone with `privagg attack --data {path} --epsilon E` (it uses the "
            "accountant's single-release z for ε rather than a run's own plan).",
            "",
            "| privacy | SecAgg | ε | z | cap | attack | AUC mean [95 % CI] | seeds min–max | "
            f"max AUC under (ε, δ) | goal ≤ {MI_GOAL_AUC} |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *table,
            "",
            "Under (ε, δ)-DP no attack's ROC may exceed TPR = min(e^ε·FPR + δ, "
            '1 − e^−ε·(1 − δ − FPR)); the column "max AUC under (ε, δ)" is the area under '
            "that curve. Every measured AUC must stay below it (a check of the accounting), "
            "and at ε = 8 it is close to 1: an AUC above 0.55 there does not contradict the "
            "accounting. It shows that user-level ε = 8 for a few hundred members does not by "
            "itself hide membership from an attacker who knows item popularity; only the "
            "naive `count` attack stays near chance, and it does so even without DP.",
            "",
        ]
    return lines


def run(args: argparse.Namespace) -> int:
    """Run (or resume) the grid, then write results.csv, the plots and report.md."""
    try:
        return _run(args)
    except AnalysisError as exc:
        print(f"privagg sweep: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    grid = grid_from_args(args)
    for ds in grid.datasets:
        if ds != "synthetic" and not os.path.exists(ds):
            raise SweepError(f"--data {ds}: no such file or folder")
    if args.out is None:
        if args.report_only:
            raise SweepError("--report-only needs --out: the folder of the sweep to report")
        args.out = fresh_out("sweep")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise SweepError(f"--out {args.out} exists and is not a folder")
    cells = grid.cells()
    out = os.path.abspath(args.out)
    runs = os.path.abspath(args.runs) if args.runs else os.path.join(out, "runs")
    os.makedirs(out, exist_ok=True)
    if args.report_only:
        cells = [c for c in cells if cell_finished(c, runs)]
    bar = tqdm(
        total=len(cells), desc="privagg sweep", unit="cell", disable=args.quiet, file=sys.stderr
    )

    def done(o: CellOutcome) -> None:
        state = "resumed" if o.resumed else ("FAILED" if o.error else "done")
        bar.set_postfix_str(f"{state}: {o.cell.cell_id}"[:70])
        bar.update(1)

    try:
        outcomes = run_grid(cells, runs, workers=args.workers, on_done=done)
    finally:
        bar.close()
    rows = [o.row for o in outcomes if o.row is not None]
    failures = [f"{o.cell.cell_id}: {o.error}" for o in outcomes if o.error]
    # the grid's own command: --report-only writes the same outputs without training
    argv = [a for a in sys.argv[2:] if a != "--report-only"]
    command = "privagg sweep " + " ".join(shlex.quote(a) for a in argv)
    if rows:
        write_results(os.path.join(out, "results.csv"), rows)
        plot_tradeoff(rows, os.path.join(out, "tradeoff.png"))
        plot_cost(rows, os.path.join(out, "cost.png"))
        audits = audit_section(rows, runs, args.audit_canaries, out) if args.audit_canaries else []
        audits += membership_section(rows, grid.datasets)
        write_report(
            rows,
            os.path.join(out, "report.md"),
            command=command,
            failures=failures,
            extra_sections=audits,
        )
    resumed = sum(o.resumed for o in outcomes)
    wrote = f"; wrote {out}/results.csv, tradeoff.png, cost.png, report.md" if rows else ""
    print(
        f"{len(rows)} of {len(cells)} cells finished ({resumed} resumed, "
        f"{len(failures)} failed){wrote}"
    )
    for f in failures:
        print(f"  FAILED {f}", file=sys.stderr)
    return EXIT_FAILED_CELLS if failures else EXIT_OK
