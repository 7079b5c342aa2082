"""Benchmark of the dp mechanisms: exact sampler throughput and distributed-DP encode/decode.

Usage:
    .venv/bin/python benchmarks/bench_dp_mechanisms.py --out DIR [--quick]

Writes DIR/bench_dp_mechanisms.json and prints one line per figure with its goal and the
ratio measured in the same run. All noise comes from the secure generator (AES-256-CTR,
``os.urandom`` keyed), single thread. Goals:

* discrete Gaussian ≥ 10^7 samples/s per core for σ ≥ 10 (issue 4);
* encoding a d-dimensional update ≤ 20 % of one SecAgg client masking step at the same d,
  the masking step being ``secagg.prg.add_masks`` of 1 self mask + k pairwise masks
  (k = 16 for SecAgg+ at ~100-1000 clients, k = 99 for full SecAgg with 100 clients).

Times are the median (and best) of repeats; the machine may be shared, so absolute
figures are noisy — ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import dp
import secagg.prg
from dp.rng import SecureRng

DG_GOAL = 1e7
ENCODE_SHARE_GOAL = 0.2


def timed(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, best) seconds per call after one warm-up."""
    function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), min(samples)


def sampler_figures(quick: bool) -> dict[str, Any]:
    rng = SecureRng()
    n = 200_000 if quick else 2_000_000
    repeats = 2 if quick else 5
    cases: list[tuple[str, Callable[[], object], bool]] = [
        ("uniform_words", lambda: rng.words(n), False),
        ("discrete_gaussian_sigma10", lambda: dp.discrete_gaussian(100, n, rng), True),
        ("discrete_gaussian_sigma100", lambda: dp.discrete_gaussian(10_000, n, rng), True),
        ("discrete_gaussian_sigma1e4", lambda: dp.discrete_gaussian(10**8, n, rng), True),
        (
            "discrete_gaussian_var41_over_10",
            lambda: dp.discrete_gaussian(Fraction(41, 10), n, rng),
            False,
        ),
        ("discrete_laplace_scale10", lambda: dp.discrete_laplace(10, n, rng), False),
        ("poisson_lambda50", lambda: dp.poisson(50, n, rng), False),
        ("skellam_var100", lambda: dp.skellam(100, n, rng), False),
        ("skellam_var1e8", lambda: dp.skellam(10**8, n, rng), False),
    ]
    out: dict[str, Any] = {}
    for name, call, has_goal in cases:
        median, best = timed(call, repeats)
        rate, best_rate = n / median, n / best
        entry: dict[str, Any] = {"samples_per_s": rate, "best_samples_per_s": best_rate}
        line = f"{name}: {rate / 1e6:.2f} M samples/s median, {best_rate / 1e6:.2f} best"
        if has_goal:
            entry["goal_samples_per_s"] = DG_GOAL
            entry["ratio_to_goal"] = rate / DG_GOAL
            line += f" | goal >= {DG_GOAL / 1e6:.0f} M/s | ratio {rate / DG_GOAL:.2f}"
            line += " (met)" if rate >= DG_GOAL else " (NOT met)"
        print(line, flush=True)
        out[name] = entry
    return out


def pipeline_figures(quick: bool) -> dict[str, Any]:
    rng = SecureRng()
    repeats = 3 if quick else 7
    out: dict[str, Any] = {}
    for d in (100_000, 311_744):
        plan = dp.plan_distributed_dp(
            dimension=d,
            expected_contributors=100,
            min_contributors=80,
            clip_norm=1.0,
            noise_multiplier=1.0,
            bits=20,
        )
        update = np.random.default_rng(0).normal(size=d)
        encoded, _ = dp.encode(update, plan, rotation_seed=1, rng=rng)
        enc_med, enc_best = timed(
            partial(dp.encode, update, plan, rotation_seed=1, rng=rng), repeats
        )
        shares = [dp.PresampledNoise(plan, rng) for _ in range(repeats + 1)]
        pre_med, pre_best = timed(
            lambda: dp.encode(update, plan, rotation_seed=1, rng=rng, noise=shares.pop()),  # noqa: B023
            repeats,
        )
        dec_med, dec_best = timed(
            partial(dp.decode, encoded, plan, rotation_seed=1, num_contributors=100), repeats
        )
        entry: dict[str, Any] = {
            "padded_dimension": plan.padded_dimension,
            "encode_ms": enc_med * 1e3,
            "encode_best_ms": enc_best * 1e3,
            "encode_presampled_noise_ms": pre_med * 1e3,
            "encode_presampled_noise_best_ms": pre_best * 1e3,
            "decode_ms": dec_med * 1e3,
            "decode_best_ms": dec_best * 1e3,
        }
        print(
            f"encode_d{d}: {enc_med * 1e3:.1f} ms median, {enc_best * 1e3:.1f} best "
            f"(padded to {plan.padded_dimension}); with presampled noise {pre_med * 1e3:.1f} ms; "
            f"decode {dec_med * 1e3:.1f} ms median",
            flush=True,
        )
        acc = np.zeros(d, dtype=np.uint32)
        for label, masks in (("secaggplus_k16", 17), ("secagg_full_n100", 100)):
            seeds = [os.urandom(32) for _ in range(masks)]
            signs = [1] * masks
            mask_med, _ = timed(partial(secagg.prg.add_masks, acc, seeds, signs, bits=20), repeats)
            share = enc_med / mask_med
            entry[f"masking_{label}_ms"] = mask_med * 1e3
            entry[f"encode_share_of_{label}"] = share
            entry[f"encode_presampled_share_of_{label}"] = pre_med / mask_med
            verdict = "met" if share <= ENCODE_SHARE_GOAL else "NOT met"
            print(
                f"encode_vs_masking_d{d}_{label}: masking {mask_med * 1e3:.1f} ms, encode/mask "
                f"{share:.2f} (presampled noise {pre_med / mask_med:.2f}) | goal <= "
                f"{ENCODE_SHARE_GOAL} | ratio {share / ENCODE_SHARE_GOAL:.2f} ({verdict})",
                flush=True,
            )
        out[f"d{d}"] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = {
        "benchmark": "bench_dp_mechanisms",
        "quick": args.quick,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "samplers": sampler_figures(args.quick),
        "pipeline": pipeline_figures(args.quick),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_dp_mechanisms.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
