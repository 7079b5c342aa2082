"""Rounds-to-target of stratified (active) vs uniform Poisson cohort sampling at equal ε.

For each population (MovieLens 100K when present, and a ``synthetic_ratings`` population),
each ε ∈ {1, 8, ∞} and each sampler, FCF (model ``fcf``: no popularity release, so the
curve starts from the public feature initialisation) is trained for R rounds with a
Poisson cohort of expected size C, and full-ranking HR@10 is evaluated every few rounds.

* **Converged HR@10** of a (population, ε) cell: the *uniform* runs' HR@10 averaged over
  their last three evaluations (rounds R − 2·eval_every … R) and over seeds. **Target**:
  95 % of it. **Rounds-to-target** of a run: the first evaluated FCF round at which its
  HR@10 reaches the target (missing if never).
* **Equal ε**: every run is calibrated by the trainer to spend exactly ε over its R rounds
  (plus, for the stratified samplers, the cluster-size release). Stratified runs are
  accounted at their worst-case rate ``max_boost · C / N`` and pay for the cluster release.
* DP noise is the trusted-server discrete Gaussian (``privacy="central"``, RDP) so that
  the comparison isolates sampling; ``secagg="off"`` (the same sums, no protocol cost) and
  no dropouts; the noise generator is ``dp``'s seeded simulation generator (reproducible,
  flagged non-secure), so the numbers are a simulation of the privacy/utility trade-off.
  (The distributed path guarantees noise shares for the *expected* cohort less a dropout
  margin; a Poisson cohort below that is charged more than planned, so long cohort runs
  can hit the budget before R rounds, for either sampler.)

Writes ``curves.csv`` (every evaluation), ``rounds_to_target.csv`` (one row per run),
``summary.csv`` (per cell and sampler), ``clusters.csv`` (per-cluster HR@10 at the end),
``sampling.png`` and ``report_sampling.md`` into ``out_dir``.

Run: ``privagg study sampling``.
"""

from __future__ import annotations

import csv
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from analysis.studies.communication import plus_minus
from dp.accounting import make_accountant
from dp.events import DiscreteGaussianEvent, GaussianEvent, PoissonSampledEvent, SelfComposedEvent
from dp.rng import NonSecureRandomnessWarning
from recsys.data import Ratings, load_ratings, synthetic_ratings
from recsys.features import item_features
from recsys.federated import FCFConfig
from recsys.metrics import evaluate_ranking
from recsys.recommender import FederatedRecommender, ModelConfig
from recsys.sampling import ClusterCountTask, StratifiedConfig
from recsys.split import Split, leave_last_out
from recsys.trainer import RoundRecord, TrainConfig, Trainer

__all__ = ["Population", "Sampler", "main", "rounds_to_target", "run"]

ML100K = Path(
    os.environ.get(
        "PRIVAGG_ML100K", str(Path(__file__).resolve().parents[3] / "shared/data/ml-100k")
    )
)
EPSILONS: tuple[float, ...] = (1.0, 8.0, math.inf)
TARGET_FRACTION = 0.95


@dataclass(frozen=True)
class Population:
    """A data set and its cohort settings."""

    name: str
    cohort: int
    rounds: int
    eval_every: int


@dataclass(frozen=True)
class Sampler:
    """One sampler of the comparison (``allocation`` unused for uniform)."""

    label: str
    kind: str
    allocation: float = 0.5


SAMPLERS: tuple[Sampler, ...] = (
    Sampler("uniform", "uniform"),
    Sampler("stratified a=0.5", "stratified", 0.5),
    Sampler("stratified a=0 (equal)", "stratified", 0.0),
)
STRATIFIED = StratifiedConfig(clusters=8, max_boost=2.0, cluster_share=0.05)


def rounds_to_target(rounds: Sequence[int], hr: Sequence[float], target: float) -> int | None:
    """The first evaluated round whose HR@10 reaches ``target`` (None if none does)."""
    for r, h in zip(rounds, hr, strict=True):
        if h >= target:
            return int(r)
    return None


