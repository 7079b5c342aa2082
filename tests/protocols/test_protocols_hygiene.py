"""Secrets stay out of repr, pickles, exception text and the server's view (H1, H2)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from adversary import MaliciousServer

import secagg
from protocols import AbortReason, ProtocolAborted, SecAggClient, SecAggConfig, run_secagg
from protocols.messages import UnmaskRequest


def test_client_repr_is_redacted_and_pickling_is_refused() -> None:
    adv = MaliciousServer(SecAggConfig(5, 3), np.zeros((5, 4), dtype=np.uint32))
    adv.run_to_unmask()
    client = adv.clients[1]
    text = repr(client)
    assert "client_id=1" in text
    for secret in (client._seed, client._own_shares[0], client._own_shares[1]):
        assert secret and secret.hex() not in text and repr(secret) not in text
    with pytest.raises(TypeError):
        pickle.dumps(client)


def test_protocol_aborted_carries_only_public_diagnostics_and_pickles() -> None:
    exc = ProtocolAborted("mask", AbortReason.TOO_FEW_SURVIVORS, "3 clients left", client_id=4)
    clone = pickle.loads(pickle.dumps(exc))
    assert (clone.stage, clone.reason, clone.client_id) == ("mask", exc.reason, 4)
    assert str(clone) == str(exc)


def test_no_secret_bytes_appear_in_any_client_message() -> None:
    adv = MaliciousServer(SecAggConfig(5, 3), np.zeros((5, 6), dtype=np.uint32))
    adv.run_to_unmask(drop_at_mask=frozenset({4}))
    for cid in range(4):
        adv.ask(cid, UnmaskRequest((0, 1, 2, 3), (4,)))
    wire = b"".join(data for _, data in adv.sent)
    for client in adv.clients[:4]:
        assert client._seed is not None and client._mask_key is not None
        assert client._seed not in wire
        assert client._mask_key.private_bytes_for_sharing() not in wire


def test_masked_inputs_alone_do_not_reveal_inputs() -> None:
    # With all-zero inputs the masked vectors are uniform-looking, not zero.
    adv = MaliciousServer(SecAggConfig(5, 3), np.zeros((5, 4096), dtype=np.uint32))
    adv.run_to_unmask()
    for vector in adv.masked.values():
        assert np.count_nonzero(vector) > 4000
        assert 0.4 < float(np.mean(vector / 2.0**32)) < 0.6


def test_seed_never_influences_keys_or_masks() -> None:
    x = secagg.to_ring(np.arange(20).reshape(5, 4), 32)
    a = run_secagg(x, SecAggConfig(5, 3), seed=1)
    b = run_secagg(x, SecAggConfig(5, 3), seed=1)
    assert a.session_id != b.session_id  # fresh keys every time
    assert np.array_equal(a.total, b.total)


def test_client_refuses_wrong_input_dtype_with_a_typed_error() -> None:
    from protocols.errors import ConfigError

    with pytest.raises(ConfigError):
        SecAggClient(0, SecAggConfig(5, 3), np.zeros(4, dtype=np.float32))
