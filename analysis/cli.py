"""The ``privagg`` command line.

Subcommands live in small modules, each exposing ``register(subparsers)`` which adds its
parser and sets ``func`` (a callable taking the parsed namespace and returning an exit
code). Errors of privagg's own hierarchies, and bad arguments, become one clear line on
stderr and exit code 2; nothing is half-written. A missing optional extra (grpcio, torch,
ray) is one line naming the extra to install; Ctrl-C is one line, never a traceback.

Only the module of the command being run is imported (``privagg --help`` lists the
commands from the table below without importing numpy, scipy or the protocol stack).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import warnings
from collections.abc import Sequence
from typing import TextIO

# command -> (module that registers it, one-line help shown by ``privagg --help``).
# tests/test_first_hour.py checks that each module registers its commands with this help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "analysis.commands.demo",
        "run the main job on built-in data and print the results",
    ),
    "train": (
        "analysis.commands.train",
        "train the federated recommender (SecAgg + distributed DP) and report",
    ),
    "epsilon": (
        "analysis.commands.epsilon",
        "ε of a Poisson-subsampled Gaussian (noise multiplier, sampling rate, steps, δ)",
    ),
    "calibrate": (
        "analysis.commands.calibrate",
        "noise multiplier, sampling rate or rounds for a target (ε, δ)",
    ),
    "audit": (
        "analysis.commands.audit",
        "verify a privacy ledger (chain, signatures, ε replay, budgets), or with "
        "--empirical measure a lower bound on ε with canaries",
    ),
    "certs": (
        "analysis.commands.certs",
        "create a local CA, server certificate, client identity keys and registry",
    ),
    "serve": (
        "analysis.commands.serve",
        "run the aggregation server of a networked job (gRPC + TLS)",
    ),
    "client": (
        "analysis.commands.client",
        "run one device of a networked job (gRPC + TLS)",
    ),
    "sweep": (
        "analysis.commands.sweep",
        "privacy-utility grid over ε, privacy/SecAgg mode, dropout, cohort and seeds",
    ),
    "audit-empirical": (
        "analysis.commands.audit_empirical",
        "alias of 'privagg audit --empirical' (one-run audit: canaries → lower bound on ε)",
    ),
    "attack": (
        "analysis.commands.audit_empirical",
        "attack suite: rated-set inference, membership inference, round differencing",
    ),
    "study": (
        "analysis.commands.study",
        "regenerate the efficiency study (sampling, communication, devices, context)",
    ),
}

# Optional extras: the module a missing import names -> (extra, what it is for).
EXTRAS: dict[str, tuple[str, str]] = {
    "grpc": ("net", "the networked deployment (privagg serve / privagg client)"),
    "torch": ("silo", "the cross-silo Opacus warm start (--silo-users)"),
    "opacus": ("silo", "the cross-silo Opacus warm start (--silo-users)"),
    "ray": ("ray", "the Ray executor (--executor ray)"),
}

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _version() -> str:
    from importlib import metadata

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


_RST_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]+?)(?:\s*<[^>]+>)?`")
_RST_LITERAL = re.compile(r"``([^`]+)``")
_RST_STRONG = re.compile(r"\*\*([^*]+)\*\*")
_RST_LITERAL_BLOCK = re.compile(r"::$", re.MULTILINE)  # "text::" introduces a code block


def plain_text(text: str | None) -> str | None:
    """Help text without reStructuredText markup (``x``, :class:`x`, **x**, "text::")."""
    if text is None:
        return None
    text = _RST_ROLE.sub(lambda m: m.group(1).split(".")[-1], text)
    text = _RST_LITERAL.sub(r"\1", text)
    text = _RST_LITERAL_BLOCK.sub(":", text)
    return _RST_STRONG.sub(r"\1", text)


def _strip_markup(parser: argparse.ArgumentParser) -> None:
    parser.description = plain_text(parser.description)
    parser.epilog = plain_text(parser.epilog)
    for action in parser._actions:
        if isinstance(action.help, str):
            action.help = plain_text(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _strip_markup(sub)
            for choice in action._choices_actions:
                choice.help = plain_text(choice.help)


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word not an option)."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(command: str | None = None, *, lazy: bool = False) -> argparse.ArgumentParser:
    """The ``privagg`` parser. With ``command``, only that command's module is imported
    (the others appear in ``--help`` from :data:`COMMANDS`); with ``lazy`` and no command,
    none is; otherwise every module is."""
    parser = argparse.ArgumentParser(
        prog="privagg",
        description=(
            "privagg: privacy-preserving federated learning with secure aggregation, "
            "distributed differential privacy and auditable privacy accounting."
        ),
    )
    parser.add_argument("--version", action="version", version=f"privagg {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command is not None:
        modules = [COMMANDS[command][0]]
    else:
        modules = [] if lazy else list(dict.fromkeys(module for module, _ in COMMANDS.values()))
    for module in modules:
        importlib.import_module(module).register(subparsers)
    # the others: listed with their help, their parsers built only when they run
    registered = set(subparsers.choices)
    known = {name: i for i, name in enumerate(COMMANDS)}
    for name, (_, help_text) in COMMANDS.items():
        if name not in registered:
            subparsers.add_parser(name, help=help_text, add_help=False)
    subparsers._choices_actions.sort(key=lambda action: known.get(action.dest, len(known)))
    _strip_markup(parser)
    return parser


def _missing_extra(exc: ModuleNotFoundError) -> str | None:
    root = (exc.name or "").split(".")[0]
    if root not in EXTRAS:
        return None
    extra, purpose = EXTRAS[root]
    torch_first = "torch==2.13.0 " if extra == "silo" else ""
    return (
        f"{purpose} needs the '{extra}' extra ({root} is not installed): "
        f"pip install {torch_first}'privagg[{extra}]' (in a checkout: "
        f".venv/bin/pip install {torch_first}-e '.[{extra}]')"
    )


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    print(f"privagg: warning: {message}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(argv), lazy=True)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    name = args.command
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            code: int = args.func(args)
    except KeyboardInterrupt as exc:
        print(f"\nprivagg {name}: interrupted", file=sys.stderr)
        return int(getattr(exc, "exit_code", EXIT_INTERRUPTED))
    except ModuleNotFoundError as exc:
        hint = _missing_extra(exc)
        if hint is None:
            raise
        print(f"privagg {name}: error: {hint}", file=sys.stderr)
        return EXIT_USAGE
    except _user_error_types() as exc:
        print(f"privagg {name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"privagg {name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
