"""The attack suite: what the server can and cannot learn."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.attacks import (
    auc,
    client_upload,
    membership_inference,
    rated_set_inference,
    round_differencing,
)
from analysis.cli import main
from analysis.errors import AuditInputError


def test_rated_set_inference_sparse_and_plaintext_fcf_leak() -> None:
    assert rated_set_inference("sparse", users=5).auc == 1.0
    assert rated_set_inference("fcf", users=5).auc >= 0.99


def test_rated_set_inference_masked_uploads_at_chance() -> None:
    res = rated_set_inference("masked", users=30, items=200)
    assert abs(res.auc - 0.5) < 0.06


def test_masked_upload_is_uniform_in_the_ring() -> None:
    sim = np.random.default_rng(0)
    y = sim.standard_normal((500, 8))
    rated = np.zeros(500, dtype=np.bool_)
    rated[:10] = True
    up = client_upload("masked", rated, sim.standard_normal(8), y)
    assert up.min() >= 0 and up.max() < 2**32
    assert abs(up.mean() / 2**32 - 0.5) < 0.02


def test_membership_inference_falls_with_noise_and_population() -> None:
    leaky = membership_inference(math.inf, members=50, items=300)
    private = membership_inference(0.5, members=50, items=300)
    assert leaky.auc > 0.6
    assert private.auc < leaky.auc
    assert abs(private.auc - 0.5) < 0.1


def test_round_differencing_exact_without_dp_chance_with_strong_dp() -> None:
    assert round_differencing(math.inf).auc == 1.0
    aucs = [round_differencing(0.5, seed=s).auc for s in range(5)]
    assert abs(float(np.mean(aucs)) - 0.5) < 0.15


def test_auc_basics_and_errors() -> None:
    assert auc([1.0, 2.0, 3.0, 4.0], [False, False, True, True]) == 1.0
    assert auc([1.0, 1.0], [False, True]) == 0.5
    with pytest.raises(AuditInputError):
        auc([1.0, 2.0], [True, True])
    with pytest.raises(AuditInputError):
        client_upload("bogus", np.zeros(3, bool), np.zeros(2), np.zeros((3, 2)))  # type: ignore[arg-type]


def test_attack_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attack", "--epsilon", "1,inf"]) == 0
    out = capsys.readouterr().out
    assert out.count("AUC") == 7
    assert main(["attack", "--epsilon", "-1"]) == 2
