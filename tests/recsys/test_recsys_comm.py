"""Communication budget: bytes reported by every run, narrower rings, and their refusal."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analysis.cli import main
from dp.errors import PlanningError
from recsys.data import synthetic_ratings
from recsys.features import item_features
from recsys.federated import FCFConfig
from recsys.recommender import ModelConfig
from recsys.split import leave_last_out
from recsys.trainer import RoundRecord, TrainConfig, Trainer, communication_summary

pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    r = synthetic_ratings(50, 40, seed=8, mean_activity=14, min_activity=4)
    return leave_last_out(r), item_features(r)


def _config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        privacy="distributed",
        rounds=2,
        secagg="plus",
        seed=2,
        eval_every=0,
        simulation_noise=True,
        model=ModelConfig(kind="popfeat+fcf", cap=5, fcf=FCFConfig(dim=3, active_items=20)),
    )
    base.update(kw)
    return TrainConfig(**base)


def _record(sampled: int, up: int, down: int) -> RoundRecord:
    return RoundRecord(1, "fcf", sampled, sampled, 0, 1.0, 1.0, None, None, 0, 0, 0, 0, 0, up, down)


def test_communication_summary_arithmetic() -> None:
    recs = [_record(10, 1000, 3000), _record(20, 1000, 1000), _record(0, 0, 0)]
    s = communication_summary(recs)
    assert s["bytes_up_total"] == 2000 and s["bytes_down_total"] == 4000
    assert s["bytes_total"] == 6000 and s["device_rounds"] == 30
    assert s["bytes_up_per_client_round"] == pytest.approx((100 + 50) / 2)
    assert s["bytes_down_per_client_round"] == pytest.approx((300 + 50) / 2)


@pytest.mark.parametrize(("bits", "mechanism"), [(32, "discrete_gaussian"), (16, "skellam")])
def test_every_run_reports_its_bytes(data, bits: int, mechanism: str) -> None:  # type: ignore[no-untyped-def]
    split, feats = data
    result = Trainer(split, feats, _config(bits=bits, mechanism=mechanism)).run()
    card = result.report_card
    assert card["encoding_bits"] == bits
    comm = card["communication"]
    assert comm["bytes_total"] == sum(r.bytes_up + r.bytes_down for r in result.records) > 0
    # every device's masked input is at least its ring vector on the wire
    trainer_min = min(r.bytes_up / r.sampled for r in result.records)
    assert trainer_min > 4 * 64  # padded dimension >= 64 coordinates of 4 bytes
    assert result.records[-1].epsilon <= 8.0 + 1e-9
    assert np.isfinite(result.final.hr)


def test_a_ring_too_narrow_for_the_sum_is_refused(data) -> None:  # type: ignore[no-untyped-def]
    split, feats = data
    with pytest.raises(PlanningError, match="use more bits"):
        Trainer(split, feats, _config(bits=9))


def test_masked_input_size_follows_the_wire_format(data) -> None:  # type: ignore[no-untyped-def]
    split, feats = data
    trainer = Trainer(split, feats, _config(bits=20))
    values, nbytes = trainer.channel.masked_input_size(100, 50)
    assert values == 128  # padded to a power of two for the Hadamard rotation
    assert nbytes >= 4 * values  # rings up to 32 bits travel as 4-byte words


def test_cli_bits_devices_context(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", "synthetic", "--users", "60", "--items", "40", "--quiet"]
    args += ["--rounds", "1", "--model", "popfeat+fcf", "--active-items", "10", "--no-baselines"]
    args += ["--bits", "20", "--devices", "heavy-tail", "--deadline", "5", "--context", "device"]
    args += ["--secagg", "full", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "bytes" in text and "20-bit ring" in text
    assert "devices       heavy-tail, deadline 5 s" in text
    assert "context       on device only" in text
    with open(out / "metrics.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {"sim_seconds", "offline", "late"} <= set(rows[0])
    assert all(float(r["sim_seconds"]) <= 5.0 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    card = summary["report_card"]
    assert card["communication"]["bytes_total"] == sum(
        int(r["bytes_up"]) + int(r["bytes_down"]) for r in rows
    )
    assert card["devices"]["offline_total"] == sum(int(r["offline"]) for r in rows)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--bits", "7"], "--bits"),
        (["--bits", "33"], "--bits"),
        (["--devices", "heavy-tail", "--deadline", "0"], "--deadline"),
        (["--availability", "0"], "--availability"),
        (["--bits", "10", "--model", "fcf"], "use more bits"),
    ],
)
def test_bad_communication_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    out = tmp_path / "run"
    base = ["train", "--data", "synthetic", "--users", "40", "--items", "30", "--quiet"]
    code = main([*base, *extra, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
