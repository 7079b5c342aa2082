"""Re-record the golden outputs, deliberately: ``python -m tests.golden.record --write``.

Without ``--write`` it only prints which jobs differ from ``golden.json`` (exit 1 if any).
Re-record only for a change that is meant to change released values (say so in the commit
message); a refactor must leave every job bit-identical.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tests.golden.jobs import all_jobs, have, run_quietly

GOLDEN = Path(__file__).with_name("golden.json")


def record(tmp: Path) -> dict[str, object]:
    """Every job's outputs (Ray and gRPC ones only when installed)."""
    jobs = all_jobs(tmp, ray=have("ray"), grpc=have("grpc"))
    return {name: run_quietly(job) for name, job in jobs.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="overwrite golden.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        outputs = record(Path(tmp))
    if args.write:
        GOLDEN.write_text(json.dumps(outputs, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(outputs)} jobs to {GOLDEN}")
        return 0
    recorded = json.loads(GOLDEN.read_text())
    changed = [name for name, value in outputs.items() if recorded.get(name) != value]
    for name in changed:
        print(f"changed: {name}")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
