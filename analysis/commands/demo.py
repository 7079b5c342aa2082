"""``privagg demo``: the main job on built-in data, with results printed.

By default it trains the federated private recommender on the embedded synthetic
population (3,000 users, ε = 8, distributed discrete Gaussian under SecAgg+, 10% of the
cohort dropping each round) and prints the privacy report card beside the non-private
and popularity baselines; outputs go to ``--out`` (``runs/demo``).

``--secagg-only`` instead runs one secure-aggregation round of the primitives on random
vectors: floats are quantized into Z_{2^32}, masked by real SecAgg (X25519, AES-CTR
masks, Shamir shares under AES-GCM), a tenth of the clients vanish after sharing their
keys, and the unmasked sum is checked against the plaintext sum of the included clients.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import protocols
import secagg


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the main job on built-in data and print the results",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--secagg-only",
        action="store_true",
        help="run one secure-aggregation round on random vectors instead of training",
    )
    parser.add_argument("--out", default="runs/demo", help="output folder of the training demo")
    group = parser.add_argument_group("with --secagg-only")
    group.add_argument("--clients", type=int, default=None, help="number of clients (100)")
    group.add_argument("--dim", type=int, default=None, help="vector length (100000)")
    group.add_argument("--dropout", type=float, default=None, help="fraction dropping (0.1)")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed (data, dropouts)")
    parser.set_defaults(func=run)


# The demo trains on the built-in population with a cohort of 1,000 per round, which keeps
# the whole job under two minutes on a 2-core machine while every round still runs real
# SecAgg+ with dropouts and is charged to the accountant.
DEMO_TRAIN_ARGS = ("--data", "synthetic", "--epsilon", "8", "--cohort", "1000", "--quiet")


SECAGG_ONLY_DEFAULTS = {"clients": 100, "dim": 100_000, "dropout": 0.1}


def run(args: argparse.Namespace) -> int:
    given = [name for name in SECAGG_ONLY_DEFAULTS if getattr(args, name) is not None]
    if args.secagg_only:
        for name, default in SECAGG_ONLY_DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, default)
        return run_secagg_demo(args)
    if given:
        options = ", ".join(f"--{name}" for name in given)
        raise protocols.ConfigError(f"{options} only apply with --secagg-only")
    from analysis.commands import train

    parser = argparse.ArgumentParser(prog="privagg demo")
    train.register(parser.add_subparsers())
    train_args = parser.parse_args(
        ["train", *DEMO_TRAIN_ARGS, "--seed", str(args.seed), "--out", args.out]
    )
    return train.run(train_args)


def run_secagg_demo(args: argparse.Namespace) -> int:
    n, d = args.clients, args.dim
    if n < 3 or d < 1 or not 0.0 <= args.dropout < 0.5:
        raise protocols.ConfigError("demo needs clients >= 3, dim >= 1 and 0 <= dropout < 0.5")
    # Simulation data only: the update values and who drops are not secrets.
    sim = np.random.default_rng(args.seed)
    updates = sim.normal(0.0, 0.05, size=(n, d))
    clip, scale, bits = 1.0, float(2**16), 32
    secagg.check_sum_fits(
        num_summands=n, max_abs_value=secagg.max_quantized_abs(clip, scale), bits=bits
    )
    start = time.perf_counter()
    ring_inputs = np.stack([secagg.quantize(u, clip=clip, scale=scale, bits=bits) for u in updates])
    quantize_s = time.perf_counter() - start

    threshold = n // 2 + 1
    dropped = sorted(sim.choice(n, size=round(args.dropout * n), replace=False).tolist())
    config = protocols.SecAggConfig(n, threshold, bits=bits)
    result = protocols.run_secagg(ring_inputs, config, drop={"mask": dropped}, seed=args.seed)

    decoded = secagg.dequantize(result.total, scale=scale, bits=bits)
    plain = np.clip(updates[list(result.included)], -clip, clip).sum(axis=0)
    error = float(np.max(np.abs(decoded - plain)))
    bound = secagg.sum_error_bound(num_summands=len(result.included), scale=scale)

    print("privagg secure-aggregation demo")
    print(f"  clients {n}, threshold {threshold}, vector length {d}, ring Z_2^{bits}")
    print(f"  dropped after sharing keys: {len(dropped)} clients {dropped[:10]}")
    print(f"  quantized {n} x {d} floats in {quantize_s:.3f} s (clip {clip}, scale 2^16)")
    for stage in result.stages:
        print(
            f"  stage {stage.stage:<9} senders {stage.senders:>4}  "
            f"upload {stage.upload_bytes / 1e6:8.2f} MB  "
            f"client median {stage.client_seconds_median * 1e3:7.2f} ms  "
            f"server {stage.server_seconds * 1e3:8.2f} ms"
        )
    print(
        f"  round: {result.wall_seconds:.2f} s wall, server {result.server_seconds:.3f} s, "
        f"upload {result.upload_bytes_per_client / 1e3:.1f} kB per client"
    )
    print(f"  included {len(result.included)} clients; the server learned only their sum")
    status = "OK" if error <= bound else "MISMATCH"
    print(f"  decoded sum vs plaintext sum: max error {error:.2e} (bound {bound:.2e}) {status}")
    return 0 if error <= bound else 1
