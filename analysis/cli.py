"""The ``privagg`` command line.

Subcommands live in small modules, each exposing ``register(subparsers)`` which adds its
parser and sets ``func`` (a callable taking the parsed namespace and returning an exit
code). Errors of privagg's own hierarchies, and bad arguments, become one clear line on
stderr and exit code 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib import metadata

# Modules that contribute subcommands; each has ``register(subparsers)``.
_COMMAND_MODULES = (
    "analysis.commands.demo",
    "analysis.commands.train",
    "analysis.commands.epsilon",
    "analysis.commands.calibrate",
    "analysis.commands.audit",
    "analysis.commands.certs",
    "analysis.commands.serve",
    "analysis.commands.client",
    "analysis.commands.sweep",
    "analysis.commands.audit_empirical",
    "analysis.commands.study",
)

EXIT_USAGE = 2


def _version() -> str:
    try:
        return metadata.version("privagg")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


def _user_error_types() -> tuple[type[BaseException], ...]:
    """The typed error roots of every layer: these are the user's mistakes to report."""
    from analysis.errors import AnalysisError
    from dp.errors import DPError
    from protocols.errors import ProtocolError
    from recsys.errors import RecsysError
    from secagg.errors import SecAggError

    return (AnalysisError, DPError, ProtocolError, RecsysError, SecAggError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privagg",
        description=(
            "privagg: privacy-preserving federated learning with secure aggregation, "
            "distributed differential privacy and auditable privacy accounting."
        ),
    )
    parser.add_argument("--version", action="version", version=f"privagg {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        code: int = args.func(args)
    except _user_error_types() as exc:
        print(f"privagg {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"privagg {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
