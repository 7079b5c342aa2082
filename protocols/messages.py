"""Typed protocol messages and their canonical, versioned binary encoding.

Every message is a frozen dataclass with ``to_bytes()``; :func:`decode` turns bytes back
into a message and raises :class:`~protocols.errors.DecodeError` on anything else:
wrong magic, version or type byte, a length field beyond its cap, a count that does not
match the remaining bytes, trailing bytes, an out-of-range id or enum code, or a ring
vector whose values exceed 2^bits - 1. Nothing inside numpy ever sees unchecked sizes.

Layout: ``b"PA"`` · version (1 byte) · type (1 byte) · body. Integers are little-endian
fixed width; byte strings and lists carry a u32 length/count prefix; keys (32 bytes) and
signatures (64 bytes) have fixed sizes; ring vectors are raw little-endian ``uint32``
(bits <= 32, 4 bytes per coordinate) or ``uint64`` words.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

from protocols.config import MAX_CLIENTS, Stage, ThreatModel
from protocols.errors import AbortReason, DecodeError

__all__ = [
    "KEY_BYTES",
    "MAGIC",
    "MAX_CIPHERTEXT_BYTES",
    "MAX_SHARE_BYTES",
    "MAX_VECTOR_LENGTH",
    "SIGNATURE_BYTES",
    "VERSION",
    "AdvertiseKeys",
    "ClientAbort",
    "ClientMessage",
    "ConsistencyRequest",
    "ConsistencySignature",
    "EncryptedShares",
    "KeyDirectory",
    "MaskedInput",
    "Message",
    "ServerMessage",
    "SetupRequest",
    "ShareDelivery",
    "UnmaskRequest",
    "UnmaskShares",
    "decode",
    "decode_as",
]

MAGIC = b"PA"
VERSION = 1
KEY_BYTES = 32
SIGNATURE_BYTES = 64
DIGEST_BYTES = 32
MAX_CIPHERTEXT_BYTES = 4096
MAX_SHARE_BYTES = 1024
MAX_VECTOR_LENGTH = 1 << 28
_HEADER = struct.Struct("<2sBB")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

_THREAT_CODES = {ThreatModel.HONEST_BUT_CURIOUS: 0, ThreatModel.MALICIOUS_SERVER: 1}
_THREATS = {code: model for model, code in _THREAT_CODES.items()}
_STAGE_CODES = {stage: code for code, stage in enumerate(Stage)}
_STAGES = dict(enumerate(Stage))
_REASON_CODES = {reason: code for code, reason in enumerate(AbortReason)}
_REASONS = dict(enumerate(AbortReason))


class _Writer:
    def __init__(self, type_code: int) -> None:
        self.parts: list[bytes] = [_HEADER.pack(MAGIC, VERSION, type_code)]

    def u8(self, value: int) -> None:
        self.parts.append(bytes((value,)))

    def u32(self, value: int) -> None:
        self.parts.append(_U32.pack(value))

    def u64(self, value: int) -> None:
        self.parts.append(_U64.pack(value))

    def fixed(self, data: bytes, size: int) -> None:
        if len(data) != size:
            raise DecodeError(f"field must be {size} bytes, got {len(data)}")
        self.parts.append(bytes(data))

    def blob(self, data: bytes) -> None:
        self.parts.append(_U32.pack(len(data)))
        self.parts.append(bytes(data))

    def ids(self, values: Sequence[int]) -> None:
        self.u32(len(values))
        self.parts.append(np.asarray(values, dtype="<u4").tobytes())

    def finish(self) -> bytes:
        return b"".join(self.parts)


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data = data
        self.offset = offset

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if size < 0 or end > len(self.data):
            raise DecodeError("message truncated")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def take_view(self, size: int) -> memoryview:
        """Like :meth:`take`, but a read-only view into the message instead of a copy."""
        end = self.offset + size
        if size < 0 or end > len(self.data):
            raise DecodeError("message truncated")
        view = memoryview(self.data)[self.offset : end]
        self.offset = end
        return view

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.take(8))[0])

    def count(self, cap: int, item_bytes: int) -> int:
        n = self.u32()
        if n > cap:
            raise DecodeError(f"count {n} exceeds the cap {cap}")
        if n * item_bytes > len(self.data) - self.offset:
            raise DecodeError("message truncated")
        return n

    def client_id(self) -> int:
        value = self.u32()
        if value >= MAX_CLIENTS:
            raise DecodeError(f"client id {value} out of range")
        return value

    def blob(self, cap: int) -> bytes:
        size = self.u32()
        if size > cap:
            raise DecodeError(f"field of {size} bytes exceeds the cap {cap}")
        return self.take(size)

    def ids(self) -> tuple[int, ...]:
        n = self.count(MAX_CLIENTS, 4)
        values = np.frombuffer(self.take(4 * n), dtype="<u4")
        if n and int(values.max()) >= MAX_CLIENTS:
            raise DecodeError("client id out of range")
        return tuple(values.tolist())

    def enum_code(self, table: dict[int, Any], name: str) -> Any:
        code = self.u8()
        if code not in table:
            raise DecodeError(f"unknown {name} code {code}")
        return table[code]

    def done(self) -> None:
        if self.offset != len(self.data):
            raise DecodeError(f"{len(self.data) - self.offset} trailing bytes")


def _check_ids(values: Sequence[int], name: str) -> None:
    """Client ids must be ints in [0, MAX_CLIENTS) (one vectorized check, no Python loop)."""
    if not isinstance(values, tuple):
        raise DecodeError(f"{name} must be a tuple of client ids")
    if not values:
        return
    ids = np.asarray(values)
    if ids.dtype.kind not in "iu" or ids.ndim != 1:
        raise DecodeError(f"{name} must hold client ids (ints)")
    if int(ids.min()) < 0 or int(ids.max()) >= MAX_CLIENTS:
        raise DecodeError(f"{name} must hold client ids in [0, {MAX_CLIENTS})")


_M = TypeVar("_M", bound="Message")
_REGISTRY: dict[int, type[Message]] = {}


class Message:
    """Common base: a type code, ``to_bytes`` and a strict ``_read`` per subclass."""

    TYPE: ClassVar[int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "TYPE" in cls.__dict__:
            if cls.TYPE in _REGISTRY:
                raise TypeError(f"duplicate message type {cls.TYPE}")
            _REGISTRY[cls.TYPE] = cls

    def to_bytes(self) -> bytes:
        """Canonical encoding of this message."""
        w = _Writer(self.TYPE)
        self._write(w)
        return w.finish()

    def _write(self, w: _Writer) -> None:
        raise NotImplementedError

    @classmethod
    def _read(cls, r: _Reader) -> Message:
        raise NotImplementedError


def decode(data: bytes) -> Message:
    """Decode any protocol message; :class:`DecodeError` on malformed input."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise DecodeError("message shorter than its header")
    magic, version, type_code = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DecodeError("bad magic bytes: not a privagg protocol message")
    if version != VERSION:
        raise DecodeError(f"unsupported protocol version {version} (this is {VERSION})")
    cls = _REGISTRY.get(type_code)
    if cls is None:
        raise DecodeError(f"unknown message type {type_code}")
    reader = _Reader(data, _HEADER.size)
    message = cls._read(reader)
    reader.done()
    return message


