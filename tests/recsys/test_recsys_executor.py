"""Training with the devices on an executor: ``--executor local`` and ``--executor ray``
train the same model for a seed (simulation generator), an executor release decodes to the
sum of the survivors' uploads, and executor flags are validated."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from analysis.cli import main
from recsys.channels import ChannelSpec, make_channel
from recsys.data import synthetic_ratings
from recsys.errors import ConfigError
from recsys.executors import LocalExecutor
from recsys.features import item_features
from recsys.federated import DeviceFleet, ItemServer, PopularityTask
from recsys.split import leave_last_out
from recsys.trainer import TrainConfig

pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")
HAVE_RAY = importlib.util.find_spec("ray") is not None
RUN = [
    "train",
    *("--data", "synthetic", "--users", "40", "--items", "30", "--quiet", "--seed", "3"),
    *("--rounds", "2", "--model", "popfeat+fcf", "--active-items", "10", "--cohort", "24"),
    *("--secagg", "full", "--dropout", "0.1", "--simulation-noise", "--no-baselines"),
]


def _train(out: Path, executor: str) -> tuple[list[dict[str, str]], dict[str, object]]:
    assert main([*RUN, "--executor", executor, "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "metrics.csv").read_text().splitlines()))
    return rows, json.loads((out / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (pip install 'privagg[ray]')")
def test_ray_executor_trains_the_same_model_as_local(tmp_path: Path, ray_runtime: object) -> None:
    # ray_runtime (tests/conftest.py): the trainer's executor attaches to the session's Ray
    local_rows, local = _train(tmp_path / "local", "local")
    ray_rows, ray = _train(tmp_path / "ray", "ray")
    keys = ("task", "sampled", "included", "dropped", "epsilon", "hr10", "ndcg10")
    assert [[r[k] for k in keys] for r in local_rows] == [[r[k] for k in keys] for r in ray_rows]
    assert [r["task"] for r in local_rows] == ["popularity", "fcf", "fcf"]
    assert local["per_user_ranks"] == ray["per_user_ranks"]
    card_l, card_r = local["report_card"], ray["report_card"]
    assert isinstance(card_l, dict) and isinstance(card_r, dict)
    assert card_l["HR@10"] == card_r["HR@10"]
    assert (card_l["executor"], card_r["executor"]) == ("local", "ray")


def test_executor_release_decodes_to_the_survivors_sum() -> None:
    """Noise off: the executor path's release is the sum of the included devices' uploads
    up to the plan's quantization error, and the dropouts are the channel's."""
    ratings = synthetic_ratings(30, 25, seed=2, mean_activity=10, min_activity=5)
    split = leave_last_out(ratings)
    fleet = DeviceFleet(split.train, item_features(ratings))
    server = ItemServer(split.train.num_items)
    task = PopularityTask(split.train.num_items, cap=8)
    spec = ChannelSpec(
        privacy="distributed",
        secagg="full",
        dropout=0.2,
        mechanism="discrete_gaussian",
        bits=32,
        delta=1e-5,
        seed=4,
        simulation_noise=True,
        group_size=12,  # three SecAgg groups
    )
    channel = make_channel(spec)
    cohort = np.arange(30, dtype=np.int64)
    executor = LocalExecutor(shard_size=5)
    release = channel.release_on(
        executor,
        task,
        fleet,
        server,
        cohort,
        noise_multiplier=0.0,
        sampling_rate=1.0,
        expected_clients=30,
        round_index=1,
    )
    assert 0 < release.dropped < 30 and release.included + release.dropped == 30
    uploads = task.local_updates(fleet, server, cohort)
    true = uploads[list(release.included_positions)].sum(axis=0)
    plan = channel.plan(task.upload_dim, task.clip_norm, 0.0, 30)
    assert float(np.linalg.norm(release.total - true)) <= plan.quantization_error_bound(30)
    assert float(np.linalg.norm(true)) > 1.0  # not a vacuous comparison


def test_executor_configuration_is_validated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError):
        TrainConfig(privacy="central", executor="local")
    with pytest.raises(ConfigError):
        TrainConfig(secagg="off", executor="local")
    with pytest.raises(ConfigError):
        TrainConfig(ray_address="auto", executor="local")
    with pytest.raises(ConfigError):
        TrainConfig(executor="threads")  # type: ignore[arg-type]
    for extra, fragment in [
        (["--executor", "local", "--privacy", "central"], "--executor"),
        (["--ray-address", "auto"], "--ray-address"),
    ]:
        out = tmp_path / "run"
        assert main([*RUN, *extra, "--out", str(out)]) == 2
        assert fragment in capsys.readouterr().err
        assert not out.exists()
