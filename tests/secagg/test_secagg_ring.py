"""Ring arithmetic over Z_{2^bits}: identities against Python integers, lift, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import (
    SecAggValueError,
    centered_lift,
    ring_add,
    ring_dtype,
    ring_mask,
    ring_neg,
    ring_sub,
    ring_sum,
    to_ring,
)

BITS = st.integers(min_value=1, max_value=62)


@st.composite
def ring_vectors(draw: st.DrawFn, count: int = 2) -> tuple[int, list[list[int]]]:
    bits = draw(BITS)
    size = draw(st.integers(min_value=0, max_value=20))
    element = st.integers(min_value=0, max_value=(1 << bits) - 1)
    vectors = [draw(st.lists(element, min_size=size, max_size=size)) for _ in range(count)]
    return bits, vectors


def as_ring(values: list[int], bits: int) -> np.ndarray:
    return np.array(values, dtype=ring_dtype(bits))


@settings(max_examples=150, deadline=None)
@given(ring_vectors(count=3))
def test_add_sub_neg_match_python_integers(case: tuple[int, list[list[int]]]) -> None:
    bits, (a, b, c) = case
    modulus = 1 << bits
    ra, rb, rc = (as_ring(v, bits) for v in (a, b, c))
    assert ring_add(ra, rb, bits).tolist() == [(x + y) % modulus for x, y in zip(a, b, strict=True)]
    assert ring_sub(ra, rb, bits).tolist() == [(x - y) % modulus for x, y in zip(a, b, strict=True)]
    assert ring_neg(ra, bits).tolist() == [(-x) % modulus for x in a]
    # Identities: a - a = 0, a + (-a) = 0, (a + b) + c = a + (b + c), a + b - b = a.
    assert not ring_sub(ra, ra, bits).any()
    assert not ring_add(ra, ring_neg(ra, bits), bits).any()
    assert np.array_equal(
        ring_add(ring_add(ra, rb, bits), rc, bits), ring_add(ra, ring_add(rb, rc, bits), bits)
    )
    assert np.array_equal(ring_sub(ring_add(ra, rb, bits), rb, bits), ra)
    for result in (ring_add(ra, rb, bits), ring_neg(ra, bits)):
        assert result.dtype == ring_dtype(bits)


@settings(max_examples=150, deadline=None)
@given(BITS, st.data())
def test_centered_lift_inverts_to_ring_on_the_centered_interval(
    bits: int, data: st.DataObject
) -> None:
    half = 1 << (bits - 1)
    signed = data.draw(st.lists(st.integers(min_value=-half, max_value=half - 1), max_size=30))
    ring = to_ring(np.array(signed, dtype=np.int64), bits)
    assert ring.tolist() == [v % (1 << bits) for v in signed]
    lifted = centered_lift(ring, bits)
    assert lifted.dtype == np.int64
    assert lifted.tolist() == signed


def test_centered_lift_range_boundaries() -> None:
    for bits in (1, 2, 8, 31, 32, 33, 62):
        top, half = (1 << bits) - 1, 1 << (bits - 1)
        ring = np.array([0, half - 1, half, top], dtype=ring_dtype(bits))
        assert centered_lift(ring, bits).tolist() == [0, half - 1, -half, -1]


@settings(max_examples=100, deadline=None)
@given(BITS, st.integers(min_value=1, max_value=40), st.integers(min_value=0, max_value=8))
def test_ring_sum_is_exact_mod_2_to_the_bits(bits: int, n: int, d: int) -> None:
    rng = np.random.default_rng(n * 100 + d + bits)  # test data only
    high = 1 << bits
    values = [[int(v) for v in rng.integers(0, high, size=d, dtype=np.uint64)] for _ in range(n)]
    matrix = np.array(values, dtype=ring_dtype(bits)).reshape(n, d)
    expected = [sum(column) % high for column in zip(*values, strict=True)] if d else []
    assert ring_sum(matrix, bits).tolist() == expected
    assert ring_sum(list(matrix), bits).tolist() == expected


def test_ring_sum_of_many_max_values_wraps_exactly() -> None:
    # 2^20 copies of 2^32 - 1 overflow any naive uint32 intermediate many times over.
    n, bits = 1 << 20, 32
    matrix = np.full((n, 3), ring_mask(bits), dtype=np.uint32)
    assert ring_sum(matrix, bits).tolist() == [(n * ring_mask(bits)) % (1 << bits)] * 3


def test_to_ring_accepts_every_integer_dtype_and_negative_values() -> None:
    for dtype in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32, np.uint64):
        values = np.array([0, 1, 100], dtype=dtype)
        assert to_ring(values, 7).tolist() == [0, 1, 100]
    assert to_ring(np.array([-1, -128], dtype=np.int8), 8).tolist() == [255, 128]
    assert to_ring(np.array([-1], dtype=np.int64), 62).tolist() == [(1 << 62) - 1]
    assert to_ring([-(1 << 40)], 40).tolist() == [0]


def test_out_parameter_and_aliasing() -> None:
    bits = 12
    a = to_ring(np.arange(10), bits)
    b = to_ring(np.arange(10) * 1000, bits)
    expected = ring_add(a, b, bits)
    ring_add(a, b, bits, out=a)
    assert np.array_equal(a, expected)
    out = np.empty(10, dtype=np.int64)
    assert centered_lift(a, bits, out=out) is out


@pytest.mark.parametrize("bits", [0, 63, 64, -1, 2.0, True, "32"])
def test_bad_bits_raise(bits: object) -> None:
    with pytest.raises(SecAggValueError, match="bits"):
        ring_dtype(bits)  # type: ignore[arg-type]


def test_type_errors_are_typed_and_clear() -> None:
    with pytest.raises(SecAggValueError, match="integer array"):
        to_ring(np.array([1.5]), 32)
    with pytest.raises(SecAggValueError, match="integer array"):
        to_ring(np.array([1 << 70], dtype=object), 32)
    with pytest.raises(SecAggValueError, match="dtype uint64"):
        ring_add(np.zeros(2, np.uint32), np.zeros(2, np.uint32), 40)
    with pytest.raises(SecAggValueError, match="to_ring"):
        ring_sub(np.zeros(2, np.int64), np.zeros(2, np.uint32), 32)
    with pytest.raises(SecAggValueError, match="at least one"):
        ring_sum([], 32)
    with pytest.raises(SecAggValueError, match="shape"):
        ring_sum([np.zeros(2, np.uint32), np.zeros(3, np.uint32)], 32)
    assert isinstance(SecAggValueError("x"), ValueError)
