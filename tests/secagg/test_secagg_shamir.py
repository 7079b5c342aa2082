"""Shamir sharing: reconstruction from every t-subset, secrecy of t-1 shares (statistical),
tamper / mix detection, strict decoding and the batched forms."""

from __future__ import annotations

import copy
import itertools
import os
import pickle
import struct
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from secagg import (
    SecAggValueError,
    Share,
    ShareError,
    shamir_combine,
    shamir_combine_many,
    shamir_decode_many,
    shamir_split,
    shamir_split_many,
)
from secagg.shamir import PRIME, _solve_group, chunk_count


def tamper(share: Share, element: int = 0, delta: int = 1) -> Share:
    values = share.elements.astype(np.uint64)
    values[element] = (values[element] + delta) % PRIME
    return replace(share, payload=values.astype("<u4").tobytes())


@pytest.mark.parametrize(("n", "t"), [(1, 1), (5, 1), (6, 3), (7, 4), (6, 6)])
def test_every_subset_of_at_least_t_shares_reconstructs(n: int, t: int) -> None:
    secret = os.urandom(32)
    shares = shamir_split(secret, n, t)
    assert [share.x for share in shares] == list(range(1, n + 1))
    for size in range(t, n + 1):
        for subset in itertools.combinations(shares, size):
            assert shamir_combine(subset) == secret
            assert shamir_combine(list(reversed(subset))) == secret


@settings(max_examples=60, deadline=None)
@given(
    length=st.integers(min_value=16, max_value=64),
    n=st.integers(min_value=1, max_value=40),
    data=st.data(),
)
def test_random_subsets_reconstruct(length: int, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(min_value=1, max_value=n))
    secret = data.draw(st.binary(min_size=length, max_size=length))
    shares = shamir_split(secret, n, t)
    size = data.draw(st.integers(min_value=t, max_value=n))
    subset = data.draw(st.permutations(shares))[:size]
    assert shamir_combine(subset) == secret
    assert all(len(share.payload) == 4 * chunk_count(length) for share in shares)


def _cells(secret: bytes, shares_seen: int, t: int, splits: int) -> np.ndarray:
    """Per split, a cell index from the first field element (mod 8) of shares 1..shares_seen."""
    share_lists = shamir_split_many([secret] * splits, t + 1, t)
    cells = np.zeros(splits, dtype=np.int64)
    for x in range(shares_seen):
        first = np.array([shares[x].elements[0] for shares in share_lists], dtype=np.int64)
        cells = cells * 8 + first % 8
    return cells


def _contingency_p_value(secret_a: bytes, secret_b: bytes, shares_seen: int, t: int) -> float:
    splits = 16_000
    counts = np.stack(
        [
            np.bincount(_cells(secret, shares_seen, t, splits), minlength=8**shares_seen)
            for secret in (secret_a, secret_b)
        ]
    )
    counts = counts[:, counts.sum(axis=0) > 0]
    return float(stats.chi2_contingency(counts)[1])


@pytest.mark.parametrize("t", [2, 3])
def test_t_minus_1_shares_of_different_secrets_are_identically_distributed(t: int) -> None:
    secret_a, secret_b = bytes(32), b"\xff" * 32
    # Secrecy: t - 1 shares look the same whichever secret was shared.
    assert _contingency_p_value(secret_a, secret_b, t - 1, t) > 1e-6
    # Power: the same statistic on t shares (which determine the secret) tells the two
    # secrets apart, so a leak of this kind would be caught.
    assert _contingency_p_value(secret_a, secret_b, t, t) < 1e-6


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=12),
    data=st.data(),
)
def test_tampered_share_is_detected_with_exactly_t_and_with_more(
    n: int, data: st.DataObject
) -> None:
    t = data.draw(st.integers(min_value=1, max_value=n))
    secret = os.urandom(data.draw(st.sampled_from([16, 32, 64])))
    shares = shamir_split(secret, n, t)
    victim = data.draw(st.integers(min_value=0, max_value=n - 1))
    element = data.draw(st.integers(min_value=0, max_value=chunk_count(len(secret)) - 1))
    delta = data.draw(st.integers(min_value=1, max_value=PRIME - 1))
    bad = shares.copy()
    bad[victim] = tamper(shares[victim], element, delta)
    others = [share for i, share in enumerate(shares) if i != victim]
    size = data.draw(st.integers(min_value=t, max_value=n))
    subset = [bad[victim], *others[: size - 1]]
    with pytest.raises(ShareError):
        shamir_combine(subset)


