"""``privagg audit --empirical`` and ``privagg attack``: empirical privacy audits and attacks.

``audit --empirical`` (alias: ``audit-empirical``) runs a one-run audit (Steinke, Nasr,
Jagielski 2023): m canaries, each included with probability ½, scored by the best attack
on what the server sees; it prints the 95 % lower bound on ε beside the accountant's
claimed ε and the ideal bound for that many guesses, and writes ``audit.json`` and
``roc.png`` (the attack's ROC against the trade-off curve the claimed (ε, δ) allows).
``--mechanism gaussian`` is the self-check on a plain Gaussian mechanism (``--noise-scale
0.1`` or ``--uncharged-rounds`` break it on purpose); ``--mechanism distributed`` audits
privagg's SecAgg + distributed-noise path: with ``--from-run DIR`` the mechanism the run
released, read from its ledger (distributed discrete Gaussian or Skellam FCF rounds, else
the Skellam count release), or a refusal with the reason; or the discrete Gaussian with a
noise multiplier and rounds given explicitly. Exit code 1 when the
audit rejects the claim.

``attack`` runs the attack suite (rated-set inference against sparse / plaintext-FCF /
masked uploads, user membership inference and round differencing at each ε) and prints
each AUC (0.5 = chance).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import sys
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from analysis.attacks import (
    MI_ATTACKS,
    MI_GOAL_AUC,
    MembershipStudy,
    attack_suite,
    capped_histories,
    membership_study,
)
from analysis.audit_empirical import (
    OneRunAudit,
    audit_distributed_dp,
    audit_gaussian_mechanism,
    audit_skellam_counts,
    empirical_roc,
    gaussian_canary_scores,
    gaussian_sigma_for_epsilon,
    predicted_tpr,
)
from analysis.errors import AuditInputError

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
DEFAULT_DELTA = 1e-5


def add_empirical_arguments(parser: Any, *, with_delta: bool = True) -> None:
    """The options of the empirical audit, on ``parser`` (a parser or an argument group).

    ``privagg audit`` adds them to its own parser with ``with_delta=False``: its ``--delta``
    serves both audits (an unset δ means :data:`DEFAULT_DELTA` here).
    """
    parser.add_argument("--mechanism", choices=("gaussian", "distributed"), default="distributed")
    parser.add_argument(
        "--epsilon", type=float, default=4.0, help="claimed ε (gaussian self-check)"
    )
    if with_delta:
        parser.add_argument("--delta", type=float, default=DEFAULT_DELTA, help="δ (1e-5)")
    parser.add_argument(
        "--noise-scale",
        type=float,
        default=1.0,
        help="multiply the noise by this (0.1 = a broken pipeline)",
    )
    parser.add_argument(
        "--uncharged-rounds",
        type=int,
        default=1,
        help="gaussian: releases actually made while only one is charged (1)",
    )
    parser.add_argument("--from-run", default=None, help="a privagg train output folder")
    parser.add_argument("--noise-multiplier", type=float, default=None, help="distributed: z")
    parser.add_argument("--rounds", type=int, default=None, help="distributed: releases")
    parser.add_argument("--canaries", type=int, default=10_000, help="m canaries (10000)")
    parser.add_argument("--guesses", type=int, default=100, help="k₊: guesses on the top scores")
    parser.add_argument("--honest-clients", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for audit.json and roc.png")


ATTACK_DESCRIPTION = """privagg attack: the attack suite, from what an honest-but-curious server
sees.

