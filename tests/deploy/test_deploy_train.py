"""Federated training over gRPC: the recommender's trainer in the server, one device per
client over TLS, bit-identical to the in-process trainer; and the pieces it is built from
(round announcements, the training payload, device histories, refusals)."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("grpc", reason="grpcio is not installed (pip install 'privagg[net]')")

import secagg
from protocols.errors import ConfigError as ProtocolConfigError
from protocols.errors import DecodeError
from protocols.net import (
    AggregationServer,
    ClientTLS,
    DeviceReport,
    JobSpec,
    LocalPKI,
    RoundInfo,
    RoundRefused,
    RoundSpec,
    ServerTLS,
    load_identity_key,
    load_registry,
    make_local_pki,
    run_device,
)
from protocols.net.wire import decode_round, encode_round
from recsys.data import synthetic_ratings
from recsys.errors import DataFormatError
from recsys.executors import EncodeWork, LocalExecutor, RoundOutcome
from recsys.features import item_features
from recsys.federated import FCFConfig
from recsys.recommender import ModelConfig
from recsys.remote import (
    DeviceTrainer,
    load_history,
    pack_arrays,
    population_split,
    serve_training,
    training_job,
    unpack_arrays,
    write_histories,
)
from recsys.split import Split, leave_last_out
from recsys.trainer import TrainConfig, Trainer

N = 10
pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")


def _data() -> tuple[Split, np.ndarray]:
    ratings = synthetic_ratings(N, 40, seed=5, mean_activity=12, min_activity=6)
    return leave_last_out(ratings), item_features(ratings)


def _config(**kw: Any) -> TrainConfig:
    model = ModelConfig(kind="popfeat+fcf", cap=8, fcf=FCFConfig(dim=3, active_items=25))
    base: dict[str, Any] = {
        "privacy": "distributed",
        "epsilon": 8.0,
        "rounds": 2,
        "secagg": "plus",
        "dropout": 0.0,
        "seed": 11,
        "simulation_noise": True,
        "eval_every": 1,
        "model": model,
    }
    return TrainConfig(**(base | kw))


class RecordingExecutor(LocalExecutor):
    """The in-process reference: the local executor with one device per shard (the noise
    layout of a real device), recording every round's ring sum."""

    def __init__(self) -> None:
        super().__init__(shard_size=1)
        self.outcomes: list[RoundOutcome] = []

    def aggregate(self, *args: Any, **kw: Any) -> RoundOutcome:
        out = super().aggregate(*args, **kw)
        self.outcomes.append(out)
        return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPKI:
    return make_local_pki(tmp_path_factory.mktemp("pki"), num_clients=N)


def _unused(r: int, job: JobSpec) -> np.ndarray:
    raise AssertionError("a per-round job uses round_inputs")


def _train_over_grpc(
    pki: LocalPKI, split: Split, features: np.ndarray, config: TrainConfig, histories: Path
) -> tuple[Any, list[Any], dict[int, Any]]:
    trainer = Trainer(split, features, config)
    job = training_job(trainer, min_cohort=3)
    server = AggregationServer(
        job,
        load_registry(pki.registry),
        ServerTLS(pki.server_cert.read_bytes(), pki.server_key.read_bytes()),
        stage_deadline=10.0,
        join_deadline=20.0,
        linger_seconds=0.3,
    )
    server.start()
    results: dict[int, Any] = {}

    def device(cid: int) -> None:
        try:
            results[cid] = run_device(
                server.address,
                cid,
                load_identity_key(pki.client_keys[cid]),
                _unused,
                ClientTLS(pki.ca_cert.read_bytes()),
                expected_job=job,
                retry_seconds=5,
                round_inputs=DeviceTrainer.from_file(
                    histories / f"device-{cid}.npy", allow_simulation_noise=True
                ),
            )
        except Exception as exc:
            results[cid] = exc

    threads = [threading.Thread(target=device, args=(cid,)) for cid in range(N)]
    for thread in threads:
        thread.start()
    try:
        result, rounds = serve_training(server, trainer)
    finally:
        for thread in threads:
            thread.join(30)
        server.stop()
    return result, rounds, results


