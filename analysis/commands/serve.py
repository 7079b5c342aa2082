"""``privagg serve``: the aggregation server of a networked job (gRPC + TLS).

The config is a JSON file. An aggregation job (``"kind": "aggregate"``, the default) sums
fixed vectors of every registered client each round::

    {"job": {"num_clients": 20, "threshold": 11, "vector_length": 1000, "rounds": 5,
             "bits": 32, "neighbors": null, "threat_model": "honest_but_curious"},
     "listen": "0.0.0.0:7443", "tls": {"cert": "server.pem", "key": "server.key",
     "client_ca": null}, "registry": "registry.json", "stage_deadline": 10,
     "join_deadline": 120, "output": "aggregates.json"}

A training job (``"kind": "train"``) trains the federated recommender: the server owns the
model (the trainer, its DP plan and ledger) and each registered client is one device (client
id = user index; population = the registry's size)::

    {"kind": "train",
     "train": {"rounds": 5, "cohort": null, "epsilon": 8.0, "delta": 1e-4,
               "secagg": "plus", "dropout": 0.1, "seed": 0, "eval_every": 1,
               "model": {"kind": "popfeat+fcf", "cap": 20,
                         "fcf": {"dim": 4, "active_items": 300}}},
     "catalog": {"num_items": 1682, "features": "item_features.npy"},
     "evaluation": {"histories": "eval/device-{id}.npy", "targets": "eval/targets.npy"},
     "min_cohort": 2, "threat_model": "honest_but_curious",
     "listen": "0.0.0.0:7443", "tls": {...}, "registry": "registry.json",
     "stage_deadline": 30, "join_deadline": 120, "output": "training.json",
     "ledger": "ledger.sqlite", "model_output": "model.npz", "record_aggregates": false}

``train`` takes the fields of ``privagg train``'s configuration (privacy is always
distributed DP under SecAgg; ``simulation_noise: true`` asks devices for seeded non-secure
noise, which they only accept when started with ``--simulation-noise``). ``catalog`` is the
public item table (features: a float ``.npy`` of num_items rows, optional). ``evaluation``
(optional) is the operator's own evaluation data; without it nothing is evaluated.
``model_output`` (optional) receives the final public model (``.npz``: released
popularity, item factors and biases, active items); ``ledger`` a new ``dp`` ledger, signed
with the server's Ed25519 key: ``signing_key`` (a PEM file; ``--signing-key``) or, when
absent, ``$XDG_CONFIG_HOME/privagg/ledger-key.pem`` generated on first use (its fingerprint
and public key are printed, and the ledger's publish line at the end); ``unsigned_ledger:
true`` (``--unsigned``) writes an unsigned ledger, which a strict audit refuses.

``linger_seconds`` (default 2) is how long the server stays up after the last round to
tell polling and late devices that the job is over. When the join deadline closes, and
again at the end, the server names the registered clients that never joined (also in
``output``: ``never_joined``, and ``late`` for those that said hello after the deadline).

Signed job manifest: the server signs the job (threat model, cohort bounds, corrupt
fraction, number of rounds and, for training, the rule its DP plans follow) with the Ed25519
key at ``manifest_signing_key`` (default ``server-signing.key`` next to the config; created, mode
0600, if missing), sends it in every welcome and writes it to ``manifest`` (default: the
output path with suffix ``.manifest.json``); it prints the manifest's fingerprint. Devices
pin that file (``privagg client --job``) or trust the first one they see and print the
same fingerprint. A malicious-server job must state ``corrupt_fraction`` (in ``job``, or
at the top level of a training config).

Relative paths are relative to the config file. The server prints ``listening on
HOST:PORT``, one line per network round and per release, and rewrites ``output`` after every
round (JSON: the job, per round the cohort, the included clients and, for aggregation jobs
or with ``record_aggregates``, the exact sum mod 2^bits, or why it aborted; for training
jobs also per release ε, HR@10, NDCG@10 and at the end the privacy report card).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from protocols.errors import ConfigError

_COMMON = {
    "kind",
    "listen",
    "tls",
    "registry",
    "stage_deadline",
    "join_deadline",
    "linger_seconds",
    "output",
    "signing_key",
    "manifest_signing_key",
    "manifest",
}
_AGGREGATE = _COMMON | {"job"}
_TRAIN = _COMMON | {
    "train",
    "catalog",
    "evaluation",
    "min_cohort",
    "threat_model",
    "corrupt_fraction",
    "ledger",
    "signing_key",
    "unsigned_ledger",
    "record_aggregates",
    "model_output",
}
_TRAIN_FIELDS = {
    "epsilon",
    "delta",
    "rounds",
    "cohort",
    "secagg",
    "dropout",
    "seed",
    "popularity_share",
    "eval_every",
    "mechanism",
    "bits",
    "simulation_noise",
    "group_size",
    "privacy",
}


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
    key = parser.add_mutually_exclusive_group()
    key.add_argument(
        "--signing-key",
        metavar="FILE",
        help="training job: Ed25519 PEM key signing the ledger (overrides 'signing_key'; "
        "default: $XDG_CONFIG_HOME/privagg/ledger-key.pem, generated on first use)",
    )
    key.add_argument(
        "--unsigned", action="store_true", help="training job: write an unsigned ledger"
    )
    parser.set_defaults(func=run)


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    kind = data.get("kind", "aggregate")
    if kind not in ("aggregate", "train"):
        raise ConfigError(f"{path}: kind must be 'aggregate' or 'train', got {kind!r}")
    need = "job" if kind == "aggregate" else "train"
    if not isinstance(data.get(need), dict):
        raise ConfigError(f"{path} needs a '{need}' object")
    unknown = set(data) - (_AGGREGATE if kind == "aggregate" else _TRAIN)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}")
    return data


def _write_json(output: Path, content: Mapping[str, Any]) -> None:
    tmp = output.with_suffix(".tmp")
    tmp.write_text(json.dumps(content, default=str))
    tmp.replace(output)  # atomic: a reader never sees half a file


def run(args: argparse.Namespace) -> int:
    from protocols.net import ServerTLS, load_registry

    path = Path(args.config)
    conf = _load(path)
    base = path.parent

    def rel(value: object, name: str) -> Path:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: '{name}' must be a path")
        return base / value

    tls_conf = conf.get("tls") or {}
    client_ca = tls_conf.get("client_ca")
    tls = ServerTLS(
        rel(tls_conf.get("cert"), "tls.cert").read_bytes(),
        rel(tls_conf.get("key"), "tls.key").read_bytes(),
        rel(client_ca, "tls.client_ca").read_bytes() if client_ca else None,
    )
    registry = load_registry(rel(conf.get("registry"), "registry"))
    default_output = (
        "aggregates.json" if conf.get("kind", "aggregate") == "aggregate" else ("training.json")
    )
    output = Path(args.output) if args.output else rel(conf.get("output", default_output), "output")
    options = {
        "address": args.listen or conf.get("listen", "127.0.0.1:7443"),
        "stage_deadline": float(conf.get("stage_deadline", 10.0)),
        "join_deadline": float(conf.get("join_deadline", 120.0)),
        "linger_seconds": float(conf.get("linger_seconds", 2.0)),
    }
    options["signer"] = _signing_key(
        rel(conf.get("manifest_signing_key", "server-signing.key"), "manifest_signing_key")
    )
    options["manifest_path"] = (
        rel(conf["manifest"], "manifest")
        if conf.get("manifest")
        else output.with_suffix(".manifest.json")
    )
    # SIGTERM ends the job like Ctrl-C: clients learn it from the closed connection.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if conf.get("kind", "aggregate") == "train":
        if args.signing_key:
            conf["signing_key"] = str(Path(args.signing_key).resolve())
        if args.unsigned:
            conf["unsigned_ledger"] = True
        return _serve_training(conf, rel, registry, tls, output, options)
    return _serve_aggregation(conf, registry, tls, output, options)


def _signing_key(path: Path) -> Any:
    """The server's Ed25519 manifest-signing key (created if missing)."""
    from protocols.net import load_identity_key, write_identity_key

    if not path.exists():
        write_identity_key(path)
        print(f"created the manifest signing key {path}", flush=True)
    return load_identity_key(path)