def _load(name: str, quick: bool) -> Ratings | None:
    if name == "ML-100K":
        return load_ratings(ML100K) if (ML100K / "u.data").exists() else None
    users, items = (300, 150) if quick else (2000, 1000)
    return synthetic_ratings(users, items, seed=0)


def _config(pop: Population, eps: float, sampler: Sampler, seed: int) -> TrainConfig:
    return TrainConfig(
        privacy="none" if math.isinf(eps) else "central",
        epsilon=8.0 if math.isinf(eps) else eps,
        delta=1e-4,
        rounds=pop.rounds,
        cohort=pop.cohort,
        secagg="off",
        dropout=0.0,
        seed=seed,
        eval_every=0,
        simulation_noise=True,
        model=ModelConfig(kind="fcf", fcf=FCFConfig(dim=8)),
        sampler="stratified" if sampler.kind == "stratified" else "uniform",
        stratified=replace(STRATIFIED, allocation=sampler.allocation, seed=seed),
    )


def _strata(split: Split, features: np.ndarray, seed: int) -> np.ndarray:
    """Each user's cluster under the study's public centroids (for per-cluster analysis
    only; computed here in the simulation, never by a server)."""
    rec = FederatedRecommender(split.train, features, ModelConfig(kind="fcf"), seed=seed)
    n = split.train.num_users
    task = ClusterCountTask(features, n, replace(STRATIFIED, seed=seed), cohort=1.0, max_rate=1.0)
    task.local_updates(rec.fleet, rec.server, np.arange(n, dtype=np.int64))
    return task.device_strata.copy()


def design_bound(
    split: Split, features: np.ndarray, cohort: int, seed: int = 0
) -> dict[str, float]:
    """How much *any* Poisson design could reduce the sampling variance of the round sum.

    At the initial model, every user's unclipped FCF upload norm is measured (simulation
    side). The Horvitz–Thompson estimate of the sum of the clipped uploads c_u has variance
    Σ_u (1 − q_u)/q_u · ‖c_u‖², minimised under Σ q_u = C by q_u ∝ ‖c_u‖ (a design no server
    could even use: it needs every user's norm). Uniform q = C/N is optimal when all norms
    are equal — i.e. when every user is clipped, which is the regime of user-level DP.
    Returns the clipped fraction, the variance ratio uniform/optimal, and the per-round
    sampling variance of the uniform design (for comparison with the DP noise z²·D).
    """
    fcf = FCFConfig(dim=8, clip_norm=1e12)
    rec = FederatedRecommender(split.train, features, ModelConfig(kind="fcf", fcf=fcf), seed=seed)
    n = split.train.num_users
    norms = np.empty(n)
    for lo in range(0, n, 256):
        users = np.arange(lo, min(n, lo + 256), dtype=np.int64)
        up = rec.fcf_task.local_updates(rec.fleet, rec.server, users)
        norms[lo : lo + len(users)] = np.linalg.norm(up, axis=1)
    c = np.minimum(norms, 1.0)
    q_uniform = cohort / n
    v_uniform = float(((1 - q_uniform) / q_uniform * c**2).sum())
    q_opt = np.minimum(1.0, cohort * c / c.sum())
    v_opt = float(((1 - q_opt) / np.maximum(q_opt, 1e-300) * c**2).sum())
    return {
        "clipped_fraction": float((norms >= 1.0).mean()),
        "median_norm": float(np.median(norms)),
        "variance_ratio_uniform_over_optimal": v_uniform / v_opt if v_opt > 0 else 1.0,
        "uniform_sampling_variance": v_uniform,
        "upload_dim": float(rec.fcf_task.upload_dim),
    }


