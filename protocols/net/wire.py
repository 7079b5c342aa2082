"""Envelopes of the gRPC deployment: the job description, signed requests, replies.

The protocol messages themselves keep their canonical encoding (:mod:`protocols.messages`);
an envelope only adds who sends (client id), a strictly increasing counter and an Ed25519
signature over the server's per-run nonce and everything else, so a request cannot be
forged, replayed, or carried over to another server run. Layout: ``b"PN"`` · version ·
type, then little-endian fixed-width fields (u32 lengths, capped by the gRPC size limit).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import secagg
from protocols.config import SecAggConfig, Stage, ThreatModel
from protocols.errors import ConfigError, DecodeError
from protocols.net.errors import AuthenticationError

__all__ = [
    "AUTH_METADATA",
    "NO_STAGE",
    "SERVICE",
    "CallAuth",
    "Exchange",
    "JobSpec",
    "Reply",
    "ReplyStatus",
    "RoundSpec",
    "decode_call_auth",
    "decode_exchange",
    "decode_hello",
    "decode_model",
    "decode_model_request",
    "decode_reply",
    "decode_round",
    "decode_signed_welcome",
    "decode_welcome",
    "encode_hello",
    "encode_model",
    "encode_model_request",
    "encode_round",
    "encode_welcome",
    "model_digest",
    "sign_call",
    "stage_code",
    "stage_key",
]

SERVICE = "privagg.Aggregation"
NONCE_BYTES = 32
NO_STAGE = 0xFF
_SIGNATURE_BYTES = 64
_LABEL = b"privagg/v1/net/exchange"
_MAGIC = b"PN"
_VERSION = 1
_HELLO, _WELCOME, _EXCHANGE, _REPLY, _MODEL, _MODEL_REQUEST = 1, 2, 3, 4, 5, 6
_MODEL_LABEL = b"privagg/v1/net/model"
_MODEL_FIXED = struct.Struct("<QI")
_MODEL_REQUEST_FIXED = struct.Struct("<IQ")
_HEADER = struct.Struct("<2sBB")
_EXCHANGE_FIXED = struct.Struct("<IQQBI")
_REPLY_FIXED = struct.Struct("<BQBI")
_U32 = struct.Struct("<I")
_STAGES = tuple(Stage)
AUTH_METADATA = "privagg-auth-bin"
"""gRPC metadata key of a call's authentication header (binary: ``-bin``)."""
_AUTH_LABEL = b"privagg/v1/net/call"
_AUTH_FIXED = struct.Struct("<IQ")


def stage_code(stage: Stage) -> int:
    """The one-byte code of ``stage`` in envelopes."""
    return _STAGES.index(stage)


def stage_key(round_number: int, stage_index: int) -> int:
    """Total order of (round, stage) pairs: a client asks for messages after its key."""
    return round_number * 8 + stage_index + 1


def _header(data: bytes, kind: int) -> None:
    if len(data) < _HEADER.size:
        raise DecodeError("envelope truncated")
    magic, version, got = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _VERSION or got != kind:
        raise DecodeError("not a privagg network envelope of the expected type and version")