@pytest.mark.slow
def test_deploy_training_over_grpc_is_bit_identical_to_in_process(
    pki: LocalPKI, tmp_path: Path
) -> None:
    split, features = _data()
    config = _config()
    reference = RecordingExecutor()
    local = Trainer(split, features, config).run(executor=reference)
    write_histories(split.train, tmp_path)
    result, rounds, devices = _train_over_grpc(pki, split, features, config, tmp_path)
    assert all(isinstance(r, DeviceReport) and not r.aborts for r in devices.values()), devices
    # one popularity release, then two FCF rounds of another upload length
    assert [r.task for r in rounds] == ["popularity", "fcf", "fcf"]
    assert len({len(r.total) for r in rounds if r.total is not None}) == 2
    assert len(reference.outcomes) == len(rounds) == 3
    for mine, ref in zip(rounds, reference.outcomes, strict=True):
        assert mine.included == tuple(range(N)) == ref.included
        assert mine.total is not None and np.array_equal(mine.total, ref.total)
    a, b = result.recommender.server, local.recommender.server
    for name in ("popularity", "item_factors", "item_bias", "active_items"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert [r.hr for r in result.records] == [r.hr for r in local.records]
    assert [r.epsilon for r in result.records] == [r.epsilon for r in local.records]
    assert result.final.hr == local.final.hr


@pytest.mark.slow
def test_deploy_sampled_cohorts_offline_device_and_malicious_server_mode(
    pki: LocalPKI, tmp_path: Path
) -> None:
    """Poisson-sampled cohorts among the connected devices (device 9 never connects), secure
    noise, malicious-server mode (signed keys and consistency checks, with the registry
    re-indexed to each cohort's positions): every round sums exactly its devices' vectors."""
    split, features = _data()
    config = _config(cohort=6, simulation_noise=False, rounds=2)
    trainer = Trainer(split, features, config)
    job = training_job(trainer, min_cohort=3, threat_model="malicious_server", corrupt_fraction=0.0)
    registry = load_registry(pki.registry)
    server = AggregationServer(
        job,
        registry,
        ServerTLS(pki.server_cert.read_bytes(), pki.server_key.read_bytes()),
        stage_deadline=10.0,
        join_deadline=2.5,
        linger_seconds=0.3,
    )
    server.start()
    write_histories(split.train, tmp_path)
    vectors: dict[tuple[int, int], np.ndarray] = {}
    results: dict[int, Any] = {}

    def device(cid: int) -> None:
        own = DeviceTrainer.from_file(tmp_path / f"device-{cid}.npy")

        def inputs(info: RoundInfo) -> np.ndarray:
            vectors[info.round_number, cid] = own(info)
            return vectors[info.round_number, cid]

        try:
            results[cid] = run_device(
                server.address,
                cid,
                load_identity_key(pki.client_keys[cid]),
                _unused,
                ClientTLS(pki.ca_cert.read_bytes()),
                verify_keys=registry,
                retry_seconds=5,
                round_inputs=inputs,
            )
        except Exception as exc:
            results[cid] = exc

    threads = [threading.Thread(target=device, args=(cid,)) for cid in range(N - 1)]
    for thread in threads:
        thread.start()
    try:
        result, rounds = serve_training(server, trainer)
    finally:
        for thread in threads:
            thread.join(30)
        server.stop()
    assert all(isinstance(r, DeviceReport) and not r.aborts for r in results.values()), results
    assert [r.task for r in rounds] == ["popularity", "fcf", "fcf"]
    assert rounds[0].cohort == tuple(range(N - 1))  # everyone connected; 9 never joined
    for r in rounds:
        assert r.aborted is None and r.total is not None
        assert N - 1 not in r.cohort and r.included == r.cohort
        stacked = np.stack([vectors[r.round_number, cid] for cid in r.included])
        assert np.array_equal(r.total, secagg.ring_sum(stacked, 32))
    assert any(len(r.cohort) < N - 1 for r in rounds[1:])  # sampled, not everyone
    assert result.report_card["secure_noise"] is True
    assert result.report_card["sampling_rate"] == 6 / N  # q over the registered population


@pytest.mark.slow
def test_deploy_devices_refuse_simulation_noise_unless_allowed(
    pki: LocalPKI, tmp_path: Path
) -> None:
    """A device started without consent to seeded noise sits out every round of a job that
    asks for it: the rounds abort rather than release non-secure noise."""
    split, features = _data()
    trainer = Trainer(population_split(N, split.train.num_items), features, _config(rounds=0))
    job = training_job(trainer, min_cohort=3)
    write_histories(split.train, tmp_path)
    device = DeviceTrainer.from_file(tmp_path / "device-0.npy")
    meta_work = EncodeWork(
        trainer.recommender.fleet,
        trainer.recommender.server,
        trainer.recommender.popularity_task,
        trainer.channel.plan(split.train.num_items, 8**0.5, 1.0, N),
        3,
        32,
        noise_seed=4,
    )
    from recsys.remote import round_payload

    payload = round_payload(meta_work, population=N, release=1)
    length = meta_work.plan.padded_dimension
    spec = RoundSpec(tuple(range(N)), 6, length, None, payload)
    with pytest.raises(RoundRefused, match="simulation noise"):
        device(RoundInfo(job, 0, 0, spec))
    secure = round_payload(dataclasses.replace(meta_work, noise_seed=None), population=N, release=1)
    vector = device(RoundInfo(job, 0, 0, RoundSpec(tuple(range(N)), 6, length, None, secure)))
    assert vector.shape == (length,) and device.rounds == [0]
    with pytest.raises(RoundRefused, match="vector length"):
        device(RoundInfo(job, 1, 0, RoundSpec(tuple(range(N)), 6, length // 2, None, secure)))
    with pytest.raises(RoundRefused, match="bad training round"):
        device(RoundInfo(job, 1, 0, RoundSpec(tuple(range(N)), 6, length, None, secure[:-3])))


def test_deploy_round_announcement_is_checked_against_the_job() -> None:
    job = JobSpec(num_clients=8, threshold=3, vector_length=64, rounds=2, per_round=True)
    spec = RoundSpec((0, 2, 5, 7), 3, 32, None, b"model")
    assert decode_round(encode_round(spec), job) == spec
    assert spec.secagg_config(job).num_clients == 4
    bad = [
        RoundSpec((0, 2), 2, 32),  # below the job's minimum cohort
        RoundSpec((0, 2, 2, 5), 3, 32),  # not increasing
        RoundSpec((0, 2, 9), 2, 32),  # unregistered client
        RoundSpec((0, 2, 5), 2, 128),  # vector over the cap
        RoundSpec((0, 2, 5, 7), 2, 32),  # threshold not a majority
    ]
    for spec in bad:
        with pytest.raises(ProtocolConfigError):
            decode_round(encode_round(spec), job)
    for raw in (b"", b"\xff\xff\xff\xff", encode_round(RoundSpec((0, 1, 2), 2, 8))[:-30]):
        with pytest.raises(DecodeError):
            decode_round(raw, job)
    with pytest.raises(ProtocolConfigError):
        job.secagg_config()  # a per-round job has no fixed protocol configuration
    with pytest.raises(ProtocolConfigError):
        JobSpec(num_clients=8, threshold=9, vector_length=64, rounds=1, per_round=True)


def test_deploy_training_payload_round_trip_and_garbage() -> None:
    arrays = {"v": np.arange(6.0).reshape(2, 3), "i": np.array([3, 1], dtype=np.int64)}
    data = pack_arrays({"task": "fcf", "x": [1, 2]}, arrays)
    meta, out = unpack_arrays(data, len(data))
    assert meta == {"task": "fcf", "x": [1, 2]}
    assert all(np.array_equal(out[k], arrays[k]) for k in arrays)
    with pytest.raises(DataFormatError, match="exceeds"):
        unpack_arrays(data, len(data) - 1)
    rng = np.random.default_rng(0)
    for bad in (data[:-1], data + b"\0", b"PRT1" + rng.bytes(40), data[:9], b"\0" * 64):
        with pytest.raises(DataFormatError):
            unpack_arrays(bad, 1 << 20)
    with pytest.raises(Exception, match="dtype"):
        pack_arrays({}, {"s": np.array(["a"])})


def test_deploy_device_history_files(tmp_path: Path) -> None:
    split, _ = _data()
    paths = write_histories(split.train, tmp_path)
    assert len(paths) == N
    for user, path in enumerate(paths):
        items, _ = load_history(path)
        assert np.array_equal(items, split.train.user_items(user))
    # text form, unordered, with a repeated item: temporal order, latest occurrence kept
    text = tmp_path / "device.csv"
    text.write_text("# item,timestamp\n7,30\n3,10\n7,5\n4,10\n")
    items, stamps = load_history(text)
    assert items.tolist() == [3, 4, 7] and stamps.tolist() == [10, 10, 30]
    for content in ("1,2,3\n", "a,b\n"):
        text.write_text(content)
        with pytest.raises(DataFormatError):
            load_history(text)
    np.save(tmp_path / "bad.npy", np.zeros((3, 2)))
    with pytest.raises(DataFormatError):
        load_history(tmp_path / "bad.npy")


def test_deploy_training_job_of_a_trainer() -> None:
    split, features = _data()
    trainer = Trainer(split, features, _config())
    job = training_job(trainer, min_cohort=3)
    assert job.per_round and job.num_clients == N and job.threshold == 3
    assert job.vector_length == 128  # the longest upload (FCF: 25 items × 4) padded
    assert job.model_bytes > 8 * 40 * 6
    with pytest.raises(Exception, match="distributed"):
        training_job(Trainer(split, features, _config(privacy="central", secagg="full")))


def test_deploy_serve_training_config_errors(
    pki: LocalPKI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad training configs are one-line usage errors (exit 2) before anything listens."""
    from analysis.cli import main

    base = {
        "kind": "train",
        "train": {"rounds": 1},
        "catalog": {"num_items": 40},
        "listen": "127.0.0.1:0",
        "tls": {"cert": str(pki.server_cert), "key": str(pki.server_key)},
        "registry": str(pki.registry),
    }
    bad = [
        ({"kind": "teach"}, "kind must be"),
        ({"train": {"rounds": 1, "privacy": "central"}}, "distributed DP"),
        ({"train": {"rounds": 1, "executor": "ray"}}, "unknown train fields"),
        ({"train": {"rounds": 1, "model": {"fcf": {"dim": 0}}}}, "FCF needs"),
        ({"catalog": {}}, "num_items"),
        ({"job": {}}, "unknown keys"),
    ]
    for change, message in bad:
        path = tmp_path / "serve.json"
        path.write_text(json.dumps(base | change))
        assert main(["serve", "--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    # a device cannot pin a training job with the server's config (the job is derived)
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(base))
    history = tmp_path / "h.npy"
    np.save(history, np.array([[1, 5], [2, 6]]))
    args = ["client", "--server", "127.0.0.1:1", "--id", "0", "--data", str(history)]
    args += ["--key", str(pki.client_keys[0]), "--ca", str(pki.ca_cert), "--job", str(path)]
    assert main(args) == 2
    assert "pin the 'job' of the server's output" in capsys.readouterr().err