The first block runs on SYNTHETIC, seeded simulations (no dataset needed): rated-set
inference against sparse, plaintext-FCF and SecAgg-masked uploads (20 simulated clients,
200 items), user membership inference against a released item-popularity model (200
simulated members vs 200 fresh users, 500 items) and round differencing (two cohorts of
50 that differ by one user, 300 items), the last two at each --epsilon. --data FILE adds
membership inference on the real users of that ratings file (half members, half held-out
non-members), at each ε and over --seeds. Each line is a ROC AUC (0.5 = chance).
"""


def register(subparsers: Any) -> None:
    """Add the ``audit-empirical`` (alias of ``audit --empirical``) and ``attack`` commands."""
    p = subparsers.add_parser(
        "audit-empirical",
        help="alias of 'privagg audit --empirical' (one-run audit: canaries → lower bound on ε)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_empirical_arguments(p)
    p.set_defaults(func=run_audit)

    a = subparsers.add_parser(
        "attack",
        help="attack suite: rated-set inference, membership inference, round differencing",
        description=ATTACK_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("--epsilon", default="1,8,inf", help="comma-separated ε for MI/differencing")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument(
        "--data",
        default=None,
        help="a ratings file/folder (e.g. MovieLens 100K): also run membership inference on "
        "its real users (half members, half held-out non-members) at each ε",
    )
    a.add_argument(
        "--seeds", default="0,1,2,3,4,5,6,7,8,9", help="--data: member splits / noise draws"
    )
    a.add_argument("--cap", type=int, default=20, help="--data: items per user released (20)")
    a.add_argument("--delta", type=float, default=1e-4, help="--data: δ of the release (1e-4)")
    a.add_argument("--json", action="store_true", help="print JSON")
    a.set_defaults(func=run_attack)


def run_noise_parameters(path: str) -> tuple[float, int, float, float]:
    """(z, releases, claimed ε, δ) of a privagg train run, from its summary.json (the FCF
    rounds' noise, else the popularity release's). :func:`run_release` also says which
    mechanism the run released; the canary audit uses that."""
    try:
        with open(os.path.join(path, "summary.json"), encoding="utf-8") as fh:
            card = json.load(fh)["report_card"]
    except (OSError, KeyError, ValueError) as exc:
        raise AuditInputError(f"--from-run {path}: not a privagg train output ({exc})") from None
    if card.get("privacy") == "none":
        raise AuditInputError("--from-run: that run has no DP (ε = ∞); nothing to audit")
    z = float(card.get("round_noise_multiplier") or 0.0)
    rounds = int(card.get("fcf_rounds") or 0)
    if z <= 0 or rounds == 0:  # popularity-only model: one release with its own noise
        z, rounds = float(card["popularity_noise_multiplier"]), 1
    return z, rounds, float(card["epsilon"]), float(card["delta"])


@dataclass(frozen=True)
class RunRelease:
    """What a ``privagg train`` run released, as its ledger records it: the mechanism the
    audit must simulate, its noise, the number of releases, and the run's claimed (ε, δ)."""

    mechanism: str  # "discrete_gaussian" | "skellam" | "skellam_counts"
    noise_multiplier: float
    rounds: int
    claimed_epsilon: float
    delta: float
    total_variance: float = 0.0  # skellam_counts: guaranteed variance of each count


def run_release(path: str) -> RunRelease:
    """The audited release of a run: its FCF rounds if it has any, else its count release.

    Read from the run's ledger (``ledger.sqlite``, opened read-only), so the audit simulates
    the mechanism that was really released; a mechanism the audit cannot simulate is
    refused with the reason (:class:`AuditInputError`).
    """
    from dp.charging import leaf_events
    from dp.errors import DPError
    from dp.events import (
        DistributedDiscreteGaussianEvent,
        DistributedSkellamCountsEvent,
        DistributedSkellamEvent,
        NoOpEvent,
    )
    from dp.ledger import connect_readonly, read_entries

    try:
        with open(os.path.join(path, "summary.json"), encoding="utf-8") as fh:
            card = json.load(fh)["report_card"]
    except (OSError, KeyError, ValueError) as exc:
        raise AuditInputError(f"--from-run {path}: not a privagg train output ({exc})") from None
    if card.get("privacy") == "none":
        raise AuditInputError("--from-run: that run has no DP (ε = ∞); nothing to audit")
    ledger = os.path.join(path, "ledger.sqlite")
    try:
        conn = connect_readonly(ledger)
        try:
            entries = read_entries(conn)
        finally:
            conn.close()
    except (DPError, sqlite3.DatabaseError) as exc:
        raise AuditInputError(
            f"--from-run {path}: cannot read the run's ledger to tell which mechanism it "
            f"released ({exc})"
        ) from None
    rounds: dict[type, list[Any]] = {}
    for e in entries:
        if e.status != "released":
            continue
        leaves = [leaf for leaf in leaf_events(e.charged) if not isinstance(leaf, NoOpEvent)]
        kinds = {type(leaf) for leaf in leaves}
        if len(kinds) != 1:
            raise AuditInputError(
                f"--from-run: round {e.round_index} released {sorted(k.__name__ for k in kinds)}"
                "; the canary audit simulates one distributed mechanism per release"
            )
        rounds.setdefault(kinds.pop(), []).extend(leaves)
    claimed, delta = float(card["epsilon"]), float(card["delta"])
    model = {
        DistributedDiscreteGaussianEvent: "discrete_gaussian",
        DistributedSkellamEvent: "skellam",
    }
    fcf = [k for k in rounds if k in model]
    if fcf and float(card.get("round_noise_multiplier") or 0.0) > 0:
        return RunRelease(
            model[fcf[0]],
            float(card["round_noise_multiplier"]),
            len(rounds[fcf[0]]),
            claimed,
            delta,
        )
    counts = rounds.get(DistributedSkellamCountsEvent)
    if counts:
        variance = min(leaf.total_variance for leaf in counts)
        return RunRelease(
            "skellam_counts",
            float(card.get("popularity_noise_multiplier") or 0.0),
            len(counts),
            claimed,
            delta,
            total_variance=variance,
        )
    released = sorted({k.__name__ for k in rounds}) or ["nothing"]
    raise AuditInputError(
        f"--from-run: the run released {', '.join(released)}; the canary audit simulates the "
        "distributed discrete Gaussian, distributed Skellam and Skellam count releases only"
    )


