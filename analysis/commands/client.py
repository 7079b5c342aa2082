"""``privagg client``: one device of a networked job (gRPC + TLS).

In an aggregation job, ``--data`` is a ``.npy`` integer array: one vector (the same input
every round) or one row per round; values are reduced mod 2^bits of the job. In a training
job (the server says which), ``--data`` is this device's own history: one ``(item,
timestamp)`` row per interaction, item ids indexing the job's public catalog (a ``.npy``
integer array of shape (k, 2), or a text file with two integer columns). Each round the
device fetches the public model and parameters, computes its local update, clips it and
encodes it with distributed DP using secure noise; ``--simulation-noise`` lets it honour a
job that asks for seeded, non-secure noise (tests and reproductions only).
The device authenticates every message with its identity key (``--key``, from
``privagg certs``) and verifies the server with ``--ca``. ``--job`` pins the public
parameters (a server announcing others is refused; for a training job, pin the ``job`` of
the server's output file).

Device policy (``--policy FILE``, JSON or TOML with optional ``secagg`` and ``dp`` tables of
``protocols.policy.SecAggPolicy`` / ``dp.policy.DPPolicy`` fields): the device checks the
welcome and every round announcement *before* it sends anything derived from its data, and
refuses with a reason naming the rule (``refused by device policy [rule]: ...``). Without
``--policy`` the safe default applies: malicious-server mode when ``--registry`` is given
(a server welcome saying honest-but-curious is refused, never obeyed), 5 % of each cohort
assumed corrupt (the job must state at least that much), t > (n + n_C)/2 and no sparse
graph in malicious mode, at least 2 honest inputs in any unmaskable sum, a signed job
manifest, and for training jobs a noise multiplier of at least 0.5 for the sum of the
t − n_C honest survivors, clip <= 10, popularity cap <= 100 and an ε budget of 10 at
δ = 1e-5 kept in the device's own budget file. Example::

    {"secagg": {"corrupt_fraction": 0.1, "max_participations": 50},
     "dp": {"min_noise_multiplier": 0.8, "epsilon_budget": 4.0, "delta": 1e-6}}

``--state-dir`` (default: ``.privagg-device-<id>`` next to ``--data``) holds the device's
ε budget file (updated atomically before each upload) and the server keys it trusted on
first use. ``--job`` pins a signed job manifest (the ``*.manifest.json`` that ``privagg
serve`` writes) or a plain job description; without it the first manifest a server sends
is trusted and its fingerprint printed.
Exit codes: 0 when the server ends the job, 3 when the server is lost or refuses this
device, or when this device joined after the join deadline and the job ended without it
(one line on stderr), 2 on usage errors and when the device policy refuses the job. A busy
server (RESOURCE_EXHAUSTED, UNAVAILABLE) is retried with capped exponential backoff and
random jitter for ``--retry-seconds``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from protocols.errors import ConfigError

EXIT_NETWORK = 3


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "client",
        help="run one device of a networked job (gRPC + TLS)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--server", required=True, metavar="HOST:PORT")
    parser.add_argument("--data", required=True, metavar="NPY")
    parser.add_argument("--id", type=int, required=True, dest="client_id", metavar="N")
    parser.add_argument("--key", required=True, metavar="PEM", help="identity key")
    parser.add_argument("--ca", required=True, metavar="PEM", help="CA of the server cert")
    parser.add_argument(
        "--job", metavar="JSON", help="pin the job (a signed manifest, a serve config or job)"
    )
    parser.add_argument("--policy", metavar="FILE", help="device policy (JSON or TOML)")
    parser.add_argument(
        "--state-dir", metavar="DIR", help="device state: ε budget file and pinned server keys"
    )
    parser.add_argument("--registry", metavar="JSON", help="client registry (malicious mode)")
    parser.add_argument("--tls-cert", metavar="PEM", help="mTLS client certificate")
    parser.add_argument("--tls-key", metavar="PEM", help="mTLS client key")
    parser.add_argument("--server-name", metavar="NAME", help="name to verify the cert against")
    parser.add_argument("--retry-seconds", type=float, default=15.0, metavar="S")
    parser.add_argument(
        "--simulation-noise",
        action="store_true",
        help="training: accept a job's seeded NON-SECURE noise (tests only)",
    )
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(func=run)


def _load_vectors(path: str) -> Any:
    """The integer vectors of an aggregation job, or why the file is not one (a str: the
    same file may be a training history, which the job kind decides)."""
    if not path.endswith(".npy"):
        return f"{path}: an aggregation job needs a .npy integer array"
    try:
        values = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ConfigError(f"{path} is not a .npy array ({exc})") from None
    if values.ndim not in (1, 2) or not np.issubdtype(values.dtype, np.integer):
        return f"{path} must hold a 1-D or 2-D integer array"
    return values


class _TrainingDevice:
    """The device of a training job, reading its history on first use."""

    def __init__(self, path: str, simulation_noise: bool, policy: Any = None) -> None:
        self.path = path
        self.simulation_noise = simulation_noise
        self.policy = policy
        self._device: Any = None

    def load(self) -> Any:
        if self._device is None:
            from recsys.remote import DeviceTrainer

            self._device = DeviceTrainer.from_file(
                self.path, allow_simulation_noise=self.simulation_noise, policy=self.policy
            )
        return self._device

    def __call__(self, info: Any) -> Any:
        return self.load()(info)

    @property
    def epsilon_spent(self) -> float | None:
        """The device's total ε after its last charged upload (None if it made none)."""
        return None if self._device is None else self._device.epsilon_spent