def _sign_manifest(
    job: Any, options: dict[str, Any], dp_rule: Mapping[str, Any] | None = None
) -> bytes:
    """Sign the job's manifest, write it next to the output and print its fingerprint; the
    server options keep only what :class:`AggregationServer` takes."""
    from protocols.net.manifest import JobManifest

    signer = options.pop("signer")
    path: Path = options.pop("manifest_path")
    manifest = JobManifest.create(job, signer, dp_rule)
    signed = manifest.sign(signer)
    path.write_bytes(signed)
    print(f"job manifest {manifest.fingerprint} written to {path}", flush=True)
    return signed


def _serve_aggregation(
    conf: Mapping[str, Any],
    registry: Mapping[int, bytes],
    tls: Any,
    output: Path,
    options: Mapping[str, Any],
) -> int:
    from protocols.net import AggregationServer, JobSpec, RoundOutcome

    job = JobSpec.from_mapping(conf["job"])
    options = dict(options)
    signed = _sign_manifest(job, options)
    server = AggregationServer(job, registry, tls, manifest=signed, **options)
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
        _write_json(output, {"job": json.loads(job.to_json()), "rounds": rows})
        what = (
            f"{len(outcome.included)} clients summed"
            if outcome.total is not None
            else (f"aborted ({outcome.aborted})")
        )
        print(f"round {outcome.round_number}: {what} in {outcome.seconds:.2f} s", flush=True)

    def on_joined(joined: frozenset[int]) -> None:
        print(
            f"join deadline: {len(joined)} of {job.num_clients} registered clients joined",
            flush=True,
        )
        _print_missing(server)

    server.start()
    print(f"listening on {server.address}", flush=True)
    try:
        server.run(on_round, on_joined=on_joined)
    finally:
        server.stop()
    _write_json(
        output,
        {
            "job": json.loads(job.to_json()),
            "rounds": rows,
            "never_joined": list(server.never_joined()),
            "late": list(server.late_joined()),
        },
    )
    _print_missing(server, final=True)
    print(f"wrote {output}", flush=True)
    return 0


