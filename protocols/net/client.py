"""One device of a networked job: the unchanged :class:`~protocols.client.SecAggClient`
driven over gRPC with TLS.

:func:`run_device` says hello, checks the announced job against what the device expects,
then long-polls: it sends its reply to the last message with the next request and gets the
next message back. Each round gets a fresh state machine (fresh keys). Transient network
failures are retried; a server that stays unreachable for ``retry_seconds`` (killed,
partitioned) ends the device with a :class:`TransportError` naming the server, never a hang.

In a per-round job the device fetches each round's announcement (a
:class:`~protocols.net.wire.RoundSpec` in the model envelope, checked against the setup's
context digest and the job), takes protocol position ``cohort.index(its id)`` and computes
its vector with ``round_inputs``; raising :class:`RoundRefused` there sits the round out.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt

import secagg
from protocols.client import SecAggClient
from protocols.config import SecAggConfig, Stage, ThreatModel
from protocols.errors import ConfigError, DecodeError
from protocols.messages import SetupRequest, decode
from protocols.net.errors import JobMissed, RoundRefused, TransportError
from protocols.net.guard import DeviceGuard
from protocols.net.wire import (
    AUTH_METADATA,
    NO_STAGE,
    SERVICE,
    Exchange,
    JobSpec,
    ReplyStatus,
    RoundSpec,
    decode_model,
    decode_reply,
    decode_round,
    decode_signed_welcome,
    encode_hello,
    encode_model_request,
    model_digest,
    sign_call,
    stage_key,
)
from protocols.policy import PolicyViolation
from protocols.transport import Direction, FaultHook

__all__ = ["ClientTLS", "DeviceReport", "RoundInfo", "run_device"]

# RESOURCE_EXHAUSTED is the server's per-client admission limit (or a busy server): wait
# and retry. Only an oversized message of this device's own is final (see _Link.call).
_RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "RESOURCE_EXHAUSTED")
_BACKOFF_FIRST, _BACKOFF_CAP = 0.1, 2.0
_STAGES = tuple(Stage)

InputsFn = Callable[[int, JobSpec], npt.NDArray[Any]]
"""``(round_number, job) -> ring vector`` of this device for that round."""

ModelInputsFn = Callable[[int, JobSpec, bytes], npt.NDArray[Any]]
"""``(round_number, job, public model) -> ring vector`` of this device for that round."""


@dataclass(frozen=True)
class RoundInfo:
    """What a device of a per-round job is told about a round: the job, the round number,
    its protocol position in the cohort, and the announcement (cohort, parameters,
    vector length and the application's public payload)."""

    job: JobSpec
    round_number: int
    position: int
    spec: RoundSpec


RoundInputsFn = Callable[[RoundInfo], npt.NDArray[Any]]
"""``info -> ring vector`` of this device for a round of a per-round job."""


@dataclass(frozen=True)
class ClientTLS:
    """PEM material of a device: the CA that signed the server, optional mTLS pair."""

    root_ca: bytes
    cert_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    def credentials(self) -> Any:
        """gRPC channel credentials."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_ca,
            private_key=self.private_key,
            certificate_chain=self.cert_chain,
        )


@dataclass(frozen=True)
class DeviceReport:
    """What one device did: rounds it completed its part of, and aborts it saw."""

    client_id: int
    rounds_completed: tuple[int, ...]
    aborts: tuple[str, ...]


class _Link:
    """A TLS channel to the server with bounded retries of transient failures.

    Every call carries a header signed with the device's identity key
    (:func:`~protocols.net.wire.sign_call`, over the server run's ``nonce``; the bootstrap
    link has none yet) so the server admits it before reading anything else."""

    def __init__(
        self,
        target: str,
        tls: ClientTLS,
        cap: int,
        retry_seconds: float,
        auth: tuple[int, secagg.SigningKey, bytes],
    ) -> None:
        options: list[tuple[str, str | int]] = [
            ("grpc.max_receive_message_length", cap),
            ("grpc.max_send_message_length", cap),
        ]
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        self.target = target
        self.retry_seconds = retry_seconds
        self._auth = auth
        self._counter = 0
        self.channel = grpc.secure_channel(target, tls.credentials(), options=options)
        self._hello = self.channel.unary_unary(f"/{SERVICE}/Hello")
        self._exchange = self.channel.unary_unary(f"/{SERVICE}/Exchange")
        self._model = self.channel.unary_unary(f"/{SERVICE}/Model")

    def _header(self, method: str) -> tuple[tuple[str, bytes], ...]:
        client_id, key, nonce = self._auth
        # wall-clock nanoseconds, strictly increasing: fresh after a device restart too
        self._counter = max(self._counter + 1, time.time_ns())
        return ((AUTH_METADATA, sign_call(key, client_id, self._counter, method, nonce)),)

    def call(self, method: str, make_request: Callable[[], bytes], timeout: float) -> bytes:
        stubs = {"Hello": self._hello, "Model": self._model}
        stub = stubs.get(method, self._exchange)
        last_ok = time.monotonic()
        pause = _BACKOFF_FIRST
        while True:
            try:
                response: bytes = stub(
                    make_request(), timeout=timeout, metadata=self._header(method)
                )
                return response
            except grpc.RpcError as exc:  # noqa: PERF203 - retrying is the point of this loop
                code = exc.code()
                details = exc.details() or ""
                if (
                    code is None
                    or code.name not in _RETRYABLE
                    or "larger than max" in details  # this device's own message is too big
                ):
                    name = code.name if code is not None else "UNKNOWN"
                    if name == "FAILED_PRECONDITION" and method == "Hello":
                        raise JobMissed(details[:300]) from None  # the job is already over
                    raise TransportError(
                        f"server {self.target} refused the request ({name}: {details})"
                    ) from None
                if time.monotonic() - last_ok > self.retry_seconds:
                    raise TransportError(
                        f"lost the aggregation server at {self.target}: unreachable for "
                        f"{self.retry_seconds:g} s ({code.name})"
                    ) from None
                time.sleep(backoff_delay(pause))
                pause = min(_BACKOFF_CAP, pause * 2)

    def close(self) -> None:
        self.channel.close()


def backoff_delay(pause: float) -> float:
    """A retry's sleep for backoff level ``pause`` (seconds): "equal jitter", uniform in
    [pause/2, pause], from the OS CSPRNG so devices that were refused together do not
    retry together (and no one can predict when they will)."""
    half = pause / 2
    return half + secrets.randbelow(1_000_001) / 1_000_000 * half


def _check_job(announced: JobSpec, expected: JobSpec | None) -> None:
    if expected is not None and announced != expected:
        raise ConfigError(
            f"the server announces job {announced.to_json().decode()}, "
            f"this device expects {expected.to_json().decode()}: refusing to join"
        )


def run_device(
    target: str,
    client_id: int,
    identity: secagg.SigningKey,
    inputs: InputsFn,
    tls: ClientTLS,
    *,
    expected_job: JobSpec | None = None,
    verify_keys: Mapping[int, bytes] | None = None,
    retry_seconds: float = 15.0,
    poll_seconds: float = 5.0,
    hooks: Sequence[FaultHook] = (),
    on_event: Callable[[str], None] | None = None,
    model_inputs: ModelInputsFn | None = None,
    round_inputs: RoundInputsFn | None = None,
    guard: DeviceGuard | None = None,
) -> DeviceReport:
    """Take part in every round of the job served at ``target`` until the server says done.

    ``inputs(r, job)`` gives this device's ring vector for round r of ``job``.
    ``expected_job`` pins the public parameters (a server announcing others is refused);
    ``verify_keys`` (the registry) is required in malicious-server mode. ``hooks`` rewrite
    or drop outgoing replies, as with :class:`~protocols.transport.InMemoryTransport`.
    With ``model_inputs``, the device first fetches the round's public model, checks that
    its digest is the setup's context digest (else it sits the round out, and the abort is
    reported), and computes its vector with ``model_inputs(r, job, model)``.
    A per-round job needs ``round_inputs`` (see :class:`RoundInfo`; a fixed job ignores
    it, so one device can serve either kind, as the server's welcome says); a round whose
    announcement does not fit the job, or whose inputs raise :class:`RoundRefused`, is sat
    out and reported as an abort.
    ``guard`` (the device's policy and pinned manifest) checks the welcome — a refusal
    raises :class:`~protocols.policy.PolicyViolation` before any request derived from the
    device's data — and every round's announcement before the device computes or sends
    anything for it (a refused round is sat out and reported as an abort naming the rule).
    Raises :class:`TransportError` if the server is lost or refuses this device, and
    :class:`JobMissed` (a TransportError) if the job ended before this device took part in
    any round because it joined after the join deadline.
    """
    bootstrap = _Link(target, tls, 1 << 20, retry_seconds, (client_id, identity, b""))
    try:
        welcome = bootstrap.call("Hello", lambda: encode_hello(client_id), poll_seconds + 5)
    finally:
        bootstrap.close()
    try:
        nonce, job, signed_manifest = decode_signed_welcome(welcome)
    except DecodeError as exc:
        raise TransportError(f"server {target} sent a malformed welcome: {exc}") from None
    _check_job(job, expected_job)
    if guard is not None:
        guard.check_welcome(target, job, signed_manifest)
    if job.per_round and round_inputs is None:
        raise ConfigError("this is a per-round job (training): the device needs round_inputs")
    if job.threat() is not ThreatModel.HONEST_BUT_CURIOUS and verify_keys is None:
        raise ConfigError("this job runs in malicious-server mode: the client registry is needed")
    link = _Link(target, tls, job.max_message_bytes(), retry_seconds, (client_id, identity, nonce))
    emit = on_event or (lambda _text: None)
    counter = 0
    seen = 0
    pending: tuple[int, int, bytes] = (0, NO_STAGE, b"")
    machine: SecAggClient | None = None
    machine_round = -1
    completed: list[int] = []
    aborts: list[str] = []
    try:
        while True:
            rnd, stage, payload = pending

            def request(
                rnd: int = rnd, stage: int = stage, payload: bytes = payload, seen: int = seen
            ) -> bytes:
                nonlocal counter
                counter += 1  # a retry is a new request: fresh counter, fresh signature
                ex = Exchange(client_id, counter, rnd, stage, payload, seen)
                return ex.sign(identity, nonce)

            raw = link.call("Exchange", request, poll_seconds + 10)
            try:
                reply = decode_reply(raw)
            except DecodeError as exc:
                raise TransportError(f"server {target} sent a malformed reply: {exc}") from None
            pending = (0, NO_STAGE, b"")
            if reply.status == ReplyStatus.DONE:
                if reply.payload and not completed:
                    # the server says this device missed the whole job (joined too late)
                    raise JobMissed(reply.payload.decode("utf-8", "replace")[:300])
                emit("done")
                return DeviceReport(client_id, tuple(completed), tuple(aborts))
            if reply.status == ReplyStatus.WAIT:
                continue
            key = stage_key(reply.round_number, reply.stage)
            if key <= seen:
                continue  # an old message again: nothing to answer
            seen = key
            stage_enum = _STAGES[reply.stage]
            if reply.round_number != machine_round:
                setup = _safe_decode(reply.payload)
                if reply.round_number < machine_round or not isinstance(setup, SetupRequest):
                    continue  # joined mid-round: wait for the next round's setup
                config = None if job.per_round else job.secagg_config()
                position, want = client_id, job.vector_length
                keys = verify_keys
                if job.per_round and round_inputs is not None:
                    machine_round, machine = reply.round_number, None
                    got = _round_vector(
                        link,
                        client_id,
                        job,
                        reply.round_number,
                        setup,
                        poll_seconds,
                        round_inputs,
                        guard,
                    )
                    if isinstance(got, str):
                        aborts.append(f"round {reply.round_number}: {got}")
                        emit(aborts[-1])
                        continue  # sit this round out
                    vector, position, config, spec = got
                    want = spec.vector_length
                    if verify_keys is not None:
                        keys = {pos: verify_keys[cid] for pos, cid in enumerate(spec.cohort)}
                elif guard is not None and (
                    refusal := _guard_round(guard, job, reply.round_number, job.secagg_config())
                ):
                    aborts.append(f"round {reply.round_number}: {refusal}")
                    emit(aborts[-1])
                    machine_round, machine = reply.round_number, None
                    continue  # sit this round out: nothing derived from the data is sent
                elif model_inputs is None:
                    vector = np.asarray(inputs(reply.round_number, job))
                else:
                    model = _fetch_model(link, client_id, reply.round_number, setup, poll_seconds)
                    if model is None:
                        aborts.append(f"round {reply.round_number}: model digest mismatch")
                        emit(aborts[-1])
                        machine_round = reply.round_number
                        machine = None
                        continue  # sit this round out: its session is not this model's
                    vector = np.asarray(model_inputs(reply.round_number, job, model))
                if vector.shape != (want,):
                    raise ConfigError(
                        f"round {reply.round_number}: this device's input has shape "
                        f"{vector.shape}, the round needs ({want},)"
                    )
                assert config is not None
                if guard is not None:
                    guard.joined(reply.round_number)
                machine = SecAggClient(
                    position,
                    config,
                    vector,
                    signing_key=identity if config.consistency_check else None,
                    verify_keys=keys if config.consistency_check else None,
                )
                machine_round = reply.round_number
            if machine is None:
                continue  # a round this device sat out
            answer = machine.handle_bytes(reply.payload)
            if machine.abort_reason is not None and machine.state.value == "aborted":
                aborts.append(f"round {machine_round}: {machine.abort_reason.value}")
            elif stage_enum is Stage.UNMASK:
                completed.append(machine_round)
            emit(f"round {machine_round} stage {stage_enum.value}")
            outgoing: bytes | None = answer
            for hook in hooks:
                if outgoing is None:
                    break
                outgoing = hook(Direction.TO_SERVER, stage_enum, client_id, outgoing)
            if outgoing is not None:
                pending = (reply.round_number, reply.stage, outgoing)
    finally:
        link.close()


def _fetch_model(
    link: _Link, client_id: int, round_number: int, setup: SetupRequest, poll_seconds: float
) -> bytes | None:
    """The round's model payload, or None if it is not the one the setup's context digest
    commits to (so the device's session would not be the model's)."""
    envelope = link.call(
        "Model", lambda: encode_model_request(client_id, round_number), poll_seconds + 10
    )
    try:
        rnd, payload = decode_model(envelope)
    except DecodeError as exc:
        raise TransportError(f"server {link.target} sent a malformed model: {exc}") from None
    if rnd != round_number or model_digest(envelope) != setup.context_digest:
        return None
    return payload


def _round_vector(
    link: _Link,
    client_id: int,
    job: JobSpec,
    round_number: int,
    setup: SetupRequest,
    poll_seconds: float,
    round_inputs: RoundInputsFn,
    guard: DeviceGuard | None = None,
) -> tuple[npt.NDArray[Any], int, SecAggConfig, RoundSpec] | str:
    """(vector, position, config, announcement) of a per-round job's round, or why to sit it out."""
    payload = _fetch_model(link, client_id, round_number, setup, poll_seconds)
    if payload is None:
        return "model digest mismatch"
    try:
        spec = decode_round(payload, job)
        config = spec.secagg_config(job)
    except (DecodeError, ConfigError) as exc:
        return f"refused the round announcement ({exc})"
    if client_id not in spec.cohort:
        return "not in the announced cohort"
    if guard is not None and (
        refusal := _guard_round(guard, job, round_number, config, spec.vector_length)
    ):
        return refusal
    position = spec.cohort.index(client_id)
    try:
        vector = np.asarray(round_inputs(RoundInfo(job, round_number, position, spec)))
    except RoundRefused as exc:
        return f"refused ({exc})"
    return vector, position, config, spec


def _guard_round(
    guard: DeviceGuard,
    job: JobSpec,
    round_number: int,
    config: SecAggConfig,
    vector_length: int | None = None,
) -> str:
    """Why ``guard`` refuses the round (empty if it accepts it)."""
    try:
        guard.check_round(job, round_number, config, vector_length or job.vector_length)
    except PolicyViolation as exc:
        return str(exc)
    return ""


def _safe_decode(payload: bytes) -> object:
    try:
        return decode(payload)
    except DecodeError:
        return None
