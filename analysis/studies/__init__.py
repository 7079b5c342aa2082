"""Studies behind ``docs/results/efficiency/``: each module has ``run(out_dir, *, quick=False)``
writing CSV, PNG and a ``report_<name>.md``. Run them with ``privagg study NAME`` (or
``python -m analysis.studies.<name> --out DIR``)."""

from __future__ import annotations

import argparse
import importlib
import os
import warnings
from collections.abc import Sequence
from typing import Any

from dp.rng import NonSecureRandomnessWarning

STUDIES = ("sampling", "communication", "devices", "context")


def run_study(name: str, out_dir: str | os.PathLike[str], *, quick: bool = False) -> Any:
    """Run one study into ``out_dir`` and return its result."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; choose one of {', '.join(STUDIES)}")
    module = importlib.import_module(f"analysis.studies.{name}")
    with warnings.catch_warnings():
        # the studies use dp's seeded simulation noise so that they are reproducible; every
        # ledger and report card they produce says so
        warnings.simplefilter("ignore", NonSecureRandomnessWarning)
        return module.run(out_dir, quick=quick)


def main(name: str, argv: Sequence[str] | None = None) -> int:
    """``python -m analysis.studies.<name> --out DIR [--quick]``."""
    parser = argparse.ArgumentParser(prog=f"python -m analysis.studies.{name}")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--quick", action="store_true", help="smoke run: one seed, small data")
    args = parser.parse_args(argv)
    run_study(name, args.out, quick=args.quick)
    print(f"wrote {args.out}")
    return 0
