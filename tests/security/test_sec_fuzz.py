"""Hypothesis fuzzing of every decoder and reader: typed errors only, no hang, no huge
allocation (a length field claiming gigabytes must fail before anything is allocated).

Targets: protocol message decoding (random bytes, mutations and truncations of valid
messages, forged length fields), Shamir share parsing, AEAD opening, privacy-event JSON,
the ledger reader (random bytes and damaged SQLite files) and the ratings loader.
Set ``PRIVAGG_LONG_FUZZ=1`` for ten times more examples.
"""

from __future__ import annotations

import contextlib
import sqlite3
import struct
import tracemalloc
import warnings
from pathlib import Path

import pytest
import sec_stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import secagg
from dp.errors import DPError, EventDecodeError
from dp.events import event_from_json
from dp.ledger import PrivacyLedger, audit_ledger
from protocols import AbortReason, Stage, ThreatModel
from protocols.errors import DecodeError
from protocols.messages import (
    AdvertiseKeys,
    ClientAbort,
    KeyDirectory,
    MaskedInput,
    SetupRequest,
    UnmaskRequest,
    UnmaskShares,
    decode,
)
from recsys.data import DuplicateRowsWarning, load_ratings
from recsys.errors import RecsysError

SCALE = 10 if sec_stats.long_fuzz() else 1
FUZZ = settings(
    max_examples=150 * SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SAMPLES = [
    SetupRequest(3, 7, 4, None, 32, ThreatModel.HONEST_BUT_CURIOUS, 16, bytes(32), bytes(32)),
    KeyDirectory((0, 1), bytes(range(64)), bytes(range(64, 128))),
    UnmaskRequest((0, 1, 2), (3,)),
    AdvertiseKeys(1, bytes(32), bytes(range(32)), b""),
    UnmaskShares(2, ((0, b"abc"),), ((3, b"defg"),)),
    ClientAbort(4, Stage.MASK, AbortReason.TOO_FEW_SURVIVORS),
]


def _masked() -> bytes:
    import numpy as np

    return MaskedInput(1, 32, np.arange(8, dtype=np.uint32)).to_bytes()


@FUZZ
@given(st.binary(max_size=512))
def test_sec_fuzz_decode_random_bytes(data: bytes) -> None:
    sec_stats.add("fuzz_cases")
    with contextlib.suppress(DecodeError):
        decode(b"PA\x01" + data[:1] + data[1:])
    with contextlib.suppress(DecodeError):
        decode(data)


@FUZZ
@given(
    index=st.integers(0, len(SAMPLES)),
    cut=st.integers(0, 10_000),
    position=st.integers(0, 10_000),
    value=st.integers(0, 255),
)
def test_sec_fuzz_decode_mutated_and_truncated_messages(
    index: int, cut: int, position: int, value: int
) -> None:
    sec_stats.add("fuzz_cases")
    data = bytearray(_masked() if index == len(SAMPLES) else SAMPLES[index].to_bytes())
    data[position % len(data)] = value
    for candidate in (bytes(data), bytes(data[: cut % len(data)])):
        try:
            message = decode(candidate)
        except DecodeError:
            continue
        assert decode(message.to_bytes()).to_bytes() == message.to_bytes()


@FUZZ
@given(claimed=st.integers(2**20, 2**32 - 1), field=st.integers(0, 3))
def test_sec_fuzz_huge_length_fields_fail_before_allocating(claimed: int, field: int) -> None:
    """A forged count/length of up to 4 G must fail fast with a few KiB allocated."""
    sec_stats.add("fuzz_cases")
    good = [
        _masked(),
        UnmaskRequest((0, 1, 2), (3,)).to_bytes(),
        UnmaskShares(2, ((0, b"abc"),), ()).to_bytes(),
        KeyDirectory((0, 1), bytes(64), bytes(range(64))).to_bytes(),
    ][field]
    offset = {0: 9, 1: 4, 2: 8, 3: 4}[field]  # the first length / count field
    forged = good[:offset] + struct.pack("<I", claimed) + good[offset + 4 :]
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError):
            decode(forged)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@FUZZ
@given(st.binary(max_size=300))
def test_sec_fuzz_share_parsing_and_aead_opening(data: bytes) -> None:
    sec_stats.add("fuzz_cases")
    with contextlib.suppress(secagg.ShareError):
        secagg.Share.from_bytes(data)
    with pytest.raises(secagg.DecryptionError):
        secagg.open_sealed(bytes(32), data, associated_data=b"ad")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
EVENT_KEYS = st.sampled_from(
    ["type", "noise_multiplier", "event", "sampling_probability", "count", "events", "schema"]
)


