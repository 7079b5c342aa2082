"""Issue 15, observation 8 — the round announcement (it names the sampled cohort) must not
leak to anyone outside the cohort.

Attackers: a network observer that reaches the server over TLS and names a registered
client id (no identity key); a forger holding some other Ed25519 key; a registered client
that was not sampled, asking for its own or for a member's announcement. Only a cohort
member, with a call signed by its registered key, gets the announcement; a non-member gets
the same answer as for a round that does not exist.
"""

# ruff: noqa: E402  (protocols.net needs grpc: it is imported after the skip check)
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

grpc = pytest.importorskip("grpc", reason="grpcio is not installed (pip install 'privagg[net]')")

import sec_stats

import secagg
from protocols.net import (
    AggregationServer,
    JobSpec,
    LocalPKI,
    RoundSpec,
    ServerTLS,
    load_identity_key,
    load_registry,
    make_local_pki,
)
from protocols.net.wire import (
    AUTH_METADATA,
    decode_model,
    decode_round,
    decode_welcome,
    encode_hello,
    encode_model_request,
    sign_call,
)

N = 8
COHORT = (1, 3, 5)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPKI:
    return make_local_pki(tmp_path_factory.mktemp("cohort-pki"), num_clients=N)


@pytest.fixture()
def round_open(pki: LocalPKI) -> Any:
    """A per-round job whose round 0 (cohort 1, 3, 5) is open: its announcement exists."""
    job = JobSpec(num_clients=N, threshold=2, vector_length=4, rounds=1, per_round=True)
    tls = ServerTLS(pki.server_cert.read_bytes(), pki.server_key.read_bytes())
    server = AggregationServer(
        job, load_registry(pki.registry), tls, stage_deadline=3.0, linger_seconds=0.2
    )
    server.start()
    spec = RoundSpec(COHORT, threshold=2, vector_length=4, payload=b"model bytes")
    driver = threading.Thread(target=server.run_round, args=(0, spec), daemon=True)
    driver.start()
    end = time.monotonic() + 10
    while server.model_for(COHORT[0], 0) is None and time.monotonic() < end:
        time.sleep(0.05)
    channel = grpc.secure_channel(
        server.address, grpc.ssl_channel_credentials(pki.ca_cert.read_bytes())
    )
    yield server, channel, job
    channel.close()
    server.finish()
    driver.join(30)
    server.stop()


def _nonce(channel: Any, key: secagg.SigningKey, cid: int) -> bytes:
    hello = channel.unary_unary("/privagg.Aggregation/Hello")
    header = sign_call(key, cid, time.time_ns(), "Hello", b"")
    nonce, _job = decode_welcome(
        hello(encode_hello(cid), timeout=10, metadata=((AUTH_METADATA, header),))
    )
    return nonce


def _ask(channel: Any, cid: int, rnd: int, metadata: Any = None) -> Any:
    model = channel.unary_unary("/privagg.Aggregation/Model")
    try:
        return model(encode_model_request(cid, rnd), timeout=10, metadata=metadata)
    except grpc.RpcError as exc:
        return exc


def test_sec_obs8_observer_naming_a_registered_id_gets_no_announcement(
    pki: LocalPKI, round_open: Any
) -> None:
    """Today: any TLS client naming client 1 receives the round's cohort. Now: refused."""
    sec_stats.add("scenarios")
    _server, channel, _job = round_open
    for cid in COHORT:
        got = _ask(channel, cid, 0)
        sec_stats.add("faults_injected")
        assert isinstance(got, grpc.RpcError), f"the announcement leaked to an observer: {got!r}"
        assert got.code() is grpc.StatusCode.UNAUTHENTICATED


def test_sec_obs8_forged_signature_gets_no_announcement(pki: LocalPKI, round_open: Any) -> None:
    sec_stats.add("scenarios")
    server, channel, _job = round_open
    forger = secagg.SigningKey.generate()
    for nonce in (server.nonce, bytes(32)):
        header = sign_call(forger, 1, time.time_ns(), "Model", nonce)
        got = _ask(channel, 1, 0, ((AUTH_METADATA, header),))
        sec_stats.add("faults_injected")
        assert isinstance(got, grpc.RpcError), "a forged call got the announcement"
        assert got.code() is grpc.StatusCode.UNAUTHENTICATED


def test_sec_obs8_registered_non_member_learns_nothing(pki: LocalPKI, round_open: Any) -> None:
    """Client 4 (registered, not sampled) asks for round 0 for itself, for a member, and for
    a round that does not exist: it learns nothing, not even that round 0 is open."""
    sec_stats.add("scenarios")
    _server, channel, _job = round_open
    key = load_identity_key(pki.client_keys[4])
    nonce = _nonce(channel, key, 4)
    counter = time.time_ns()
    answers = []
    for body_cid, rnd in ((4, 0), (1, 0), (4, 99)):
        counter += 1
        header = sign_call(key, 4, counter, "Model", nonce)
        got = _ask(channel, body_cid, rnd, ((AUTH_METADATA, header),))
        sec_stats.add("faults_injected")
        assert isinstance(got, grpc.RpcError), "a non-member got the announcement"
        answers.append((got.code(), got.details().replace(f"round {rnd}", "round R")))
    assert answers[0] == answers[2]  # "not your cohort" looks like "no such round"
    assert answers[0][0] is grpc.StatusCode.NOT_FOUND
    assert answers[1][0] is grpc.StatusCode.PERMISSION_DENIED  # it cannot ask as client 1


def test_sec_obs8_member_gets_its_announcement_with_a_signed_call(
    pki: LocalPKI, round_open: Any
) -> None:
    """The positive control: member 3, signing with its registered key, gets the round."""
    _server, channel, job = round_open
    key = load_identity_key(pki.client_keys[3])
    nonce = _nonce(channel, key, 3)
    header = sign_call(key, 3, time.time_ns(), "Model", nonce)
    envelope = _ask(channel, 3, 0, ((AUTH_METADATA, header),))
    assert isinstance(envelope, bytes), envelope
    rnd, payload = decode_model(envelope)
    spec = decode_round(payload, job)
    assert rnd == 0 and spec.cohort == COHORT and spec.payload == b"model bytes"