def decode_as(data: bytes, expected: type[_M]) -> _M:
    """Decode ``data`` and require a message of type ``expected``."""
    message = decode(data)
    if not isinstance(message, expected):
        raise DecodeError(f"expected {expected.__name__}, got {type(message).__name__}")
    return message


# ---------------------------------------------------------------- server -> client


@dataclass(frozen=True)
class SetupRequest(Message):
    """Round parameters the server announces; their digest is bound into the session id.

    ``context_digest`` is a hash of everything else the server distributes for the round
    (model weights, training config): clients that were sent different models end up in
    different sessions, so their masks cannot cancel.
    """

    TYPE: ClassVar[int] = 1
    round_number: int
    num_clients: int
    threshold: int
    neighbors: int | None
    bits: int
    threat_model: ThreatModel
    vector_length: int
    graph_seed: bytes
    context_digest: bytes

    def _write(self, w: _Writer) -> None:
        w.u64(self.round_number)
        w.u32(self.num_clients)
        w.u32(self.threshold)
        w.u32(0 if self.neighbors is None else self.neighbors)
        w.u8(self.bits)
        w.u8(_THREAT_CODES[self.threat_model])
        w.u32(self.vector_length)
        w.fixed(self.graph_seed, DIGEST_BYTES)
        w.fixed(self.context_digest, DIGEST_BYTES)

    @classmethod
    def _read(cls, r: _Reader) -> SetupRequest:
        round_number = r.u64()
        n, t, k = r.u32(), r.u32(), r.u32()
        bits = r.u8()
        threat = r.enum_code(_THREATS, "threat model")
        length = r.u32()
        if not 2 <= n <= MAX_CLIENTS or not 1 <= bits <= 62 or length > MAX_VECTOR_LENGTH:
            raise DecodeError("setup parameters out of range")
        return cls(
            round_number,
            n,
            t,
            None if k == 0 else k,
            bits,
            threat,
            length,
            r.take(DIGEST_BYTES),
            r.take(DIGEST_BYTES),
        )

    def digest(self) -> bytes:
        """SHA-256 of the canonical encoding: what gets bound into the session id."""
        return hashlib.sha256(b"privagg/v1/setup" + self.to_bytes()).digest()


