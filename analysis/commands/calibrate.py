"""``privagg calibrate``: solve for the one setting you did not give.

Give a target ε and δ plus two of --noise-multiplier, --sampling-rate, --steps; privagg
solves for the third: the smallest noise multiplier, the largest sampling rate (cohort size
= rate × population) or the largest number of rounds whose ε does not exceed the target.
Answers never overshoot: the returned setting's ε was computed and is ≤ the target.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import dp
from dp.errors import DPValueError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="noise multiplier, sampling rate or rounds for a target (ε, δ)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--target-epsilon", "-e", type=float, required=True, metavar="E")
    parser.add_argument("--delta", "-d", type=float, required=True, metavar="D")
    parser.add_argument("--noise-multiplier", "-z", type=float, metavar="Z")
    parser.add_argument("--sampling-rate", "-q", type=float, metavar="Q")
    parser.add_argument("--steps", "-T", type=int, metavar="T")
    parser.add_argument("--population", type=int, help="also print the cohort size q × N")
    parser.add_argument(
        "--accountant", choices=("pld", "rdp"), default="pld", help="backend (default: pld)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    given = {
        "noise_multiplier": args.noise_multiplier,
        "sampling_rate": args.sampling_rate,
        "steps": args.steps,
    }
    missing = [k for k, v in given.items() if v is None]
    if len(missing) != 1:
        raise DPValueError(
            "give exactly two of --noise-multiplier, --sampling-rate, --steps "
            "(the third is solved for)"
        )
    solve = missing[0]
    common = {
        "delta": args.delta,
        "target_epsilon": args.target_epsilon,
        "accountant": args.accountant,
    }
    start = time.perf_counter()
    if solve == "noise_multiplier":
        value: float = dp.calibrate_noise(
            sampling_rate=args.sampling_rate, steps=args.steps, **common
        )
        given["noise_multiplier"] = value
    elif solve == "sampling_rate":
        value = dp.max_sampling_rate(
            noise_multiplier=args.noise_multiplier, steps=args.steps, **common
        )
        given["sampling_rate"] = value
    else:
        value = dp.max_steps(
            noise_multiplier=args.noise_multiplier, sampling_rate=args.sampling_rate, **common
        )
        given["steps"] = value
    seconds = time.perf_counter() - start
    achieved = 0.0
    if given["steps"] and given["sampling_rate"] and given["noise_multiplier"]:
        achieved = dp.epsilon(
            noise_multiplier=float(given["noise_multiplier"]),
            sampling_rate=float(given["sampling_rate"]),
            steps=int(given["steps"]),
            delta=args.delta,
            accountant=args.accountant,
        )
    cohort = (
        None
        if args.population is None or given["sampling_rate"] is None
        else float(given["sampling_rate"]) * args.population
    )
    if args.json:
        out = {
            "solved_for": solve,
            **given,
            "epsilon": achieved,
            "target_epsilon": args.target_epsilon,
            "delta": args.delta,
            "accountant": args.accountant,
            "expected_cohort": cohort,
            "seconds": seconds,
        }
        print(json.dumps(out))
        return 0
    label = {
        "noise_multiplier": "noise multiplier",
        "sampling_rate": "sampling rate",
        "steps": "steps (rounds)",
    }[solve]
    shown = f"{value:.6g}" if solve != "steps" else f"{int(value)}"
    print(f"{label} = {shown}")
    print(
        f"  ε = {achieved:.6g} ≤ target {args.target_epsilon:g} at δ = {args.delta:g} "
        f"({args.accountant}; z={float(given['noise_multiplier'] or 0):.6g}, "
        f"q={float(given['sampling_rate'] or 0):.6g}, T={given['steps']})"
    )
    if cohort is not None:
        print(f"  expected cohort = {cohort:.1f} of {args.population}")
    print(f"  solved in {seconds:.2f} s")
    return 0
