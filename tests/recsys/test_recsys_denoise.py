"""Empirical-Bayes denoising of the released counts: exact when there is no noise, closer
to the true log-counts than clipping when there is, monotone in the released count (a
post-processing that never reorders items), typed errors, and the server's prior uses it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from recsys.denoise import denoised_log_counts
from recsys.errors import ConfigError
from recsys.federated import ItemServer


def _counts(rng: np.random.Generator, n: int = 1500) -> np.ndarray:
    return np.floor(rng.pareto(1.1, n) * 4.0)  # heavy-tailed, mostly small, like popularity


def test_no_noise_is_the_plain_log() -> None:
    y = np.array([-3.0, 0.0, 2.5, 40.0])
    np.testing.assert_array_equal(denoised_log_counts(y, 0.0, 10.0), np.log([10, 10, 12.5, 50]))


def test_closer_to_the_true_log_counts_than_clipping() -> None:
    rng = np.random.default_rng(7)
    for std in (3.0, 15.0):
        counts = _counts(rng)
        noisy = counts + rng.normal(0.0, std, counts.size)
        truth = np.log(counts + 10.0)
        clipped = np.log(np.maximum(noisy, 0.0) + 10.0)
        denoised = denoised_log_counts(noisy, std, 10.0)
        assert np.mean((denoised - truth) ** 2) < 0.8 * np.mean((clipped - truth) ** 2)


@settings(max_examples=30, deadline=None)
@given(
    y=arrays(np.float64, st.integers(2, 60), elements=st.floats(-50, 500)),
    std=st.floats(0.5, 40.0),
)
def test_monotone_in_the_released_count(y: np.ndarray, std: float) -> None:
    out = denoised_log_counts(y, std, 10.0)
    order = np.argsort(y, kind="stable")
    assert np.all(np.diff(out[order]) >= -1e-9)
    assert np.all(out >= np.log(10.0) - 1e-12)


@pytest.mark.parametrize(
    ("y", "std", "shrink"),
    [
        (np.array([1.0, np.nan]), 1.0, 10.0),
        (np.ones((2, 2)), 1.0, 10.0),
        (np.ones(3), -1.0, 10.0),
        (np.ones(3), float("inf"), 10.0),
        (np.ones(3), 1.0, 0.0),
    ],
)
def test_bad_input_is_refused(y: np.ndarray, std: float, shrink: float) -> None:
    with pytest.raises(ConfigError):
        denoised_log_counts(y, std, shrink)


def test_the_server_prior_denoises_with_the_release_noise() -> None:
    rng = np.random.default_rng(3)
    server = ItemServer(300)
    assert server.prior(10.0) is None
    noisy = _counts(rng, 300) + rng.normal(0.0, 12.0, 300)
    server.popularity = noisy
    np.testing.assert_array_equal(server.prior(10.0), np.log(np.maximum(noisy, 0) + 10))
    server.popularity_noise_std = 12.0
    first = server.prior(10.0)
    assert first is not None
    np.testing.assert_array_equal(first, denoised_log_counts(noisy, 12.0, 10.0))
    assert server.prior(10.0) is first  # cached for the same release
    server.popularity = noisy + 1.0
    assert not np.array_equal(server.prior(10.0), first)
