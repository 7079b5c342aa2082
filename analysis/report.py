"""Sweep reports: ``tradeoff.png``, ``cost.png`` and ``report.md`` from tidy result rows.

Rows are grouped into configurations (dataset, privacy, SecAgg, dropout, cohort); each
configuration's seeds give a mean and a 95 % t-interval. ε = ∞ (no DP) is drawn at the
right end of the log ε axis and as the "non-private" reference line.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["aggregate", "plot_cost", "plot_tradeoff", "write_report"]

ConfigKey = tuple[str, str, str, float, str]


def _config(row: dict[str, Any]) -> ConfigKey:
    return (
        str(row["dataset"]),
        str(row["privacy"]),
        str(row["secagg"]),
        float(row["dropout"]),
        str(row.get("cohort", "") or "all"),
    )


def _label(key: ConfigKey) -> str:
    _ds, priv, sa, drop, coh = key
    return f"{priv}, secagg={sa}, dropout={drop:g}, cohort={coh}"


def _t95(n: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1)) if n > 1 else math.nan


def _f(value: Any) -> float:
    """A row value as a float: '' or None (not measured) become nan, 'inf' becomes inf."""
    if value is None or value == "":
        return math.nan
    return float(value)


def _stats(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and a 95 % t-interval over seeds; one seed has no interval (nan bounds), never
    a zero-width one that would read as certainty."""
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, math.nan, math.nan
    half = _t95(arr.size) * float(arr.std(ddof=1)) / math.sqrt(arr.size)
    return mean, mean - half, mean + half