def _print_missing(server: Any, *, final: bool = False) -> None:
    """Name the registered clients that never joined (and, at the end, the late ones)."""
    missing = server.never_joined()
    if missing:
        ids = ", ".join(map(str, missing))
        print(f"registered clients that never joined: {ids}", flush=True)
    late = server.late_joined()
    if final and late:
        print(f"clients that said hello after the join deadline: {', '.join(map(str, late))}")


def _train_config(data: Mapping[str, Any], where: str) -> Any:
    from recsys.federated import FCFConfig, FeatureModelConfig
    from recsys.recommender import ModelConfig
    from recsys.trainer import TrainConfig

    fields = {k: v for k, v in data.items() if k != "model"}
    unknown = set(fields) - _TRAIN_FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown train fields {sorted(unknown)}")
    if fields.get("privacy", "distributed") != "distributed":
        raise ConfigError(f"{where}: a networked training job uses distributed DP")
    model = data.get("model") or {}
    if not isinstance(model, dict) or set(model) - {"kind", "cap", "fcf", "features"}:
        raise ConfigError(f"{where}: model takes kind, cap, fcf and features")
    try:
        model_config = ModelConfig(
            kind=model.get("kind", "popfeat+fcf"),
            cap=model.get("cap", 20),
            fcf=FCFConfig(**(model.get("fcf") or {})),
            features=FeatureModelConfig(**(model.get("features") or {})),
        )
        return TrainConfig(**fields, model=model_config)
    except TypeError as exc:
        raise ConfigError(f"{where}: bad train configuration ({exc})") from None


def _open_signed_ledger(conf: Mapping[str, Any], rel: Any, trainer: Any) -> Any:
    """The job's ledger, signed by the server's key unless ``unsigned_ledger`` is set."""
    from dp.ledger.keys import resolve_signing_key
    from recsys.trainer import open_ledger

    ledger_path = rel(conf["ledger"], "ledger")
    signer = None
    if not conf.get("unsigned_ledger"):
        key_path = rel(conf["signing_key"], "signing_key") if conf.get("signing_key") else None
        signer = resolve_signing_key(key_path, None)
        print(
            f"ledger signed by {signer.fingerprint} (key {signer.path}"
            + (", new" if signer.generated else "")
            + f"; public key {signer.public_hex})",
            flush=True,
        )
    else:
        print("ledger UNSIGNED (unsigned_ledger): a strict audit refuses it", flush=True)
    threat = str(conf.get("threat_model") or "honest-but-curious").replace("_", "-")
    if threat not in ("honest-but-curious", "malicious-server"):
        threat = "unspecified"
    return open_ledger(
        str(ledger_path),
        trainer,
        signing_key=None if signer is None else signer.key,
        threat_model=threat
        if threat in ("honest-but-curious", "malicious-server")
        else "unspecified",
    )


def _dp_rule(trainer: Any) -> dict[str, Any]:
    """The DP plan rule a training job signs: every plan's ring, its largest clip and cap,
    and that noise shares are sized for the t − n_C honest survivors SecAgg allows."""
    config = trainer.config
    clip = max(float(task.clip_norm) for task, _ in trainer.recommender.tasks(config.rounds))
    cap = [task.count_cap for task, _ in trainer.recommender.tasks(config.rounds) if task.count_cap]
    rule: dict[str, Any] = {
        "bits": int(config.bits),
        "max_clip_norm": clip,
        "noise_sized_for": "threshold minus corrupt (t - n_C) honest survivors",
        "epsilon": float(config.epsilon),
        "delta": float(config.delta),
    }
    if cap:
        rule["max_count_cap"] = int(max(cap))
    return rule