@dataclass(frozen=True)
class JobSpec:
    """Public parameters of a training job: every client can check them before joining.

    A fixed job (``per_round=False``) aggregates every registered client each round, with
    ``threshold``, ``neighbors`` and ``vector_length`` for all rounds. A per-round job
    (``per_round=True``, e.g. federated training with sampled cohorts) announces each
    round's cohort, protocol parameters and vector length in the round's public model
    envelope (:class:`RoundSpec`, bound into the SecAgg session by its digest); then
    ``num_clients`` is the registered population, ``threshold`` the smallest cohort a
    device agrees to be aggregated with, and ``vector_length`` the cap on any round's
    vector. ``model_bytes`` is the cap on a round's public model (it raises the message
    size limit by that much). ``corrupt_fraction`` is the assumed fraction of corrupt
    clients (n_C = ⌈fraction · n⌉ of each cohort): required in malicious-server mode, where
    every threshold must exceed (n + n_C)/2 and only the full graph is accepted.
    """

    num_clients: int
    threshold: int
    vector_length: int
    rounds: int
    bits: int = 32
    neighbors: int | None = None
    threat_model: str = ThreatModel.HONEST_BUT_CURIOUS.value
    per_round: bool = False
    model_bytes: int = 0
    corrupt_fraction: float | None = None

    def __post_init__(self) -> None:
        for name in ("vector_length", "rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if self.vector_length > 1 << 28:
            raise ConfigError("vector_length must be at most 2^28")
        if not isinstance(self.per_round, bool):
            raise ConfigError("per_round must be true or false")
        m = self.model_bytes
        if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m <= 1 << 30:
            raise ConfigError(f"model_bytes must be an int in [0, 2^30], got {m!r}")
        if self.per_round:
            n, t = self.num_clients, self.threshold
            if any(isinstance(v, bool) or not isinstance(v, int) for v in (n, t)):
                raise ConfigError("num_clients and threshold must be ints")
            if not 2 <= t <= n:
                raise ConfigError("a per-round job needs 2 <= threshold (min cohort) <= clients")
            threat = self.threat()
            # validates bits, the population and (malicious mode) the corrupt fraction
            SecAggConfig(
                n,
                n,
                bits=self.bits,
                threat_model=threat,
                corrupt_fraction=self.corrupt_fraction,
            )
        else:
            self.secagg_config()  # validates the protocol parameters now

    def threat(self) -> ThreatModel:
        """The job's threat model."""
        try:
            return ThreatModel(self.threat_model)
        except ValueError:
            names = [m.value for m in ThreatModel]
            raise ConfigError(f"threat_model must be one of {names}") from None

    def secagg_config(self) -> SecAggConfig:
        """The protocol configuration of every round of a fixed job."""
        if self.per_round:
            raise ConfigError("a per-round job announces each round's protocol parameters")
        return SecAggConfig(
            self.num_clients,
            self.threshold,
            neighbors=self.neighbors,
            bits=self.bits,
            threat_model=self.threat(),
            corrupt_fraction=self.corrupt_fraction,
        )

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys): what the server announces in its welcome."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> JobSpec:
        """Build from a parsed JSON object; unknown or missing fields are a ConfigError."""
        names = set(cls.__dataclass_fields__)
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown job fields {sorted(unknown)}")
        try:
            return cls(**data)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(f"bad job description: {exc}") from None

    def max_message_bytes(self) -> int:
        """A cap on any single message of this job (the gRPC receive limit)."""
        word = 4 if self.bits <= 32 else 8
        per_client = 2 * 4096 + 256  # one share ciphertext each way plus ids and keys
        fixed = 64 * 1024 + self.model_bytes
        return fixed + word * self.vector_length + per_client * self.num_clients


@dataclass(frozen=True)
class RoundSpec:
    """One round of a per-round job: the cohort (registered client ids, increasing; the
    protocol position of ``cohort[i]`` is ``i``), its SecAgg threshold and neighbors, the
    vector length, and the application's public payload (model, DP parameters)."""

    cohort: tuple[int, ...]
    threshold: int
    vector_length: int
    neighbors: int | None = None
    payload: bytes = b""

    def secagg_config(self, job: JobSpec) -> SecAggConfig:
        """The protocol configuration of this round (ConfigError if it is not valid for
        ``job``: unknown clients, a cohort below the job's minimum, a vector over the cap)."""
        n = len(self.cohort)
        if n < max(2, job.threshold):
            raise ConfigError(f"cohort of {n} is below the job's minimum of {job.threshold}")
        if any(b <= a for a, b in zip(self.cohort, self.cohort[1:], strict=False)):
            raise ConfigError("the cohort must list client ids in increasing order")
        if self.cohort[0] < 0 or self.cohort[-1] >= job.num_clients:
            raise ConfigError("the cohort names clients that are not registered")
        if not 1 <= self.vector_length <= job.vector_length:
            raise ConfigError(f"vector length {self.vector_length} exceeds the job's cap")
        return SecAggConfig(
            n,
            self.threshold,
            neighbors=self.neighbors,
            bits=job.bits,
            threat_model=job.threat(),
            corrupt_fraction=job.corrupt_fraction,
        )


