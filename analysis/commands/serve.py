"""``privagg serve``: the aggregation server of a networked job (gRPC + TLS).

The config is a JSON file::

    {"job": {"num_clients": 20, "threshold": 11, "vector_length": 1000, "rounds": 5,
             "bits": 32, "neighbors": null, "threat_model": "honest_but_curious"},
     "listen": "0.0.0.0:7443", "tls": {"cert": "server.pem", "key": "server.key",
     "client_ca": null}, "registry": "registry.json", "stage_deadline": 10,
     "join_deadline": 120, "output": "aggregates.json"}

Relative paths are relative to the config file. The server prints ``listening on
HOST:PORT``, one line per round, and rewrites ``output`` after every round (JSON: per round
the included clients and the exact sum mod 2^bits, or why it aborted).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from protocols.errors import ConfigError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the aggregation server of a networked job (gRPC + TLS)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, metavar="JSON")
    parser.add_argument("--listen", metavar="HOST:PORT", help="override the config's address")
    parser.add_argument("--output", metavar="JSON", help="override the config's output path")
    parser.set_defaults(func=run)


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("job"), dict):
        raise ConfigError(f"{path} needs a 'job' object")
    known = {"job", "listen", "tls", "registry", "stage_deadline", "join_deadline", "output"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
    return data


def run(args: argparse.Namespace) -> int:
    from protocols.net import AggregationServer, JobSpec, RoundOutcome, ServerTLS, load_registry

    path = Path(args.config)
    conf = _load(path)
    base = path.parent

    def rel(value: object, name: str) -> Path:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: '{name}' must be a path")
        return base / value

    job = JobSpec.from_mapping(conf["job"])
    tls_conf = conf.get("tls") or {}
    client_ca = tls_conf.get("client_ca")
    tls = ServerTLS(
        rel(tls_conf.get("cert"), "tls.cert").read_bytes(),
        rel(tls_conf.get("key"), "tls.key").read_bytes(),
        rel(client_ca, "tls.client_ca").read_bytes() if client_ca else None,
    )
    registry = load_registry(rel(conf.get("registry"), "registry"))
    output = (
        Path(args.output) if args.output else rel(conf.get("output", "aggregates.json"), "output")
    )
    server = AggregationServer(
        job,
        registry,
        tls,
        address=args.listen or conf.get("listen", "127.0.0.1:7443"),
        stage_deadline=float(conf.get("stage_deadline", 10.0)),
        join_deadline=float(conf.get("join_deadline", 120.0)),
    )
    rows: list[dict[str, Any]] = []

    def on_round(outcome: RoundOutcome) -> None:
        row: dict[str, Any] = {
            "round": outcome.round_number,
            "status": "aborted" if outcome.aborted else "ok",
            "included": list(outcome.included),
            "faulty": list(outcome.faulty),
            "seconds": round(outcome.seconds, 4),
        }
        if outcome.total is not None:
            row["total"] = [int(v) for v in outcome.total]
        else:
            row["reason"] = outcome.aborted
        rows.append(row)
        tmp = output.with_suffix(".tmp")
        tmp.write_text(json.dumps({"job": json.loads(job.to_json()), "rounds": rows}))
        tmp.replace(output)  # atomic: a reader never sees half a file
        what = (
            f"{len(outcome.included)} clients summed"
            if outcome.total is not None
            else (f"aborted ({outcome.aborted})")
        )
        print(f"round {outcome.round_number}: {what} in {outcome.seconds:.2f} s", flush=True)

    # SIGTERM ends the job like Ctrl-C: clients learn it from the closed connection.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    server.start()
    print(f"listening on {server.address}", flush=True)
    try:
        server.run(on_round)
    finally:
        server.stop()
    print(f"wrote {output}", flush=True)
    return 0
