"""Total bytes vs HR@10 for the distributed-DP encodings (ring width, DDG vs Skellam).

Every run trains the ``auto`` model (on MovieLens 100K under DP: the popularity release plus
the on-device feature model) at ε = 8 through the real SecAgg+ protocol, with secure noise,
and reports the bytes the protocol metered (upload and download of every stage, every
device). Variants: the default 32-bit ring, narrower rings, Skellam for the float releases,
and — as the lever that is *not* the encoding — SecAgg+ planned for a lower dropout rate (a
sparser graph). The popularity release is integer counts (exact Skellam, no rotation) in
every variant whose ring holds the counts; the float releases (FCF rounds, when the model
has them) use the rotated encoding whose granularity the planner fits to the ring.

Beside the measured bytes the study reports, per device, the masked-input message as
``protocols.messages`` serializes it today (rings up to 32 bits travel as 4-byte words) and a
labelled **projection** of the totals if that message packed ``ceil(bits/8)`` bytes per
coordinate (not implemented in ``protocols``), plus a per-stage breakdown of one SecAgg+
round of the full population, which shows where the bytes go.

Goal (issue 10): the same HR@10 as the default (within one standard error) with ≥ 2x fewer
total bytes. Writes ``runs.csv``, ``summary.csv``, ``stages.csv``, ``communication.png`` and
``report_communication.md``.

Run: ``privagg study communication``.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

import protocols
import secagg
from dp.errors import PlanningError
from recsys.data import Ratings, load_ratings, synthetic_ratings
from recsys.errors import ConfigError
from recsys.features import item_features
from recsys.recommender import ModelConfig, choose_model_kind
from recsys.split import Split, leave_last_out
from recsys.trainer import TrainConfig, Trainer, TrainResult

__all__ = [
    "ML100K",
    "Variant",
    "load_population",
    "main",
    "mean_se",
    "run",
    "write_csv",
]

ML100K = Path(
    os.environ.get(
        "PRIVAGG_ML100K", str(Path(__file__).resolve().parents[3] / "shared/data/ml-100k")
    )
)
EPSILON = 8.0


def load_population(quick: bool) -> tuple[Ratings, str]:
    """MovieLens 100K when present (its label), else a seeded synthetic population."""
    if (ML100K / "u.data").exists():
        return load_ratings(ML100K), "MovieLens 100K"
    users, items = (300, 200) if quick else (943, 1682)
    return synthetic_ratings(users, items, seed=0), f"SYNTHETIC ({users} users)"


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (nan for a single value: one seed has none)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else math.nan
    return float(arr.mean()), se


def plus_minus(mean: float, spread: float, fmt: str = ".4f") -> str:
    """``mean ± spread`` for a report; a spread one seed cannot give is said, not shown as 0."""
    if not math.isfinite(spread):
        return f"{mean:{fmt}} (1 seed)"
    return f"{mean:{fmt}} ± {spread:{fmt}}"


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows (dicts with the same keys) as CSV; floats with 6 significant digits."""
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})


@dataclass(frozen=True)
class Variant:
    """One encoding / protocol setting of the comparison."""

    label: str
    bits: int = 32
    mechanism: str = "discrete_gaussian"
    dropout: float = 0.1


VARIANTS: tuple[Variant, ...] = (
    Variant("default: 32-bit ring, SecAgg+ for 10% dropout"),
    Variant("20-bit ring", bits=20),
    Variant("16-bit ring", bits=16),
    Variant("16-bit ring, Skellam float releases", bits=16, mechanism="skellam"),
    Variant("32-bit ring, SecAgg+ for 2% dropout", dropout=0.02),
    Variant("16-bit ring, SecAgg+ for 2% dropout", bits=16, dropout=0.02),
)