@dataclass(frozen=True)
class KeyDirectory(Message):
    """The advertised public keys of every client in U1, stored column-wise.

    ``enc_keys`` / ``mask_keys`` are the concatenated 32-byte keys in ``client_ids``
    order; ``signatures`` the concatenated 64-byte advertise signatures (empty in the
    honest-but-curious mode).
    """

    TYPE: ClassVar[int] = 2
    client_ids: tuple[int, ...]
    enc_keys: bytes
    mask_keys: bytes
    signatures: bytes = b""

    def __post_init__(self) -> None:
        m = len(self.client_ids)
        if len(self.enc_keys) != m * KEY_BYTES or len(self.mask_keys) != m * KEY_BYTES:
            raise DecodeError("key directory columns have inconsistent lengths")
        if len(self.signatures) not in (0, m * SIGNATURE_BYTES):
            raise DecodeError("key directory signature column has the wrong length")

    def entry(self, index: int) -> tuple[bytes, bytes, bytes]:
        """(encryption key, masking key, signature or b"") of the ``index``-th entry."""
        a, b = index * KEY_BYTES, (index + 1) * KEY_BYTES
        sig = b""
        if self.signatures:
            sig = self.signatures[index * SIGNATURE_BYTES : (index + 1) * SIGNATURE_BYTES]
        return self.enc_keys[a:b], self.mask_keys[a:b], sig

    def _write(self, w: _Writer) -> None:
        w.ids(self.client_ids)
        w.fixed(self.enc_keys, len(self.client_ids) * KEY_BYTES)
        w.fixed(self.mask_keys, len(self.client_ids) * KEY_BYTES)
        w.u8(1 if self.signatures else 0)
        if self.signatures:
            w.fixed(self.signatures, len(self.client_ids) * SIGNATURE_BYTES)

    @classmethod
    def _read(cls, r: _Reader) -> KeyDirectory:
        ids = r.ids()
        m = len(ids)
        enc, mask = r.take(m * KEY_BYTES), r.take(m * KEY_BYTES)
        signed = r.u8()
        if signed not in (0, 1):
            raise DecodeError("bad signature flag")
        sigs = r.take(m * SIGNATURE_BYTES) if signed else b""
        return cls(ids, enc, mask, sigs)


Addressed: TypeAlias = tuple[tuple[int, bytes], ...]
"""(client id, opaque bytes) pairs: ciphertexts by peer, or shares by owner."""


_PAIR = struct.Struct("<II")


def _write_addressed(w: _Writer, items: Addressed) -> None:
    pack = _PAIR.pack
    w.u32(len(items))
    w.parts.append(b"".join(pack(peer, len(data)) + data for peer, data in items))


