"""``privagg epsilon``: ε of a Poisson-subsampled Gaussian mechanism, instantly.

q is the per-round sampling rate (clients per round / population, or batch / dataset),
T the number of rounds (steps, 1 to 10^9), Z the noise multiplier (noise std / L2 clip).
The default PLD accountant prints a certified bracket [ε_lower, ε_upper]; ε_upper is the
guarantee, under add/remove-one adjacency (one user's or one record's data, whichever the
sampled unit is).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from dp.errors import DPValueError

# The accountants are exact well beyond any training run; past 10^9 steps the PLD
# discretisation overflows floating point, so the CLI states its limit instead.
MAX_STEPS = 10**9


def check_steps(steps: int, flag: str = "--steps") -> None:
    """Refuse a step count the accountants cannot answer (one line, exit 2)."""
    if steps < 1:
        raise DPValueError(f"{flag} must be at least 1, got {steps}")
    if steps > MAX_STEPS:
        raise DPValueError(f"{flag} {steps} exceeds the supported limit of 10^9 steps")


def overflow_error(exc: OverflowError) -> DPValueError:
    return DPValueError(
        f"the accountant overflowed at these settings ({exc}); the supported range is "
        "1 to 10^9 steps"
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "epsilon",
        help="ε of a Poisson-subsampled Gaussian (noise multiplier, sampling rate, steps, δ)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--noise-multiplier", "-z", type=float, required=True, metavar="Z")
    parser.add_argument("--sampling-rate", "-q", type=float, required=True, metavar="Q")
    parser.add_argument("--steps", "-T", type=int, required=True, metavar="T")
    parser.add_argument("--delta", "-d", type=float, required=True, metavar="D")
    parser.add_argument(
        "--accountant", choices=("pld", "rdp"), default="pld", help="backend (default: pld)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dp

    check_steps(args.steps)
    start = time.perf_counter()
    try:
        bracket = dp.epsilon_bracket(
            noise_multiplier=args.noise_multiplier,
            sampling_rate=args.sampling_rate,
            steps=args.steps,
            delta=args.delta,
            accountant=args.accountant,
        )
    except OverflowError as exc:
        raise overflow_error(exc) from None
    seconds = time.perf_counter() - start
    if args.json:
        print(
            json.dumps(
                {
                    "epsilon": bracket.epsilon_upper,
                    "epsilon_lower": bracket.epsilon_lower,
                    "delta": bracket.delta,
                    "noise_multiplier": args.noise_multiplier,
                    "sampling_rate": args.sampling_rate,
                    "steps": args.steps,
                    "accountant": bracket.backend,
                    "detail": bracket.detail,
                    "seconds": seconds,
                }
            )
        )
        return 0
    print(f"ε = {bracket.epsilon_upper:.6g}  (δ = {bracket.delta:g}, {bracket.backend})")
    if bracket.backend == "pld":
        print(f"certified bracket: [{bracket.epsilon_lower:.6g}, {bracket.epsilon_upper:.6g}]")
    if bracket.detail:
        print(bracket.detail)
    print(f"computed in {seconds * 1000:.0f} ms")
    return 0