def _one_run(
    split: Split, feats: np.ndarray, pop: Population, eps: float, sampler: Sampler, seed: int
) -> dict[str, Any]:
    config = _config(pop, eps, sampler, seed)
    trainer = Trainer(split, feats, config)
    curve: list[tuple[int, float, float, float]] = []
    fcf_round = 0
    hr0 = evaluate_ranking(trainer.recommender.scores, split)
    curve.append((0, hr0.hr, hr0.ndcg, 0.0))

    def progress(rec: RoundRecord, _total: int) -> None:
        nonlocal fcf_round
        if rec.task != "fcf":
            return
        fcf_round += 1
        if fcf_round % pop.eval_every == 0 or fcf_round == pop.rounds:
            rep = evaluate_ranking(trainer.recommender.scores, split)
            curve.append((fcf_round, rep.hr, rep.ndcg, rec.epsilon))

    start = time.perf_counter()
    result = trainer.run(progress)
    seconds = time.perf_counter() - start
    card = result.report_card
    strat = card.get("stratified") or {}
    sampled = [r.sampled for r in result.records if r.task == "fcf"]
    return {
        "curve": curve,
        "per_user_hr": result.final.per_user("hr"),
        "epsilon": card["epsilon"],
        "round_noise": trainer.plan.round_noise,
        "accounting_rate": trainer.accounting_rate,
        "mean_cohort": float(np.mean(sampled)) if sampled else 0.0,
        "rates": strat.get("rates"),
        "counts": strat.get("released_counts"),
        "stratum_epsilons": strat.get("stratum_epsilons"),
        "seconds": seconds,
    }


def _speedup(base: float | None, other: float | None) -> float | None:
    """Uniform's rounds-to-target over this sampler's (None if either never got there)."""
    if base is None or other is None:
        return None
    if other == 0:
        return 1.0 if base == 0 else math.inf
    return base / other


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.{digits}g}"


