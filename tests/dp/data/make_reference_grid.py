#!/usr/bin/env python3
"""Generate ``reference_grid.json``: reference ε for the Poisson-subsampled Gaussian.

Dev-only script (uses dp-accounting and Opacus, which privagg's runtime never imports for
this). Grid: q ∈ {0.001, 0.01, 0.1, 1}, σ ∈ {0.5, 0.8, 1, 2, 5}, T ∈ {1, 10, 100, 1000,
10000}, δ ∈ {1e-5, 1e-6} (200 rows), add-or-remove-one neighbours, sensitivity 1.

Columns per row:
- ``dpacc_pld``: dp-accounting 0.6 ``PLDAccountant`` (pessimistic, connect-the-dots,
  value_discretization_interval 1e-4, or 1e-3 / 1e-2 where the finer one exceeded a
  6 GB / 600 s child-process cap — recorded in ``dpacc_pld_vdi``): the tightness reference;
- ``opacus_rdp``: Opacus ``RDPAccountant`` with its default orders;
- ``opacus_prv``: Opacus ``PRVAccountant`` (eps_error 0.01, upper end), run in a child
  process under a memory cap and a timeout, because it can exhaust memory or hang; a failure
  is recorded in ``opacus_prv_error`` instead of a number;
- ``exact_gaussian`` (q = 1 only): the closed form of Balle & Wang 2018,
  δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2), μ = √T/σ, solved by bisection in log space.

Usage (about 15-25 minutes on one core; resumable through the cache file):
    python tests/dp/data/make_reference_grid.py --cache /tmp/grid_cache.jsonl \
        --out tests/dp/data/reference_grid.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

QS = (0.001, 0.01, 0.1, 1.0)
SIGMAS = (0.5, 0.8, 1.0, 2.0, 5.0)
STEPS = (1, 10, 100, 1000, 10000)
DELTAS = (1e-5, 1e-6)
PLD_VDIS = (1e-4, 1e-3, 1e-2)  # finest first; coarser only if the finer one fails
PLD_TIMEOUT_S = 600
PLD_MEMORY_BYTES = 6 * 1024**3
PRV_TIMEOUT_S = 120
PRV_MEMORY_BYTES = 3 * 1024**3

_PLD_CHILD = r"""
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore")
resource.setrlimit(resource.RLIMIT_AS, ({mem}, {mem}))
q, sigma, steps, delta, vdi = json.loads(sys.argv[1])
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
start = time.perf_counter()
acc = PLDAccountant(value_discretization_interval=vdi)
event = dp_event.GaussianDpEvent(sigma)
if q < 1:
    event = dp_event.PoissonSampledDpEvent(q, event)