def run(args: argparse.Namespace) -> int:
    import secagg
    from dp.policy import DeviceBudget, DPPolicy
    from protocols.net import (
        ClientTLS,
        JobSpec,
        TransportError,
        load_identity_key,
        load_registry,
        run_device,
    )
    from protocols.net.guard import DeviceGuard
    from protocols.net.manifest import JobManifest, PinStore
    from protocols.policy import SecAggPolicy, load_policy_file
    from recsys.remote import DevicePolicy

    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    tables = load_policy_file(args.policy) if args.policy else {}
    secagg_fields = dict(tables.get("secagg", {}))
    secagg_fields.setdefault(
        "threat_model", "malicious_server" if args.registry else "honest_but_curious"
    )
    secagg_policy = SecAggPolicy.from_mapping(secagg_fields)
    dp_policy = DPPolicy.from_mapping(tables.get("dp", {}))
    state = (
        Path(args.state_dir)
        if args.state_dir
        else Path(args.data).resolve().parent / f".privagg-device-{args.client_id}"
    )
    expected = None
    pinned = None
    if args.job:
        raw = Path(args.job).read_bytes()
        try:
            spec = json.loads(raw)
        except ValueError:
            raise ConfigError(f"{args.job} is not valid JSON") from None
        if not isinstance(spec, dict):
            raise ConfigError(f"{args.job} must hold a JSON object")
        if spec.get("kind") == "train":
            raise ConfigError(
                f"{args.job} is a training job's server config: its job is derived by the "
                "server; pin the job manifest the server writes (or pin the 'job' of the "
                "server's output file)"
            )
        if "signature" in spec:
            pinned = JobManifest.verify(raw)
        else:
            expected = JobSpec.from_mapping(spec.get("job", spec))
    quiet = args.quiet
    guard = DeviceGuard(
        secagg_policy,
        pinned=pinned,
        pins=PinStore(state / "pins.json"),
        require_manifest=secagg_policy.require_signed_manifest and expected is None,
        notice=lambda text: print(f"client {args.client_id}: {text}", flush=True),
    )
    budget = DeviceBudget(state / "budget.json", dp_policy)
    values = _load_vectors(args.data)
    device = _TrainingDevice(
        args.data, args.simulation_noise, DevicePolicy(secagg_policy, dp_policy, budget, guard)
    )
    if isinstance(values, str):
        device.load()  # not vectors: it must be a history (else a clear error now)
    tls = ClientTLS(
        Path(args.ca).read_bytes(),
        Path(args.tls_cert).read_bytes() if args.tls_cert else None,
        Path(args.tls_key).read_bytes() if args.tls_key else None,
        args.server_name,
    )

    def inputs(round_number: int, job: JobSpec) -> Any:
        if isinstance(values, str):
            raise ConfigError(values)
        row = values if values.ndim == 1 else values[round_number % values.shape[0]]
        return secagg.to_ring(row, job.bits)

    try:
        report = run_device(
            args.server,
            args.client_id,
            load_identity_key(args.key),
            inputs,
            tls,
            expected_job=expected,
            verify_keys=load_registry(args.registry) if args.registry else None,
            retry_seconds=args.retry_seconds,
            on_event=None if quiet else lambda text: print(text, flush=True),
            round_inputs=device,  # used if the server's welcome says it is a training job
            guard=guard,
        )
    except TransportError as exc:
        print(f"privagg client: {exc}", file=sys.stderr)
        return EXIT_NETWORK
    rounds = ", ".join(map(str, report.rounds_completed)) or "none"
    print(f"client {args.client_id}: job done; took part in rounds {rounds}")
    for abort in report.aborts:
        print(f"client {args.client_id}: aborted {abort}")
    spent = device.epsilon_spent
    if spent is not None:
        print(f"client {args.client_id}: device epsilon spent {spent:.4g} (budget {state})")
    return 0
