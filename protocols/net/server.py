"""The aggregation server of a networked job: SecAgg rounds driven over gRPC with TLS.

One driver thread runs the unchanged :class:`~protocols.server.SecAggServer` stage by stage;
gRPC worker threads serve clients. A client long-polls ``Exchange`` with its reply to the
last message it processed and gets its next message when the stage closes. A stage closes
when every expected, online client has answered or its deadline passes: clients that miss a
deadline are dropped from the stage (the protocol recovers their masks) and counted as
offline, so later rounds do not wait for them until they speak again. Requests are
authenticated per client (Ed25519 over the server's per-run nonce and a strictly increasing
counter), sizes are capped by gRPC before anything is parsed, and bad requests are refused
without touching the round. Before any of that, every call is admitted from its signed
header (:class:`AdmissionLimits`): unauthenticated calls are refused without a body read or
a worker thread, each client id holds a bounded number of calls, and stalled or overlong
calls are cancelled, so no caller can use up what the registered devices need. A per-round
job's announcement is served only to the members of its cohort.

A fixed job (:meth:`AggregationServer.run`) aggregates every registered client each round.
A per-round job is driven by the application one round at a time
(:meth:`AggregationServer.run_round` with a :class:`~protocols.net.wire.RoundSpec`: the
cohort, protocol parameters, vector length and public payload of that round), e.g. by a
federated trainer that samples cohorts among :meth:`AggregationServer.connected` devices.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt

from protocols.config import SecAggConfig, Stage
from protocols.errors import ConfigError, DecodeError, ProtocolAborted
from protocols.net.errors import AuthenticationError, TransportError
from protocols.net.wire import (
    AUTH_METADATA,
    NO_STAGE,
    SERVICE,
    JobSpec,
    Reply,
    ReplyStatus,
    RoundSpec,
    decode_call_auth,
    decode_exchange,
    decode_hello,
    decode_model_request,
    encode_model,
    encode_round,
    encode_welcome,
    model_digest,
    stage_code,
    stage_key,
)
from protocols.server import SecAggServer

__all__ = ["AdmissionLimits", "AggregationServer", "RoundOutcome", "ServerTLS"]

_HELLO_WINDOW_NS = 3600 * 10**9  # a Hello header's clock may be off by up to an hour


@dataclass(frozen=True)
class AdmissionLimits:
    """What one identity may hold of the server, and how long any call may take.

    Every call is authenticated from its header (a signature by a registered client key)
    *before* the server reads its body or gives it a worker thread; a call without a valid
    header costs the server one signature check and is refused. ``calls_per_client`` bounds
    the calls one client id holds at once (a device needs one; the second covers a retry
    that overlaps the server noticing the first was cancelled); the worker pool is sized so
    that every registered client can always hold that many, so no identity, registered or
    not, can starve another. ``body_seconds`` bounds the time from a call's header to the
    end of its request body (a stalled stream is cancelled; default 10 s plus the job's
    message cap at 250 kB/s, i.e. a 2 Mbit/s uplink); ``call_seconds`` bounds the handler
    after the body (default: the long-poll period plus 10 s). ``streams_per_connection``
    bounds one TLS connection's concurrent HTTP/2 streams; ``handshake_seconds`` bounds a
    TLS handshake.
    """

    calls_per_client: int = 2
    body_seconds: float | None = None
    call_seconds: float | None = None
    streams_per_connection: int = 16
    handshake_seconds: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.calls_per_client, bool) or not 1 <= self.calls_per_client <= 64:
            raise ConfigError("calls_per_client must be an int in [1, 64]")
        if not 1 <= self.streams_per_connection <= 1024:
            raise ConfigError("streams_per_connection must be in [1, 1024]")
        if not 0 < self.handshake_seconds <= 600:
            raise ConfigError("handshake_seconds must be in (0, 600]")
        for name in ("body_seconds", "call_seconds"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 3600:
                raise ConfigError(f"{name} must be in (0, 3600]")


class _Refusal(Exception):
    """A call refused at admission: the gRPC status and one line for the caller."""

    def __init__(self, code: Any, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass(eq=False)
class _Call:
    """One admitted call: whose, since when, and whether its body arrived."""

    client_id: int
    started: float
    context: Any = None
    body_at: float | None = None


@dataclass(frozen=True)
class ServerTLS:
    """PEM material of the server; ``client_ca`` turns on mutual TLS."""

    cert_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None

    def credentials(self) -> Any:
        """gRPC server credentials."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