def _read_addressed(r: _Reader, cap: int) -> Addressed:
    """``count`` (peer u32, length u32, bytes) records, each checked before slicing."""
    count = r.count(MAX_CLIENTS, 8)
    data, offset, end = r.data, r.offset, len(r.data)
    unpack = _PAIR.unpack_from
    items = []
    for _ in range(count):
        if offset + 8 > end:
            raise DecodeError("message truncated")
        peer, size = unpack(data, offset)
        offset += 8
        if peer >= MAX_CLIENTS:
            raise DecodeError(f"client id {peer} out of range")
        if size > cap:
            raise DecodeError(f"field of {size} bytes exceeds the cap {cap}")
        if offset + size > end:
            raise DecodeError("message truncated")
        items.append((peer, data[offset : offset + size]))
        offset += size
    r.offset = offset
    return tuple(items)


@dataclass(frozen=True)
class ShareDelivery(Message):
    """Encrypted shares addressed to one client, as ``(sender, ciphertext)`` pairs."""

    TYPE: ClassVar[int] = 3
    ciphertexts: Addressed

    def _write(self, w: _Writer) -> None:
        _write_addressed(w, self.ciphertexts)

    @classmethod
    def _read(cls, r: _Reader) -> ShareDelivery:
        return cls(_read_addressed(r, MAX_CIPHERTEXT_BYTES))


@dataclass(frozen=True)
class ConsistencyRequest(Message):
    """Malicious-server mode: the survivor set U3 every client is asked to sign."""

    TYPE: ClassVar[int] = 4
    survivors: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_ids(self.survivors, "survivors")

    def _write(self, w: _Writer) -> None:
        w.ids(self.survivors)

    @classmethod
    def _read(cls, r: _Reader) -> ConsistencyRequest:
        return cls(r.ids())


@dataclass(frozen=True)
class UnmaskRequest(Message):
    """Who sent a masked input (survivors) and who did not (dropped) among U2.

    In malicious-server mode ``signatures`` carries the consistency signatures
    ``(signer, signature)`` over the survivor list.
    """

    TYPE: ClassVar[int] = 5
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    signatures: Addressed = ()

    def __post_init__(self) -> None:
        _check_ids(self.survivors, "survivors")
        _check_ids(self.dropped, "dropped")

    def _write(self, w: _Writer) -> None:
        w.ids(self.survivors)
        w.ids(self.dropped)
        _write_addressed(w, self.signatures)

    @classmethod
    def _read(cls, r: _Reader) -> UnmaskRequest:
        survivors, dropped = r.ids(), r.ids()
        sigs = _read_addressed(r, SIGNATURE_BYTES)
        if any(len(sig) != SIGNATURE_BYTES for _, sig in sigs):
            raise DecodeError(f"signatures must be {SIGNATURE_BYTES} bytes")
        return cls(survivors, dropped, sigs)


# ---------------------------------------------------------------- client -> server


@dataclass(frozen=True)
class AdvertiseKeys(Message):
    """Round 0: a client's two public keys (and, with a PKI, its signature over them)."""

    TYPE: ClassVar[int] = 17
    sender: int
    enc_public: bytes
    mask_public: bytes
    signature: bytes = b""

    def _write(self, w: _Writer) -> None:
        w.u32(self.sender)
        w.fixed(self.enc_public, KEY_BYTES)
        w.fixed(self.mask_public, KEY_BYTES)
        w.u8(1 if self.signature else 0)
        if self.signature:
            w.fixed(self.signature, SIGNATURE_BYTES)

    @classmethod
    def _read(cls, r: _Reader) -> AdvertiseKeys:
        sender = r.client_id()
        enc, mask = r.take(KEY_BYTES), r.take(KEY_BYTES)
        signed = r.u8()
        if signed not in (0, 1):
            raise DecodeError("bad signature flag")
        return cls(sender, enc, mask, r.take(SIGNATURE_BYTES) if signed else b"")


@dataclass(frozen=True)
class EncryptedShares(Message):
    """Round 1: a client's share ciphertexts, as ``(receiver, ciphertext)`` pairs."""

    TYPE: ClassVar[int] = 18
    sender: int
    ciphertexts: Addressed

    def _write(self, w: _Writer) -> None:
        w.u32(self.sender)
        _write_addressed(w, self.ciphertexts)

    @classmethod
    def _read(cls, r: _Reader) -> EncryptedShares:
        return cls(r.client_id(), _read_addressed(r, MAX_CIPHERTEXT_BYTES))