acc.compose(event, steps)
print(json.dumps([acc.get_epsilon(delta), time.perf_counter() - start]))
"""

_PRV_CHILD = r"""
import json, resource, sys, warnings
warnings.filterwarnings("ignore")
resource.setrlimit(resource.RLIMIT_AS, ({mem}, {mem}))
q, sigma, steps, delta = json.loads(sys.argv[1])
from opacus.accountants import PRVAccountant
acc = PRVAccountant()
acc.history = [(sigma, q, steps)]
print(json.dumps(acc.get_epsilon(delta=delta, eps_error=0.01, delta_error=delta / 1000)))
"""


def exact_gaussian_epsilon(mu: float, delta: float) -> float:
    """Exact ε of a Gaussian mechanism with sensitivity/σ = μ (Balle & Wang 2018)."""
    from scipy.special import log_ndtr

    def log_delta(eps: float) -> float:
        a = float(log_ndtr(-eps / mu + mu / 2))
        b = eps + float(log_ndtr(-eps / mu - mu / 2))
        if b >= a:
            return -math.inf
        return a + math.log(-math.expm1(b - a))

    target = math.log(delta)
    if log_delta(0.0) <= target:
        return 0.0
    lo, hi = 0.0, 1.0
    while log_delta(hi) > target:
        lo, hi = hi, hi * 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if log_delta(mid) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return hi


def dpacc_pld(q: float, sigma: float, steps: int, delta: float) -> tuple[float, float, float, str]:
    """(ε, seconds, vdi used, errors of finer attempts); each attempt in a capped child
    process, because vdi 1e-4 needs > 19 GB at q = 1, σ = 0.5, T = 10^4."""
    code = _PLD_CHILD.replace("{mem}", str(PLD_MEMORY_BYTES))
    errors = []
    for vdi in PLD_VDIS:
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code, json.dumps([q, sigma, steps, delta, vdi])],
                capture_output=True,
                text=True,
                timeout=PLD_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            errors.append(f"vdi {vdi}: timeout after {PLD_TIMEOUT_S} s")
            continue
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
            errors.append(f"vdi {vdi}: {last[:160]}")
            continue
        eps, seconds = json.loads(proc.stdout.strip().splitlines()[-1])
        return float(eps), float(seconds), vdi, "; ".join(errors)
    raise RuntimeError("dp-accounting PLD failed at every interval: " + "; ".join(errors))


def opacus_rdp(q: float, sigma: float, steps: int, delta: float) -> float:
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(sigma, q, steps)]
    return float(acc.get_epsilon(delta=delta))


def opacus_prv(q: float, sigma: float, steps: int, delta: float) -> tuple[float | None, str]:
    code = _PRV_CHILD.replace("{mem}", str(PRV_MEMORY_BYTES))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, json.dumps([q, sigma, steps, delta])],
            capture_output=True,
            text=True,
            timeout=PRV_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"timeout after {PRV_TIMEOUT_S} s"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        return None, last[:200]
    value = float(proc.stdout.strip().splitlines()[-1])
    if not math.isfinite(value):
        return None, "returned inf"
    return value, ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    done: dict[str, dict[str, object]] = {}
    if args.cache.exists():
        for line in args.cache.read_text().splitlines():
            row = json.loads(line)
            done[row["key"]] = row
    with args.cache.open("a") as cache:
        for q, sigma, steps, delta in itertools.product(QS, SIGMAS, STEPS, DELTAS):
            key = f"{q}|{sigma}|{steps}|{delta}"
            if key in done:
                continue
            row: dict[str, object] = {"key": key, "q": q, "sigma": sigma, "steps": steps}
            row["delta"] = delta
            eps, seconds, vdi, errs = dpacc_pld(q, sigma, steps, delta)
            row.update(dpacc_pld=eps, dpacc_pld_vdi=vdi, dpacc_pld_seconds=seconds)
            row["dpacc_pld_error"] = errs
            row["opacus_rdp"] = opacus_rdp(q, sigma, steps, delta)
            prv, err = opacus_prv(q, sigma, steps, delta)
            row.update(opacus_prv=prv, opacus_prv_error=err)
            row["exact_gaussian"] = (
                exact_gaussian_epsilon(math.sqrt(steps) / sigma, delta) if q == 1 else None
            )
            cache.write(json.dumps(row) + "\n")
            cache.flush()
            done[key] = row
            print(key, row["dpacc_pld"], row["opacus_prv"], flush=True)

    import dp_accounting
    import opacus

    rows = [done[f"{q}|{s}|{t}|{d}"] for q, s, t, d in itertools.product(QS, SIGMAS, STEPS, DELTAS)]
    for row in rows:
        row.pop("key", None)
        row.setdefault("dpacc_pld_error", "")
    payload = {
        "description": "Reference epsilons for the Poisson-subsampled Gaussian (add/remove, "
        "sensitivity 1); see make_reference_grid.py",
        "settings": {
            "dp_accounting_version": dp_accounting.__version__
            if hasattr(dp_accounting, "__version__")
            else "0.6.0",
            "opacus_version": opacus.__version__,
            "dpacc_pld": "PLDAccountant(ADD_OR_REMOVE_ONE), pessimistic, connect-the-dots "
            f"(library defaults), value_discretization_interval {PLD_VDIS[0]} unless that "
            f"failed in a child capped at {PLD_MEMORY_BYTES} bytes / {PLD_TIMEOUT_S} s; the "
            "interval used is in dpacc_pld_vdi, the failures in dpacc_pld_error",
            "opacus_rdp": "RDPAccountant default alphas",
            "opacus_prv": f"PRVAccountant eps_error=0.01 delta_error=delta/1000 (upper), "
            f"child process capped at {PRV_MEMORY_BYTES} bytes and {PRV_TIMEOUT_S} s",
            "exact_gaussian": "Balle & Wang 2018 closed form, q = 1 only",
        },
        "rows": rows,
    }
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