def _serve_training(
    conf: Mapping[str, Any],
    rel: Callable[[object, str], Path],
    registry: Mapping[int, bytes],
    tls: Any,
    output: Path,
    options: Mapping[str, Any],
) -> int:
    import numpy as np

    from protocols.net import AggregationServer
    from recsys.remote import (
        NetworkRound,
        load_history,
        population_split,
        serve_training,
        split_from_histories,
        training_job,
    )
    from recsys.trainer import RoundRecord, Trainer

    where = "train job"
    config = _train_config(conf["train"], where)
    population = len(registry)
    if set(registry) != set(range(population)):
        raise ConfigError("a training job's registry must number its clients 0..n-1")
    catalog = conf.get("catalog")
    if not isinstance(catalog, dict) or not isinstance(catalog.get("num_items"), int):
        raise ConfigError(f"{where}: 'catalog' needs num_items (and optionally features)")
    num_items = catalog["num_items"]
    if catalog.get("features"):
        features = np.load(rel(catalog["features"], "catalog.features"), allow_pickle=False)
        if features.ndim != 2 or features.shape[0] != num_items or features.dtype.kind != "f":
            raise ConfigError(f"{where}: features must be a float (num_items × k) array")
    else:
        features = np.zeros((num_items, 0))
    evaluation = conf.get("evaluation")
    if evaluation:
        pattern = str(rel(evaluation.get("histories"), "evaluation.histories"))
        targets = np.load(rel(evaluation.get("targets"), "evaluation.targets"), allow_pickle=False)
        histories = [load_history(pattern.format(id=cid)) for cid in range(population)]
        split = split_from_histories(histories, np.asarray(targets, dtype=np.int64), num_items)
    else:
        split = population_split(population, num_items)
        if config.eval_every:
            config = dataclasses.replace(config, eval_every=0)
    trainer = Trainer(split, features, config)
    if conf.get("ledger"):
        trainer.ledger = _open_signed_ledger(conf, rel, trainer)
    job = training_job(
        trainer,
        min_cohort=int(conf.get("min_cohort", 2)),
        threat_model=conf.get("threat_model"),
        corrupt_fraction=conf.get("corrupt_fraction"),
    )
    options = dict(options)
    signed = _sign_manifest(job, options, _dp_rule(trainer))
    server = AggregationServer(job, registry, tls, manifest=signed, **options)
    record_totals = bool(conf.get("record_aggregates", False))
    state: dict[str, Any] = {
        "job": json.loads(job.to_json()),
        "secure_noise": not config.simulation_noise,
        "rounds": [],
        "releases": [],
    }

    def on_round(row: NetworkRound) -> None:
        state["rounds"].append(row.as_row(with_total=record_totals))
        _write_json(output, state)
        what = (
            f"{len(row.included)} of {len(row.cohort)} devices summed"
            if row.aborted is None
            else f"aborted ({row.aborted})"
        )
        print(
            f"round {row.round_number} (release {row.release}, {row.task}, "
            f"{row.sampled} sampled): {what} in {row.seconds:.2f} s",
            flush=True,
        )

    def progress(record: RoundRecord, total: int) -> None:
        state["releases"].append(record.as_row())
        _write_json(output, state)
        quality = "" if record.hr is None else f", HR@10 {record.hr:.4f}"
        print(
            f"release {record.round}/{total} ({record.task}): {record.included} devices, "
            f"epsilon {record.epsilon:.4g}{quality}",
            flush=True,
        )

    server.start()
    print(f"listening on {server.address}", flush=True)
    print(
        f"training job: {population} devices, {config.rounds} FCF rounds, "
        f"sampling rate {trainer.sampling_rate:.4g}, "
        f"{'SECURE' if not config.simulation_noise else 'SIMULATION (non-secure)'} noise",
        flush=True,
    )
    try:
        result, _ = serve_training(
            server, trainer, progress=progress, on_round=on_round, evaluate=bool(evaluation)
        )
    finally:
        server.stop()
    card = {k: v for k, v in result.report_card.items() if not isinstance(v, float) or v == v}
    state["report_card"] = card
    state["never_joined"] = list(server.never_joined())
    state["late"] = list(server.late_joined())
    _print_missing(server, final=True)
    _write_json(output, state)
    if conf.get("model_output"):
        model_path = rel(conf["model_output"], "model_output")
        item = result.recommender.server
        arrays = {
            name: value
            for name in ("popularity", "item_factors", "item_bias", "active_items")
            if (value := getattr(item, name)) is not None
        }
        with model_path.open("wb") as handle:
            np.savez(handle, **arrays)
        print(f"wrote the public model to {model_path}", flush=True)
    print(f"epsilon {card.get('epsilon', 0.0):.4g} (delta {config.delta:g})", flush=True)
    if trainer.ledger is not None:
        print(f"ledger publish line: {trainer.ledger.publish_line()}", flush=True)
        trainer.ledger.close()
    print(f"wrote {output}", flush=True)
    return 0