def _train(
    split: Split, feats: np.ndarray, v: Variant, seed: int, kind: str
) -> tuple[TrainResult, int]:
    """The run and the byte saving (total) if every masked input packed its ring."""
    trainer = Trainer(split, feats, _config(v, seed, kind))
    result = trainer.run()
    return result, _packed_saving(trainer, result, v.bits)


def _config(v: Variant, seed: int, kind: str) -> TrainConfig:
    return TrainConfig(
        privacy="distributed",
        epsilon=EPSILON,
        rounds=5,
        secagg="plus",
        dropout=v.dropout,
        seed=seed,
        eval_every=0,
        mechanism=v.mechanism,  # type: ignore[arg-type]
        bits=v.bits,
        model=ModelConfig(kind=kind),  # type: ignore[arg-type]
    )


def _packed_saving(trainer: Trainer, result: TrainResult, bits: int) -> int:
    """Bytes saved if every masked input packed ceil(bits/8) bytes per coordinate instead of
    4 (a projection): per release, the vector length of its encoding times the senders."""
    per_word = 4 - math.ceil(bits / 8) if bits <= 32 else 0
    tasks = {task.name: task for task, _ in trainer.releases()}
    saving = 0
    for r in result.records:
        task = tasks[r.task]
        length, _ = trainer.channel.masked_input_size(task.upload_dim, r.sampled, task.count_cap)
        saving += length * per_word * r.included
    return saving


def _stages(n: int, length: int, dropout: float) -> list[dict[str, Any]]:
    """Per-client bytes of each stage of one SecAgg+ round of ``n`` devices sending
    ``length`` ring coordinates each."""
    config = protocols.SecAggConfig.plus(n, dropout_rate=dropout, bits=32)
    ring = np.zeros((n, length), dtype=secagg.ring_dtype(32))
    result = protocols.run_secagg(ring, config, seed=1)
    return [
        {
            "dropout_planned": dropout,
            "length": length,
            "neighbors": config.neighbors,
            "stage": s.stage,
            "up_per_client": s.upload_bytes / n,
            "down_per_client": s.download_bytes / n,
        }
        for s in result.stages
    ]


def first_release_length(split: Split, feats: np.ndarray, kind: str) -> int:
    """Ring coordinates of a device's masked input in the default variant's first release."""
    trainer = Trainer(split, feats, _config(VARIANTS[0], 0, kind))
    task, _ = trainer.releases()[0]
    n = split.train.num_users
    return trainer.channel.masked_input_size(task.upload_dim, n, task.count_cap)[0]


def narrowest_ring(split: Split, feats: np.ndarray, kind: str) -> int | None:
    """The narrowest ring (bits) the planner accepts for this population at ε = 8."""
    for bits in range(8, 33):
        try:
            _ = Trainer(split, feats, replace(_config(VARIANTS[0], 0, kind), bits=bits))
        except (PlanningError, ConfigError):  # refused, or cannot reach ε at all
            continue
        return bits
    return None


