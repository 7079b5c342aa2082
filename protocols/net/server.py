"""The aggregation server of a networked job: SecAgg rounds driven over gRPC with TLS.

One driver thread runs the unchanged :class:`~protocols.server.SecAggServer` stage by stage;
gRPC worker threads serve clients. A client long-polls ``Exchange`` with its reply to the
last message it processed and gets its next message when the stage closes. A stage closes
when every expected, online client has answered or its deadline passes: clients that miss a
deadline are dropped from the stage (the protocol recovers their masks) and counted as
offline, so later rounds do not wait for them until they speak again. Requests are
authenticated per client (Ed25519 over the server's per-run nonce and a strictly increasing
counter), sizes are capped by gRPC before anything is parsed, and bad requests are refused
without touching the round.

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
    NO_STAGE,
    SERVICE,
    JobSpec,
    Reply,
    ReplyStatus,
    RoundSpec,
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

__all__ = ["AggregationServer", "RoundOutcome", "ServerTLS"]


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
        self._models: dict[int, bytes] = {}
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
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=job.num_clients + 8),
            options=[
                ("grpc.max_receive_message_length", cap),
                ("grpc.max_send_message_length", cap),
            ],
            maximum_concurrent_rpcs=2 * job.num_clients + 16,
        )
        handlers = {
            "Hello": grpc.unary_unary_rpc_method_handler(self._hello),
            "Exchange": grpc.unary_unary_rpc_method_handler(self._exchange),
            "Model": grpc.unary_unary_rpc_method_handler(self._model_call),
        }
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
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

    def stop(self) -> None:
        """Tell waiting clients the job is over and stop serving."""
        with self._cv:
            self._done = True
            self._cv.notify_all()
        self._server.stop(grace=0.5).wait()

    def run(self, on_round: Callable[[RoundOutcome], None] | None = None) -> list[RoundOutcome]:
        """Wait for clients, run every round, tell clients the job is done; return outcomes.

        For fixed jobs; a per-round job is driven with :meth:`wait_for_clients`,
        :meth:`run_round` and :meth:`finish`."""
        if self.config is None:
            raise ConfigError("a per-round job is driven round by round (run_round)")
        self.wait_for_clients()
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
            return frozenset(self._joined)

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
                    round_number: envelope
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
        with self._cv:
            self._current = None
        output = server.output()
        return RoundOutcome(
            round_number,
            tuple(cohort[p] for p in output.included),
            np.asarray(output.total),
            None,
            time.perf_counter() - start,
            tuple(sorted(ids(server.faulty))),
        )

    # ------------------------------------------------------------------ gRPC handlers

    def _hello(self, request: bytes, context: Any) -> bytes:
        try:
            cid = decode_hello(request)
        except DecodeError as exc:
            self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if cid not in self._keys:
            self._reject(context, grpc.StatusCode.PERMISSION_DENIED, f"unknown client {cid}")
        return self._welcome

    def model_for(self, client_id: int, round_number: int) -> bytes | None:
        """The model envelope served to ``client_id`` for a round (None: not available)."""
        with self._cv:
            return self._models.get(round_number)

    def _model_call(self, request: bytes, context: Any) -> bytes:
        try:
            cid, rnd = decode_model_request(request)
        except DecodeError as exc:
            self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if cid not in self._keys:
            self._reject(context, grpc.StatusCode.PERMISSION_DENIED, f"unknown client {cid}")
        envelope = self.model_for(cid, rnd)
        if envelope is None:
            self._reject(context, grpc.StatusCode.NOT_FOUND, f"no model for round {rnd}")
        assert envelope is not None
        return envelope

    def _reject(self, context: Any, code: Any, text: str) -> None:
        with self._cv:
            self.rejected_requests += 1
        context.abort(code, text)  # raises

    def _exchange(self, request: bytes, context: Any) -> bytes:
        try:
            req = decode_exchange(request, self.nonce, self._keys)
        except DecodeError as exc:
            self._reject(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except AuthenticationError as exc:
            self._reject(context, grpc.StatusCode.UNAUTHENTICATED, str(exc))
        cid = req.client_id
        with self._cv:
            if req.counter <= self._counters.get(cid, -1):
                self.rejected_requests += 1
                replayed = True
            else:
                replayed = False
                self._counters[cid] = req.counter
                self._last_seen[cid] = time.monotonic()
                self._joined.add(cid)
                self._offline.discard(cid)
                self._accept(req.client_id, req.round_number, req.stage, req.payload)
                self._cv.notify_all()
        if replayed:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "replayed request counter")
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

    def _next_for(self, cid: int, seen: int, context: Any) -> Reply:
        end = time.monotonic() + self.poll_seconds
        with self._cv:
            while True:
                if self._mail_key.get(cid, 0) > seen:
                    return self._mail[cid]
                if self._done:
                    return Reply(ReplyStatus.DONE)
                left = end - time.monotonic()
                if left <= 0 or not context.is_active():
                    return Reply(ReplyStatus.WAIT)
                self._cv.wait(min(left, 0.5))
