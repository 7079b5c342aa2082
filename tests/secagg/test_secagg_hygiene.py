"""Secret hygiene: no secret in repr / errors / logs, no pickling, a light import."""

from __future__ import annotations

import copy
import logging
import pickle
import subprocess
import sys
from collections.abc import Callable

import pytest

import secagg
from secagg import (
    AgreementKey,
    SecAggError,
    SigningKey,
    derive_shared_key,
    expand_mask,
    open_sealed,
    seal,
    shamir_combine,
    shamir_split,
)


def renderings(secret: bytes) -> list[str]:
    return [secret.hex(), secret.hex().upper(), repr(secret)[2:-1], repr(secret[:8])[2:-1]]


def assert_not_in(text: str, *secrets: bytes) -> None:
    for secret in secrets:
        for rendering in renderings(secret):
            assert rendering not in text


def test_import_is_light() -> None:
    code = (
        "import sys, secagg; "
        "print([m for m in ('torch', 'opacus', 'dp', 'protocols', 'recsys', 'analysis')"
        " if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("factory", [AgreementKey.generate, SigningKey.generate])
def test_key_objects_are_redacted_and_unpicklable(factory: object) -> None:
    key = factory()  # type: ignore[operator]
    private = (
        key.private_bytes_for_sharing()
        if isinstance(key, AgreementKey)
        else key._private.private_bytes_raw()
    )
    text = repr(key) + str(key) + format(key)
    assert_not_in(text, private)
    assert type(key).__name__ in text
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(key, protocol=protocol)
    with pytest.raises(TypeError):
        key.__getstate__()
    assert copy.copy(key) is key and copy.deepcopy({"k": key})["k"] is key
    assert not hasattr(key, "__dict__")


def test_error_messages_carry_no_secret_material(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret_seed = bytes(range(100, 140))
    key = AgreementKey.generate()
    aead_key = bytes(range(32))
    plaintext = b"top secret share bytes"
    shamir_secret = bytes(range(32))
    shares = shamir_split(shamir_secret, 4, 2)
    failing_calls: list[Callable[[], object]] = [
        lambda: expand_mask(secret_seed + secret_seed, 4),
        lambda: expand_mask(secret_seed[:15], 4),
        lambda: derive_shared_key(key, bytes(32), label=b"mask", context=secret_seed),
        lambda: open_sealed(
            aead_key, seal(aead_key, plaintext, associated_data=b"a"), associated_data=b"b"
        ),
        # x of one share with the payload of another: a tampered share.
        lambda: shamir_combine([secagg.Share(1, 2, 32, shares[1].payload), shares[2]]),
        lambda: shamir_combine([shares[0], shares[0]]),
    ]
    texts = []
    for call in failing_calls:
        with pytest.raises(SecAggError) as info:
            call()
        error = info.value
        texts.append(f"{error} {error!r} {error.args}")
        # Errors translated from cryptography do not chain the original exception,
        # whose traceback frames could hold key material.
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__
    text = "\n".join(texts) + "\n".join(r.getMessage() for r in caplog.records)
    assert_not_in(
        text,
        secret_seed,
        key.private_bytes_for_sharing(),
        aead_key,
        plaintext,
        shamir_secret,
        *(share.payload for share in shares),
    )
    assert not [r for r in caplog.records if r.name.startswith("secagg")]