def run(out_dir: str | os.PathLike[str], *, quick: bool = False) -> dict[str, Any]:
    """Run the study and write its outputs; returns the summary rows."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if quick:
        pops = [Population("synthetic", cohort=30, rounds=6, eval_every=2)]
        seeds: tuple[int, ...] = (0,)
    else:
        pops = [
            Population("ML-100K", cohort=75, rounds=60, eval_every=5),
            Population("synthetic", cohort=100, rounds=60, eval_every=5),
        ]
        seeds = (0, 1, 2)
    curves_rows: list[dict[str, Any]] = []
    runs_rows: list[dict[str, Any]] = []
    summary_rows: list[dict[str, Any]] = []
    cluster_rows: list[dict[str, Any]] = []
    notes: list[str] = []
    bounds: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for pop in pops:
        ratings = _load(pop.name, quick)
        if ratings is None:
            notes.append(f"{pop.name} skipped: not found at {ML100K}")
            continue
        split = leave_last_out(ratings)
        feats = item_features(ratings)
        n_users = ratings.num_users
        data_label = f"{pop.name} ({n_users} users, {ratings.num_items} items)"
        strata = _strata(split, feats, 0)
        bound = design_bound(split, feats, pop.cohort)
        bounds[pop.name] = {**bound, "label": data_label}
        for eps in EPSILONS:
            results: dict[str, list[dict[str, Any]]] = {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NonSecureRandomnessWarning)
                for sampler in SAMPLERS:
                    results[sampler.label] = [
                        _one_run(split, feats, pop, eps, sampler, seed) for seed in seeds
                    ]
            # converged: the uniform runs' HR@10 over their last three evaluations (rounds
            # R - 2·eval_every .. R), averaged over seeds (one evaluation is noisy)
            tails = [[c[1] for c in r["curve"][-3:]] for r in results["uniform"]]
            converged = float(np.mean(tails))
            target = TARGET_FRACTION * converged
            # per-user binomial standard error of one HR@10 evaluation at the converged level:
            # the 5 % gap between target and converged, in standard errors
            n_eval = len(split.eval_users)
            se = math.sqrt(max(converged * (1 - converged), 1e-12) / max(n_eval, 1))
            base_rtt: float | None = None
            base_curve_rtt: float | None = None
            for sampler in SAMPLERS:
                rtts: list[int | None] = []
                for seed, res in zip(seeds, results[sampler.label], strict=True):
                    rounds = [c[0] for c in res["curve"]]
                    hrs = [c[1] for c in res["curve"]]
                    rtt = rounds_to_target(rounds, hrs, target)
                    rtts.append(rtt)
                    for r, h, nd, e in res["curve"]:
                        curves_rows.append(
                            {
                                "data": pop.name,
                                "epsilon": eps,
                                "sampler": sampler.label,
                                "seed": seed,
                                "fcf_round": r,
                                "hr10": h,
                                "ndcg10": nd,
                                "epsilon_so_far": e,
                            }
                        )
                    runs_rows.append(
                        {
                            "data": pop.name,
                            "epsilon": eps,
                            "sampler": sampler.label,
                            "seed": seed,
                            "rounds_to_target": "" if rtt is None else rtt,
                            "final_hr10": res["curve"][-1][1],
                            "epsilon_spent": res["epsilon"],
                            "round_noise_multiplier": res["round_noise"],
                            "accounting_rate": res["accounting_rate"],
                            "mean_cohort": res["mean_cohort"],
                            "rates": "" if res["rates"] is None else res["rates"],
                            "stratum_epsilons": ""
                            if res["stratum_epsilons"] is None
                            else res["stratum_epsilons"],
                            "seconds": res["seconds"],
                        }
                    )
                    per_user = res["per_user_hr"]
                    users = split.eval_users
                    for s in range(STRATIFIED.clusters):
                        members = strata[users] == s
                        cluster_rows.append(
                            {
                                "data": pop.name,
                                "epsilon": eps,
                                "sampler": sampler.label,
                                "seed": seed,
                                "cluster": s,
                                "users": int(members.sum()),
                                "final_hr10": float(per_user[members].mean())
                                if members.any()
                                else "",
                            }
                        )
                reached = [r for r in rtts if r is not None]
                mean_rtt = float(np.mean(reached)) if len(reached) == len(rtts) else None
                # rounds-to-target of the seed-averaged curve (less noisy than per seed)
                runs = results[sampler.label]
                curve_rounds = [c[0] for c in runs[0]["curve"]]
                mean_curve = np.mean([[c[1] for c in r["curve"]] for r in runs], axis=0)
                found = rounds_to_target(curve_rounds, mean_curve.tolist(), target)
                curve_rtt = None if found is None else float(found)
                if sampler.kind == "uniform":
                    base_rtt = mean_rtt
                    base_curve_rtt = curve_rtt
                finals = [res["curve"][-1][1] for res in results[sampler.label]]
                summary_rows.append(
                    {
                        "data": data_label,
                        "epsilon": eps,
                        "sampler": sampler.label,
                        "converged_hr10": converged,
                        "target_hr10": target,
                        "rounds_to_target_mean": mean_rtt,
                        "rounds_to_target_per_seed": rtts,
                        "speedup_vs_uniform": _speedup(base_rtt, mean_rtt),
                        "rounds_to_target_mean_curve": curve_rtt,
                        "speedup_mean_curve": _speedup(base_curve_rtt, curve_rtt),
                        "gap_in_standard_errors": (converged - target) / se,
                        "final_hr10_mean": float(np.mean(finals)),
                        "final_hr10_sd": float(np.std(finals, ddof=1))
                        if len(finals) > 1
                        else math.nan,
                        "round_noise_multiplier": float(
                            np.mean([res["round_noise"] for res in results[sampler.label]])
                        ),
                        "accounting_rate": results[sampler.label][0]["accounting_rate"],
                        "mean_cohort": float(
                            np.mean([res["mean_cohort"] for res in results[sampler.label]])
                        ),
                        "rates_seed0": results[sampler.label][0]["rates"],
                        "released_counts_seed0": results[sampler.label][0]["counts"],
                        "stratum_epsilons_seed0": results[sampler.label][0]["stratum_epsilons"],
                        "epsilon_spent": float(
                            np.max([res["epsilon"] for res in results[sampler.label]])
                        ),
                    }
                )
    elapsed = time.perf_counter() - started
    _write_csv(out / "curves.csv", curves_rows)
    _write_csv(out / "rounds_to_target.csv", runs_rows)
    _write_csv(out / "summary.csv", summary_rows)
    _write_csv(out / "clusters.csv", cluster_rows)
    _plot(out / "sampling.png", curves_rows, summary_rows)
    (out / "report_sampling.md").write_text(
        _report(summary_rows, cluster_rows, bounds, pops, seeds, notes, elapsed, quick),
        encoding="utf-8",
    )
    return {"summary": summary_rows, "seconds": elapsed, "notes": notes, "bounds": bounds}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        path.write_text("", encoding="utf-8")
        return
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: _fmt(v, 6) if isinstance(v, float) else ("" if v is None else v)
                    for k, v in row.items()
                }
            )


def _plot(path: Path, curves: list[dict[str, Any]], summary: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datas = sorted({r["data"] for r in curves}, key=lambda d: d != "ML-100K")
    fig, axes = plt.subplots(
        max(1, len(datas)), len(EPSILONS), figsize=(4.2 * len(EPSILONS), 3.3 * max(1, len(datas)))
    )
    axes = np.atleast_2d(axes)
    colors = {s.label: c for s, c in zip(SAMPLERS, ("C0", "C3", "C2"), strict=True)}
    for i, data in enumerate(datas):
        for j, eps in enumerate(EPSILONS):
            ax = axes[i, j]
            cell = [r for r in curves if r["data"] == data and r["epsilon"] == eps]
            for sampler in SAMPLERS:
                rows = [r for r in cell if r["sampler"] == sampler.label]
                if not rows:
                    continue
                rounds = sorted({r["fcf_round"] for r in rows})
                mean = [np.mean([r["hr10"] for r in rows if r["fcf_round"] == t]) for t in rounds]
                color = colors[sampler.label]
                ax.plot(rounds, mean, "-o", ms=2.5, color=color, label=sampler.label)
            tgt = [
                s["target_hr10"]
                for s in summary
                if s["data"].startswith(data) and s["epsilon"] == eps and s["sampler"] == "uniform"
            ]
            if tgt:
                ax.axhline(tgt[0], color="k", ls=":", lw=1, label="target: 95% of converged")
            ax.set_title(f"{data}, ε = {'∞' if math.isinf(eps) else f'{eps:g}'}", fontsize=9)
            ax.set_xlabel("FCF round")
            ax.set_ylabel("HR@10 (full ranking)")
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _report(
    summary: list[dict[str, Any]],
    clusters: list[dict[str, Any]],
    bounds: dict[str, dict[str, Any]],
    pops: list[Population],
    seeds: tuple[int, ...],
    notes: list[str],
    elapsed: float,
    quick: bool,
) -> str:
    lines = [
        "## Active (stratified) vs uniform cohort sampling: rounds to target at equal ε",
        "",
        "Regenerate: `privagg study sampling` (all four: `privagg study all`)"
        + (" (this is a --quick run)" if quick else "")
        + ".",
        "",
        "Setup: model `fcf` (d = 8, Adam, clip 1), Poisson cohorts "
        + ", ".join(f"{p.name}: C = {p.cohort}, R = {p.rounds} rounds" for p in pops)
        + f"; seeds {list(seeds)}; HR@10 on the full-ranking temporal leave-last-out test item, "
        "evaluated every "
        + ", ".join(f"{p.eval_every}" for p in pops)
        + " rounds. ε ∈ {1, 8} uses the trusted-server discrete Gaussian (`dp` auto accountant "
        "→ RDP, δ = 1e-4), "
        "ε = ∞ no noise; SecAgg replaced by the plain sum (identical sums), no dropouts, seeded "
        "simulation noise. **Converged HR@10** = the uniform runs' HR@10 averaged over their last "
        "three evaluations (rounds R − 2·every … R) and the seeds; "
        "**target** = 95 % of it; **rounds to target** = first evaluated round at or above it "
        "(under DP a curve can peak and then decay as noise accumulates in the Adam state; "
        "the converged level is the end-of-run level, see `sampling.png`). "
        f"Stratified: K = {STRATIFIED.clusters} public centroids (k-means on public item "
        "features), on-device assignment, one DP cluster-size release "
        f"({STRATIFIED.cluster_share:g}·ε alone), per-cluster rates m_s ∝ n̂_s^a capped at "
        f"{STRATIFIED.max_boost:g}·C/N; every FCF round accounted at that cap (the worst-case "
        "user), so at equal ε the stratified rounds carry more noise.",
        "",
        "| data | ε | sampler | rounds to target (mean; per seed) | speed-up vs uniform | "
        "rounds to target of the seed-mean curve (speed-up) | final HR@10 (± sd over seeds) "
        "| z rounds | accounted q | mean cohort |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        eps_label = "∞" if math.isinf(s["epsilon"]) else f"{s['epsilon']:g}"
        rtt = s["rounds_to_target_per_seed"]
        lines.append(
            f"| {s['data']} | {eps_label} | {s['sampler']} | "
            f"{_fmt(s['rounds_to_target_mean'], 3) or 'not reached'}; "
            f"{['–' if r is None else r for r in rtt]} | "
            f"{_fmt(s['speedup_vs_uniform'], 3) or '–'} | "
            f"{_fmt(s['rounds_to_target_mean_curve'], 3) or 'not reached'} "
            f"({_fmt(s['speedup_mean_curve'], 3) or '–'}) | "
            f"{plus_minus(s['final_hr10_mean'], s['final_hr10_sd'])} | "
            f"{s['round_noise_multiplier']:.3g} | {s['accounting_rate']:.3g} | "
            f"{s['mean_cohort']:.1f} |"
        )
    lines += ["", "Per-cluster final HR@10 (seed-mean; cluster sizes in users):", ""]
    datas = sorted({c["data"] for c in clusters})
    for data in datas:
        for eps in EPSILONS:
            cell = [c for c in clusters if c["data"] == data and c["epsilon"] == eps]
            if not cell:
                continue
            ks = sorted({c["cluster"] for c in cell})
            sizes = {c["cluster"]: c["users"] for c in cell}
            parts = []
            for sampler in SAMPLERS:
                vals = []
                for k in ks:
                    v = [
                        c["final_hr10"]
                        for c in cell
                        if c["sampler"] == sampler.label and c["cluster"] == k and c["users"]
                    ]
                    vals.append(f"{np.mean(v):.3f}" if v else "–")
                parts.append(f"{sampler.label}: " + " / ".join(vals))
            eps_s = "∞" if math.isinf(eps) else f"{eps:g}"
            released = [
                s["released_counts_seed0"]
                for s in summary
                if s["data"].startswith(data)
                and s["epsilon"] == eps
                and s["sampler"] != "uniform"
                and s["released_counts_seed0"]
            ]
            noisy = f" (DP-released, seed 0: {[round(x) for x in released[0]]})" if released else ""
            lines.append(
                f"- {data}, ε = {eps_s}; sizes {[sizes[k] for k in ks]}{noisy}: " + "; ".join(parts)
            )
    lines += ["", "Why (measured):", ""]
    for b in bounds.values():
        cells = [s for s in summary if s["data"] == b["label"]]
        parts = [
            f"- {b['label']}: at the initial model {b['clipped_fraction']:.0%} of the users' "
            f"FCF uploads are clipped (median norm {b['median_norm']:.3g} vs clip 1), so the "
            "best Poisson design of all (q_u ∝ each user's upload norm, which needs per-user "
            "norms no server has) would cut the sampling variance of a round's sum by only "
            f"{b['variance_ratio_uniform_over_optimal']:.3f}x vs uniform"
        ]
        for eps in EPSILONS:
            if math.isinf(eps):
                continue
            uni = [s for s in cells if s["epsilon"] == eps and s["sampler"] == "uniform"]
            strat = [s for s in cells if s["epsilon"] == eps and s["sampler"] != "uniform"]
            if not uni:
                continue
            z_u = uni[0]["round_noise_multiplier"]
            dp_var = z_u**2 * b["upload_dim"]
            ratio = dp_var / b["uniform_sampling_variance"]
            z_s = max(s["round_noise_multiplier"] for s in strat) if strat else math.nan
            parts.append(
                f"; at ε = {eps:g} the uniform rounds' DP noise (z = {z_u:.3g}, E‖noise‖² = "
                f"{dp_var:.3g}) is {ratio:.3g}x their sampling variance "
                f"({b['uniform_sampling_variance']:.3g}), and the stratified rounds need "
                f"z = {z_s:.3g} ({z_s / z_u:.2f}x) for the same ε"
            )
        lines.append("".join(parts) + ".")

    for pop in pops:
        cells = [
            s
            for s in summary
            if s["data"].startswith(pop.name) and s["epsilon"] == 1.0 and s["sampler"] == "uniform"
        ]
        if not cells:
            continue
        z, q = cells[0]["round_noise_multiplier"], cells[0]["accounting_rate"]
        gauss = make_accountant("pld").compose(
            SelfComposedEvent(PoissonSampledEvent(q, GaussianEvent(z)), pop.rounds)
        )
        disc = make_accountant("rdp").compose(
            SelfComposedEvent(PoissonSampledEvent(q, DiscreteGaussianEvent(1.0, z, 1)), pop.rounds)
        )
        lines.append(
            f"- Accounting note ({pop.name}): both samplers are accounted by the same `dp` auto "
            "accountant; the trusted-server mechanism emits a *discrete* Gaussian event, whose "
            "Poisson-subsampled RDP uses the general Zhu–Wang bound, which is loose: at the "
            f"uniform ε = 1 cell (z = {z:.3g}, q = {q:.3g}, {pop.rounds} rounds) it gives "
            f"ε = {disc.get_epsilon_bracket(1e-4).epsilon_upper:.3g}, while a continuous "
            "Gaussian of the same z under the PLD accountant would give "
            f"ε = {gauss.get_epsilon_bracket(1e-4).epsilon_upper:.3g}. Absolute noise levels "
            "at ε = 1 are therefore inflated for every sampler; the comparison is at equal "
            "accounting."
        )

    def cell_name(s: dict[str, Any]) -> str:
        eps_label = "∞" if math.isinf(s["epsilon"]) else f"{s['epsilon']:g}"
        return f"{s['data'].split(' (')[0]} ε={eps_label} {s['sampler']}"

    strat = [s for s in summary if s["sampler"] != "uniform"]
    fast = [s for s in strat if (s["speedup_vs_uniform"] or 0.0) >= 2.0]
    robust = [
        s
        for s in fast
        if (s["speedup_mean_curve"] or 0.0) >= 2.0 and s["gap_in_standard_errors"] >= 2.0
    ]
    gaps = sorted({round(s["gap_in_standard_errors"], 2) for s in summary})
    lines += [
        "",
        "Verdict: the goal (≥ 2x fewer rounds than uniform at the same ε) is "
        + ("met" if robust else "not met")
        + ". Cells with a per-seed-mean speed-up ≥ 2: "
        + (", ".join(f"{cell_name(s)} ({s['speedup_vs_uniform']:.2f}x)" for s in fast) or "none")
        + "; of these, confirmed on the seed-mean curve *and* resolvable (the 5 % gap between "
        "target and converged HR@10 at least 2 standard errors of one evaluation): "
        + (", ".join(cell_name(s) for s in robust) or "none")
        + f". The 5 % gap is {min(gaps):.2g}–{max(gaps):.2g} standard errors across cells, so "
        "rounds-to-target is largely decided by evaluation noise wherever the curve approaches "
        "its plateau slowly; compare the final HR@10 columns. With Poisson sampling, "
        "proportional stratification *is* uniform sampling (no "
        "variance reduction without fixed per-stratum sample sizes); a non-proportional "
        "allocation biases the averaged item gradient towards the over-sampled clusters while "
        "HR@10 averages over all users; under user-level DP nearly every upload is clipped to "
        "the same norm, which makes uniform the variance-optimal Poisson design, and the "
        "run must be accounted at the largest per-user rate, so at equal ε stratified rounds "
        "carry more noise and the cluster-size release takes a share of ε. FedFast's own "
        "speed-up comes largely from ActvAGG (pushing updates to unsampled users' embeddings); "
        "here every device re-solves its user factor against the released item factors, so "
        "unsampled users are already up to date.",
    ]
    lines += ["", *(f"- note: {n}" for n in notes), f"Total runtime {elapsed / 60:.1f} min.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    from analysis.studies import main

    raise SystemExit(main("sampling"))
