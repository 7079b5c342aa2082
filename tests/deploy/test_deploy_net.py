"""The gRPC transport in one process: TLS, identity authentication, replays, job pinning,
size caps, and the same aggregate as the in-process round for the same inputs."""

# ruff: noqa: E402  (protocols.net needs grpc: it is imported after the skip check)
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

grpc = pytest.importorskip("grpc", reason="grpcio is not installed (pip install 'privagg[net]')")

import protocols
import secagg
from protocols.errors import ConfigError, DecodeError
from protocols.net import (
    AggregationServer,
    AuthenticationError,
    ClientTLS,
    JobSpec,
    LocalPKI,
    ServerTLS,
    TransportError,
    load_identity_key,
    load_registry,
    make_local_pki,
    run_device,
)
from protocols.net.wire import (
    AUTH_METADATA,
    NO_STAGE,
    Exchange,
    decode_exchange,
    decode_reply,
    decode_welcome,
    encode_hello,
    sign_call,
)

N, D = 5, 24


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPKI:
    return make_local_pki(tmp_path_factory.mktemp("pki"), num_clients=N, client_certs=True)


def _server(pki: LocalPKI, job: JobSpec, **kw: float) -> AggregationServer:
    tls = ServerTLS(pki.server_cert.read_bytes(), pki.server_key.read_bytes())
    options = {"stage_deadline": 3.0, "join_deadline": 20.0, "linger_seconds": 0.3, **kw}
    server = AggregationServer(job, load_registry(pki.registry), tls, **options)
    server.start()
    return server


@pytest.fixture()
def job() -> JobSpec:
    return JobSpec(num_clients=N, threshold=3, vector_length=D, rounds=2)


@pytest.fixture()
def running(pki: LocalPKI, job: JobSpec) -> Iterator[AggregationServer]:
    server = _server(pki, job)
    yield server
    server.stop()


def _devices(
    pki: LocalPKI, server: AggregationServer, data: np.ndarray, ids: range, **kw: object
) -> tuple[list[threading.Thread], dict[int, object]]:
    results: dict[int, object] = {}
    tls = ClientTLS(pki.ca_cert.read_bytes())

    def device(cid: int) -> None:
        try:
            results[cid] = run_device(
                server.address,
                cid,
                load_identity_key(pki.client_keys[cid]),
                lambda r, job: data[cid, r],
                tls,
                retry_seconds=3,
                **kw,  # type: ignore[arg-type]
            )
        except Exception as exc:
            results[cid] = exc

    threads = [threading.Thread(target=device, args=(cid,)) for cid in ids]
    for thread in threads:
        thread.start()
    return threads, results


def test_deploy_grpc_aggregate_equals_in_process(pki: LocalPKI, running: AggregationServer) -> None:
    rng = np.random.default_rng(1)
    data = secagg.to_ring(rng.integers(-(2**31), 2**31, size=(N, 2, D)), 32)
    threads, results = _devices(pki, running, data, range(N))
    outcomes = running.run()
    for thread in threads:
        thread.join(30)
    assert all(not isinstance(r, Exception) for r in results.values()), results
    for outcome in outcomes:
        r = outcome.round_number
        local = protocols.run_secagg(data[:, r].copy(), protocols.SecAggConfig(N, 3), seed=r)
        assert outcome.included == local.included == tuple(range(N))
        assert outcome.total is not None and outcome.total.dtype == local.total.dtype
        assert np.array_equal(outcome.total, local.total)  # bit-identical


def _header(key: secagg.SigningKey, cid: int, counter: int, method: str, nonce: bytes) -> object:
    return ((AUTH_METADATA, sign_call(key, cid, counter, method, nonce)),)