@FUZZ
@given(
    st.text(max_size=200)
    | st.dictionaries(EVENT_KEYS, JSON_VALUES, max_size=5).map(
        lambda d: __import__("json").dumps(d)
    )
)
def test_sec_fuzz_event_json_raises_only_event_decode_error(text: str) -> None:
    sec_stats.add("fuzz_cases")
    with contextlib.suppress(EventDecodeError):
        event_from_json(text)


@settings(max_examples=25 * SCALE, deadline=None)
@given(st.binary(max_size=4096))
def test_sec_fuzz_ledger_reader_on_random_files(data: bytes) -> None:
    import tempfile

    sec_stats.add("fuzz_cases")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        path.write_bytes(data)
        try:
            report = audit_ledger(path)
            assert not report.ok
        except DPError:
            pass
        with pytest.raises(DPError):
            PrivacyLedger.open(path)


def _ledger(path: Path) -> None:
    from dp.budget import BudgetPolicy
    from dp.events import GaussianEvent, PoissonSampledEvent

    event = PoissonSampledEvent(0.05, GaussianEvent(1.0))
    ledger = PrivacyLedger.create(path, policy=BudgetPolicy(delta=1e-5))
    for r in range(3):
        ledger.record_round(round_index=r, event=event, cohort_size=5, survivors=5)
    ledger.close()


_CLEAN: dict[str, object] = {}


def clean_ledger() -> tuple[bytes, list[object]]:
    """A small valid ledger (built once) and the round bodies it holds."""
    import tempfile

    from dp.ledger import read_entries

    if not _CLEAN:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ledger.db"
            _ledger(path)
            conn = sqlite3.connect(path)
            _CLEAN["bodies"] = [e.body for e in read_entries(conn)]
            conn.close()
            _CLEAN["raw"] = path.read_bytes()
    return _CLEAN["raw"], _CLEAN["bodies"]  # type: ignore[return-value]


@settings(max_examples=25 * SCALE, deadline=None)
@given(position=st.integers(0, 10**9), value=st.integers(0, 255), cut=st.integers(0, 10**9))
def test_sec_fuzz_damaged_ledger_files_are_detected(position: int, value: int, cut: int) -> None:
    """One byte overwritten or the file truncated: audit never passes a changed round
    silently (bytes of SQLite bookkeeping may change harmlessly) and never raises untyped."""
    import tempfile

    from dp.ledger import read_entries

    sec_stats.add("fuzz_cases")
    clean, bodies = clean_ledger()
    raw = bytearray(clean)
    if cut % 2:
        raw = raw[: cut % len(raw)]
    else:
        raw[position % len(raw)] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        path.write_bytes(bytes(raw))
        try:
            report = audit_ledger(path)
        except DPError:
            return
        if report.ok:  # only harmless bytes changed: every round reads back unchanged
            conn = sqlite3.connect(path)
            try:
                assert [e.body for e in read_entries(conn)] == bodies
            finally:
                conn.close()


@settings(max_examples=40 * SCALE, deadline=None)
@given(
    name=st.sampled_from(["ratings.csv", "u.data", "ratings.dat", "x.csv"]),
    data=st.binary(max_size=2048)
    | st.lists(
        st.lists(st.sampled_from(["1", "-2", "3.5", "nan", "", "x", "9" * 30]), max_size=5).map(
            ",".join
        ),
        max_size=20,
    ).map(lambda rows: ("userId,movieId,rating,timestamp\n" + "\n".join(rows)).encode()),
)
def test_sec_fuzz_ratings_loader_raises_only_typed_errors(name: str, data: bytes) -> None:
    import tempfile

    sec_stats.add("fuzz_cases")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            with warnings.catch_warnings():  # exact duplicates are dropped with a warning
                warnings.simplefilter("ignore", DuplicateRowsWarning)
                ratings = load_ratings(path)
        except RecsysError:
            return
        assert len(ratings.users) == len(ratings.items) > 0  # a real, non-empty table


def _damaged(tmp_path: Path, marker: bytes, offset: int) -> Path:
    raw = bytearray(clean_ledger()[0])
    raw[raw.index(marker) + offset] = 0x80  # not valid UTF-8
    path = tmp_path / "ledger.db"
    path.write_bytes(bytes(raw))
    return path


def _assert_detected(path: Path) -> None:
    """Damage is either a typed LedgerError or an audit report that flags tampering."""
    try:
        report = audit_ledger(path)
    except DPError:
        return
    assert report.tampered and not report.ok


def test_sec_non_utf8_round_body_is_detected(tmp_path: Path) -> None:
    _assert_detected(_damaged(tmp_path, b'"cohort_size"', 2))


def test_sec_non_utf8_schema_is_detected(tmp_path: Path) -> None:
    _assert_detected(_damaged(tmp_path, b"(id INTEGER PRIMARY KEY", 2))