def run(out_dir: str | os.PathLike[str], *, quick: bool = False) -> dict[str, Any]:
    """Run the comparison and write the outputs into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ratings, label = load_population(quick)
    split = leave_last_out(ratings)
    feats = item_features(ratings)
    kind = choose_model_kind("distributed", ratings.num_users)
    seeds = (0,) if quick else (0, 1, 2)
    variants = VARIANTS[:3] + VARIANTS[-2:-1] if quick else VARIANTS
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    for v in variants:
        for seed in seeds:
            t0 = time.perf_counter()
            res, saving = _train(split, feats, v, seed, kind)
            comm = res.report_card["communication"]
            runs.append(
                {
                    "variant": v.label,
                    "bits": v.bits,
                    "mechanism": v.mechanism,
                    "dropout_planned": v.dropout,
                    "seed": seed,
                    "hr10": res.final.hr,
                    "ndcg10": res.final.ndcg,
                    "epsilon": res.report_card["epsilon"],
                    "releases": len(res.records),
                    "bytes_up_total": comm["bytes_up_total"],
                    "bytes_down_total": comm["bytes_down_total"],
                    "bytes_total": comm["bytes_total"],
                    "bytes_per_client_round": comm["bytes_up_per_client_round"]
                    + comm["bytes_down_per_client_round"],
                    "bytes_total_if_packed": comm["bytes_total"] - saving,
                    "seconds": time.perf_counter() - t0,
                }
            )
            print(f"  {v.label} seed {seed}: HR@10 {res.final.hr:.4f}, {comm['bytes_total']:,} B")
    summary: list[dict[str, Any]] = []
    for v in variants:
        rows = [r for r in runs if r["variant"] == v.label]
        hr, hr_se = mean_se([r["hr10"] for r in rows])
        summary.append(
            {
                "variant": v.label,
                "bits": v.bits,
                "mechanism": v.mechanism,
                "dropout_planned": v.dropout,
                "hr10": hr,
                "hr10_se": hr_se,
                "ndcg10": mean_se([r["ndcg10"] for r in rows])[0],
                "bytes_total": float(np.mean([r["bytes_total"] for r in rows])),
                "bytes_per_client_round": float(
                    np.mean([r["bytes_per_client_round"] for r in rows])
                ),
                "bytes_total_if_packed": float(np.mean([r["bytes_total_if_packed"] for r in rows])),
            }
        )
    base = summary[0]
    for s in summary:
        s["bytes_ratio_vs_default"] = base["bytes_total"] / s["bytes_total"]
        s["packed_ratio_vs_default"] = base["bytes_total"] / s["bytes_total_if_packed"]
        # "the same HR@10 within one standard error": not lower than the default by more
        # than one SE (a variant that scores higher is not a loss)
        spread = max((x for x in (base["hr10_se"], s["hr10_se"]) if math.isfinite(x)), default=0.0)
        s["hr_within_1se"] = s["hr10"] >= base["hr10"] - spread
        s["meets_goal"] = bool(s["hr_within_1se"] and s["bytes_ratio_vs_default"] >= 2.0)
    n = ratings.num_users
    # the first release's vector (the popularity counts under the auto model's DP kind)
    length = first_release_length(split, feats, kind)
    stages = _stages(n, length, 0.1) + _stages(n, length, 0.02)
    narrowest = narrowest_ring(split, feats, kind)
    write_csv(out / "runs.csv", runs)
    write_csv(out / "summary.csv", summary)
    write_csv(out / "stages.csv", stages)
    _plot(out / "communication.png", summary, stages, label)
    seconds = time.perf_counter() - started
    _report(
        out / "report_communication.md",
        summary,
        stages,
        label,
        kind,
        seeds,
        seconds,
        n,
        narrowest,
    )
    return {"summary": summary, "stages": stages, "seconds": seconds, "narrowest": narrowest}


def _plot(
    path: Path, summary: list[dict[str, Any]], stages: list[dict[str, Any]], label: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    for s in summary:
        marker = "s" if s["mechanism"] == "skellam" else "o"
        color = "tab:red" if s["dropout_planned"] < 0.1 else "tab:blue"
        ax.errorbar(s["bytes_total"] / 1e6, s["hr10"], yerr=s["hr10_se"], fmt=marker, color=color)
        ax.annotate(
            s["variant"].replace("default: ", "").replace(", SecAgg+ for ", "\n"),
            (s["bytes_total"] / 1e6, s["hr10"]),
            fontsize=6,
            xytext=(4, 2),
            textcoords="offset points",
        )
        ax.plot(s["bytes_total_if_packed"] / 1e6, s["hr10"], "x", color="gray")
    ax.set_xlabel("total bytes of the run, MB (x: projection with packed rings)")
    ax.set_ylabel("HR@10 (mean ± SE over seeds)")
    ax.set_title(f"{label}, ε = {EPSILON:g}: bytes vs HR@10", fontsize=9)
    names = [s["stage"] for s in stages if s["dropout_planned"] == 0.1]
    x = np.arange(len(names))
    for k, (p, color) in enumerate(((0.1, "tab:blue"), (0.02, "tab:red"))):
        rows = [s for s in stages if s["dropout_planned"] == p]
        up = [r["up_per_client"] / 1e3 for r in rows]
        down = [r["down_per_client"] / 1e3 for r in rows]
        ax2.bar(x + k * 0.4, up, 0.38, color=color, label=f"up, planned dropout {p:g}")
        ax2.bar(x + k * 0.4, down, 0.38, bottom=up, color=color, alpha=0.45, label="down")
    ax2.set_xticks(x + 0.2, names)
    ax2.set_ylabel("kB per device")
    ax2.set_title(
        f"one SecAgg+ round of all {stages[0]['neighbors']}-neighbour devices", fontsize=9
    )
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _report(
    path: Path,
    summary: list[dict[str, Any]],
    stages: list[dict[str, Any]],
    label: str,
    kind: str,
    seeds: Sequence[int],
    seconds: float,
    n: int,
    narrowest: int | None,
) -> None:
    base = summary[0]
    lines = [
        "# Communication budget: total bytes vs HR@10",
        "",
        f"Data: {label}; model `{kind}` (the `auto` choice under DP), ε = {EPSILON:g}, "
        f"δ = 1e-4, secure noise, SecAgg+ through `protocols.run_secagg`; seeds {list(seeds)} "
        f"(the seed varies the DP noise only). Bytes are what the protocol metered: every "
        f"stage, up and down, all {n} devices. Runtime {seconds:.0f} s.",
        "",
        "| variant | HR@10 (± SE) | NDCG@10 | bytes / device / release | total MB | "
        "x fewer vs default | total MB if packed (projection) | HR not lower (1 SE) | goal met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines.extend(
        f"| {s['variant']} | {plus_minus(s['hr10'], s['hr10_se'])} | {s['ndcg10']:.4f} | "
        f"{s['bytes_per_client_round']:,.0f} | {s['bytes_total'] / 1e6:.1f} | "
        f"{s['bytes_ratio_vs_default']:.2f} | {s['bytes_total_if_packed'] / 1e6:.1f} "
        f"({s['packed_ratio_vs_default']:.2f}x) | {'yes' if s['hr_within_1se'] else 'no'} | "
        f"{'yes' if s['meets_goal'] else 'no'} |"
        for s in summary
    )
    lines += [
        "",
        "Per-stage bytes of one SecAgg+ round of the whole population (32-bit ring, "
        f"{stages[0]['length']} coordinates: the first release's masked input):",
        "",
        "| planned dropout | neighbours | stage | up / device | down / device |",
        "|---|---|---|---|---|",
    ]
    for s in stages:
        lines.append(
            f"| {s['dropout_planned']:g} | {s['neighbors']} | {s['stage']} | "
            f"{s['up_per_client']:,.0f} | {s['down_per_client']:,.0f} |"
        )
    best = max(summary, key=lambda s: s["bytes_ratio_vs_default"] if s["hr_within_1se"] else 0)
    encodings = [s for s in summary if s["dropout_planned"] == base["dropout_planned"]]
    best_enc = max(e["bytes_ratio_vs_default"] for e in encodings)
    best_packed = max(e["packed_ratio_vs_default"] for e in encodings)
    same_hr = [e["variant"] for e in encodings[1:] if e["hr_within_1se"]]
    worse_hr = [e["variant"] for e in encodings[1:] if not e["hr_within_1se"]]
    st = [x for x in stages if x["dropout_planned"] == 0.1]
    total_pc = sum(x["up_per_client"] + x["down_per_client"] for x in st)
    share_down = next(x["down_per_client"] for x in st if x["stage"] == "share")
    mask_up = next(x["up_per_client"] for x in st if x["stage"] == "mask")
    k = st[0]["neighbors"] or n
    spread = max(abs(e["hr10"] - base["hr10"]) for e in summary)
    user_se = math.sqrt(base["hr10"] * (1 - base["hr10"]) / n)
    # projection: a directory of the k neighbours' keys instead of all n devices' keys
    trimmed = total_pc - share_down * (1.0 - min(1.0, k / n))
    lines += [
        "",
        "## Reading",
        "",
        f"* **Where the bytes go** (one SecAgg+ round, {n} devices, planned dropout 0.1): "
        f"{total_pc / 1e3:.1f} kB per device, of which the masked input is "
        f"{mask_up / 1e3:.1f} kB ({mask_up / total_pc:.0%}) and the share-stage download "
        f"{share_down / 1e3:.1f} kB ({share_down / total_pc:.0%}): the server sends every "
        "device the key directory of *all* devices (`protocols.server._close_advertise`; "
        "the session id hashes the whole directory), O(n) per device even under SecAgg+ "
        "where a device needs only its neighbours' keys. The rest is secret sharing and "
        "unmasking, which grows with the graph degree.",
        f"* **Encodings alone do not cut the bytes**: the narrower rings change the measured "
        f"total by at most {best_enc:.2f}x, because `protocols.messages` sends every ring of up "
        f"to 32 bits as 4-byte words. Even packed to ceil(bits/8) bytes (the projection) the "
        f"best encoding saves {best_packed:.2f}x, since the masked input is a small share.",
        "* HR@10 not lower than the default by more than one SE: "
        + (", ".join(same_hr) if same_hr else "none")
        + "; lower: "
        + (", ".join(worse_hr) if worse_hr else "none")
        + f". With three seeds these flags can flip between regenerations of the study: "
        f"every variant's HR@10 lies within {spread:.4f} of the default, "
        f"{'below' if spread < user_se else 'above'} the per-user standard error of HR@10 "
        f"(√(h(1−h)/n) = {user_se:.4f}). "
        "Count releases lose nothing to a narrow ring (no rotation, no rounding: the ring "
        "only has to hold the counts and the noise); float releases are planned with a "
        "discretization inflation ≤ 1.25 and narrower rings are refused with the reason: "
        f"the narrowest ring accepted here is {narrowest} bits. "
        "The flags use the seed-to-seed standard error of the mean (the DP noise).",
        "* The SecAgg+ degree is set by the dropout rate the graph must tolerate: planning "
        "for 2% instead of 10% dropout shrinks the per-neighbour stages (best variant "
        f"keeping HR@10: '{best['variant']}', {best['bytes_ratio_vs_default']:.2f}x fewer "
        "bytes). That is a protocol parameter, not an encoding, and only safe when devices "
        "really drop that rarely (see the device-simulation study), otherwise rounds abort.",
        f"* **Goal (≥ 2x fewer bytes at the same HR@10): "
        f"{'met by ' + best['variant'] if best['meets_goal'] else 'not met'}**"
        + (
            ""
            if best["meets_goal"]
            else ". What would reach it lies in `protocols`, not in the encoding: send each "
            "device only its neighbours' keys (with a session binding that does not need the "
            "whole directory) — a projection (not implemented) of "
            f"{trimmed / 1e3:.1f} kB per device, {total_pc / trimmed:.1f}x fewer — and pack "
            "rings of ≤ 16/24 bits into 2/3 bytes per coordinate."
        ),
        "* Closed-form local solves: the FCF device step already solves the user factor in "
        "closed form; the federated-ALS alternative (upload per-item Gram statistics) cuts "
        "rounds but uploads (d²+d)·items values per round instead of (d+1)·items, and under "
        "DP on 943 users it lowered HR@10 (research notes, recsys_levers.md), so it is not "
        "offered as a byte-saving option.",
        "",
        "Regenerate: `privagg study communication` (all four: `privagg study all`).",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    from analysis.studies import main

    raise SystemExit(main("communication"))
