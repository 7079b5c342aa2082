"""Issue 15, observation 7 — availability of the gRPC deployment under attack.

Attackers: an outsider with no identity key and no client certificate who opens stalled
streams (headers, never a body); a registered client that floods the server with valid,
signed long-polls; a registered client that stalls its own streams. Each time the honest
devices must complete every round exactly, the attacker must hold no more than its own
per-client quota, and every stalled stream must be ended by the server. Then the device
side: a busy server (RESOURCE_EXHAUSTED) is retried with capped, jittered backoff whose
jitter comes from the OS CSPRNG.
"""

# ruff: noqa: E402  (protocols.net needs grpc: it is imported after the skip check)
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

grpc = pytest.importorskip("grpc", reason="grpcio is not installed (pip install 'privagg[net]')")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))

from concurrent import futures

import sec_stats
from attackers import LongPollFlood, StalledStreams

import secagg
from protocols.net import (
    AdmissionLimits,
    AggregationServer,
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
from protocols.net import client as net_client
from protocols.net.wire import (
    SERVICE,
    Reply,
    ReplyStatus,
    encode_welcome,
    sign_call,
)

N, D, ROUNDS = 5, 16, 2


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPKI:
    return make_local_pki(tmp_path_factory.mktemp("dos-pki"), num_clients=N)


def _server(pki: LocalPKI, **kw: Any) -> AggregationServer:
    job = JobSpec(num_clients=N, threshold=3, vector_length=D, rounds=ROUNDS)
    tls = ServerTLS(pki.server_cert.read_bytes(), pki.server_key.read_bytes())
    options: dict[str, Any] = {
        "stage_deadline": 3.0,
        "join_deadline": 20.0,
        "poll_seconds": 2.0,
        "linger_seconds": 0.5,
        **kw,
    }
    server = AggregationServer(job, load_registry(pki.registry), tls, **options)
    server.start()
    return server


def _honest(
    pki: LocalPKI, server: AggregationServer, ids: range, data: np.ndarray
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
                retry_seconds=10,
                poll_seconds=2.0,
            )
        except Exception as exc:
            results[cid] = exc

    threads = [threading.Thread(target=device, args=(cid,), daemon=True) for cid in ids]
    for thread in threads:
        thread.start()
    return threads, results


def _check_rounds(
    server: AggregationServer, outcomes: list[Any], data: np.ndarray, honest: range
) -> None:
    assert len(outcomes) == ROUNDS
    for outcome in outcomes:
        assert outcome.aborted is None, outcome.aborted
        assert outcome.included == tuple(honest)
        expected = secagg.ring_sum(data[list(honest), outcome.round_number], 32)
        assert outcome.total is not None and np.array_equal(outcome.total, expected)
        sec_stats.add("rounds_completed")


def _data() -> np.ndarray:
    rng = np.random.default_rng(15)
    return secagg.to_ring(rng.integers(-(2**20), 2**20, size=(N, ROUNDS, D)), 32)


def test_sec_obs7_outsider_stalled_streams_do_not_starve_devices(pki: LocalPKI) -> None:
    """60 stalled streams from an outsider (no key, no client certificate) — more than the
    old global cap of 2n + 16 = 26 — must not keep one honest device out of one round."""
    sec_stats.add("scenarios")
    server = _server(pki)
    attacker = StalledStreams(server.address, pki.ca_cert.read_bytes(), 60)
    try:
        time.sleep(1.0)  # the streams are open before any device arrives
        data = _data()
        threads, results = _honest(pki, server, range(N), data)
        outcomes = server.run()
        for thread in threads:
            thread.join(30)
    finally:
        attacker.close()
        server.stop()
    failures = {c: r for c, r in results.items() if isinstance(r, Exception)}
    assert not failures, failures
    _check_rounds(server, outcomes, data, range(N))
    # every stalled stream was refused at its header, none was ever admitted (the ones in
    # flight when the attacker closes its channels end CANCELLED or UNAVAILABLE)
    assert set(attacker.codes) <= {"UNAUTHENTICATED", "CANCELLED", "UNAVAILABLE"}, attacker.codes
    assert attacker.codes["UNAUTHENTICATED"] > 60, attacker.codes
    assert sum(server.peak_calls_held.values()) <= N * server.limits.calls_per_client
    sec_stats.add("faults_injected", sum(attacker.codes.values()))


def test_sec_obs7_attack_started_mid_job_does_not_abort_later_rounds(pki: LocalPKI) -> None:
    """The same outsider starting after round 0 (the old code then aborted the current and
    every later round): round 1 still sums every device."""
    sec_stats.add("scenarios")
    server = _server(pki)
    attackers: list[StalledStreams] = []

    def on_round(outcome: Any) -> None:
        if outcome.round_number == 0:
            attackers.append(StalledStreams(server.address, pki.ca_cert.read_bytes(), 60))
            time.sleep(1.0)

    try:
        data = _data()
        threads, results = _honest(pki, server, range(N), data)
        outcomes = server.run(on_round)
        for thread in threads:
            thread.join(30)
    finally:
        for attacker in attackers:
            attacker.close()
        server.stop()
    failures = {c: r for c, r in results.items() if isinstance(r, Exception)}
    assert not failures, failures
    _check_rounds(server, outcomes, data, range(N))
    assert attackers and attackers[0].codes["UNAUTHENTICATED"] > 60, attackers
    sec_stats.add("faults_injected", sum(attackers[0].codes.values()))


def test_sec_obs7_registered_long_poll_flood_is_confined_to_its_quota(pki: LocalPKI) -> None:
    """Registered client 4 keeps 40 signed long-polls in flight; clients 0-3 must complete
    every round (client 4, which never answers a stage, is dropped) and client 4 must never
    hold more than its per-client quota."""
    sec_stats.add("scenarios")
    server = _server(pki)
    flood = LongPollFlood(
        server.address, pki.ca_cert.read_bytes(), 4, load_identity_key(pki.client_keys[4]), 40
    )
    try:
        time.sleep(1.0)
        data = _data()
        threads, results = _honest(pki, server, range(4), data)
        outcomes = server.run()
        for thread in threads:
            thread.join(30)
    finally:
        flood.close()
        server.stop()
    failures = {c: r for c, r in results.items() if isinstance(r, Exception)}
    assert not failures, failures
    _check_rounds(server, outcomes, data, range(4))
    assert flood.codes["RESOURCE_EXHAUSTED"] > 0, flood.codes
    assert server.peak_calls_held[4] <= server.limits.calls_per_client
    for cid in range(4):
        assert server.peak_calls_held[cid] <= server.limits.calls_per_client
    sec_stats.add("faults_injected", sum(flood.codes.values()))


def test_sec_obs7_stalled_authenticated_stream_is_cancelled(pki: LocalPKI) -> None:
    """A registered client's stream that sends its header but never its body is ended by
    the server after the body deadline (it does not keep a worker or a slot for good)."""
    sec_stats.add("scenarios")
    server = _server(pki, limits=AdmissionLimits(body_seconds=1.0))
    key = load_identity_key(pki.client_keys[2])
    # a Hello header needs no nonce: the call is admitted, then waits for a body
    header = sign_call(key, 2, time.time_ns(), "Hello", b"")
    stalled = StalledStreams(
        server.address, pki.ca_cert.read_bytes(), 1, method="Hello", header=header, pause=60
    )
    try:
        start = time.monotonic()
        while not stalled.codes and time.monotonic() - start < 15:
            time.sleep(0.05)
        elapsed = time.monotonic() - start
    finally:
        stalled.close()
        server.stop()
    assert dict(stalled.codes) == {"CANCELLED": 1}, stalled.codes
    assert elapsed < 4.0, elapsed
    sec_stats.add("faults_injected")


class _BusyThenDone:
    """A fake server: refuses the first ``busy`` hellos with RESOURCE_EXHAUSTED, then
    welcomes, then ends the job."""

    def __init__(self, job: JobSpec, busy: int) -> None:
        self.busy = busy
        self.hellos = 0
        self.job = job

    def hello(self, _request: bytes, context: Any) -> bytes:
        self.hellos += 1
        if self.hellos <= self.busy:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")
        return encode_welcome(bytes(32), self.job)

    def exchange(self, _request: bytes, _context: Any) -> bytes:
        return Reply(ReplyStatus.DONE).to_bytes()


def test_sec_obs7_device_retries_a_busy_server_with_csprng_jitter(
    pki: LocalPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RESOURCE_EXHAUSTED is transient for a device: it backs off (capped, doubling,
    jittered from ``secrets``) and joins once the server has room."""
    sec_stats.add("scenarios")
    draws: list[int] = []
    real = net_client.secrets.randbelow

    def spy(bound: int) -> int:
        draws.append(bound)
        return real(bound)

    monkeypatch.setattr(net_client.secrets, "randbelow", spy)
    job = JobSpec(num_clients=N, threshold=3, vector_length=D, rounds=1)
    fake = _BusyThenDone(job, busy=3)
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handlers = {
        "Hello": grpc.unary_unary_rpc_method_handler(fake.hello),
        "Exchange": grpc.unary_unary_rpc_method_handler(fake.exchange),
    }
    grpc_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = grpc_server.add_secure_port(
        "127.0.0.1:0",
        grpc.ssl_server_credentials([(pki.server_key.read_bytes(), pki.server_cert.read_bytes())]),
    )
    grpc_server.start()
    try:
        start = time.monotonic()
        report = run_device(
            f"127.0.0.1:{port}",
            0,
            load_identity_key(pki.client_keys[0]),
            lambda r, job: np.zeros(D, dtype=np.uint32),
            ClientTLS(pki.ca_cert.read_bytes()),
            retry_seconds=10,
        )
        elapsed = time.monotonic() - start
    finally:
        grpc_server.stop(0)
    assert report.rounds_completed == ()
    assert fake.hellos == 4
    assert len(draws) == 3  # one CSPRNG draw per retry
    assert 0.05 + 0.1 + 0.2 <= elapsed < 5.0  # at least the half-pauses 0.1/2 + 0.2/2 + 0.4/2
    sec_stats.add("faults_injected", 3)


def test_sec_obs7_backoff_is_bounded_and_jittered() -> None:
    for pause in (0.1, 0.4, 2.0):
        delays = [net_client.backoff_delay(pause) for _ in range(200)]
        assert all(pause / 2 <= d <= pause for d in delays)
        assert len(set(delays)) > 100  # jittered, not a fixed schedule


def test_sec_obs7_a_device_gives_up_on_a_server_busy_for_good(pki: LocalPKI) -> None:
    """Backoff is bounded: a server that stays busy ends the device with one clear error
    after ``retry_seconds``, never a hang."""
    job = JobSpec(num_clients=N, threshold=3, vector_length=D, rounds=1)
    fake = _BusyThenDone(job, busy=10**9)
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(fake.hello)
    grpc_server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Hello": handler}),)
    )
    port = grpc_server.add_secure_port(
        "127.0.0.1:0",
        grpc.ssl_server_credentials([(pki.server_key.read_bytes(), pki.server_cert.read_bytes())]),
    )
    grpc_server.start()
    try:
        with pytest.raises(TransportError, match=r"unreachable for 1 s \(RESOURCE_EXHAUSTED"):
            run_device(
                f"127.0.0.1:{port}",
                0,
                load_identity_key(pki.client_keys[0]),
                lambda r, job: np.zeros(D, dtype=np.uint32),
                ClientTLS(pki.ca_cert.read_bytes()),
                retry_seconds=1,
            )
    finally:
        grpc_server.stop(0)