def encode_round(spec: RoundSpec) -> bytes:
    """The round announcement (the model payload of a per-round job): u32 length, a
    canonical JSON header, then the application payload."""
    head = json.dumps(
        {
            "cohort": [int(c) for c in spec.cohort],
            "threshold": int(spec.threshold),
            "neighbors": spec.neighbors,
            "vector_length": int(spec.vector_length),
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return _U32.pack(len(head)) + head + bytes(spec.payload)


def decode_round(data: bytes, job: JobSpec) -> RoundSpec:
    """Parse and check a round announcement against the job (DecodeError if malformed,
    ConfigError if its parameters are not acceptable for the job)."""
    if len(data) < _U32.size:
        raise DecodeError("round announcement truncated")
    (length,) = _U32.unpack_from(data)
    if len(data) < _U32.size + length or length > 64 * 1024 + 16 * job.num_clients:
        raise DecodeError("round announcement has a bad header length")
    try:
        head = json.loads(data[_U32.size : _U32.size + length])
        cohort = tuple(head["cohort"])
        spec = RoundSpec(
            cohort,
            head["threshold"],
            head["vector_length"],
            head["neighbors"],
            data[_U32.size + length :],
        )
    except (ValueError, KeyError, TypeError):
        raise DecodeError("round announcement carries no valid header") from None
    fields = (*spec.cohort, spec.threshold, spec.vector_length)
    if set(head) != {"cohort", "threshold", "neighbors", "vector_length"} or any(
        isinstance(v, bool) or not isinstance(v, int) for v in fields
    ):
        raise DecodeError("round announcement header has bad fields")
    if spec.neighbors is not None and (
        isinstance(spec.neighbors, bool) or not isinstance(spec.neighbors, int)
    ):
        raise DecodeError("round announcement header has bad fields")
    if not spec.cohort:
        raise DecodeError("round announcement has an empty cohort")
    spec.secagg_config(job)
    return spec


def encode_hello(client_id: int) -> bytes:
    """A client's first request: its id (the welcome it gets is public)."""
    return _HEADER.pack(_MAGIC, _VERSION, _HELLO) + _U32.pack(client_id)


def decode_hello(data: bytes) -> int:
    """The client id of a hello request."""
    _header(data, _HELLO)
    if len(data) != _HEADER.size + _U32.size:
        raise DecodeError("hello has the wrong length")
    (client_id,) = _U32.unpack_from(data, _HEADER.size)
    return int(client_id)


def encode_welcome(nonce: bytes, job: JobSpec, manifest: bytes = b"") -> bytes:
    """The server's answer to hello: its per-run nonce, the public job description and,
    optionally, the job's signed manifest (:mod:`protocols.manifest`; u32 length then the
    bytes, after the job; absent in welcomes of servers that sign nothing)."""
    spec = job.to_json()
    head = _HEADER.pack(_MAGIC, _VERSION, _WELCOME)
    tail = _U32.pack(len(manifest)) + bytes(manifest) if manifest else b""
    return head + nonce + _U32.pack(len(spec)) + spec + tail


def decode_welcome(data: bytes) -> tuple[bytes, JobSpec]:
    """``(nonce, job)`` from a welcome; anything malformed is a DecodeError."""
    nonce, job, _ = decode_signed_welcome(data)
    return nonce, job


def decode_signed_welcome(data: bytes) -> tuple[bytes, JobSpec, bytes]:
    """``(nonce, job, signed manifest bytes or b"")`` from a welcome; anything malformed is
    a DecodeError (the manifest itself is verified by :mod:`protocols.manifest`)."""
    _header(data, _WELCOME)
    off = _HEADER.size
    nonce = data[off : off + NONCE_BYTES]
    off += NONCE_BYTES
    if len(nonce) != NONCE_BYTES or len(data) < off + 4:
        raise DecodeError("welcome truncated")
    (length,) = _U32.unpack_from(data, off)
    end = off + 4 + length
    manifest = b""
    if len(data) != end:
        if len(data) < end + 4:
            raise DecodeError("welcome has the wrong length")
        (signed,) = _U32.unpack_from(data, end)
        if signed == 0 or len(data) != end + 4 + signed:
            raise DecodeError("welcome has the wrong length")
        manifest = data[end + 4 :]
    try:
        parsed = json.loads(data[off + 4 : end])
    except ValueError:
        raise DecodeError("welcome carries no valid job description") from None
    if not isinstance(parsed, dict):
        raise DecodeError("welcome carries no valid job description")
    try:
        return nonce, JobSpec.from_mapping(parsed), manifest
    except ConfigError as exc:
        raise DecodeError(f"welcome carries an invalid job: {exc}") from None


@dataclass(frozen=True)
class Exchange:
    """One signed client request: the reply to message ``(round, stage)`` (may be empty).

    ``stage == NO_STAGE`` means "no reply, just give me my next message after ``seen``";
    ``seen`` is the :func:`stage_key` of the last server message the client processed.
    """

    client_id: int
    counter: int
    round_number: int
    stage: int
    payload: bytes
    seen: int

    def body(self) -> bytes:
        fixed = _EXCHANGE_FIXED.pack(
            self.client_id, self.counter, self.round_number, self.stage, len(self.payload)
        )
        head = _HEADER.pack(_MAGIC, _VERSION, _EXCHANGE)
        return head + fixed + struct.pack("<Q", self.seen) + self.payload

    def sign(self, key: secagg.SigningKey, nonce: bytes) -> bytes:
        """The encoded request, signed for the server run identified by ``nonce``."""
        body = self.body()
        return body + key.sign(_LABEL + nonce + body)


def decode_exchange(data: bytes, nonce: bytes, verify_keys: Mapping[int, bytes]) -> Exchange:
    """Parse and authenticate a request: DecodeError if malformed, AuthenticationError if
    the id is unknown or the signature does not verify under that client's key."""
    _header(data, _EXCHANGE)
    off = _HEADER.size
    if len(data) < off + _EXCHANGE_FIXED.size + 8 + _SIGNATURE_BYTES:
        raise DecodeError("request truncated")
    cid, counter, rnd, stage, length = _EXCHANGE_FIXED.unpack_from(data, off)
    off += _EXCHANGE_FIXED.size
    (seen,) = struct.unpack_from("<Q", data, off)
    off += 8
    if len(data) != off + length + _SIGNATURE_BYTES:
        raise DecodeError("request has the wrong length")
    if stage != NO_STAGE and stage >= len(_STAGES):
        raise DecodeError("unknown stage code")
    public = verify_keys.get(int(cid))
    if public is None:
        raise AuthenticationError(f"client {cid} is not registered with this server")
    body, signature = data[:-_SIGNATURE_BYTES], data[-_SIGNATURE_BYTES:]
    try:
        secagg.verify_signature(public, _LABEL + nonce + body, signature)
    except secagg.SecAggError:
        raise AuthenticationError(f"bad signature for client {cid}") from None
    return Exchange(int(cid), int(counter), int(rnd), int(stage), data[off:-_SIGNATURE_BYTES], seen)


class ReplyStatus:
    """What the server answers an exchange with."""

    MESSAGE = 0
    WAIT = 1
    DONE = 2


@dataclass(frozen=True)
class Reply:
    """The server's answer: a protocol message for ``(round, stage)``, WAIT or DONE."""

    status: int
    round_number: int = 0
    stage: int = NO_STAGE
    payload: bytes = b""

    def to_bytes(self) -> bytes:
        head = _HEADER.pack(_MAGIC, _VERSION, _REPLY)
        fixed = _REPLY_FIXED.pack(self.status, self.round_number, self.stage, len(self.payload))
        return head + fixed + self.payload


def decode_reply(data: bytes) -> Reply:
    """Parse a server reply; anything malformed is a DecodeError."""
    _header(data, _REPLY)
    off = _HEADER.size
    if len(data) < off + _REPLY_FIXED.size:
        raise DecodeError("reply truncated")
    status, rnd, stage, length = _REPLY_FIXED.unpack_from(data, off)
    off += _REPLY_FIXED.size
    if len(data) != off + length or status not in (0, 1, 2):
        raise DecodeError("malformed reply")
    if status == ReplyStatus.MESSAGE and stage >= len(_STAGES):
        raise DecodeError("reply names an unknown stage")
    return Reply(int(status), int(rnd), int(stage), data[off:])


def encode_model(round_number: int, payload: bytes) -> bytes:
    """The public model a server broadcasts for ``round_number`` (``payload`` is opaque to
    the transport: the application's serialized model)."""
    if isinstance(round_number, bool) or not 0 <= round_number < 1 << 64:
        raise ConfigError("round_number must be an int in [0, 2^64)")
    head = _HEADER.pack(_MAGIC, _VERSION, _MODEL)
    return head + _MODEL_FIXED.pack(round_number, len(payload)) + bytes(payload)


def decode_model(data: bytes) -> tuple[int, bytes]:
    """``(round number, payload)`` of a model envelope; anything malformed is a DecodeError."""
    _header(data, _MODEL)
    off = _HEADER.size
    if len(data) < off + _MODEL_FIXED.size:
        raise DecodeError("model envelope truncated")
    rnd, length = _MODEL_FIXED.unpack_from(data, off)
    off += _MODEL_FIXED.size
    if len(data) != off + length:
        raise DecodeError("model envelope has the wrong length")
    return int(rnd), data[off:]


def model_digest(envelope: bytes) -> bytes:
    """The 32-byte digest of a model envelope: the round's SecAgg context digest, so every
    device's session is bound to the exact model it was sent (a server that sends different
    models to different devices splits them into sessions that cannot aggregate)."""
    return hashlib.sha256(_MODEL_LABEL + envelope).digest()


def encode_model_request(client_id: int, round_number: int) -> bytes:
    """A device asks for the model envelope of ``round_number``. The call is authenticated
    by its header (:func:`sign_call`): a per-round job's envelope names the round's cohort,
    so the server serves it only to the cohort's members."""
    head = _HEADER.pack(_MAGIC, _VERSION, _MODEL_REQUEST)
    return head + _MODEL_REQUEST_FIXED.pack(client_id, round_number)


def decode_model_request(data: bytes) -> tuple[int, int]:
    """``(client id, round number)`` of a model request."""
    _header(data, _MODEL_REQUEST)
    if len(data) != _HEADER.size + _MODEL_REQUEST_FIXED.size:
        raise DecodeError("model request has the wrong length")
    cid, rnd = _MODEL_REQUEST_FIXED.unpack_from(data, _HEADER.size)
    return int(cid), int(rnd)


@dataclass(frozen=True)
class CallAuth:
    """Who makes a call, read from its header before the server reads the request body:
    the client id and a counter (wall-clock nanoseconds, strictly increasing per device)."""

    client_id: int
    counter: int


def _call_message(method: str, nonce: bytes, client_id: int, counter: int) -> bytes:
    name = method.encode()
    return _AUTH_LABEL + _U32.pack(len(name)) + name + nonce + _AUTH_FIXED.pack(client_id, counter)


def sign_call(
    key: secagg.SigningKey, client_id: int, counter: int, method: str, nonce: bytes
) -> bytes:
    """The authentication header of one call: client id, counter and an Ed25519 signature
    over the method and the server run's nonce (``b""`` for ``Hello``, which fetches it)."""
    return _AUTH_FIXED.pack(client_id, counter) + key.sign(
        _call_message(method, nonce, client_id, counter)
    )


def decode_call_auth(
    data: bytes, method: str, nonce: bytes, verify_keys: Mapping[int, bytes]
) -> CallAuth:
    """Authenticate a call header: DecodeError if malformed, AuthenticationError if the id
    is unknown or the signature does not verify under that client's registered key."""
    if len(data) != _AUTH_FIXED.size + _SIGNATURE_BYTES:
        raise DecodeError("call header has the wrong length")
    cid, counter = _AUTH_FIXED.unpack_from(data)
    public = verify_keys.get(int(cid))
    if public is None:
        raise AuthenticationError(f"client {cid} is not registered with this server")
    try:
        secagg.verify_signature(
            public, _call_message(method, nonce, cid, counter), data[_AUTH_FIXED.size :]
        )
    except secagg.SecAggError:
        raise AuthenticationError(f"bad call signature for client {cid}") from None
    return CallAuth(int(cid), int(counter))