def aggregate(rows: Sequence[dict[str, Any]], metric: str = "hr10") -> list[dict[str, Any]]:
    """One line per (configuration, ε target): mean, 95 % interval, seeds, cost and ledger."""
    groups: dict[tuple[ConfigKey, float], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        key = _config(r)
        if r["privacy"] == "none":
            key = (key[0], "none", key[2], key[3], key[4])
        groups[(key, _f(r["epsilon_target"]))].append(r)
    out = []
    for (key, eps), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        mean, lo, hi = _stats([_f(r[metric]) for r in rs])
        out.append(
            {
                "dataset": key[0],
                "privacy": key[1],
                "secagg": key[2],
                "dropout": key[3],
                "cohort": key[4],
                "epsilon_target": eps,
                "epsilon_spent": max(_f(r["epsilon_spent"]) for r in rs),
                "seeds": len(rs),
                "mean": mean,
                "lo": lo,
                "hi": hi,
                "ndcg10": _stats([_f(r["ndcg10"]) for r in rs])[0],
                "popularity_hr10": _stats([_f(r["popularity_hr10"]) for r in rs])[0],
                "dp_popularity_hr10": _stats([_f(r["dp_popularity_hr10"]) for r in rs])[0],
                "seconds_per_round": _stats([_f(r["seconds_per_round"]) for r in rs])[0],
                "bytes_up_per_round": _stats([_f(r["bytes_up_per_round"]) for r in rs])[0],
                "ledger_ok": all(bool(r["ledger_ok"]) for r in rs),
            }
        )
    return out


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tradeoff(rows: Sequence[dict[str, Any]], path: str, metric: str = "hr10") -> None:
    """Utility vs ε per configuration with 95 % bands and the popularity/non-private lines."""
    plt = _pyplot()
    agg = aggregate(rows, metric)
    datasets = sorted({a["dataset"] for a in agg})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.5), squeeze=False)
    finite = [a["epsilon_target"] for a in agg if math.isfinite(a["epsilon_target"])]
    hi_eps = max(finite) if finite else 1.0
    inf_x = hi_eps * 2.5  # where ε = ∞ sits on the log axis
    for ax, ds in zip(axes[0], datasets, strict=True):
        mine = [a for a in agg if a["dataset"] == ds]
        nonpriv = [a for a in mine if a["privacy"] == "none"]
        configs = sorted({(a["privacy"], a["secagg"], a["dropout"], a["cohort"]) for a in mine})
        for cfg in configs:
            if cfg[0] == "none":
                continue
            pts = sorted(
                (a for a in mine if (a["privacy"], a["secagg"], a["dropout"], a["cohort"]) == cfg),
                key=lambda a: a["epsilon_target"],
            )
            xs = [a["epsilon_target"] for a in pts]
            ys = [a["mean"] for a in pts]
            line = ax.plot(xs, ys, "o-", label=_label((ds, *cfg)))[0]
            ax.fill_between(
                xs,
                [a["lo"] for a in pts],
                [a["hi"] for a in pts],
                alpha=0.2,
                color=line.get_color(),
            )
            dpp = [(a["epsilon_target"], a["dp_popularity_hr10"]) for a in pts]
            dpp = [(x, y) for x, y in dpp if math.isfinite(y)]
            if dpp and metric == "hr10":
                ax.plot(
                    *zip(*dpp, strict=True),
                    "x:",
                    color=line.get_color(),
                    alpha=0.8,
                    label=f"DP popularity ({cfg[0]})",
                )
        if nonpriv:
            a = nonpriv[0]
            ax.axhline(a["mean"], color="k", lw=1.2, label="non-private model (ε = ∞)")
            if math.isfinite(a["lo"]) and math.isfinite(a["hi"]):
                ax.axhspan(a["lo"], a["hi"], color="k", alpha=0.08)
            ax.plot([inf_x], [a["mean"]], "k*", ms=10)
        pops = [a["popularity_hr10"] for a in mine if math.isfinite(a["popularity_hr10"])]
        if pops and metric == "hr10":
            ax.axhline(
                float(np.mean(pops)), color="grey", ls="--", label="popularity (non-private)"
            )
        ax.set_xscale("log")
        ticks = sorted(set(finite)) + ([inf_x] if nonpriv else [])
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in sorted(set(finite))] + (["∞"] if nonpriv else []))
        ax.minorticks_off()
        ax.set_xlabel("ε (target, user-level)")
        ax.set_ylabel("HR@10 (full ranking)" if metric == "hr10" else metric)
        ax.set_title(f"{ds}: utility vs ε (mean over seeds, 95 % band)", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_cost(rows: Sequence[dict[str, Any]], path: str) -> None:
    """Seconds and bytes uploaded per round, by configuration and ε."""
    plt = _pyplot()
    agg = aggregate(rows)
    labels = [
        f"{a['dataset']} {a['privacy']}/{a['secagg']}\nε={a['epsilon_target']:g} d={a['dropout']:g}"
        for a in agg
    ]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8.0, 0.9 * len(agg) + 4), 4.5))
    x = np.arange(len(agg))
    ax1.bar(x, [a["seconds_per_round"] for a in agg], color="tab:blue")
    ax1.set_ylabel("seconds per round (mean over seeds)")
    ax2.bar(x, [a["bytes_up_per_round"] / 1e6 for a in agg], color="tab:orange")
    ax2.set_ylabel("MB uploaded per round (all devices)")
    for ax in (ax1, ax2):
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=6)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        "cost per round by configuration (shared 2-core machine: timings noisy)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _num(x: float, fmt: str = ".4f") -> str:
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    if isinstance(x, float) and math.isnan(x):
        return "–"
    return format(x, fmt)


def _interval(a: dict[str, Any]) -> str:
    if not (math.isfinite(a["lo"]) and math.isfinite(a["hi"])):
        return "(1 seed: no interval)" if a["seeds"] < 2 else "[–]"
    return f"[{_num(a['lo'])}, {_num(a['hi'])}]"


def _rounded(value: Any, fmt: str = ".3f") -> str:
    """A report number, rounded; '' and None stay empty, text stays text."""
    if value is None or value == "":
        return "–"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return _num(number, fmt)


