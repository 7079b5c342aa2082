"""Quantization: error bound of a decoded sum, unbiasedness, and the overflow budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import (
    OverflowBudgetError,
    SecAggValueError,
    centered_lift,
    check_sum_fits,
    dequantize,
    max_quantized_abs,
    quantize,
    required_bits,
    ring_dtype,
    ring_sum,
    sum_error_bound,
)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=60),
    d=st.integers(min_value=1, max_value=50),
    clip=st.floats(min_value=1e-3, max_value=100.0),
    log2_scale=st.integers(min_value=0, max_value=24),
    data_seed=st.integers(min_value=0, max_value=2**31),
)
def test_sum_of_n_decodes_within_the_stated_bound(
    n: int, d: int, clip: float, log2_scale: int, data_seed: int
) -> None:
    scale = float(2**log2_scale)
    bits = required_bits(n, max_quantized_abs(clip, scale))
    check_sum_fits(num_summands=n, max_abs_value=max_quantized_abs(clip, scale), bits=bits)
    rng = np.random.default_rng(data_seed)  # test data only
    updates = rng.uniform(-clip, clip, size=(n, d))
    quantized = np.stack([quantize(u, clip=clip, scale=scale, bits=bits) for u in updates])
    assert quantized.dtype == ring_dtype(bits)
    decoded = dequantize(ring_sum(quantized, bits), scale=scale, bits=bits)
    error = np.abs(decoded - updates.sum(axis=0))
    # Float slack: decoding divides exact integers by a power of two; the input sum is a
    # float sum of n values of magnitude <= clip.
    assert np.all(error < sum_error_bound(num_summands=n, scale=scale) + 1e-9 * n * clip)


@settings(max_examples=80, deadline=None)
@given(
    clip=st.floats(min_value=1e-6, max_value=1e6),
    scale=st.floats(min_value=1e-3, max_value=1e14),
    extra=st.sampled_from([0.0, 1.0, 1e300]),
)
def test_quantized_magnitude_never_exceeds_max_quantized_abs(
    clip: float, scale: float, extra: float
) -> None:
    max_abs = max_quantized_abs(clip, scale)
    bits = required_bits(1, max_abs)
    if bits > 62:
        with pytest.raises(OverflowBudgetError):
            quantize(np.zeros(1), clip=clip, scale=scale, bits=62)
        return
    x = np.array([clip, -clip, clip + extra, -clip - extra, np.nextafter(clip, 0)] * 50)
    lifted = np.abs(centered_lift(quantize(x, clip=clip, scale=scale, bits=bits), bits))
    assert int(lifted.max()) <= max_abs


def test_clipping_applies_before_scaling() -> None:
    q = quantize(np.array([1e9, -1e9, 0.5]), clip=2.0, scale=4.0, bits=8)
    assert dequantize(q, scale=4.0, bits=8).tolist() == [2.0, -2.0, 0.5]


def test_rounding_is_unbiased() -> None:
    # 0.3 * 1 rounds to 0 or 1; the mean of many roundings must approach 0.3.
    samples = 200_000
    q = quantize(np.full(samples, 0.3), clip=1.0, scale=1.0, bits=4)
    ones = dequantize(q, scale=1.0, bits=4)
    assert set(np.unique(ones).tolist()) == {0.0, 1.0}
    # Binomial standard deviation sqrt(0.21 / 200000) ~ 1.02e-3; allow 6 sigma.
    assert abs(ones.mean() - 0.3) < 6.2e-3
    negative = dequantize(
        quantize(np.full(samples, -0.3), clip=1.0, scale=1.0, bits=4), scale=1.0, bits=4
    )
    assert abs(negative.mean() + 0.3) < 6.2e-3


def test_rounding_is_not_affected_by_numpy_global_seed() -> None:
    x = np.full(1000, 0.5)
    np.random.seed(0)
    first = quantize(x, clip=1.0, scale=1.0, bits=8)
    np.random.seed(0)
    second = quantize(x, clip=1.0, scale=1.0, bits=8)
    assert not np.array_equal(first, second)


def test_flower_overflow_case_raises_before_processing() -> None:
    # Flower's defaults: clip 8, 2^22 levels over [-8, 8] (scale 2^18), a 2^32 ring.
    max_abs = max_quantized_abs(8.0, 2.0**18)
    assert max_abs == 2**21
    check_sum_fits(num_summands=1000, max_abs_value=max_abs, bits=32)
    with pytest.raises(OverflowBudgetError, match="2100") as info:
        check_sum_fits(num_summands=2100, max_abs_value=max_abs, bits=32)
    assert "need bits >= 34" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_budget_boundary_is_exact_and_sufficient() -> None:
    bits = 10
    limit = 1 << (bits - 1)  # 512
    check_sum_fits(num_summands=511, max_abs_value=1, bits=bits)
    with pytest.raises(OverflowBudgetError):
        check_sum_fits(num_summands=512, max_abs_value=1, bits=bits)
    # At the boundary every worst case still decodes exactly.
    n, max_abs = 7, (limit - 1) // 7
    check_sum_fits(num_summands=n, max_abs_value=max_abs, bits=bits)
    for sign in (1, -1):
        values = np.full((n, 3), sign * max_abs / 1.0)
        quantized = np.stack([quantize(v, clip=max_abs, scale=1.0, bits=bits) for v in values])
        assert (
            dequantize(ring_sum(quantized, bits), scale=1.0, bits=bits).tolist()
            == [sign * n * max_abs] * 3
        )
    assert required_bits(n, max_abs) <= bits
    assert required_bits(1, 0) == 1 and required_bits(1, 1) == 2 and required_bits(4, 2) == 5


def test_quantize_refuses_a_single_value_that_cannot_be_lifted() -> None:
    with pytest.raises(OverflowBudgetError):
        quantize(np.zeros(3), clip=1.0, scale=2.0**8, bits=8)
    quantize(np.zeros(3), clip=1.0, scale=2.0**8 - 2, bits=9)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"clip": 0.0, "scale": 1.0, "bits": 32},
        {"clip": -1.0, "scale": 1.0, "bits": 32},
        {"clip": math.inf, "scale": 1.0, "bits": 32},
        {"clip": math.nan, "scale": 1.0, "bits": 32},
        {"clip": 1.0, "scale": 0.0, "bits": 32},
        {"clip": 1.0, "scale": 1.0, "bits": 0},
        {"clip": "1", "scale": 1.0, "bits": 32},
    ],
)
def test_bad_parameters_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(SecAggValueError):
        quantize(np.zeros(2), **kwargs)  # type: ignore[arg-type]


def test_bad_inputs_raise() -> None:
    for x in (np.array([1.0, np.nan]), np.array([np.inf]), np.array(["a"]), np.array([1j])):
        with pytest.raises(SecAggValueError):
            quantize(x, clip=1.0, scale=1.0, bits=8)
    for kwargs in (
        {"num_summands": 0, "max_abs_value": 1, "bits": 32},
        {"num_summands": 2, "max_abs_value": -1, "bits": 32},
        {"num_summands": 2.0, "max_abs_value": 1, "bits": 32},
        {"num_summands": 2, "max_abs_value": 1, "bits": 63},
    ):
        with pytest.raises(SecAggValueError):
            check_sum_fits(**kwargs)
    with pytest.raises(SecAggValueError):
        dequantize(np.zeros(2, np.uint32), scale=0.0, bits=32)


def test_integer_and_multidimensional_inputs() -> None:
    q = quantize(np.arange(-3, 3).reshape(2, 3), clip=10.0, scale=2.0, bits=8)
    assert q.shape == (2, 3)
    assert dequantize(q, scale=2.0, bits=8).tolist() == [[-3.0, -2.0, -1.0], [0.0, 1.0, 2.0]]
