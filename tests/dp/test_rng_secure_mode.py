"""Secure mode (checklist D7): a seed raises, global seeds do not change secure output,
the simulation generator warns and marks events non-secure; secret hygiene."""

from __future__ import annotations

import copy
import os
import pickle

import numpy as np
import pytest
import torch

import dp
from dp.errors import InsecureRandomnessError
from dp.rng import NonSecureRandomnessWarning, SecureRng, SimulationRng, default_rng


@pytest.mark.parametrize(
    ("args", "kwargs"), [((0,), {}), ((b"seed",), {}), ((), {"seed": 1}), ((None,), {})]
)
def test_secure_rng_refuses_any_seed(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    with pytest.raises(InsecureRandomnessError):
        SecureRng(*args, **kwargs)


def test_global_seeds_do_not_change_secure_output() -> None:
    outputs = []
    for _ in range(2):
        np.random.seed(0)
        torch.manual_seed(0)
        outputs.append(dp.discrete_gaussian(100, 64, SecureRng()))
    assert not np.array_equal(outputs[0], outputs[1])
    np.random.seed(0)
    torch.manual_seed(0)
    rng = SecureRng()
    assert not np.array_equal(rng.words(8), rng.words(8))


def test_secure_rng_words_look_uniform() -> None:
    words = SecureRng().words(1 << 16)
    bits = np.unpackbits(words.view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.01
    assert words.dtype == np.uint64 and len(np.unique(words)) == words.size


def test_secure_rng_rekeys_after_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dp.rng, "RESEED_BYTES", 64)
    rng = SecureRng()
    first = rng._cipher
    rng.words(100)  # crosses the 64-byte budget several times
    assert rng._cipher is not first and rng._drawn <= 64


def test_secure_rng_hygiene() -> None:
    rng = SecureRng()
    with pytest.raises(TypeError):
        pickle.dumps(rng)
    with pytest.raises(TypeError):
        copy.deepcopy(rng)
    with pytest.raises(TypeError):
        copy.copy(rng)
    assert "key" not in repr(rng).lower().replace("keyed", "")
    assert rng.secure is True
    assert isinstance(default_rng(None), SecureRng)


def test_simulation_rng_warns_once_and_is_not_secure() -> None:
    rng = SimulationRng(5)
    assert rng.secure is False and "secure=False" in repr(rng)
    with pytest.warns(NonSecureRandomnessWarning):
        rng.words(3)
    with pytest.warns(NonSecureRandomnessWarning) as record:
        rng2 = SimulationRng(5)
        rng2.words(1)
        rng2.words(1)
        rng2.word()
    assert len(record) == 1


@pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")
def test_events_record_the_generator() -> None:
    plan = dp.plan_distributed_dp(
        dimension=8,
        expected_contributors=3,
        min_contributors=2,
        clip_norm=1.0,
        noise_multiplier=1.0,
        bits=24,
    )
    _, secure_event = dp.encode(np.ones(8), plan, rotation_seed=1)
    _, sim_event = dp.encode(np.ones(8), plan, rotation_seed=1, rng=SimulationRng(1))
    assert secure_event.secure is True  # type: ignore[attr-defined]
    assert sim_event.secure is False  # type: ignore[attr-defined]
    _, central = dp.central_gaussian(np.ones(3), l2_sensitivity=1.0, noise_multiplier=1.0)
    assert central.secure is True


@pytest.mark.parametrize("seed", [-1, 1.5, True, "1"])
def test_simulation_rng_rejects_bad_seeds(seed: object) -> None:
    with pytest.raises(dp.DPValueError):
        SimulationRng(seed)  # type: ignore[arg-type]


def test_default_rng_rejects_non_generators() -> None:
    with pytest.raises(dp.DPValueError):
        default_rng(np.random.default_rng(0))  # type: ignore[arg-type]


def test_secure_rng_rekeys_in_a_forked_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child process must never replay the parent's keystream."""
    rng = SecureRng()
    parent_cipher = rng._cipher
    real_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 1)
    rng.words(4)
    assert rng._cipher is not parent_cipher
