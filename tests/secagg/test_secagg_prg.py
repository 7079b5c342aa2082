"""expand_mask / add_masks: pinned vectors, the documented construction, uniformity,
exact cancellation of pairwise masks, and input validation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import secagg
from secagg import (
    SecAggValueError,
    add_masks,
    expand_mask,
    ring_dtype,
    ring_sub,
    ring_sum,
    to_ring,
)

VECTORS = Path(__file__).parent / "vectors" / "prg_expand_mask.json"
SEED = bytes(range(32))


def test_pinned_prg_vectors() -> None:
    document = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert len(document["vectors"]) >= 10
    for case in document["vectors"]:
        mask = expand_mask(
            bytes.fromhex(case["seed"]),
            case["length"],
            bits=case["bits"],
            domain=bytes.fromhex(case["domain"]),
        )
        assert str(mask.dtype) == case["dtype"]
        assert mask.shape == (case["length"],)
        if "values" in case:
            assert mask.tolist() == case["values"], case
        else:
            little_endian = mask.astype(mask.dtype.newbyteorder("<")).tobytes()
            assert hashlib.sha256(little_endian).hexdigest() == case["sha256_le"], case


def test_pinned_prg_expected_failures() -> None:
    document = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert document["expected_failures"]
    for case in document["expected_failures"]:
        error = getattr(secagg, case["error"])
        with pytest.raises(error, match=case["match"]):
            expand_mask(
                bytes.fromhex(case["seed"]),
                case["length"],
                bits=case["bits"],
                domain=bytes.fromhex(case["domain"]),
            )


def test_sp800_38a_aes128_ctr_layout() -> None:
    # The PRG's cipher call, checked against NIST's CTR vector (counter wraps a byte).
    vector = json.loads((VECTORS.parent / "sp800_38a_aes128_ctr.json").read_text("utf-8"))
    encryptor = Cipher(
        algorithms.AES(bytes.fromhex(vector["key"])),
        modes.CTR(bytes.fromhex(vector["initial_counter"])),
    ).encryptor()
    out = bytearray(len(vector["plaintext"]) // 2 + 15)
    # update_into in two uneven pieces, as expand_mask does across chunks.
    plaintext = bytes.fromhex(vector["plaintext"])
    written = encryptor.update_into(plaintext[:20], out)
    written += encryptor.update_into(plaintext[20:], memoryview(out)[written:])
    assert bytes(out[:written]).hex() == vector["ciphertext"]


@pytest.mark.parametrize("bits", [1, 5, 16, 32, 33, 62])
@pytest.mark.parametrize("domain", [b"", b"pairwise/3/7"])
def test_matches_the_documented_construction(bits: int, domain: bytes) -> None:
    # Rebuild the stream from the specification with cryptography directly.
    key = HKDF(hashes.SHA256(), 16, None, b"privagg/v1/mask" + domain).derive(SEED)
    itemsize = 4 if bits <= 32 else 8
    length = 37
    stream = (
        Cipher(algorithms.AES(key), modes.CTR(bytes(16)))
        .encryptor()
        .update(bytes(itemsize * length))
    )
    words = [
        int.from_bytes(stream[i : i + itemsize], "little") % (1 << bits)
        for i in range(0, len(stream), itemsize)
    ]
    assert expand_mask(SEED, length, bits=bits, domain=domain).tolist() == words


def test_deterministic_and_separated_by_seed_domain_and_prefix_consistent() -> None:
    a = expand_mask(SEED, 1000)
    assert np.array_equal(a, expand_mask(SEED, 1000))
    assert np.array_equal(a[:10], expand_mask(SEED, 10))
    assert not np.array_equal(a, expand_mask(SEED, 1000, domain=b"x"))
    assert not np.array_equal(a, expand_mask(bytes(reversed(SEED)), 1000))
    assert not np.array_equal(
        expand_mask(SEED, 1000, domain=b"ab"), expand_mask(SEED + b"\x00", 1000, domain=b"ab")
    )
    assert a.flags.writeable and a.flags.c_contiguous
    assert expand_mask(bytearray(SEED), 3).tolist() == a[:3].tolist()  # type: ignore[arg-type]


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_uniform_over_small_rings_including_the_top_value(bits: int) -> None:
    modulus = 1 << bits
    samples = expand_mask(
        hashlib.sha256(b"uniformity %d" % bits).digest(), 4096 * modulus, bits=bits
    )
    counts = np.bincount(samples, minlength=modulus)
    assert counts.size == modulus
    assert (counts > 0).all(), "some ring value, e.g. 2^bits - 1, is never produced"
    assert counts[modulus - 1] > 0
    _, p_value = stats.chisquare(counts)
    assert p_value > 1e-4


@pytest.mark.parametrize("bits", [16, 31, 32, 33, 48, 62])
def test_every_bit_is_balanced_and_no_bit_above_the_ring_is_set(bits: int) -> None:
    samples = expand_mask(hashlib.sha256(b"bits %d" % bits).digest(), 200_000, bits=bits)
    carrier = 32 if bits <= 32 else 64
    positions = np.arange(carrier, dtype=samples.dtype)
    ones = ((samples[:, None] >> positions) & samples.dtype.type(1)).sum(axis=0)
    assert not ones[bits:].any()
    # Binomial(200000, 1/2): 6 standard deviations is about 1342.
    assert np.all(np.abs(ones[:bits].astype(np.int64) - 100_000) < 1342)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=7),
    d=st.integers(min_value=0, max_value=3000),
    bits=st.integers(min_value=1, max_value=62),
    data_seed=st.integers(min_value=0, max_value=2**31),
    data=st.data(),
)
def test_pairwise_masks_cancel_exactly_with_any_dropout_pattern(
    n: int, d: int, bits: int, data_seed: int, data: st.DataObject
) -> None:
    rng = np.random.default_rng(data_seed)  # test data only
    inputs = to_ring(rng.integers(0, 1 << bits, size=(n, d), dtype=np.uint64), bits)
    dropped = set(data.draw(st.sets(st.integers(0, n - 1), max_size=n - 1)))
    survivors = [i for i in range(n) if i not in dropped]

    def seed(i: int, j: int) -> bytes:
        low, high = min(i, j), max(i, j)
        return hashlib.sha256(b"%d-%d-%d" % (data_seed, low, high)).digest()

    def sign(i: int, j: int) -> int:
        return 1 if i < j else -1

    # Every client masks with all peers: drops happen after the masks were agreed.
    masked = inputs.copy()
    for i in range(n):
        peers = [j for j in range(n) if j != i]
        add_masks(
            masked[i],
            [seed(i, j) for j in peers],
            [sign(i, j) for j in peers],
            bits=bits,
            domain=b"pairwise",
        )
        if d >= 64 and bits >= 8:  # a single masked row no longer equals its input
            assert not np.array_equal(masked[i], inputs[i])
    total = ring_sum(masked[survivors], bits)
    # The server removes each survivor's masks shared with dropped clients.
    pairs = [(i, j) for i in survivors for j in sorted(dropped)]
    add_masks(
        total,
        [seed(i, j) for i, j in pairs],
        [-sign(i, j) for i, j in pairs],
        bits=bits,
        domain=b"pairwise",
    )
    assert np.array_equal(total, ring_sum(inputs[survivors], bits))


@pytest.mark.parametrize("bits", [32, 62, 20])
def test_add_masks_equals_expand_then_add_across_chunk_boundaries(bits: int) -> None:
    d = 150_001  # several 256 KiB chunks plus a ragged tail
    seeds = [hashlib.sha256(b"s%d" % k).digest() for k in range(3)]
    acc = to_ring(np.arange(d, dtype=np.int64), bits)
    expected = acc.copy()
    add_masks(acc, seeds, [1, -1, 1], bits=bits, domain=b"t")
    m0, m1, m2 = (expand_mask(s, d, bits=bits, domain=b"t") for s in seeds)
    expected = ring_sub(expected + m0, m1, bits)
    expected = to_ring(expected.astype(np.uint64) + m2, bits)
    assert np.array_equal(acc, expected)


def test_add_masks_handles_multidimensional_and_empty_accumulators() -> None:
    acc = np.zeros((3, 5), dtype=np.uint32)
    add_masks(acc, [SEED], [1], bits=32)
    assert acc.reshape(-1).tolist() == expand_mask(SEED, 15).tolist()
    empty = np.zeros(0, dtype=np.uint64)
    add_masks(empty, [SEED], [1], bits=40)
    add_masks(acc, [], [], bits=32)


def test_add_masks_validates_everything_before_touching_acc() -> None:
    acc = np.arange(10, dtype=np.uint32)
    original = acc.copy()
    bad_calls = [
        ([SEED, b"short"], [1, 1], 32, "16 to 64"),
        ([SEED, SEED], [1, 2], 32, "sign"),
        ([SEED, SEED], [1, True], 32, "sign"),
        ([SEED], [1, -1], 32, "signs"),
        ([SEED], [1], 40, "dtype"),
    ]
    for seeds, signs, bits, match in bad_calls:
        with pytest.raises(SecAggValueError, match=match):
            add_masks(acc, seeds, signs, bits=bits)
        assert np.array_equal(acc, original)
    with pytest.raises(SecAggValueError, match="contiguous"):
        add_masks(np.zeros((4, 4), np.uint32)[:, ::2], [SEED], [1], bits=32)
    readonly = np.zeros(4, np.uint32)
    readonly.flags.writeable = False
    with pytest.raises(SecAggValueError, match="writable"):
        add_masks(readonly, [SEED], [1], bits=32)


@pytest.mark.parametrize(
    ("seed", "length", "bits", "domain", "match"),
    [
        ("a" * 32, 4, 32, b"", "bytes"),
        (SEED, 4.0, 32, b"", "int"),
        (SEED, 4, 32, "x", "domain"),
        (SEED, 4, 32, b"x" * 2000, "domain"),
        (bytes(16), -5, 8, b"", "non-negative"),
        (SEED, 1 << 40, 32, b"", "keystream bytes"),
    ],
)
def test_bad_arguments_raise_value_errors(
    seed: object, length: object, bits: int, domain: object, match: str
) -> None:
    with pytest.raises(SecAggValueError, match=match) as info:
        expand_mask(seed, length, bits=bits, domain=domain)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_dtype_follows_bits() -> None:
    for bits in (1, 32, 33, 62):
        assert expand_mask(SEED, 2, bits=bits).dtype == ring_dtype(bits)