@dataclass(frozen=True, eq=False)
class MaskedInput(Message):
    """Round 2: the masked input y_u, a read-only ring vector (4 bytes/coord at 32 bits)."""

    TYPE: ClassVar[int] = 19
    sender: int
    bits: int
    vector: npt.NDArray[np.unsignedinteger[Any]] = field(repr=False)

    def _write(self, w: _Writer) -> None:
        w.u32(self.sender)
        w.u8(self.bits)
        w.u32(int(self.vector.size))
        w.parts.append(self.vector.astype(_wire_dtype(self.bits), copy=False).tobytes())

    @classmethod
    def _read(cls, r: _Reader) -> MaskedInput:
        sender = r.client_id()
        bits = r.u8()
        if not 1 <= bits <= 62:
            raise DecodeError(f"ring width {bits} out of range")
        length = r.u32()
        if length > MAX_VECTOR_LENGTH:
            raise DecodeError(f"vector length {length} exceeds the cap {MAX_VECTOR_LENGTH}")
        wire = _wire_dtype(bits)
        raw = r.take_view(length * wire.itemsize)  # no copy of the (large) vector bytes
        vector = np.frombuffer(raw, dtype=wire)
        if bits not in (32, 64) and length and int(vector.max()) >> bits:
            raise DecodeError(f"vector holds values >= 2^{bits}")
        vector = vector.astype(wire.newbyteorder("="), copy=False)
        return cls(sender, bits, vector)


def _wire_dtype(bits: int) -> np.dtype[Any]:
    return np.dtype("<u4") if bits <= 32 else np.dtype("<u8")


@dataclass(frozen=True)
class ConsistencySignature(Message):
    """Malicious-server mode: a client's signature over (session id, survivor set)."""

    TYPE: ClassVar[int] = 20
    sender: int
    signature: bytes

    def _write(self, w: _Writer) -> None:
        w.u32(self.sender)
        w.fixed(self.signature, SIGNATURE_BYTES)

    @classmethod
    def _read(cls, r: _Reader) -> ConsistencySignature:
        return cls(r.client_id(), r.take(SIGNATURE_BYTES))


@dataclass(frozen=True)
class UnmaskShares(Message):
    """Round 4: serialized Shamir shares, ``(owner, share)``: self-mask seeds of
    survivors and masking keys of dropped clients (never both for one owner)."""

    TYPE: ClassVar[int] = 21
    sender: int
    seed_shares: Addressed
    key_shares: Addressed

    def _write(self, w: _Writer) -> None:
        w.u32(self.sender)
        _write_addressed(w, self.seed_shares)
        _write_addressed(w, self.key_shares)

    @classmethod
    def _read(cls, r: _Reader) -> UnmaskShares:
        sender = r.client_id()
        seeds = _read_addressed(r, MAX_SHARE_BYTES)
        return cls(sender, seeds, _read_addressed(r, MAX_SHARE_BYTES))


@dataclass(frozen=True)
class ClientAbort(Message):
    """A client stopped at ``stage`` for ``reason`` and sends nothing more this round."""

    TYPE: ClassVar[int] = 22
    sender: int
    stage: Stage
    reason: AbortReason

    def _write(self, w: _Writer) -> None:
        w.u32(self.sender)
        w.u8(_STAGE_CODES[self.stage])
        w.u8(_REASON_CODES[self.reason])

    @classmethod
    def _read(cls, r: _Reader) -> ClientAbort:
        return cls(r.client_id(), r.enum_code(_STAGES, "stage"), r.enum_code(_REASONS, "reason"))


ServerMessage: TypeAlias = (
    SetupRequest | KeyDirectory | ShareDelivery | ConsistencyRequest | UnmaskRequest
)
ClientMessage: TypeAlias = (
    AdvertiseKeys
    | EncryptedShares
    | MaskedInput
    | ConsistencySignature
    | UnmaskShares
    | ClientAbort
)
