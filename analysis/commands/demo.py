"""``privagg demo``: the main job on built-in data, with results printed.

By default it trains the federated private recommender on the embedded synthetic
population (3,000 users, ε = 8, δ = 1e-4, distributed discrete Gaussian under SecAgg+: one
popularity release from every device, then 5 FCF rounds of about 250 Poisson-sampled
devices, 5% of each cohort dropping), shows ε spent and HR@10 after every release, and
prints the privacy report card beside the non-private and DP popularity baselines and
central ALS. Outputs (metrics.csv, ledger.sqlite, summary.json, training.png) go to --out,
by default a fresh folder under runs/; ``privagg audit OUT/ledger.sqlite`` verifies the
ledger.

``--secagg-only`` instead runs one secure-aggregation round of the primitives on random
vectors: floats are quantized into Z_{2^32}, masked by real SecAgg (X25519, AES-CTR
masks, Shamir shares under AES-GCM), a tenth of the clients vanish after sharing their
keys, and the unmasked sum is checked against the plaintext sum of the included clients.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from analysis.outputs import fresh_out


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
    parser.add_argument(
        "--out", default=None, help="output folder of the training demo (a fresh runs/demo-<time>)"
    )
    group = parser.add_argument_group("with --secagg-only")
    group.add_argument("--clients", type=int, default=None, help="number of clients (100)")
    group.add_argument("--dim", type=int, default=None, help="vector length (100000)")
    group.add_argument("--dropout", type=float, default=None, help="fraction dropping (0.1)")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed (data, dropouts)")
    parser.set_defaults(func=run)


# The demo's job. Where its time goes (cProfile, 2-core machine): real SecAgg+ key agreement
# (X25519 + HKDF per graph neighbour) is ~90 % of it, and the popularity release, which every
# one of the 3,000 devices joins, is most of that. 3,000 users keep the FCF residual of the
# auto model (it is added under DP from 3,000 users); a cohort of 250 per FCF round and a 5%
# dropout rate (SecAgg+ degree 32 instead of 52 at 10%) bring the job from ~100 s to under a
# minute while every release still runs SecAgg+ with dropouts, distributed DP and the ledger.
DEMO_TRAIN_ARGS = (
    "--data",
    "synthetic",
    "--epsilon",
    "8",
    "--cohort",
    "250",
    "--dropout",
    "0.05",
)


SECAGG_ONLY_DEFAULTS = {"clients": 100, "dim": 100_000, "dropout": 0.1}


def _single_threaded_blas() -> None:
    """The demo is one process whose linear algebra is small (32 × 32 ALS solves, 4-dim
    FCF factors): OpenBLAS threads only contend with it for the two cores (measured: the
    ALS baseline took half the CPU time single-threaded). Set before numpy loads BLAS; an
    explicit OPENBLAS_NUM_THREADS / OMP_NUM_THREADS in the environment wins."""
    if "numpy" not in sys.modules:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
            os.environ.setdefault(name, "1")


def run(args: argparse.Namespace) -> int:
    _single_threaded_blas()
    import protocols

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
    out = args.out if args.out is not None else fresh_out("demo")
    train_args = parser.parse_args(
        ["train", *DEMO_TRAIN_ARGS, "--seed", str(args.seed), "--out", out]
    )
    return train.run(train_args)


def run_secagg_demo(args: argparse.Namespace) -> int:
    import numpy as np

    import protocols
    import secagg

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