def test_mixed_secrets_are_detected() -> None:
    a = shamir_split(os.urandom(32), 5, 3)
    b = shamir_split(os.urandom(32), 5, 3)
    with pytest.raises(ShareError, match="integrity"):
        shamir_combine([a[0], a[1], b[2]])
    with pytest.raises(ShareError, match="inconsistent"):
        shamir_combine([a[0], a[1], a[2], b[3]])
    c = shamir_split(os.urandom(32), 5, 2)
    with pytest.raises(ShareError, match="mixed"):
        shamir_combine([a[0], a[1], c[2]])
    d = shamir_split(os.urandom(16), 5, 3)
    with pytest.raises(ShareError, match="mixed"):
        shamir_combine([a[0], a[1], d[2]])


def test_structural_errors() -> None:
    shares = shamir_split(os.urandom(24), 5, 3)
    with pytest.raises(ShareError, match="too few"):
        shamir_combine(shares[:2])
    with pytest.raises(ShareError, match="duplicate"):
        shamir_combine([shares[0], shares[1], shares[1]])
    with pytest.raises(ShareError, match="duplicate"):
        shamir_combine([shares[0], shares[1], replace(shares[2], x=1)])
    with pytest.raises(ShareError, match="no shares"):
        shamir_combine([])
    with pytest.raises(ShareError, match="Share"):
        shamir_combine([shares[0], shares[1], b"not a share"])  # type: ignore[list-item]
    with pytest.raises(ShareError, match="x"):
        replace(shares[0], x=0)
    with pytest.raises(ShareError, match="field"):
        replace(shares[0], field_id=2)
    with pytest.raises(ShareError, match="outside the field"):
        replace(shares[0], payload=b"\xff\xff\xff\x7f" + shares[0].payload[4:])
    with pytest.raises(ShareError, match="bytes"):
        replace(shares[0], payload=shares[0].payload[:-4])


def test_encoding_round_trip_and_strict_decoding() -> None:
    shares = shamir_split(os.urandom(40), 4, 2)
    for share in shares:
        encoded = share.to_bytes()
        assert Share.from_bytes(encoded) == share
        assert len(encoded) == 7 + 4 * chunk_count(40)
    encoded = shares[0].to_bytes()
    header = struct.Struct(">BBHHB")
    version, field_id, x, t, length = header.unpack_from(encoded)
    payload = encoded[header.size :]
    for bad, match in [
        (header.pack(2, field_id, x, t, length) + payload, "version"),
        (header.pack(version, 7, x, t, length) + payload, "field"),
        (header.pack(version, field_id, 0, t, length) + payload, "x"),
        (header.pack(version, field_id, x, 0, length) + payload, "threshold"),
        (header.pack(version, field_id, x, t, 15) + payload, "secret_length"),
        (encoded[:-1], "payload"),
        (encoded + b"\x00", "payload"),
        (encoded[:5], "short"),
    ]:
        with pytest.raises(ShareError, match=match):
            Share.from_bytes(bad)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_from_bytes_on_garbage_raises_only_share_error(data: bytes) -> None:
    try:
        share = Share.from_bytes(data)
    except ShareError:
        return
    assert share.to_bytes() == data


def test_batched_forms_match_single_calls_and_reuse_x_sets() -> None:
    secrets = [os.urandom(length) for length in (16, 32, 32, 64, 17)]
    share_lists = shamir_split_many(secrets, 9, 4)
    assert [len(shares) for shares in share_lists] == [9] * 5
    sets = [
        share_lists[0][:4],
        share_lists[1][2:8],
        share_lists[2][2:8],
        share_lists[3][::2],
        list(reversed(share_lists[4][3:7])),
    ]
    assert shamir_combine_many(sets) == secrets
    assert [shamir_combine(s) for s in sets] == secrets
    assert shamir_split_many([], 3, 2) == []
    assert shamir_combine_many([]) == []
    sets[2] = [tamper(sets[2][0]), *sets[2][1:]]
    with pytest.raises(ShareError):
        shamir_combine_many(sets)


def test_large_cohort_reconstructs_and_checks() -> None:
    secret = os.urandom(32)
    shares = shamir_split(secret, 500, 251)
    assert shamir_combine(shares[249:]) == secret
    assert shamir_combine(shares) == secret
    shares[400] = tamper(shares[400], 3)
    with pytest.raises(ShareError, match="inconsistent"):
        shamir_combine(shares)
    assert shamir_combine(shares[:251]) == secret


@pytest.mark.parametrize(
    ("secret", "n", "t", "match"),
    [
        (bytes(15), 3, 2, "16 to 64"),
        (bytes(65), 3, 2, "16 to 64"),
        ("x" * 32, 3, 2, "bytes"),
        (bytes(32), 3, 4, "t <= n"),
        (bytes(32), 3, 0, "t <= n"),
        (bytes(32), 9000, 2, "t <= n"),
        (bytes(32), 3.0, 2, "int"),
        (bytes(32), 3, True, "int"),
    ],
)
def test_split_argument_errors(secret: object, n: object, t: object, match: str) -> None:
    with pytest.raises(SecAggValueError, match=match):
        shamir_split(secret, n, t)  # type: ignore[arg-type]