@dataclass(frozen=True, eq=False)
class RoundOutcome:
    """One round as the server operator sees it: the sum of ``included`` (client ids) or
    the abort; ``faulty`` lists the client ids whose messages were garbage."""

    round_number: int
    included: tuple[int, ...]
    total: npt.NDArray[Any] | None
    aborted: str | None
    seconds: float
    faulty: tuple[int, ...]


class AggregationServer:
    """Runs ``job.rounds`` SecAgg rounds with the clients of ``registry`` over gRPC/TLS.

    ``registry`` maps client ids ``0..n-1`` to their Ed25519 identity keys;
    ``stage_deadline`` (seconds) is how long a stage waits for stragglers; ``join_deadline``
    how long the first round waits for clients to say hello; ``context`` returns the
    32-byte digest of what the clients are sent besides the protocol for a round.
    ``model`` (instead of ``context``) returns the public model of a round: the server
    serves it to the devices (the ``Model`` call) and its envelope's digest
    (:func:`~protocols.net.wire.model_digest`) is the round's context digest. It is called
    when the round starts, i.e. after the previous round's ``on_round`` callback.
    ``manifest`` is the job's signed manifest (:mod:`protocols.net.manifest`), sent in the
    welcome for the devices to pin.
    """

    def __init__(
        self,
        job: JobSpec,
        registry: Mapping[int, bytes],
        tls: ServerTLS,
        *,
        address: str = "127.0.0.1:0",
        stage_deadline: float = 10.0,
        join_deadline: float = 60.0,
        poll_seconds: float = 5.0,
        linger_seconds: float = 2.0,
        context: Callable[[int], bytes] | None = None,
        model: Callable[[int], bytes] | None = None,
        limits: AdmissionLimits | None = None,
        manifest: bytes = b"",
    ) -> None:
        if context is not None and model is not None:
            raise ConfigError("give a context digest function or a model function, not both")
        self.job = job
        self.config = None if job.per_round else job.secagg_config()
        missing = set(range(job.num_clients)) - set(registry)
        if missing:
            raise AuthenticationError(f"no registered identity key for clients {sorted(missing)}")
        self._keys = {cid: bytes(registry[cid]) for cid in range(job.num_clients)}
        self.stage_deadline = stage_deadline
        self.join_deadline = join_deadline
        self.poll_seconds = poll_seconds
        self.linger_seconds = linger_seconds
        self._context = context or self._default_context
        self._model = model
        self._models: dict[int, tuple[bytes, frozenset[int]]] = {}
        self.limits = limits or AdmissionLimits()
        self.call_seconds = self.limits.call_seconds or poll_seconds + 10.0
        self.body_seconds = self.limits.body_seconds or 10.0 + job.max_message_bytes() / 250e3
        self._calls: dict[int, list[_Call]] = {}
        self._call_counters: dict[int, int] = {}
        self._hello_at: dict[int, float] = {}
        self._joined_once: set[int] = set()
        self._join_closed_at: float | None = None
        self._included_once: set[int] = set()
        self._issued = 0  # the newest stage_key any client was sent
        self.peak_calls_held: dict[int, int] = {}
        self.refused_calls: dict[str, int] = {}
        self.nonce = secrets.token_bytes(32)
        self._welcome = encode_welcome(self.nonce, job, manifest)  # manifest: signed job
        self._cv = threading.Condition()
        self._mail: dict[int, Reply] = {}
        self._mail_key: dict[int, int] = {}
        self._counters: dict[int, int] = {}
        self._joined: set[int] = set()
        self._offline: set[int] = set()
        self._last_seen: dict[int, float] = {}
        self._replied: set[int] = set()
        self._positions: dict[int, int] = {}
        self._cohort: tuple[int, ...] = ()
        self._last_round = -1
        self._current: tuple[int, int] | None = None
        self._secagg: SecAggServer | None = None
        self._done = False
        self.rejected_requests = 0
        self.outcomes: list[RoundOutcome] = []
        cap = job.max_message_bytes()
        # No global cap on concurrent calls (an outsider could fill it): admission is per
        # authenticated identity (_Admission), and the pool holds every identity's quota.
        self._server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=self.limits.calls_per_client * job.num_clients + 16
            ),
            options=[
                ("grpc.max_receive_message_length", cap),
                ("grpc.max_send_message_length", cap),
                ("grpc.max_concurrent_streams", self.limits.streams_per_connection),
                ("grpc.server_handshake_timeout_ms", int(self.limits.handshake_seconds * 1000)),
            ],
        )
        self._server.add_generic_rpc_handlers(
            (
                _Admission(
                    self,
                    {"Hello": self._hello, "Exchange": self._exchange, "Model": self._model_call},
                ),
            )
        )
        self._reaper = threading.Thread(target=self._reap, name="privagg-call-reaper", daemon=True)
        self.port: int = self._server.add_secure_port(address, tls.credentials())
        if self.port == 0:
            raise TransportError(f"cannot listen on {address}")
        self.address = f"{address.rsplit(':', 1)[0]}:{self.port}"

    # ------------------------------------------------------------------ lifecycle

    def _default_context(self, round_number: int) -> bytes:
        return hashlib.sha256(b"privagg/v1/net/job" + self.job.to_json()).digest()

    def start(self) -> None:
        """Start accepting connections (the rounds start with :meth:`run`)."""
        self._server.start()
        self._reaper.start()

    def stop(self) -> None:
        """Tell waiting clients the job is over and stop serving."""
        with self._cv:
            self._done = True
            self._cv.notify_all()
        self._server.stop(grace=0.5).wait()

    def run(
        self,
        on_round: Callable[[RoundOutcome], None] | None = None,
        *,
        on_joined: Callable[[frozenset[int]], None] | None = None,
    ) -> list[RoundOutcome]:
        """Wait for clients, run every round, tell clients the job is done; return outcomes.
        ``on_joined`` is called with the clients that joined when the join deadline closes.

        For fixed jobs; a per-round job is driven with :meth:`wait_for_clients`,
        :meth:`run_round` and :meth:`finish`."""
        if self.config is None:
            raise ConfigError("a per-round job is driven round by round (run_round)")
        joined = self.wait_for_clients()
        if on_joined is not None:
            on_joined(joined)
        everyone = tuple(range(self.job.num_clients))
        for round_number in range(self.job.rounds):
            outcome = self._round(round_number, everyone, self.config, self.job.vector_length)
            self.outcomes.append(outcome)
            if on_round is not None:
                on_round(outcome)
        self.finish()
        return self.outcomes

    def wait_for_clients(self, seconds: float | None = None) -> frozenset[int]:
        """Wait until every registered client said hello (or ``seconds``, default the join
        deadline); those that did not are offline. Returns the clients that joined."""
        everyone = set(range(self.job.num_clients))
        wait = self.join_deadline if seconds is None else seconds
        self._wait(lambda: self._joined >= everyone, wait)
        with self._cv:
            self._offline |= everyone - self._joined
            if self._join_closed_at is None:
                self._join_closed_at = time.monotonic()
            return frozenset(self._joined)

    def never_joined(self) -> tuple[int, ...]:
        """Registered clients that never sent an authenticated request to this run."""
        with self._cv:
            return tuple(sorted(set(self._keys) - self._joined_once))

    def late_joined(self) -> tuple[int, ...]:
        """Clients whose first hello came after the join deadline closed."""
        with self._cv:
            closed = self._join_closed_at
            if closed is None:
                return ()
            return tuple(sorted(c for c, at in self._hello_at.items() if at > closed))

    def connected(self) -> frozenset[int]:
        """Clients that are online now: joined, heard from within a poll period (plus a
        grace of 5 s), and not marked offline by a missed deadline since they last spoke."""
        horizon = time.monotonic() - self.poll_seconds - 5.0
        with self._cv:
            return frozenset(
                cid
                for cid in self._joined - self._offline
                if self._last_seen.get(cid, -math.inf) >= horizon
            )

    def run_round(
        self, round_number: int, spec: RoundSpec, *, graph_seed: bytes | None = None
    ) -> RoundOutcome:
        """Run one round of a per-round job: ``spec`` names the cohort (client ids), the
        protocol parameters, the vector length and the public payload, all announced to the
        cohort in the round's model envelope (whose digest binds the SecAgg session).
        ``round_number`` must increase from call to call; ``graph_seed`` (default: random)
        seeds the SecAgg+ graph."""
        if self.config is not None:
            raise ConfigError("run_round drives per-round jobs; this job is fixed")
        if round_number <= self._last_round:
            raise ConfigError("round numbers must increase")
        config = spec.secagg_config(self.job)
        outcome = self._round(
            round_number,
            tuple(spec.cohort),
            config,
            spec.vector_length,
            announcement=encode_round(spec),
            graph_seed=graph_seed,
        )
        self.outcomes.append(outcome)
        return outcome

    def finish(self) -> None:
        """Tell the clients the job is done (they exit when they next poll)."""
        with self._cv:
            self._done = True
            self._cv.notify_all()
        time.sleep(self.linger_seconds)  # let polling clients hear DONE before we go

    def _wait(self, ready: Callable[[], bool], seconds: float) -> None:
        end = time.monotonic() + seconds
        with self._cv:
            while not ready():
                left = end - time.monotonic()
                if left <= 0:
                    return
                self._cv.wait(left)

    # ------------------------------------------------------------------ the driver

    def _publish(self, round_number: int, stage: Stage, outbound: Mapping[int, Any]) -> None:
        encoded: dict[int, bytes] = {}
        index = stage_code(stage)
        with self._cv:
            for pos, message in outbound.items():
                data = encoded.get(id(message))
                if data is None:  # a broadcast is serialized once
                    data = encoded[id(message)] = message.to_bytes()
                cid = self._cohort[pos]
                self._mail[cid] = Reply(ReplyStatus.MESSAGE, round_number, index, data)
                self._mail_key[cid] = stage_key(round_number, index)
            self._issued = max(self._issued, stage_key(round_number, index))
            self._current = (round_number, index)
            self._replied = set()
            self._cv.notify_all()

    def _round(
        self,
        round_number: int,
        cohort: tuple[int, ...],
        config: SecAggConfig,
        vector_length: int,
        *,
        announcement: bytes | None = None,
        graph_seed: bytes | None = None,
    ) -> RoundOutcome:
        """One SecAgg round among ``cohort`` (protocol position i is client ``cohort[i]``)."""
        start = time.perf_counter()
        self._last_round = round_number
        payload = announcement if announcement is not None else None
        if payload is None and self._model is not None:
            payload = self._model(round_number)
        if payload is None:
            context_digest = self._context(round_number)
        else:
            envelope = encode_model(round_number, payload)
            if len(envelope) > self.job.max_message_bytes():
                raise ConfigError("the model exceeds the job's message size limit")
            with self._cv:
                # this round's and the previous one's (for a device still fetching it)
                self._models = {r: e for r, e in self._models.items() if r == round_number - 1} | {
                    round_number: (envelope, frozenset(cohort))
                }
            context_digest = model_digest(envelope)
        server = SecAggServer(
            config,
            vector_length,
            round_number=round_number,
            graph_seed=graph_seed if graph_seed is not None else secrets.token_bytes(32),
            context_digest=context_digest,
            verify_keys=(
                {pos: self._keys[cid] for pos, cid in enumerate(cohort)}
                if config.consistency_check
                else None
            ),
        )
        with self._cv:
            self._secagg = server
            self._cohort = cohort
            self._positions = {cid: pos for pos, cid in enumerate(cohort)}
        outbound: Mapping[int, Any] = server.start()

        def ids(positions: Iterable[int]) -> set[int]:
            return {cohort[p] for p in positions}

        try:
            while not server.finished:
                stage = server.stage
                assert stage is not None
                self._publish(round_number, stage, outbound)
                expected = ids(server.expected_senders())

                def settled(expected: set[int] = expected, server: SecAggServer = server) -> bool:
                    waiting = expected - self._offline - ids(server.faulty)
                    return waiting <= self._replied | ids(server.client_aborts)

                self._wait(settled, self.stage_deadline)
                with self._cv:
                    self._offline |= expected - self._replied
                    outbound = server.advance()
        except ProtocolAborted as exc:
            with self._cv:
                self._current = None
            return RoundOutcome(
                round_number,
                (),
                None,
                str(exc),
                time.perf_counter() - start,
                tuple(sorted(ids(server.faulty))),
            )
        output = server.output()
        with self._cv:
            self._current = None
            self._included_once |= {cohort[p] for p in output.included}
        return RoundOutcome(
            round_number,
            tuple(cohort[p] for p in output.included),
            np.asarray(output.total),
            None,
            time.perf_counter() - start,
            tuple(sorted(ids(server.faulty))),
        )

    # ------------------------------------------------------------------ admission

    def _admit(self, method: str, header: bytes | None) -> _Call:
        """Authenticate a call from its header and give it one of its client's slots
        (poll thread, server lock: no body read, no worker taken). Raises _Refusal."""
        if header is None:
            raise _Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                f"privagg calls carry a signed {AUTH_METADATA} header (registered clients only)",
            )
        nonce = b"" if method == "Hello" else self.nonce
        try:
            auth = decode_call_auth(header, method, nonce, self._keys)
        except DecodeError as exc:
            raise _Refusal(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None
        except AuthenticationError as exc:
            raise _Refusal(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None
        cid = auth.client_id
        now = time.monotonic()
        with self._cv:
            if method == "Hello":
                # no nonce yet: the header's clock bounds how long a leaked one stays valid
                if abs(time.time_ns() - auth.counter) > _HELLO_WINDOW_NS:
                    raise _Refusal(
                        grpc.StatusCode.UNAUTHENTICATED,
                        "hello header is stale (is this device's clock more than 1 h off?)",
                    )
            elif auth.counter <= self._call_counters.get(cid, -1):
                raise _Refusal(grpc.StatusCode.UNAUTHENTICATED, "replayed call header")
            else:
                self._call_counters[cid] = auth.counter
            # a slot the reaper should have freed by now is a leak: reclaim it
            horizon = self.body_seconds + self.call_seconds + 5
            held = [c for c in self._calls.get(cid, ()) if now - c.started < horizon]
            if len(held) >= self.limits.calls_per_client:
                self._calls[cid] = held
                raise _Refusal(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"client {cid} already holds {len(held)} calls (the limit per client)",
                )
            call = _Call(cid, now)
            self._calls[cid] = [*held, call]
            self.peak_calls_held[cid] = max(self.peak_calls_held.get(cid, 0), len(held) + 1)
            return call

    def _release(self, call: _Call) -> None:
        with self._cv:
            held = self._calls.get(call.client_id, [])
            if call in held:
                held.remove(call)

    def _count_refusal(self, code: Any) -> None:
        with self._cv:
            self.rejected_requests += 1
            self.refused_calls[code.name] = self.refused_calls.get(code.name, 0) + 1

    def _reap(self) -> None:
        """Cancel calls whose body is late or that outlive ``call_seconds``: a stalled
        stream holds its client's slot for seconds, never for good."""
        while True:
            with self._cv:
                if self._done and not any(self._calls.values()):
                    return
                now = time.monotonic()
                late = [
                    c
                    for held in self._calls.values()
                    for c in held
                    if c.context is not None
                    and (
                        (c.body_at is None and now - c.started > self.body_seconds)
                        or (c.body_at is not None and now - c.body_at > self.call_seconds)
                    )
                ]
            for call in late:
                call.context.cancel()
                self._release(call)
            time.sleep(0.25)

    # ------------------------------------------------------------------ gRPC handlers

    def _hello(self, request: bytes, context: Any, caller: int) -> bytes:
        try:
            cid = decode_hello(request)
        except DecodeError as exc:
            self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if cid != caller:
            self._reject(context, grpc.StatusCode.PERMISSION_DENIED, "hello names another client")
        with self._cv:
            done = self._done
            took_part = cid in self._included_once
            self._hello_at.setdefault(cid, time.monotonic())
        if done:
            self._reject(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                "the job is over"
                if took_part
                else f"the job is over: its rounds ran without client {cid}, which joined "
                "after the join deadline",
            )
        return self._welcome

    def model_for(self, client_id: int, round_number: int) -> bytes | None:
        """The model envelope served to ``client_id`` for a round (None: not available, or
        ``client_id`` is not in that round's cohort)."""
        with self._cv:
            entry = self._models.get(round_number)
        if entry is None or client_id not in entry[1]:
            return None
        return entry[0]

    def _model_call(self, request: bytes, context: Any, caller: int) -> bytes:
        try:
            cid, rnd = decode_model_request(request)
        except DecodeError as exc:
            self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if cid != caller:
            self._reject(
                context, grpc.StatusCode.PERMISSION_DENIED, "model request names another client"
            )
        envelope = self.model_for(cid, rnd)
        if envelope is None:
            # the same answer for "no such round" and "not your cohort": a non-member learns
            # nothing about the round
            self._reject(
                context, grpc.StatusCode.NOT_FOUND, f"no model for client {cid} in round {rnd}"
            )
        assert envelope is not None
        return envelope

    def _reject(self, context: Any, code: Any, text: str) -> None:
        self._count_refusal(code)
        context.abort(code, text)  # raises

    def _exchange(self, request: bytes, context: Any, caller: int) -> bytes:
        try:
            req = decode_exchange(request, self.nonce, self._keys)
        except DecodeError as exc:
            self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except AuthenticationError as exc:
            self._reject(context, grpc.StatusCode.UNAUTHENTICATED, str(exc))
        cid = req.client_id
        if cid != caller:
            self._reject(context, grpc.StatusCode.PERMISSION_DENIED, "request names another client")
        with self._cv:
            bogus = req.seen > self._issued
        if bogus:  # a long-poll that cannot be real must not keep its client "online"
            self._reject(
                context, grpc.StatusCode.INVALID_ARGUMENT, "seen names a message never sent"
            )
        with self._cv:
            if req.counter <= self._counters.get(cid, -1):
                replayed = True
            else:
                replayed = False
                self._counters[cid] = req.counter
                self._last_seen[cid] = time.monotonic()
                self._joined.add(cid)
                self._joined_once.add(cid)
                self._offline.discard(cid)
                self._accept(req.client_id, req.round_number, req.stage, req.payload)
                self._cv.notify_all()
        if replayed:
            self._reject(context, grpc.StatusCode.UNAUTHENTICATED, "replayed request counter")
        return self._next_for(cid, req.seen, context).to_bytes()

    def _accept(self, cid: int, round_number: int, stage: int, payload: bytes) -> None:
        """Hand a reply to the state machine if it answers the open stage (lock held)."""
        server = self._secagg
        if stage == NO_STAGE or server is None or self._current != (round_number, stage):
            return
        pos = self._positions.get(cid)
        if pos is None or cid in self._replied:
            return  # not in the cohort, or a retried request: the first copy counts
        self._replied.add(cid)
        server.receive_bytes(pos, payload)

    def _done_reply(self, cid: int) -> Reply:
        """DONE, with the reason when this client took part in nothing (lock held)."""
        closed = self._join_closed_at
        hello = self._hello_at.get(cid)
        if cid in self._included_once or closed is None or hello is None or hello <= closed:
            return Reply(ReplyStatus.DONE)
        late = hello - closed
        text = (
            f"the job ended before client {cid} took part in any round: it joined "
            f"{late:.1f} s after the join deadline"
        )
        return Reply(ReplyStatus.DONE, payload=text.encode())

    def _next_for(self, cid: int, seen: int, context: Any) -> Reply:
        end = time.monotonic() + self.poll_seconds
        with self._cv:
            while True:
                if self._mail_key.get(cid, 0) > seen:
                    return self._mail[cid]
                if self._done:
                    return self._done_reply(cid)
                left = end - time.monotonic()
                if left <= 0 or not context.is_active():
                    return Reply(ReplyStatus.WAIT)
                self._cv.wait(min(left, 0.5))


_Behavior = Callable[[bytes, Any, int], bytes]


class _Admission(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Routes the service's calls; authenticates and admits each one from its header in
    gRPC's polling thread, before any worker thread or body read is spent on it.

    Every method is served as stream-unary so that the handler (not gRPC) reads the one
    request message, under the body deadline the reaper enforces; a unary handler would
    park a worker thread until a stalled client sends its body."""

    def __init__(self, server: AggregationServer, behaviors: Mapping[str, _Behavior]) -> None:
        self._server = server
        self._behaviors = {f"/{SERVICE}/{name}": (name, fn) for name, fn in behaviors.items()}

    def service(self, details: Any) -> Any:
        entry = self._behaviors.get(details.method)
        if entry is None:
            return None  # UNIMPLEMENTED
        name, behavior = entry
        header = next((v for k, v in details.invocation_metadata or () if k == AUTH_METADATA), None)
        try:
            call = self._server._admit(name, header if isinstance(header, bytes) else None)
        except _Refusal as refusal:
            self._server._count_refusal(refusal.code)
            return grpc.stream_unary_rpc_method_handler(_refuse(refusal))
        return grpc.stream_unary_rpc_method_handler(_admitted(self._server, call, behavior))


def _refuse(refusal: _Refusal) -> Callable[[Any, Any], bytes]:
    def handler(_requests: Any, context: Any) -> bytes:
        context.abort(refusal.code, refusal.text)  # raises; the body is never read
        raise AssertionError("unreachable")

    return handler


def _admitted(
    server: AggregationServer, call: _Call, behavior: _Behavior
) -> Callable[[Any, Any], bytes]:
    def handler(requests: Any, context: Any) -> bytes:
        try:
            with server._cv:
                call.context = context  # from now on the reaper can cancel it
            try:
                request = next(requests)
            except StopIteration:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a call carries one request")
            call.body_at = time.monotonic()
            return behavior(request, context, call.client_id)
        finally:
            server._release(call)

    return handler
