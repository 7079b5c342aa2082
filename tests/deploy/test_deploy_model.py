"""The public model broadcast over gRPC: devices compute their vector from the round's
model, the aggregate is the in-process one bit for bit, and a device sent a model other
than the one the round's context digest commits to sits the round out."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("grpc", reason="grpcio is not installed (pip install 'privagg[net]')")

import protocols
import secagg
from protocols.errors import ConfigError, DecodeError
from protocols.net import (
    AggregationServer,
    ClientTLS,
    JobSpec,
    LocalPKI,
    ServerTLS,
    load_identity_key,
    load_registry,
    make_local_pki,
    run_device,
)
from protocols.net.client import DeviceReport
from protocols.net.server import RoundOutcome
from protocols.net.wire import (
    decode_model,
    decode_model_request,
    encode_model,
    encode_model_request,
    model_digest,
)

N, D, ROUNDS = 4, 16, 2


def public_model(round_number: int) -> bytes:
    """A stand-in for a serialized public model: different every round."""
    return (np.arange(D, dtype=np.int64) * (round_number + 3) - 7).tobytes()


def device_vector(cid: int, model: bytes) -> np.ndarray:
    """What device ``cid`` uploads given the model (a function of both)."""
    weights = np.frombuffer(model, dtype=np.int64)
    return secagg.to_ring(weights * (cid + 1) + cid, 32)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPKI:
    return make_local_pki(tmp_path_factory.mktemp("pki"), num_clients=N, client_certs=True)


class SplitViewServer(AggregationServer):
    """A malicious server: device 0 is sent another model than the one the round's
    context digest (shared by every device's setup) commits to."""

    def model_for(self, client_id: int, round_number: int) -> bytes | None:
        if client_id == 0:
            return encode_model(round_number, public_model(round_number + 100))
        return super().model_for(client_id, round_number)


def _run(
    pki: LocalPKI, server_cls: type[AggregationServer]
) -> tuple[list[RoundOutcome], dict[int, object]]:
    tls = ServerTLS(pki.server_cert.read_bytes(), pki.server_key.read_bytes())
    job = JobSpec(num_clients=N, threshold=3, vector_length=D, rounds=ROUNDS)
    server = server_cls(
        job,
        load_registry(pki.registry),
        tls,
        stage_deadline=3.0,
        join_deadline=20.0,
        linger_seconds=0.3,
        model=public_model,
    )
    server.start()
    results: dict[int, object] = {}
    client_tls = ClientTLS(pki.ca_cert.read_bytes())

    def device(cid: int) -> None:
        def unused(r: int, job: JobSpec) -> np.ndarray:
            raise AssertionError("model_inputs is given: inputs must not be called")

        try:
            results[cid] = run_device(
                server.address,
                cid,
                load_identity_key(pki.client_keys[cid]),
                unused,
                client_tls,
                retry_seconds=3,
                model_inputs=lambda r, job, model: device_vector(cid, model),
            )
        except Exception as exc:
            results[cid] = exc

    threads = [threading.Thread(target=device, args=(cid,)) for cid in range(N)]
    for thread in threads:
        thread.start()
    try:
        outcomes = server.run()
    finally:
        for thread in threads:
            thread.join(30)
        server.stop()
    return outcomes, results


def test_model_round_trip_and_digest() -> None:
    envelope = encode_model(7, b"weights")
    assert decode_model(envelope) == (7, b"weights")
    assert decode_model_request(encode_model_request(3, 9)) == (3, 9)
    digests = {
        model_digest(e)
        for e in (envelope, encode_model(8, b"weights"), encode_model(7, b"weightz"))
    }
    assert len(digests) == 3 and all(len(d) == 32 for d in digests)
    for bad in (envelope[:-1], envelope + b"x", envelope[:5], b"PN\x01\x05"):
        with pytest.raises(DecodeError):
            decode_model(bad)
    with pytest.raises(DecodeError):
        decode_model(encode_model_request(1, 1))  # another envelope type
    with pytest.raises(ConfigError):
        encode_model(-1, b"")


@pytest.mark.slow
def test_devices_train_on_the_broadcast_model_bit_for_bit(pki: LocalPKI) -> None:
    outcomes, results = _run(pki, AggregationServer)
    assert all(isinstance(r, DeviceReport) and not r.aborts for r in results.values()), results
    assert len(outcomes) == ROUNDS
    for outcome in outcomes:
        r = outcome.round_number
        vectors = np.stack([device_vector(cid, public_model(r)) for cid in range(N)])
        local = protocols.run_secagg(vectors, protocols.SecAggConfig(N, 3), seed=r)
        assert outcome.included == local.included == tuple(range(N))
        assert outcome.total is not None and np.array_equal(outcome.total, local.total)


@pytest.mark.slow
def test_a_device_sent_another_model_is_not_aggregated(pki: LocalPKI) -> None:
    outcomes, results = _run(pki, SplitViewServer)
    report = results[0]
    assert isinstance(report, DeviceReport), report
    assert [a.split(":")[1].strip() for a in report.aborts] == ["model digest mismatch"] * ROUNDS
    for outcome in outcomes:
        # the sum never contains an input computed from the other model
        assert 0 not in outcome.included and outcome.included == (1, 2, 3)
        model = public_model(outcome.round_number)
        vectors = np.stack([device_vector(cid, model) for cid in (1, 2, 3)])
        expected = secagg.ring_sum(vectors, 32)
        assert outcome.total is not None and np.array_equal(outcome.total, expected)