def test_shares_hide_payload_and_refuse_pickling() -> None:
    secret = bytes(range(32))
    share = shamir_split(secret, 3, 1)[0]  # t = 1: the payload encodes the secret itself
    text = repr(share) + str(share)
    assert "redacted" in text
    assert share.payload.hex() not in text and secret.hex() not in text
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(share)
    assert copy.deepcopy(share) is share


# --- robust reconstruction (Reed-Solomon decoding) --------------------------------------


def encoded(shares: list[Share]) -> list[tuple[int, bytes]]:
    return [(share.x, share.to_bytes()) for share in shares]


def wrong(data: bytes, element: int, delta: int) -> bytes:
    """A well-formed share encoding whose element ``element`` is moved by ``delta``."""
    share = tamper(Share.from_bytes(data), element, delta)
    return share.to_bytes()


@settings(max_examples=60, deadline=None)
@given(
    length=st.integers(min_value=16, max_value=64),
    n=st.integers(min_value=1, max_value=30),
    data=st.data(),
)
def test_decode_without_errors_matches_plain_lagrange(
    length: int, n: int, data: st.DataObject
) -> None:
    t = data.draw(st.integers(min_value=1, max_value=n))
    secret = data.draw(st.binary(min_size=length, max_size=length))
    shares = data.draw(st.permutations(shamir_split(secret, n, t)))
    subset = shares[: data.draw(st.integers(min_value=t, max_value=n))]
    [result] = shamir_decode_many([encoded(subset)], threshold=t, secret_length=length)
    assert result.secret == shamir_combine(subset) == secret
    assert result.malformed == () and result.off_polynomial == ()


