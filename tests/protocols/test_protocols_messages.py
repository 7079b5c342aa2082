"""Canonical encoding and strict decoding of every protocol message."""

from __future__ import annotations

import contextlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import AbortReason, Stage, ThreatModel
from protocols.errors import DecodeError, ProtocolError
from protocols.messages import (
    MAGIC,
    VERSION,
    AdvertiseKeys,
    ClientAbort,
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShares,
    KeyDirectory,
    MaskedInput,
    Message,
    SetupRequest,
    ShareDelivery,
    UnmaskRequest,
    UnmaskShares,
    decode,
    decode_as,
)

K32, S64 = bytes(range(32)), bytes(range(64))

SAMPLES: list[Message] = [
    SetupRequest(7, 100, 51, None, 32, ThreatModel.HONEST_BUT_CURIOUS, 1000, K32, K32[::-1]),
    SetupRequest(1, 500, 10, 18, 16, ThreatModel.MALICIOUS_SERVER, 3, K32, K32),
    KeyDirectory((0, 3), K32 * 2, K32[::-1] * 2),
    KeyDirectory((1,), K32, K32[::-1], S64),
    ShareDelivery(((1, b"abc"), (4, b""))),
    ConsistencyRequest((0, 1, 2)),
    UnmaskRequest((0, 1), (2,), ((0, S64),)),
    AdvertiseKeys(3, K32, K32[::-1]),
    AdvertiseKeys(3, K32, K32[::-1], S64),
    EncryptedShares(2, ((0, b"x" * 100),)),
    MaskedInput(5, 32, np.array([0, 1, 2**32 - 1], dtype=np.uint32)),
    MaskedInput(5, 48, np.array([2**48 - 1, 0], dtype=np.uint64)),
    ConsistencySignature(1, S64),
    UnmaskShares(4, ((0, b"s"),), ((1, b"k"),)),
    ClientAbort(9, Stage.UNMASK, AbortReason.BOTH_SHARES_REQUESTED),
]


def same(a: Message, b: Message) -> bool:
    if isinstance(a, MaskedInput) and isinstance(b, MaskedInput):
        return (a.sender, a.bits) == (b.sender, b.bits) and np.array_equal(a.vector, b.vector)
    return a == b


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_is_exact_and_canonical(message: Message) -> None:
    data = message.to_bytes()
    assert data[:2] == MAGIC and data[2] == VERSION
    back = decode(data)
    assert type(back) is type(message) and same(back, message)
    assert back.to_bytes() == data
    assert isinstance(decode_as(data, type(message)), type(message))


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_truncation_and_extension_is_a_decode_error(message: Message) -> None:
    data = message.to_bytes()
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:cut])
    with pytest.raises(DecodeError):
        decode(data + b"\x00")


def test_wrong_magic_version_type_or_expected_type() -> None:
    data = SAMPLES[5].to_bytes()
    for bad in (b"XX" + data[2:], data[:2] + b"\x02" + data[3:], data[:3] + b"\xff" + data[4:]):
        with pytest.raises(DecodeError):
            decode(bad)
    with pytest.raises(DecodeError):
        decode_as(data, UnmaskRequest)
    with pytest.raises(DecodeError):
        decode("not bytes")  # type: ignore[arg-type]


def test_counts_beyond_caps_fail_before_allocating() -> None:
    header = MAGIC + bytes([VERSION, ConsistencyRequest.TYPE])
    with pytest.raises(DecodeError, match="cap"):
        decode(header + struct.pack("<I", 2**31))
    with pytest.raises(DecodeError, match="truncated"):
        decode(header + struct.pack("<I", 1000))
    big = MAGIC + bytes([VERSION, MaskedInput.TYPE]) + struct.pack("<IBI", 0, 32, 2**30)
    with pytest.raises(DecodeError, match="cap"):
        decode(big)
    blob = MAGIC + bytes([VERSION, ShareDelivery.TYPE]) + struct.pack("<III", 1, 0, 10**6)
    with pytest.raises(DecodeError, match="cap"):
        decode(blob)


def test_out_of_range_values_and_codes_are_rejected() -> None:
    wire = MaskedInput(1, 16, np.array([1, 2], dtype=np.uint32)).to_bytes()
    bad = wire[:-4] + struct.pack("<I", 2**16)
    with pytest.raises(DecodeError, match="2\\^16"):
        decode(bad)
    abort = bytearray(SAMPLES[-1].to_bytes())
    abort[-1] = 200
    with pytest.raises(DecodeError, match="reason"):
        decode(bytes(abort))
    ids = MAGIC + bytes([VERSION, ConsistencyRequest.TYPE]) + struct.pack("<II", 1, 2**30)
    with pytest.raises(DecodeError, match="out of range"):
        decode(ids)


def test_masked_input_is_raw_little_endian_words() -> None:
    v = np.arange(1000, dtype=np.uint32)
    data = MaskedInput(0, 32, v).to_bytes()
    assert len(data) == 13 + 4 * 1000
    assert data[13:] == v.astype("<u4").tobytes()
    decoded = decode(data)
    assert isinstance(decoded, MaskedInput) and decoded.vector.dtype == np.uint32


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_escapes_as_anything_but_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_messages_decode_or_raise_decode_error(
    message: Message, data: st.DataObject
) -> None:
    raw = bytearray(message.to_bytes())
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(raw))
    except ProtocolError as exc:
        assert isinstance(exc, DecodeError)
