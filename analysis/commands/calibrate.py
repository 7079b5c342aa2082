"""``privagg calibrate``: solve for the one setting you did not give.

Give a target ε and δ plus two of --noise-multiplier, --sampling-rate, --steps; privagg
solves for the third: the smallest noise multiplier, the largest sampling rate (cohort size
= rate × population) or the largest number of rounds whose ε does not exceed the target.
Answers never overshoot: the returned setting's ε was computed and is ≤ the target.
Impossible requests are refused (exit 2): a target that not even one round meets, a cohort
of less than one device, a population below 1. A warning says when δ ≥ 1/N.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from analysis.commands.epsilon import check_steps, overflow_error
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
    if args.steps is not None:
        check_steps(args.steps)
    if args.population is not None and args.population < 1:
        raise DPValueError(f"--population must be at least 1, got {args.population}")
    if args.population is not None and args.delta > 0 and args.delta * args.population >= 1:
        print(
            f"privagg calibrate: warning: δ = {args.delta:g} ≥ 1/N = 1/{args.population}: a "
            "mechanism may then reveal one user's data outright with probability δ; choose "
            "δ ≪ 1/N",
            file=sys.stderr,
        )
    try:
        return _solve(args, solve, given)
    except OverflowError as exc:
        raise overflow_error(exc) from None


def _solve(args: argparse.Namespace, solve: str, given: dict[str, float | int | None]) -> int:
    import dp

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
        if value < 1:
            one = dp.epsilon(
                noise_multiplier=args.noise_multiplier,
                sampling_rate=args.sampling_rate,
                steps=1,
                delta=args.delta,
                accountant=args.accountant,
            )
            raise DPValueError(
                f"no number of rounds meets ε ≤ {args.target_epsilon:g}: one round already "
                f"spends ε = {one:.4g} at δ = {args.delta:g}; raise --noise-multiplier or "
                "lower --sampling-rate"
            )
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
    if cohort is not None and cohort < 1:
        raise DPValueError(
            f"the sampling rate that meets ε ≤ {args.target_epsilon:g} is "
            f"{float(given['sampling_rate'] or 0):.3g}: an expected cohort of {cohort:.3g} of "
            f"{args.population} devices, less than one; raise --noise-multiplier or lower "
            "--steps"
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