@settings(max_examples=80, deadline=None)
@given(n=st.integers(min_value=3, max_value=40), data=st.data())
def test_decode_corrects_up_to_half_the_redundancy_and_names_the_wrong_shares(
    n: int, data: st.DataObject
) -> None:
    t = data.draw(st.integers(min_value=1, max_value=n - 2))
    secret = os.urandom(32)
    shares = shamir_split(secret, n, t)
    m = data.draw(st.integers(min_value=t + 2, max_value=n))
    items = encoded(data.draw(st.permutations(shares))[:m])
    errors = data.draw(st.integers(min_value=1, max_value=(m - t) // 2))
    positions = data.draw(st.permutations(range(m)))[:errors]
    for position in positions:
        x, raw = items[position]
        element = data.draw(st.integers(min_value=0, max_value=chunk_count(32) - 1))
        delta = data.draw(st.integers(min_value=1, max_value=PRIME - 1))
        items[position] = (x, wrong(raw, element, delta))
    [result] = shamir_decode_many([items], threshold=t, secret_length=32)
    assert result.secret == secret
    assert set(result.off_polynomial) == {items[p][0] for p in positions}
    assert result.malformed == ()


@settings(max_examples=80, deadline=None)
@given(n=st.integers(min_value=2, max_value=30), data=st.data())
def test_decode_beyond_capacity_never_returns_a_wrong_secret(n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(min_value=1, max_value=n - 1))
    secret = os.urandom(32)
    items = encoded(shamir_split(secret, n, t))
    errors = data.draw(st.integers(min_value=(n - t) // 2 + 1, max_value=n))
    positions = data.draw(st.permutations(range(n)))[:errors]
    for position in positions:
        x, raw = items[position]
        element = data.draw(st.integers(min_value=0, max_value=chunk_count(32) - 1))
        items[position] = (x, wrong(raw, element, data.draw(st.integers(1, PRIME - 1))))
    [result] = shamir_decode_many([items], threshold=t, secret_length=32)
    assert result.secret in (None, secret)  # detected, never silently wrong
    if result.secret is None:
        assert result.off_polynomial == ()  # a failed decoding names nobody
    else:  # pragma: no cover - needs a wrong share whose random combination vanishes
        assert set(result.off_polynomial) <= {items[p][0] for p in positions}


def test_decode_a_coordinated_shift_beyond_capacity_is_caught_by_the_tag() -> None:
    """Colluders move their shares onto f + h, with h zero at t - 1 honest points: the
    decoder then finds a polynomial through more than (m + t) / 2 shares that is not f.
    Only the integrity tag stops it; nobody honest is named."""
    n, t = 11, 5
    secret = os.urandom(32)
    shares = shamir_split(secret, n, t)
    colluders = [7, 8, 9, 10]  # x = 8..11: one more than floor((11 - 5) / 2) = 3
    anchors = np.array([1, 2, 3, 4], dtype=np.int64)  # h vanishes at 4 honest points

    def h(x: int) -> int:
        value = 1
        for root in anchors.tolist():
            value = value * (x - root) % PRIME
        return value

    items = encoded(shares)
    for index in colluders:
        x, raw = items[index]
        share = Share.from_bytes(raw)
        values = share.elements.astype(np.uint64)
        values = (values + np.uint64(h(x))) % PRIME  # every chunk moved by the same h
        items[index] = (x, replace(share, payload=values.astype("<u4").tobytes()).to_bytes())
    [result] = shamir_decode_many([items], threshold=t, secret_length=32)
    assert result.secret is None and result.off_polynomial == ()
    # Control: without the tag the decoder would accept f + h and blame honest x = 5, 6, 7.
    xs = np.arange(1, n + 1, dtype=np.uint64)
    values = np.stack([Share.from_bytes(raw).elements for _, raw in items]).astype(np.uint64)
    _, solved, off = _solve_group(xs, t, values[:, None, :])
    assert solved[0] and xs[off[:, 0]].tolist() == [5, 6, 7]


def test_decode_drops_malformed_shares_and_still_decodes() -> None:
    n, t = 9, 3
    secret = os.urandom(24)
    items = encoded(shamir_split(secret, n, t))
    too_high = bytearray(items[4][1])
    too_high[7:11] = (PRIME).to_bytes(4, "little")
    items[0] = (items[0][0], items[0][1][:-1])  # truncated
    items[1] = (items[1][0], items[2][1])  # claims x = 3 in the slot of x = 2
    items[3] = (items[3][0], shamir_split(os.urandom(24), n, t + 1)[3].to_bytes())  # t differs
    items[4] = (items[4][0], bytes(too_high))  # a value outside the field
    items[5] = (items[5][0], wrong(items[5][1], 2, 99))  # well formed, wrong
    [result] = shamir_decode_many([items], threshold=t, secret_length=24)
    assert result.secret == secret
    assert result.malformed == (1, 2, 4, 5)
    assert result.off_polynomial == (6,)


def test_decode_too_few_usable_shares_is_undecodable_not_an_error() -> None:
    secret = os.urandom(32)
    items = encoded(shamir_split(secret, 5, 4))
    items[0] = (items[0][0], b"junk")
    [result] = shamir_decode_many([items[:4]], threshold=4, secret_length=32)
    assert result.secret is None and result.malformed == (1,)
    [exact] = shamir_decode_many([items[1:]], threshold=4, secret_length=32)
    assert exact.secret == secret  # exactly t shares: the tag is the only check
    items[2] = (items[2][0], wrong(items[2][1], 0, 5))
    [tampered] = shamir_decode_many([items[1:]], threshold=4, secret_length=32)
    assert tampered.secret is None
    assert secret.hex() not in repr(exact) and repr(secret) not in repr(exact)
    with pytest.raises(TypeError):
        pickle.dumps(exact)


def test_decode_batch_mixes_x_sets_and_error_patterns() -> None:
    """Many secrets in one call: the batched decoder gives each its own answer."""
    n, t = 15, 6
    secrets = [os.urandom(32) for _ in range(40)]
    sharings = shamir_split_many(secrets, n, t)
    sets = []
    expected_off = []
    for index, shares in enumerate(sharings):
        items = encoded(shares)
        if index % 3 == 0:
            items = items[1:]  # another x-set
        bad = list(range(index % 5))  # 0..4 errors, capacity is 4 (or 4 with m = 14)
        for position in bad:
            x, raw = items[position]
            items[position] = (x, wrong(raw, position % 3, index + 1))
        sets.append(items)
        expected_off.append(tuple(items[p][0] for p in bad))
    results = shamir_decode_many(sets, threshold=t, secret_length=32)
    for secret, result, off in zip(secrets, results, expected_off, strict=True):
        assert result.secret == secret
        assert result.off_polynomial == off


@pytest.mark.parametrize(
    ("sets", "kwargs", "match"),
    [
        ([[(1, b"")]], {"threshold": 0, "secret_length": 32}, "threshold"),
        ([[(1, b"")]], {"threshold": 2, "secret_length": 8}, "secret_length"),
        ([[(1, b""), (1, b"")]], {"threshold": 1, "secret_length": 32}, "same x twice"),
        ([[(0, b"")]], {"threshold": 1, "secret_length": 32}, "share x"),
        ([[(True, b"")]], {"threshold": 1, "secret_length": 32}, "share x"),
    ],
)
def test_decode_argument_errors(sets: object, kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(SecAggValueError, match=match):
        shamir_decode_many(sets, **kwargs)  # type: ignore[arg-type]