def main_table(rows: Sequence[dict[str, Any]], dataset: str) -> list[str]:
    """The markdown table of one dataset: HR@10 mean [95 % CI] per configuration and ε."""
    lines = [
        "| privacy | SecAgg | dropout | cohort | ε target | ε spent | seeds | HR@10 mean [95 % CI] "
        "| NDCG@10 | DP popularity HR@10 | s/round | MB up/round | ledger |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in aggregate(rows):
        if a["dataset"] != dataset:
            continue
        lines.append(
            f"| {a['privacy']} | {a['secagg']} | {a['dropout']:g} | {a['cohort']} | "
            f"{_num(a['epsilon_target'], 'g')} | {_num(a['epsilon_spent'], '.3f')} | "
            f"{a['seeds']} | "
            f"{_num(a['mean'])} {_interval(a)} | {_num(a['ndcg10'])} | "
            f"{_num(a['dp_popularity_hr10'])} | {_num(a['seconds_per_round'], '.2f')} | "
            f"{_num(a['bytes_up_per_round'] / 1e6, '.2f')} | "
            f"{'OK' if a['ledger_ok'] else 'FAIL'} |"
        )
    return lines


def _findings(rows: Sequence[dict[str, Any]], dataset: str) -> list[str]:
    agg = [a for a in aggregate(rows) if a["dataset"] == dataset]
    nonpriv = [a for a in agg if a["privacy"] == "none"]
    private = sorted((a for a in agg if a["privacy"] != "none"), key=lambda a: a["epsilon_target"])
    out: list[str] = []
    pops = [a["popularity_hr10"] for a in agg if math.isfinite(a["popularity_hr10"])]
    if nonpriv:
        out.append(f"- Non-private model (ε = ∞): HR@10 {_num(nonpriv[0]['mean'])}.")
    if pops:
        out.append(f"- Non-private popularity baseline: HR@10 {_num(float(np.mean(pops)))}.")
    for a in private:
        rel = ""
        if nonpriv and nonpriv[0]["mean"] > 0:
            rel = f" ({100 * a['mean'] / nonpriv[0]['mean']:.0f} % of non-private)"
        dpp = a["dp_popularity_hr10"]
        vs = "" if not math.isfinite(dpp) else f"; DP popularity at the same ε {_num(dpp)}"
        out.append(
            f"- {a['privacy']}/{a['secagg']} at ε = {a['epsilon_target']:g}: HR@10 "
            f"{_num(a['mean'])}{rel}{vs}."
        )
    return out


SCALING_GOAL = (100_000, 1.0, 0.90)  # issue 7: at 10^5 users and ε = 1, ≥ 90 % of non-private


def _per_seed(rows: Sequence[dict[str, Any]], agg: dict[str, Any]) -> dict[int, float]:
    """HR@10 by seed of the runs behind one :func:`aggregate` line."""
    key = (agg["dataset"], agg["privacy"], agg["secagg"], agg["dropout"], agg["cohort"])
    return {
        int(r["seed"]): _f(r["hr10"])
        for r in rows
        if _config(r) == key and _f(r["epsilon_target"]) == agg["epsilon_target"]
    }


def scaling_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Population scaling: DP utility as a share of non-private, per synthetic population.

    The share is the ratio of the seed means; beside it, the ratio of each seed's DP run to
    the non-private run on the same seed (the same synthetic population), and whether the
    goal of issue 7 (:data:`SCALING_GOAL`) is met where the grid reaches it.
    """
    pops: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for a in aggregate(rows):
        name = str(a["dataset"])
        if name.startswith("synthetic-") and name[10:].isdigit():
            pops[int(name[10:])].append(a)
    if len(pops) < 2:
        return []
    lines = [
        "## Population scaling (synthetic_ratings)",
        "",
        "| users | privacy | cohort | ε | HR@10 (DP) | HR@10 (non-private) | share of "
        "non-private | per-seed shares (same population) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    goal_users, goal_eps, goal_share = SCALING_GOAL
    verdicts: list[str] = []
    for n in sorted(pops):
        nonpriv = [a for a in pops[n] if a["privacy"] == "none"]
        for a in sorted(pops[n], key=lambda a: a["epsilon_target"]):
            if a["privacy"] == "none" or not nonpriv:
                continue
            ref_a = next((b for b in nonpriv if b["cohort"] == a["cohort"]), nonpriv[0])
            ref = ref_a["mean"]
            share = a["mean"] / ref if ref > 0 else math.nan
            dp_seeds = _per_seed(rows, a)
            np_seeds = _per_seed(rows, ref_a)
            paired = [
                f"{100 * dp_seeds[s] / np_seeds[s]:.0f} %"
                for s in sorted(dp_seeds)
                if s in np_seeds and np_seeds[s] > 0
            ]
            cohort = a["cohort"]
            lines.append(
                f"| {n} | {a['privacy']} | {cohort} | {a['epsilon_target']:g} | "
                f"{_num(a['mean'])} | {_num(ref)} | "
                f"{'–' if math.isnan(share) else f'{100 * share:.0f} %'} | "
                f"{', '.join(paired) or '–'} |"
            )
            if n == goal_users and float(a["epsilon_target"]) == goal_eps and ref > 0:
                met = "met" if share >= goal_share else "missed"
                verdicts.append(
                    f"Goal (issue 7): at {goal_users} users and ε = {goal_eps:g}, ≥ "
                    f"{100 * goal_share:.0f} % of the non-private HR@10: {met} "
                    f"({100 * share:.0f} % of the mean over {a['seeds']} seed(s), {a['privacy']}, "
                    f"cohort {cohort})."
                )
    if not verdicts:
        verdicts.append(
            f"Goal (issue 7): at {goal_users} users and ε = {goal_eps:g}, ≥ "
            f"{100 * goal_share:.0f} % of the non-private HR@10: not measured by this grid."
        )
    return [*lines, "", *verdicts, ""]


def write_report(
    rows: Sequence[dict[str, Any]],
    path: str,
    *,
    command: str,
    failures: Sequence[str] = (),
    extra_sections: Sequence[str] = (),
) -> None:
    """Write ``report.md``: tables per dataset, findings, report cards and ledger checks."""
    lines = [
        "# privagg sweep report",
        "",
        f"Regenerate with: `{command}`",
        "",
        "Utility is full-ranking HR@10 on the temporal leave-last-out test item; ε is user-level "
        "zero-out (one user's whole history replaced by zero, the user's own noise share kept; "
        "docs/accounting.md). Intervals are 95 % t-intervals over seeds.",
        "",
        "![utility vs ε](tradeoff.png)",
        "",
        "![cost per round](cost.png)",
        "",
    ]
    for ds in sorted({str(r["dataset"]) for r in rows}):
        lines += [f"## {ds}", "", *main_table(rows, ds), "", "What the plots show:", ""]
        lines += _findings(rows, ds)
        lines.append("")
    lines += scaling_section(rows)
    lines += list(extra_sections)
    if failures:
        lines += ["## Failed cells", "", *[f"- {f}" for f in failures], ""]
    lines += [
        "## Per-run privacy report cards and ledger checks (`privagg audit LEDGER`)",
        "",
        "| cell | model | accountant | mechanism | ε spent / target | δ | releases | "
        "noise z (pop / round) | ledger check | ledger final ε |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        card = r.get("report_card") or {}
        check = (
            "OK" if r.get("ledger_ok") in (True, "True") else f"FAIL: {r.get('ledger_problems')}"
        )
        lines.append(
            f"| {r['cell']} | {card.get('model', r.get('model', ''))} | "
            f"{card.get('accountant', '')} | {card.get('mechanism', '')} | "
            f"{_rounded(card.get('epsilon', r.get('epsilon_spent')))} / "
            f"{_rounded(card.get('epsilon_target'), 'g')} | "
            f"{_rounded(card.get('delta'), 'g')} | {card.get('releases', r.get('releases'))} | "
            f"{_fmtz(card.get('popularity_noise_multiplier'))} / "
            f"{_fmtz(card.get('round_noise_multiplier'))} | {check} | "
            f"{_rounded(r.get('ledger_final_epsilon'))} |"
        )
    lines.append("")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    os.replace(tmp, path)


def _fmtz(z: Any) -> str:
    return f"{z:.3g}" if isinstance(z, int | float) else "–"