def test_deploy_forged_replayed_and_foreign_requests_are_refused(
    pki: LocalPKI, running: AggregationServer
) -> None:
    channel = grpc.secure_channel(
        running.address, grpc.ssl_channel_credentials(pki.ca_cert.read_bytes())
    )
    hello = channel.unary_unary("/privagg.Aggregation/Hello")
    exchange = channel.unary_unary("/privagg.Aggregation/Exchange")
    keys = load_registry(pki.registry)
    own = load_identity_key(pki.client_keys[1])
    other = load_identity_key(pki.client_keys[2])
    with pytest.raises(grpc.RpcError) as err:  # no call header: refused before the body
        hello(encode_hello(1), timeout=5)
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    now = time.time_ns()
    welcome = hello(encode_hello(1), timeout=5, metadata=_header(own, 1, now, "Hello", b""))
    nonce, announced = decode_welcome(welcome)
    assert announced == running.job
    good = Exchange(1, 7, 0, NO_STAGE, b"", 0).sign(own, nonce)
    assert decode_exchange(good, nonce, keys).client_id == 1
    forged = Exchange(1, 8, 0, NO_STAGE, b"", 0).sign(other, nonce)  # 2 poses as 1
    with pytest.raises(AuthenticationError):
        decode_exchange(forged, nonce, keys)
    with pytest.raises(AuthenticationError):  # signed for another server run
        decode_exchange(good, bytes(32), keys)
    tampered = bytearray(good)
    tampered[20] ^= 1
    with pytest.raises((AuthenticationError, DecodeError)):
        decode_exchange(bytes(tampered), nonce, keys)
    counter = iter(range(now + 1, now + 100))
    for request, header, code in [
        (forged, _header(own, 1, next(counter), "Exchange", nonce), "UNAUTHENTICATED"),
        (good, _header(other, 1, next(counter), "Exchange", nonce), "UNAUTHENTICATED"),
        (good, _header(own, 1, next(counter), "Exchange", bytes(32)), "UNAUTHENTICATED"),
        (good, _header(own, 1, next(counter), "Model", nonce), "UNAUTHENTICATED"),
        (good, _header(other, 2, next(counter), "Exchange", nonce), "PERMISSION_DENIED"),
        (
            b"PN\x01\x03" + bytes(10),
            _header(own, 1, next(counter), "Exchange", nonce),
            "INVALID_ARGUMENT",
        ),
        (
            bytes(running.job.max_message_bytes() + 1),
            _header(own, 1, next(counter), "Exchange", nonce),
            "RESOURCE_EXHAUSTED",
        ),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            exchange(request, timeout=5, metadata=header)
        assert err.value.code().name == code, (code, err.value.details())
    accepted = _header(own, 1, next(counter), "Exchange", nonce)
    assert decode_reply(exchange(good, timeout=10, metadata=accepted)).status in (0, 1)
    with pytest.raises(grpc.RpcError) as err:  # the same call header again: a replay
        exchange(good, timeout=5, metadata=accepted)
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:  # the same signed body, fresh header: a replay
        exchange(good, timeout=5, metadata=_header(own, 1, next(counter), "Exchange", nonce))
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        hello(encode_hello(99), timeout=5, metadata=_header(own, 1, time.time_ns(), "Hello", b""))
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:  # a stale hello header (2 h old)
        stale = time.time_ns() - 7200 * 10**9
        hello(encode_hello(1), timeout=5, metadata=_header(own, 1, stale, "Hello", b""))
    assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
    channel.close()
    # the oversized body never reached a handler; everything else was refused and counted
    assert running.refused_calls == {
        "UNAUTHENTICATED": 8,
        "PERMISSION_DENIED": 2,
        "INVALID_ARGUMENT": 1,
    }, running.refused_calls


def test_deploy_client_refuses_wrong_ca_and_unpinned_job(
    pki: LocalPKI, running: AggregationServer, tmp_path: Path
) -> None:
    foreign = make_local_pki(tmp_path / "other", num_clients=1)
    key = load_identity_key(pki.client_keys[0])
    vector = np.zeros(D, dtype=np.uint32)
    with pytest.raises(TransportError, match=r"unreachable|refused"):
        run_device(
            running.address,
            0,
            key,
            lambda r, job: vector,
            ClientTLS(foreign.ca_cert.read_bytes()),
            retry_seconds=0.5,
        )
    other_job = JobSpec(num_clients=N, threshold=4, vector_length=D, rounds=2)
    with pytest.raises(ConfigError, match="refusing to join"):
        run_device(
            running.address,
            0,
            key,
            lambda r, job: vector,
            ClientTLS(pki.ca_cert.read_bytes()),
            expected_job=other_job,
        )


def test_deploy_mutual_tls_and_malicious_server_mode(pki: LocalPKI) -> None:
    job = JobSpec(
        num_clients=N,
        threshold=4,
        vector_length=D,
        rounds=1,
        threat_model="malicious_server",
        corrupt_fraction=0.0,
    )
    tls = ServerTLS(
        pki.server_cert.read_bytes(), pki.server_key.read_bytes(), pki.ca_cert.read_bytes()
    )
    server = AggregationServer(
        job,
        load_registry(pki.registry),
        tls,
        stage_deadline=3,
        join_deadline=4,
        linger_seconds=0.3,
    )
    server.start()
    data = secagg.to_ring(np.arange(N * D).reshape(N, 1, D), 32)
    results: dict[int, object] = {}

    def device(cid: int, mtls: bool) -> None:
        cert, key = pki.client_certs[cid]
        tls = ClientTLS(
            pki.ca_cert.read_bytes(),
            cert.read_bytes() if mtls else None,
            key.read_bytes() if mtls else None,
        )
        try:
            results[cid] = run_device(
                server.address,
                cid,
                load_identity_key(pki.client_keys[cid]),
                lambda r, job: data[cid, r],
                tls,
                verify_keys=load_registry(pki.registry),
                retry_seconds=1,
            )
        except TransportError as exc:
            results[cid] = exc

    threads = [threading.Thread(target=device, args=(c, c != 4)) for c in range(N)]
    for thread in threads:
        thread.start()
    try:
        (outcome,) = server.run()
    finally:
        server.stop()
    for thread in threads:
        thread.join(30)
    assert isinstance(results[4], TransportError)  # no client certificate: no TLS session
    assert outcome.included == (0, 1, 2, 3)
    assert outcome.total is not None
    assert np.array_equal(outcome.total, secagg.ring_sum(data[:4, 0], 32))


def test_deploy_job_spec_validation() -> None:
    with pytest.raises(ConfigError):
        JobSpec(num_clients=5, threshold=2, vector_length=4, rounds=1)  # t too small
    with pytest.raises(ConfigError):
        JobSpec.from_mapping(
            {"num_clients": 5, "threshold": 3, "vector_length": 4, "rounds": 1, "port": 1}
        )
    with pytest.raises(ConfigError):
        JobSpec(num_clients=5, threshold=3, vector_length=0, rounds=1)


@pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")
def test_deploy_recommender_release_over_grpc_matches_in_process(pki: LocalPKI) -> None:
    """A popularity release of the recommender: devices encode with distributed DP and
    aggregate over gRPC; the sum is bit-identical to the in-process executor's."""
    from dp.planning import plan_distributed_dp
    from recsys.data import synthetic_ratings
    from recsys.executors import EncodeWork, LocalExecutor
    from recsys.features import item_features
    from recsys.federated import DeviceFleet, ItemServer, PopularityTask
    from recsys.split import leave_last_out

    ratings = synthetic_ratings(N, 30, seed=2, mean_activity=10, min_activity=5)
    split = leave_last_out(ratings)
    task = PopularityTask(split.train.num_items, cap=10)
    plan = plan_distributed_dp(
        dimension=task.upload_dim,
        expected_contributors=N,
        min_contributors=3,
        clip_norm=task.clip_norm,
        noise_multiplier=1.0,
        bits=32,
    )
    fleet = DeviceFleet(split.train, item_features(ratings))
    work = EncodeWork(fleet, ItemServer(split.train.num_items), task, plan, 3, 32, noise_seed=4)
    users = np.arange(N, dtype=np.int64)
    config = protocols.SecAggConfig(N, 3)
    local = LocalExecutor(shard_size=1).aggregate(
        work, users, config, plan.padded_dimension, round_number=0, graph_seed=bytes(32)
    )
    # each device encodes its own update (shard = itself), as on a phone
    vectors = np.stack([work(cid, users[cid : cid + 1], 0)[0] for cid in range(N)])
    job = JobSpec(num_clients=N, threshold=3, vector_length=plan.padded_dimension, rounds=1)
    server = _server(pki, job)
    threads, _results = _devices(pki, server, vectors[:, None, :], range(N))
    try:
        (outcome,) = server.run()
    finally:
        server.stop()
    for thread in threads:
        thread.join(30)
    assert outcome.included == local.included
    assert outcome.total is not None
    assert np.array_equal(outcome.total, local.total)
