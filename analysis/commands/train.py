"""``privagg train``: federated recommender training with secure aggregation and DP.

Trains on the synthetic default (always labelled SYNTHETIC) or on a ratings file/folder
(MovieLens 100K/1M/10M/20M/25M/latest or a generic CSV), evaluates with full-ranking
HR@10/NDCG@10 on the temporal leave-last-out split (a file without timestamps is refused),
and writes into --out (default: a fresh runs/train-<time>): metrics.csv (per release: ε
so far, HR@10, NDCG@10, seconds, bytes), ledger.sqlite (every release's privacy event and
how it was made, signed with the key of --signing-key, by default one kept outside --out in
the user's configuration folder; the last lines print its fingerprint and the line to
publish for privagg audit),
summary.json (configuration, privacy report card, final metrics with bootstrap intervals,
baselines) and training.png (metric and ε per release beside the baselines). Progress
shows ε spent and HR@10 after every release.

Bad arguments give one line and exit code 2 before anything is written, and so does an
option that would be ignored (e.g. --epsilon with --privacy none). Files are written to a
temporary folder and moved into place when training ends. Ctrl-C or SIGTERM stops after
the release in progress (a second one stops at once): the ledger of every release made,
their metrics and a summary marked "interrupted" are written, the temporary folder is
removed, and the exit code is 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from analysis.outputs import fresh_out
from dp.ledger import ADJACENCIES
from dp.ledger.keys import DEFAULT_KEY_NAME, LedgerKey, resolve_signing_key
from dp.rng import NonSecureRandomnessWarning
from recsys import baselines
from recsys.context import (
    OnDeviceContext,
    item_release_times,
    load_user_context,
    synthetic_user_context,
)
from recsys.data import Ratings, load_ratings, synthetic_ratings
from recsys.devices import DEVICE_PROFILES, DeviceConfig
from recsys.errors import ConfigError, DataNotFoundError
from recsys.features import item_features
from recsys.federated import FCFConfig, FeatureModelConfig
from recsys.metrics import RankingReport, evaluate_ranking, paired_test
from recsys.recommender import (
    MODEL_KINDS,
    RESIDUAL_MIN_USERS,
    ModelConfig,
    ModelKind,
    choose_model_kind,
    choose_residual_schedule,
)
from recsys.sampling import SAMPLERS, StratifiedConfig
from recsys.silo import SiloConfig
from recsys.split import Split, leave_last_out
from recsys.trainer import (
    PRIVACY_MODES,
    SECAGG_MODES,
    RoundRecord,
    TrainConfig,
    Trainer,
    open_ledger,
)

SYNTHETIC_USERS = 3000
SYNTHETIC_ITEMS = 1000


def register(subparsers: Any) -> None:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="train the federated recommender (SecAgg + distributed DP) and report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data", default="synthetic", help="'synthetic' (default) or a ratings file/folder"
    )
    p.add_argument("--privacy", choices=PRIVACY_MODES, default="distributed")
    p.add_argument("--epsilon", type=float, default=None, help="target ε (8; not with none)")
    p.add_argument(
        "--delta",
        type=float,
        default=None,
        help="target δ (1e-4; not with none); a warning when δ ≥ 1/users",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="FCF rounds after the popularity release (15 without DP, 5 with DP); given "
        "explicitly, always run: with --model auto it adds the FCF residual, with a "
        "one-release --model it is refused",
    )
    p.add_argument(
        "--cohort",
        type=int,
        default=None,
        help="expected devices per round, Poisson-sampled (default: everyone)",
    )
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default="uniform",
        help="cohort sampling: uniform Poisson (default) or stratified Poisson over private "
        "on-device clusters (one DP cluster-size release; needs --cohort)",
    )
    p.add_argument(
        "--clusters", type=int, default=None, help="clusters of the stratified sampler (8)"
    )
    p.add_argument(
        "--allocation",
        type=float,
        default=None,
        help="stratified: cluster s gets a cohort share proportional to size^a; 1 = uniform, "
        "0 = equal per cluster (0.5)",
    )
    p.add_argument(
        "--max-boost",
        type=float,
        default=None,
        help="stratified: cap of every cluster's rate, in multiples of cohort/population; "
        "ε is accounted at this worst-case rate (2)",
    )
    p.add_argument(
        "--cluster-share",
        type=float,
        default=None,
        help="stratified: share of ε the cluster-size release would spend alone (0.05)",
    )
    p.add_argument("--secagg", choices=SECAGG_MODES, default="plus")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout rate per round (0.1)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed (data, dropouts)")
    p.add_argument("--out", default=None, help="output folder (default: a fresh runs/train-<time>)")
    p.add_argument(
        "--model",
        choices=("auto", *MODEL_KINDS),
        default="auto",
        help="auto (default): popfeat + FCF residual without DP or for >= "
        f"{RESIDUAL_MIN_USERS} users, popfeat alone under DP below that",
    )
    p.add_argument(
        "--popularity-share",
        type=float,
        default=0.5,
        help="share of ε the popularity release would spend alone (0.5)",
    )
    p.add_argument("--cap", type=int, default=20, help="items per user in the popularity release")
    p.add_argument(
        "--dim", type=int, default=None, help="FCF factor dimension (8 without DP, 4 with DP)"
    )
    p.add_argument(
        "--active-items",
        type=int,
        default=300,
        help="FCF residual trains on the N most popular items (300; 0 = all)",
    )
    p.add_argument(
        "--residual-weight",
        type=float,
        default=None,
        help="weight of the FCF residual in the scores (0.4 without DP, 0.2 with DP)",
    )
    p.add_argument("--optimizer", choices=("fedavg", "momentum", "adam"), default="adam")
    p.add_argument("--lr", type=float, default=0.03, help="server learning rate (0.03)")
    p.add_argument("--clip", type=float, default=1.0, help="FCF upload L2 clip norm (1.0)")
    p.add_argument(
        "--mechanism", choices=("discrete_gaussian", "skellam"), default="discrete_gaussian"
    )
    p.add_argument(
        "--bits",
        type=int,
        default=32,
        help="ring width of the distributed-DP encoding, 8-32 (32); the planner picks the "
        "granularity that fits the sum of the cohort or refuses with the reason",
    )
    p.add_argument(
        "--devices",
        choices=("off", *DEVICE_PROFILES),
        default="off",
        help="simulate heterogeneous devices (compute, bandwidth, availability windows); "
        "offline devices and those missing --deadline are SecAgg dropouts (replaces --dropout)",
    )
    p.add_argument(
        "--deadline", type=float, default=None, help="simulated round deadline, seconds (10)"
    )
    p.add_argument(
        "--availability",
        type=float,
        default=None,
        help="mean fraction of the day a simulated device is online (0.7)",
    )
    p.add_argument(
        "--context",
        choices=("none", "device"),
        default="none",
        help="private on-device context used only in on-device scoring, never uploaded: "
        "MovieLens 100K's u.user (age) and the request time against public release dates; "
        "synthetic data gets synthetic context",
    )
    p.add_argument("--eval-every", type=int, default=1, help="evaluate every N releases (1)")
    p.add_argument(
        "--holdout",
        choices=("test", "validation"),
        default="test",
        help="evaluate on the test item or the validation item (for tuning)",
    )
    p.add_argument("--users", type=int, default=None, help=f"synthetic users ({SYNTHETIC_USERS})")
    p.add_argument("--items", type=int, default=None, help=f"synthetic items ({SYNTHETIC_ITEMS})")
    p.add_argument(
        "--silo-users",
        type=int,
        default=0,
        help="a silo (one organization) holds these users' logs and trains with Opacus "
        "DP-SGD (record-level DP, its own ledger); its item factors warm-start FCF (0 = off)",
    )
    p.add_argument(
        "--silo-noise", type=float, default=None, help="silo DP-SGD noise multiplier (1)"
    )
    p.add_argument("--silo-epochs", type=int, default=None, help="silo DP-SGD epochs (2)")
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    p.add_argument(
        "--simulation-noise",
        action="store_true",
        help="seeded NON-SECURE noise generator (bit-identical reruns; testing)",
    )
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default=None,
        help="run the devices of each distributed-DP round on an executor: 'local' (this "
        "process, sharded) or 'ray' (Ray actors); default: the in-process simulation",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster to join with --executor ray (e.g. 'auto'); default: start one",
    )
    p.add_argument(
        "--adjacency",
        choices=ADJACENCIES,
        default="zero-out",
        help="neighbouring relation of the charged ε: zero-out (default; one user's history "
        "replaced by zero, the user's noise share kept: what distributed DP proves) or "
        "add-remove (noise included; only --privacy central or none)",
    )
    ledger_key = p.add_mutually_exclusive_group()
    ledger_key.add_argument(
        "--signing-key",
        metavar="FILE",
        default=None,
        help="Ed25519 PEM key that signs every ledger row and the head (default: "
        f"$XDG_CONFIG_HOME/privagg/{DEFAULT_KEY_NAME}, else ~/.config/privagg/, generated on "
        "first use; never inside --out)",
    )
    ledger_key.add_argument(
        "--unsigned",
        action="store_true",
        help="write an unsigned ledger (a strict audit refuses it)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


# Options that only mean something under another option: (dest, default), the condition,
# and the option that gives them a meaning. Given without it they would be ignored, which
# is an error (a silently ignored setting is a wrong answer the user never sees).
_CONDITIONAL_OPTIONS: tuple[
    tuple[tuple[tuple[str, float | int], ...], Callable[[argparse.Namespace], bool], str], ...
] = (
    (
        (("epsilon", 8.0), ("delta", 1e-4)),
        lambda a: a.privacy != "none",
        "--privacy distributed or central (--privacy none trains without DP: ε = ∞)",
    ),
    (
        (("clusters", 8), ("allocation", 0.5), ("max_boost", 2.0), ("cluster_share", 0.05)),
        lambda a: a.sampler == "stratified",
        "--sampler stratified",
    ),
    (
        (("deadline", 10.0), ("availability", 0.7)),
        lambda a: a.devices != "off",
        "--devices (the device simulator)",
    ),
    (
        (("users", SYNTHETIC_USERS), ("items", SYNTHETIC_ITEMS)),
        lambda a: a.data == "synthetic",
        "--data synthetic (a ratings file has its own users and items)",
    ),
    (
        (("silo_noise", 1.0), ("silo_epochs", 2)),
        lambda a: a.silo_users > 0,
        "--silo-users N",
    ),
)


def _fill_conditional_defaults(args: argparse.Namespace) -> None:
    """Refuse options that would be ignored; fill the unset ones with their defaults."""
    for options, applies, needs in _CONDITIONAL_OPTIONS:
        given = [dest for dest, _ in options if getattr(args, dest) is not None]
        if given and not applies(args):
            flags = ", ".join("--" + dest.replace("_", "-") for dest in given)
            verb = "applies" if len(given) == 1 else "apply"
            raise ConfigError(f"{flags} only {verb} with {needs}; it would be ignored")
        for dest, default in options:
            if getattr(args, dest) is None:
                setattr(args, dest, default)


def _apply_residual_schedule(args: argparse.Namespace) -> None:
    """Fill the FCF settings left unset with the schedule of the privacy mode."""
    schedule = choose_residual_schedule(args.privacy)
    if not hasattr(args, "rounds_given"):
        args.rounds_given = args.rounds is not None
    if args.rounds is None:
        args.rounds = schedule.rounds
    if args.dim is None:
        args.dim = schedule.dim
    if args.residual_weight is None:
        args.residual_weight = schedule.residual_weight


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _check_args(args: argparse.Namespace) -> None:
    if args.privacy != "none":
        if not (math.isfinite(args.epsilon) and args.epsilon > 0):
            raise ConfigError(f"--epsilon must be positive and finite, got {args.epsilon}")
        if not (0 < args.delta < 1):
            raise ConfigError(f"--delta must lie in (0, 1), got {args.delta}")
    if args.silo_users < 0 or args.silo_users == 1:
        raise ConfigError("--silo-users must be 0 or at least 2")
    if args.silo_users and not all(_installed(m) for m in ("torch", "opacus")):
        raise ConfigError(
            "--silo-users needs the 'silo' extra (torch, opacus): "
            "pip install torch==2.13.0 'privagg[silo]'"
        )
    if args.rounds < 0:
        raise ConfigError("--rounds must be non-negative")
    if args.executor is not None and (args.privacy != "distributed" or args.secagg == "off"):
        raise ConfigError("--executor needs --privacy distributed and --secagg full or plus")
    if args.ray_address is not None and args.executor != "ray":
        raise ConfigError("--ray-address needs --executor ray")
    if not 0 <= args.dropout < 1:
        raise ConfigError(f"--dropout must lie in [0, 1), got {args.dropout}")
    if args.cohort is not None and args.cohort < 2:
        raise ConfigError("--cohort must be at least 2")
    if args.sampler == "stratified" and args.cohort is None:
        raise ConfigError("--sampler stratified needs --cohort")
    if args.data == "synthetic" and (args.users < 2 or args.items < 11):
        raise ConfigError("--users must be >= 2 and --items >= 11 for synthetic data")
    if not 8 <= args.bits <= 32:
        raise ConfigError(f"--bits must lie in [8, 32], got {args.bits}")
    if args.devices != "off" and not (args.deadline > 0 and math.isfinite(args.deadline)):
        raise ConfigError(f"--deadline must be positive, got {args.deadline}")
    if not 0 < args.availability <= 1:
        raise ConfigError(f"--availability must lie in (0, 1], got {args.availability}")
    if args.out is None:
        args.out = fresh_out("train")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ConfigError(f"--out {args.out} exists and is not a folder")


def _context(args: argparse.Namespace, ratings: Ratings, split: Split) -> OnDeviceContext | None:
    if args.context == "none":
        return None
    if ratings.synthetic:
        return OnDeviceContext(
            synthetic_user_context(ratings, split, seed=args.seed), item_release_times(ratings)
        )
    folder = os.path.dirname(ratings.source)
    return OnDeviceContext(
        load_user_context(folder, ratings, split), item_release_times(ratings, folder)
    )


def _load(args: argparse.Namespace) -> Ratings:
    if args.data == "synthetic":
        return synthetic_ratings(args.users, args.items, seed=args.seed)
    return load_ratings(args.data)


def _model_kind(args: argparse.Namespace, num_users: int) -> tuple[ModelKind, str]:
    """The model to train and why; an explicit ``--rounds`` is never silently ignored.

    ``auto`` picks the one-release popfeat model under DP below RESIDUAL_MIN_USERS users;
    an explicit ``--rounds R > 0`` then adds the FCF residual (R rounds, as asked). A
    one-release ``--model`` given with ``--rounds R > 0`` is refused: the rounds would
    not run.
    """
    asked = bool(getattr(args, "rounds_given", False)) and args.rounds > 0
    if args.model != "auto":
        if asked and args.model == "popfeat":
            raise ConfigError(
                f"--rounds {args.rounds} would be ignored: --model popfeat is one popularity "
                "release with no FCF rounds; drop --rounds or use --model popfeat+fcf"
            )
        return args.model, "chosen with --model"
    kind = choose_model_kind(args.privacy, num_users)
    if kind == "popfeat+fcf":
        why = "no DP" if args.privacy == "none" else f"{num_users} >= {RESIDUAL_MIN_USERS} users"
        return kind, f"auto: popfeat + FCF residual ({why})"
    if asked:
        return "popfeat+fcf", (
            f"auto with --rounds {args.rounds}: popfeat + FCF residual as asked (without "
            f"--rounds, auto trains one popularity release under DP below "
            f"{RESIDUAL_MIN_USERS} users, where the residual was measured to lower HR@10)"
        )
    return kind, (
        f"auto: one popularity release, no FCF rounds (under DP with {num_users} < "
        f"{RESIDUAL_MIN_USERS} users the residual was measured to lower HR@10; "
        "--rounds R adds it)"
    )


def _configs(args: argparse.Namespace, num_users: int) -> TrainConfig:
    fcf = FCFConfig(
        dim=args.dim,
        clip_norm=args.clip,
        optimizer=args.optimizer,
        learning_rate=args.lr,
        residual_weight=args.residual_weight,
        active_items=args.active_items if args.active_items > 0 and args.model != "fcf" else None,
    )
    kind, _ = _model_kind(args, num_users)
    model = ModelConfig(kind=kind, cap=args.cap, features=FeatureModelConfig(), fcf=fcf)
    return TrainConfig(
        privacy=args.privacy,
        epsilon=args.epsilon,
        delta=args.delta,
        rounds=args.rounds,
        cohort=args.cohort,
        sampler=args.sampler,
        stratified=StratifiedConfig(
            clusters=args.clusters,
            allocation=args.allocation,
            max_boost=args.max_boost,
            cluster_share=args.cluster_share,
            seed=args.seed,
        ),
        secagg=args.secagg,
        dropout=args.dropout,
        seed=args.seed,
        popularity_share=args.popularity_share,
        eval_every=args.eval_every,
        mechanism=args.mechanism,
        bits=args.bits,
        devices=None
        if args.devices == "off"
        else DeviceConfig(
            profile=args.devices, deadline=args.deadline, availability=args.availability
        ),
        simulation_noise=args.simulation_noise,
        executor=args.executor,
        ray_address=args.ray_address,
        adjacency=args.adjacency,
        model=model,
        silo_users=args.silo_users,
        silo=SiloConfig(
            dim=args.dim,
            epochs=args.silo_epochs,
            noise_multiplier=args.silo_noise,
            seed=args.seed,
        ),
    )


def _baselines(split: Split, config: TrainConfig, final: RankingReport) -> dict[str, Any]:
    out: dict[str, Any] = {}
    train = split.train
    pop = evaluate_ranking(baselines.popularity(train), split)
    out["popularity (non-private)"] = {"HR@10": pop.hr, "NDCG@10": pop.ndcg}
    if config.privacy != "none":
        # the research anchor (<= 50 random items per user) and the model's own capping rule
        anchors: tuple[tuple[int, Literal["recent", "random"]], ...] = (
            (50, "random"),
            (config.model.cap, "recent"),
        )
        for cap, mode in anchors:
            scores, _, _, z = baselines.private_popularity(
                train,
                cap=cap,
                epsilon=config.epsilon,
                delta=config.delta,
                mode=mode,
                rng=np.random.default_rng(config.seed),
            )
            dpp = evaluate_ranking(scores, split)
            diff, p = paired_test(final.per_user("hr"), dpp.per_user("hr"))
            out[f"DP capped popularity (ε={config.epsilon:g}, {cap} {mode})"] = {
                "HR@10": dpp.hr,
                "NDCG@10": dpp.ndcg,
                "noise_multiplier": z,
                "paired_test_vs_trained": {"HR@10_difference": diff, "p_value": p},
            }
    als = evaluate_ranking(
        baselines.als(train, factors=32, reg=0.1, alpha=1.0, iterations=15, seed=config.seed), split
    )
    out["central ALS (non-private)"] = {"HR@10": als.hr, "NDCG@10": als.ndcg}
    return out


_CSV_FIELDS = (
    "round",
    "task",
    "epsilon",
    "hr10",
    "ndcg10",
    "seconds",
    "bytes_up",
    "bytes_down",
    "sampled",
    "included",
    "dropped",
    "noise_multiplier",
    "local_seconds",
    "encode_seconds",
    "secagg_seconds",
    "decode_seconds",
    "sim_seconds",
    "offline",
    "late",
)


def _write_metrics(path: str, records: tuple[RoundRecord, ...]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(_CSV_FIELDS)
        for r in records:
            writer.writerow(
                [
                    r.round,
                    r.task,
                    f"{r.epsilon:.6g}",
                    "" if r.hr is None else f"{r.hr:.6f}",
                    "" if r.ndcg is None else f"{r.ndcg:.6f}",
                    f"{r.seconds:.4f}",
                    r.bytes_up,
                    r.bytes_down,
                    r.sampled,
                    r.included,
                    r.dropped,
                    f"{r.noise_multiplier:.6g}",
                    f"{r.local_seconds:.4f}",
                    f"{r.encode_seconds:.4f}",
                    f"{r.secagg_seconds:.4f}",
                    f"{r.decode_seconds:.4f}",
                    "" if r.sim_seconds is None else f"{r.sim_seconds:.4f}",
                    r.offline,
                    r.late,
                ]
            )


def _plot(
    path: str,
    records: tuple[RoundRecord, ...],
    title: str,
    baselines: dict[str, Any] | None = None,
) -> None:
    """``training.png``: HR@10/NDCG@10 and ε spent per release, baselines as dashed lines;
    a run with one evaluated release has no curve, so it gets bars beside the baselines."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluated = [r for r in records if r.hr is not None]
    fig, ax = plt.subplots(figsize=(7.5, 4.5 if len(evaluated) <= 1 else 5.5))
    if len(evaluated) <= 1:
        names = ["trained model", *(baselines or {})]
        first = evaluated[0].hr if evaluated else None
        values = [float("nan") if first is None else first]
        values += [float(v["HR@10"]) for v in (baselines or {}).values()]
        colors = ["tab:blue"] + ["tab:gray"] * (len(names) - 1)
        y = np.arange(len(names))
        ax.barh(y, values, color=colors)
        for k, v in enumerate(values):
            if math.isfinite(v):
                ax.text(v, k, f" {v:.3f}", va="center", fontsize=8)
        ax.set_yticks(y, [textwrap.fill(n, 28) for n in names], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("HR@10 (full ranking, temporal leave-last-out)")
        spent = records[-1].epsilon if records else float("nan")
        tasks = ", ".join(sorted({r.task for r in records})) or "none"
        ax.set_title(
            textwrap.fill(
                f"{title} | {len(records)} release(s) ({tasks}), ε spent {spent:.3g}", 80
            ),
            fontsize=9,
        )
    else:
        rounds = [r.round for r in evaluated]
        ax.plot(rounds, [r.hr for r in evaluated], "o-", label="HR@10 (trained)")
        ax.plot(rounds, [r.ndcg for r in evaluated], "s-", label="NDCG@10 (trained)")
        for k, (name, vals) in enumerate((baselines or {}).items()):
            ax.axhline(
                float(vals["HR@10"]), color=f"C{k + 3}", ls=":", lw=1.2, label=f"HR@10 {name}"
            )
        ax.set_xlabel("release (1 = popularity, then FCF rounds)")
        ax.set_ylabel("full-ranking metric")
        ax.set_xticks(rounds if len(rounds) <= 20 else ax.get_xticks())
        ax2 = ax.twinx()
        eps = [r.epsilon if math.isfinite(r.epsilon) else np.nan for r in records]
        ax2.plot([r.round for r in records], eps, "k--", label="ε spent")
        ax2.set_ylabel("ε spent (upper bound)")
        ax2.set_ylim(bottom=0)
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(
            lines[0] + lines2[0],
            lines[1] + lines2[1],
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            ncol=2,
            fontsize=7,
        )
        ax.set_title(textwrap.fill(title, 80), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "-inf" if value < 0 else "nan"
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value


def report_card_lines(card: dict[str, Any], extra: dict[str, Any]) -> list[str]:
    """The privacy report card and the results beside the baselines, as printable lines."""
    eps = card["epsilon"]
    lines = [
        "privacy report card",
        f"  data          {extra['data']}",
        f"  ε, δ          ε = {eps:.3f} (target {card['epsilon_target']}), δ = {card['delta']:g}",
        f"  accountant    {card['accountant']}",
        f"  adjacency     {card['adjacency']}",
        f"  mechanism     {card['mechanism']} (secure noise: {card['secure_noise']})",
        f"  secure agg.   {card['secagg']}; dropout rate {card['dropout_rate']:.3g}, "
        f"{card['dropped_total']} device-rounds dropped",
        f"  releases      {card['releases']} (popularity + {card['fcf_rounds']} FCF rounds)",
        f"  cohort        {card['cohort_expected']} of {card['population']} "
        f"(sampling rate {card['sampling_rate']:.3g})",
        f"  clip / noise  popularity cap {card['popularity_cap']} (z = "
        f"{card['popularity_noise_multiplier']:.3g}); FCF clip {card['clip_norm']} "
        f"(z = {card['round_noise_multiplier']:.3g})",
        "  tuning        hyper-parameters chosen on the validation item / synthetic data; "
        "search not charged to ε",
        "results (full ranking, temporal leave-last-out)",
        f"  trained model ({card['model']})  HR@10 {card['HR@10']:.4f}  NDCG@10 "
        f"{card['NDCG@10']:.4f}",
    ]
    silo = card.get("silo")
    if silo:
        lines.insert(
            10,
            f"  silo          {silo['users']} users' {silo['records']} records, Opacus DP-SGD: "
            f"RECORD-level ε = {silo['epsilon']:.3f} (Opacus RDP: "
            f"{silo['epsilon_opacus_rdp']:.3f}), δ = {silo['delta']:g}; separate ledger",
        )
    extra_lines: list[str] = []
    comm = card.get("communication")
    if comm:
        extra_lines.append(
            f"  bytes         {comm['bytes_up_per_client_round']:,.0f} up / "
            f"{comm['bytes_down_per_client_round']:,.0f} down per device per release; total "
            f"{comm['bytes_total']:,} ({comm['device_rounds']} device-releases"
            + (f", {card['encoding_bits']}-bit ring)" if card.get("encoding_bits") else ")"),
        )
    dev = card.get("devices")
    if dev:
        rounds = [x for x in dev["simulated_round_seconds"] if x is not None]
        extra_lines.append(
            f"  devices       {dev['profile']}, deadline {dev['deadline']:g} s: "
            f"{dev['offline_total']} offline + {dev['late_total']} late device-rounds; "
            f"simulated time {dev['simulated_seconds_total']:.1f} s"
            + (f" (round max {max(rounds):.1f} s)" if rounds else ""),
        )
    if card.get("model_choice"):
        extra_lines.append(f"  model         {card['model']}: {card['model_choice']}")
    if card.get("duplicate_rows_dropped"):
        extra_lines.append(
            f"  data checks   {card['duplicate_rows_dropped']} exact duplicate rows dropped"
        )
    ctx = card.get("on_device_context")
    if ctx:
        extra_lines.append("  context       on device only: " + "; ".join(ctx["used_on_device"]))
    at = next(i for i, line in enumerate(lines) if line.startswith("results ("))
    lines[at:at] = extra_lines
    for name, vals in extra.get("baselines", {}).items():
        lines.append(f"  {name:<40} HR@10 {vals['HR@10']:.4f}  NDCG@10 {vals['NDCG@10']:.4f}")
    return lines


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM arrived; raised between releases, after the ledger recorded one.
    A KeyboardInterrupt, so no ``except Exception`` on the way can swallow it, and one that
    escapes is the CLI's one-line "interrupted"."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_code = _EXIT_CODES.get(signal_name, 130)


_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal number, as shells report


class _StopRequests:
    """SIGINT/SIGTERM during training: the first asks to stop after the release in progress
    (the ledger then holds exactly the releases made), a second stops at once."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:  # the second request: stop now
            raise TrainingInterrupted(name)
        self.requested = name
        print(
            f"\nprivagg train: {name}: stopping after the current release "
            "(send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def check(self) -> None:
        if self.requested is not None:
            raise TrainingInterrupted(self.requested)


def _warn(message: str) -> None:
    print(f"privagg train: warning: {message}", file=sys.stderr)


def _check_data(args: argparse.Namespace, ratings: Ratings) -> None:
    if not ratings.has_timestamps:
        raise ConfigError(
            f"{ratings.source} has no timestamp column: the temporal leave-last-out split "
            "needs one (rows user,item,rating,timestamp); without it the 'last' item would "
            "be the file's order, not time"
        )
    if args.privacy != "none" and args.delta * ratings.num_users >= 1:
        _warn(
            f"δ = {args.delta:g} ≥ 1/N = 1/{ratings.num_users}: a mechanism may then reveal "
            "one user's data outright with probability δ; choose δ ≪ 1/N"
        )


def _move_into(staging: str, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(staging):
        os.replace(os.path.join(staging, name), os.path.join(out_dir, name))


def run(args: argparse.Namespace) -> int:
    """Validate, train, and write the outputs atomically (partial ones when interrupted)."""
    if args.data != "synthetic" and not os.path.exists(args.data):  # the first thing to fix
        raise DataNotFoundError(f"{args.data}: no such file or folder")
    _fill_conditional_defaults(args)
    _apply_residual_schedule(args)
    _check_args(args)
    ratings = _load(args)
    _check_data(args, ratings)
    config = _configs(args, ratings.num_users)
    _, model_reason = _model_kind(args, ratings.num_users)
    split = leave_last_out(ratings, args.holdout)
    if config.cohort is not None and config.cohort > ratings.num_users:
        raise ConfigError(
            f"--cohort {config.cohort} is larger than the population ({ratings.num_users} users)"
        )
    feats = item_features(ratings)
    out_dir = os.path.abspath(args.out)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    # signals are handled from before the temporary folder exists until it is removed
    with _StopRequests() as stop:
        staging = tempfile.mkdtemp(prefix=".privagg-train-", dir=parent)
        completed: list[RoundRecord] = []
        try:
            with warnings.catch_warnings():
                if config.simulation_noise:
                    warnings.simplefilter("ignore", NonSecureRandomnessWarning)
                silo_ledger = (
                    os.path.join(staging, "ledger_silo.sqlite") if args.silo_users else None
                )
                trainer = Trainer(
                    split,
                    feats,
                    config,
                    silo_ledger_path=silo_ledger,
                    context=_context(args, ratings, split),
                )
                # after every argument and plan check: a refused run leaves no key behind
                signer = None if args.unsigned else resolve_signing_key(args.signing_key, out_dir)
                ledger = open_ledger(
                    os.path.join(staging, "ledger.sqlite"),
                    trainer,
                    signing_key=None if signer is None else signer.key,
                )
                trainer.ledger = ledger
                started = time.perf_counter()
                try:
                    result = _train_with_progress(
                        trainer, quiet=args.quiet, stop=stop, done=completed
                    )
                    stop.check()
                    seconds = time.perf_counter() - started
                    extra: dict[str, Any] = {"data": ratings.label, "model_reason": model_reason}
                    if not args.no_baselines:
                        extra["baselines"] = _baselines(split, config, result.final)
                    stop.check()
                except (TrainingInterrupted, KeyboardInterrupt) as exc:
                    name = exc.signal_name if isinstance(exc, TrainingInterrupted) else "SIGINT"
                    ledger.close()
                    return _write_partial(args, staging, out_dir, completed, ratings, name)
            published = ledger.publish_line()
            ledger.close()
            result.report_card["duplicate_rows_dropped"] = ratings.duplicates_dropped
            result.report_card["model_choice"] = model_reason
            _write_metrics(os.path.join(staging, "metrics.csv"), result.records)
            _plot(
                os.path.join(staging, "training.png"),
                result.records,
                _plot_title(ratings, config),
                extra.get("baselines"),
            )
            summary = {
                "command": "privagg train " + " ".join(sys.argv[2:]),
                "data": ratings.label,
                "synthetic": ratings.synthetic,
                "config": {k: v for k, v in vars(args).items() if k != "func"},
                "report_card": result.report_card,
                "final": result.final.summary(),
                "per_user_ranks": result.final.ranks.tolist(),
                "budget_plan": vars(result.plan) if hasattr(result.plan, "__dict__") else {},
                "seconds": seconds,
                "seconds_per_release": seconds / max(1, len(result.records)),
                **{k: v for k, v in extra.items() if k not in ("data", "model_reason")},
            }
            with open(os.path.join(staging, "summary.json"), "w", encoding="utf-8") as fh:
                json.dump(_jsonable(summary), fh, indent=2, sort_keys=True)
            _move_into(staging, out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    for line in report_card_lines(result.report_card, extra):
        print(line)
    print(f"wrote {out_dir}/metrics.csv, ledger.sqlite, summary.json, training.png")
    print(_ledger_key_line(signer))
    print(f"publish       {published}")
    return 0


def _ledger_key_line(signer: LedgerKey | None) -> str:
    """Which key signed the ledger (and where it lives), or that nothing did."""
    if signer is None:
        return "ledger        UNSIGNED (--unsigned): a strict audit refuses it"
    made = "new key generated at" if signer.generated else "key"
    return (
        f"ledger        signed by {signer.fingerprint} ({made} {signer.path}; public key "
        f"{signer.public_hex}, also in {signer.path}.pub)"
    )


def _write_partial(
    args: argparse.Namespace,
    staging: str,
    out_dir: str,
    records: list[RoundRecord],
    ratings: Ratings,
    signal_name: str,
) -> int:
    """What an interrupted run made: its ledger (every release made is in it), the metrics
    of the completed releases, their plot and a summary marked ``interrupted``."""
    done = tuple(records)
    _write_metrics(os.path.join(staging, "metrics.csv"), done)
    if done:
        _plot(
            os.path.join(staging, "training.png"), done, f"INTERRUPTED after {len(done)} release(s)"
        )
    else:
        stale = os.path.join(out_dir, "training.png")  # ours, from an earlier run here
        if os.path.isfile(stale):
            os.remove(stale)
    eps = done[-1].epsilon if done else 0.0
    summary = {
        "command": "privagg train " + " ".join(sys.argv[2:]),
        "data": ratings.label,
        "synthetic": ratings.synthetic,
        "config": {k: v for k, v in vars(args).items() if k != "func"},
        "interrupted": signal_name,
        "completed_releases": len(done),
        "epsilon_spent": eps,
    }
    with open(os.path.join(staging, "summary.json"), "w", encoding="utf-8") as fh:
        json.dump(_jsonable(summary), fh, indent=2, sort_keys=True)
    _move_into(staging, out_dir)
    print(
        f"privagg train: interrupted ({signal_name}) after {len(done)} release(s), ε spent "
        f"{eps:.3g}; partial results and the ledger of every release made are in {out_dir}",
        file=sys.stderr,
    )
    return _EXIT_CODES.get(signal_name, 130)


def _plot_title(ratings: Ratings, config: TrainConfig) -> str:
    privacy = (
        "no DP (ε = ∞)"
        if config.privacy == "none"
        else f"{config.privacy} DP, ε = {config.epsilon:g}, δ = {config.delta:g}"
    )
    what = "SYNTHETIC" if ratings.synthetic else os.path.basename(ratings.source)
    return f"{what}: {ratings.num_users} users, {ratings.num_items} items | {privacy}"


# A run whose estimated duration exceeds this prints its estimate before going on.
_LONG_RUN_SECONDS = 120.0


def _train_with_progress(
    trainer: Trainer, *, quiet: bool, stop: _StopRequests, done: list[RoundRecord]
) -> Any:
    """Run with a progress bar (a terminal) or one line per release (a log), showing ε spent
    and the metric; after the first FCF round, a run estimated to take long says so."""
    from tqdm import tqdm

    releases = trainer.releases()
    total = sum(r for _, r in releases)
    fcf_rounds = sum(r for task, r in releases if task.name == "fcf")
    tty = sys.stderr.isatty()
    bar = tqdm(total=total, desc="privagg train", unit="round", disable=quiet or not tty)
    last = {"hr": float("nan")}
    # a log gets about 20 lines, whatever the number of releases
    every = max(1, math.ceil(total / 20))

    def progress(rec: RoundRecord, _total: int) -> None:
        done.append(rec)
        if rec.hr is not None:
            last["hr"] = rec.hr
        status = f"release {rec.round}/{total} ({rec.task}) ε = {rec.epsilon:.3g}"
        status += f" HR@10 = {last['hr']:.4f}"
        bar.set_postfix_str(status.split(") ", 1)[1])
        bar.update(1)
        if not quiet and not tty and (rec.round % every == 0 or rec.round == total):
            print(f"  {status}  ({rec.seconds:.1f} s)", file=sys.stderr, flush=True)
        if rec.task == "fcf" and sum(r.task == "fcf" for r in done) == 1:
            left = (fcf_rounds - 1) * rec.seconds
            if left > _LONG_RUN_SECONDS:
                print(
                    f"privagg train: pre-flight estimate: {_duration(left)} for the "
                    f"{fcf_rounds - 1} FCF rounds left ({rec.seconds:.2f} s per round here); "
                    "Ctrl-C stops after the current release and keeps the partial results",
                    file=sys.stderr,
                    flush=True,
                )
        stop.check()

    try:
        return trainer.run(progress)
    finally:
        bar.close()


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