def plot_roc(
    path: str, scores: Any, included: Any, audit: OneRunAudit, mu: float | None = None
) -> float:
    """Draw the attack's ROC against the trade-off curves of the claimed and audited ε."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr, area = empirical_roc(scores, included)
    grid = np.logspace(-5, 0, 400)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot(fpr, tpr, label=f"attack ROC (AUC {area:.3f})")
    if audit.epsilon_claimed is not None:
        ax.plot(
            grid,
            predicted_tpr(grid, audit.epsilon_claimed, audit.delta),
            "k--",
            label=f"max TPR allowed by claimed ε={audit.epsilon_claimed:.3g}, δ={audit.delta:g}",
        )
    if mu is not None:
        from scipy import stats

        ax.plot(
            grid,
            stats.norm.cdf(stats.norm.ppf(grid) + mu),
            "g-.",
            label=f"accountant's Gaussian trade-off curve (μ = {mu:.3g})",
        )
    ax.plot(
        grid,
        predicted_tpr(grid, audit.epsilon_lower, audit.delta),
        ":",
        label=f"audited lower bound ε ≥ {audit.epsilon_lower:.3g}",
    )
    ax.set_xscale("log")
    ax.set_xlim(1.0 / max(2, audit.canaries), 1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return area


def run_audit(args: argparse.Namespace) -> int:
    """Run the audit, print the verdict, write audit.json + roc.png when --out is given.

    Bad input raises :class:`AuditInputError` (the CLI prints it and exits with code 2).
    """
    if args.canaries < 2 or not 0 < args.guesses <= args.canaries:
        raise AuditInputError("need --canaries >= 2 and 0 < --guesses <= --canaries")
    if not args.noise_scale > 0 or args.uncharged_rounds < 1:
        raise AuditInputError("--noise-scale must be > 0 and --uncharged-rounds >= 1")
    scores: Any
    included: Any
    if args.mechanism == "gaussian":
        sigma = gaussian_sigma_for_epsilon(args.epsilon, args.delta)
        what = f"Gaussian mechanism, σ = {sigma:.4g} × {args.noise_scale:g}"
        mu: float | None = 1.0 / sigma  # what the accountant assumes (one charged release)
        audit = audit_gaussian_mechanism(
            canaries=args.canaries,
            sigma=sigma * args.noise_scale,
            epsilon_claimed=args.epsilon,
            delta=args.delta,
            k_plus=args.guesses,
            rounds=args.uncharged_rounds,
            seed=args.seed,
        )
        scores, included = gaussian_canary_scores(
            args.canaries, sigma * args.noise_scale, args.uncharged_rounds, args.seed
        )
    else:
        claimed: float | None = None
        delta = args.delta
        noise = "discrete_gaussian"
        counts_variance = 0.0
        if args.from_run:
            release = run_release(args.from_run)
            z, rounds, claimed, delta = (
                release.noise_multiplier,
                release.rounds,
                release.claimed_epsilon,
                release.delta,
            )
            noise, counts_variance = release.mechanism, release.total_variance
        else:
            if args.noise_multiplier is None or args.rounds is None:
                raise AuditInputError("give --from-run or both --noise-multiplier and --rounds")
            z, rounds = args.noise_multiplier, args.rounds
        if noise == "skellam_counts":
            variance = counts_variance * args.noise_scale**2
            what = (
                f"Skellam count release under SecAgg, noise variance {counts_variance:.4g} × "
                f"{args.noise_scale:g}², {rounds} release(s)"
            )
            mu = math.sqrt(rounds / counts_variance)
            assert claimed is not None  # a run always states its ε
            res = audit_skellam_counts(
                canaries=args.canaries,
                total_variance=variance,
                rounds=rounds,
                delta=delta,
                k_plus=args.guesses,
                epsilon_claimed=claimed,
                honest_clients=args.honest_clients,
                seed=args.seed,
            )
        else:
            what = (
                f"distributed DP under SecAgg ({noise.replace('_', ' ')}), z = {z:.4g} × "
                f"{args.noise_scale:g}, {rounds} rounds"
            )
            mu = math.sqrt(rounds) / z
            if claimed is None:
                # the claim is what the accountant says for the configured (unbroken) noise
                import dp

                claimed = dp.epsilon(
                    noise_multiplier=z, sampling_rate=1.0, steps=rounds, delta=delta
                )
            res = audit_distributed_dp(
                canaries=args.canaries,
                noise_multiplier=z * args.noise_scale,
                rounds=rounds,
                delta=delta,
                k_plus=args.guesses,
                epsilon_claimed=claimed,
                honest_clients=args.honest_clients,
                seed=args.seed,
                noise="skellam" if noise == "skellam" else "discrete_gaussian",
            )
        audit, scores, included = res.audit, res.scores, res.included
    print(f"empirical one-run audit: {what}")
    print(
        f"  canaries {audit.canaries}, guesses {audit.guesses}, correct {audit.correct}; "
        f"δ = {audit.delta:g}, confidence {100 * (1 - audit.significance):.0f} %"
    )
    print(
        f"  ε lower bound {audit.epsilon_lower:.3f}   ideal bound for {audit.guesses} guesses "
        f"{audit.epsilon_ideal:.3f}   accountant's claimed ε {audit.epsilon_claimed:.3f}"
    )
    print("  result: " + ("CLAIM REJECTED" if audit.rejects_claim else "consistent with claim"))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        area = plot_roc(os.path.join(args.out, "roc.png"), scores, included, audit, mu)
        with open(os.path.join(args.out, "audit.json"), "w", encoding="utf-8") as fh:
            json.dump({**audit.summary(), "what": what, "attack_auc": area}, fh, indent=1)
        print(f"  wrote {args.out}/audit.json, roc.png")
    return EXIT_REJECTED if audit.rejects_claim else EXIT_OK


def _json_ready(d: dict[str, Any]) -> dict[str, Any]:
    return {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in d.items()}


def data_membership_studies(
    path: str, epsilons: list[float], seeds: list[int], cap: int, delta: float
) -> list[MembershipStudy]:
    """Membership inference on the real users of a ratings file/folder, both attacks."""
    from recsys.data import load_ratings

    histories = capped_histories(load_ratings(path), cap)
    return [
        membership_study(histories, e, seeds=seeds, delta=delta, attack=a)
        for e in epsilons
        for a in MI_ATTACKS
    ]


def run_attack(args: argparse.Namespace) -> int:
    """Run the attack suite and print one line per attack (and per study with --data)."""
    try:
        eps = [float(t) for t in args.epsilon.split(",") if t.strip()]
        if not eps or any(not e > 0 for e in eps):
            raise AuditInputError("--epsilon must list positive numbers (inf allowed)")
        seeds = [int(t) for t in args.seeds.split(",") if t.strip()]
    except ValueError as exc:
        print(f"privagg attack: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.data is not None and (not seeds or args.cap < 1 or not 0 < args.delta < 1):
        raise AuditInputError("--data needs --seeds, --cap >= 1 and 0 < --delta < 1")
    results = attack_suite(eps, seed=args.seed)
    studies = (
        data_membership_studies(args.data, eps, seeds, args.cap, args.delta)
        if args.data is not None
        else []
    )
    if args.json:
        out: list[dict[str, Any]] = [_json_ready(r.summary()) for r in results]
        out += [
            _json_ready({"attack": "membership inference on data", **asdict(s), "goal": s.goal})
            for s in studies
        ]
        print(json.dumps(out, indent=1))
        return EXIT_OK
    print(f"attack suite on SYNTHETIC simulated clients and users (seed {args.seed})")
    for r in results:
        extra = f" at ε = {r.detail['epsilon']:g}" if "epsilon" in r.detail else ""
        ci = f" [95 % CI {r.ci[0]:.3f}, {r.ci[1]:.3f}]" if r.ci is not None else ""
        print(f"  {r.name}{extra}: AUC {r.auc:.3f}{ci}  (0.5 = chance)")
    if studies:
        s0 = studies[0]
        print(
            f"membership inference on REAL data {args.data}: {s0.members} members vs "
            f"{s0.non_members} "
            f"held-out non-members, {len(seeds)} seeds, cap {args.cap}, δ = {args.delta:g}"
        )
    for s in studies:
        print(
            f"  ε = {s.epsilon:g} ({s.attack} attack, z = {s.noise_multiplier:.3g}): AUC "
            f"{s.auc:.3f} [95 % CI {s.ci[0]:.3f}, {s.ci[1]:.3f}]; goal ≤ {MI_GOAL_AUC}: "
            f"{s.goal}"
        )
    return EXIT_OK
