"""Vectorized t-of-n Shamir secret sharing over the prime field GF(2^31 - 1).

Layout. A 16..64-byte secret is extended with an 8-byte integrity tag
(``SHA-256(label || secret)[:8]``) and cut into 30-bit chunks, each an element of
GF(p), p = 2^31 - 1 (the FCP design: small sub-secrets in a word-sized prime field, so
numpy works without big integers). Every chunk is shared with its own random polynomial
of degree t - 1; a share is the polynomial values at one x in 1..n.

Arithmetic. Polynomial evaluation and Lagrange interpolation are matrix products mod p.
They run as numpy uint64 matrix products on operands split into limbs small enough that
no partial sum wraps; see :func:`_matmul_mod`. Batched forms share one Vandermonde
matrix across secrets (:func:`shamir_split_many`) and one set of Lagrange coefficients
across all secrets answered by the same x-set (:func:`shamir_combine_many`).

Integrity. With more than t shares, :func:`shamir_combine` checks that all of them lie
on one polynomial of degree < t (two random parity checks of the Reed-Solomon code; a
share off the polynomial escapes both with probability 2^-62). With exactly
t shares no consistency check is possible; the tag then catches a tampered or foreign
share except with probability about 2^-64. Either failure raises :class:`ShareError`,
never a silently wrong secret. The tag is revealed only together with the secret, so
t - 1 shares still reveal nothing about the secret.

Robust reconstruction. :func:`shamir_decode_many` takes every share that arrived (as
encoded bytes, each with the x its holder must have) and treats the set as a word of the
Reed-Solomon code RS[m, t] it is: it corrects up to floor((m - t) / 2) well-formed but
wrong shares and names them, drops malformed ones (erasures), and reports a set it cannot
decode instead of guessing. The fast path is the plain one (two random parity checks, then
Lagrange); only sets that fail it are decoded, by syndromes and a batched
Berlekamp-Massey over all failing secrets at once (see :func:`_locate_errors`). A decoded
secret is accepted only if the shares off the error locator are consistent *and* the
integrity tag holds, so more errors than the code corrects end in a reported failure,
not in a wrong secret (escape probability about 2^-64 per set).

Randomness. Polynomial coefficients are uniform in GF(p) by rejection sampling of
``os.urandom`` words.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from secagg._secret import RefusesPickling
from secagg.errors import SecAggValueError, ShareError

__all__ = [
    "FIELD_M31",
    "MAX_SECRET_BYTES",
    "MAX_SHARES",
    "MIN_SECRET_BYTES",
    "PRIME",
    "Reconstruction",
    "Share",
    "shamir_combine",
    "shamir_combine_many",
    "shamir_decode_many",
    "shamir_split",
    "shamir_split_many",
]

PRIME = (1 << 31) - 1
FIELD_M31 = 1
"""Field id stored in every share: GF(2^31 - 1) with 30-bit chunks and an 8-byte tag."""
MIN_SECRET_BYTES = 16
MAX_SECRET_BYTES = 64
MAX_SHARES = 8192
"""Largest n (and x). Bounds the n x t Vandermonde matrix to 512 MiB in the worst case."""

_CHUNK_BITS = 30
_TAG_BYTES = 8
_TAG_LABEL = b"privagg/v1/shamir-tag"
_FORMAT_VERSION = 1
_HEADER = struct.Struct(">BBHHB")  # version, field id, x, threshold, secret length
_WORD = np.dtype("<u4")
_U64 = np.uint64
_P = np.uint64(PRIME)
_WORD_BITS = 64
_ELEMENT_BITS = 31

Matrix = npt.NDArray[np.uint64]


def chunk_count(secret_length: int) -> int:
    """Number of field elements per share for a secret of that many bytes."""
    return -(-8 * (secret_length + _TAG_BYTES) // _CHUNK_BITS)


# --- field arithmetic -------------------------------------------------------------------


def _mulmod(a: Matrix, b: Matrix | np.uint64) -> Matrix:
    # Operands are < 2^31, so the product is < 2^62 and fits uint64 exactly.
    return np.multiply(a, b) % _P


def _row_products(matrix: Matrix) -> Matrix:
    """Product mod p of each row, by pairwise halving (log-depth, vectorized)."""
    rows = matrix
    while rows.shape[1] > 1:
        half = rows.shape[1] // 2
        paired = _mulmod(rows[:, :half], rows[:, half : 2 * half])
        if rows.shape[1] % 2:
            paired = np.concatenate([paired, rows[:, 2 * half :]], axis=1)
        rows = paired
    return rows[:, 0]


def _inverse(values: Matrix) -> Matrix:
    """Elementwise inverse in GF(p) via Fermat (values must be non-zero)."""
    result = np.ones_like(values)
    base = values.copy()
    exponent = PRIME - 2
    while exponent:
        if exponent & 1:
            result = _mulmod(result, base)
        base = _mulmod(base, base)
        exponent >>= 1
    return result


def _matmul_mod(a: Matrix, b: Matrix) -> Matrix:
    """Exact ``(a @ b) mod p`` for entries < p, as uint64 products on limbs of one operand.

    With inner dimension k <= 2^kb and limbs of ``lb`` bits, every partial sum is below
    2^(31 + lb + kb) <= 2^64, so the integer contraction never wraps. The operand with
    fewer rows/columns is the one split. (Integer einsum does not use BLAS: it stays
    single-threaded and immune to the oversubscription that makes a float BLAS product
    erratic on a busy machine, and beats numpy's integer matmul on these shapes.)
    """
    rows, inner = a.shape
    columns = b.shape[1]
    limb_bits = min(_ELEMENT_BITS, _WORD_BITS - _ELEMENT_BITS - (inner - 1).bit_length())
    limb_mask = _U64((1 << limb_bits) - 1)
    shifts = [_U64(shift) for shift in range(0, _ELEMENT_BITS, limb_bits)]
    if rows <= columns:
        limbs_of_a = np.concatenate([(a >> shift) & limb_mask for shift in shifts], axis=0)
        products = np.einsum("ik,kj->ij", limbs_of_a, b) % _P
        per_limb = products.reshape(len(shifts), rows, columns)
    else:
        limbs_of_b = np.concatenate([(b >> shift) & limb_mask for shift in shifts], axis=1)
        products = np.einsum("ik,kj->ij", a, limbs_of_b) % _P
        per_limb = products.reshape(rows, len(shifts), columns).transpose(1, 0, 2)
    result: Matrix = per_limb[0].copy()
    for limb in range(1, len(shifts)):
        weight = _U64(pow(2, int(shifts[limb]), PRIME))
        result += _mulmod(per_limb[limb], weight)
        result %= _P
    return result


def _vandermonde(xs: Matrix, degree_count: int) -> Matrix:
    """Matrix of x^k mod p, shape (len(xs), degree_count), built by doubling."""
    powers = np.empty((xs.size, degree_count), dtype=np.uint64)
    powers[:, 0] = 1
    filled = 1
    while filled < degree_count:
        step = _mulmod(powers[:, filled - 1], xs)  # x^filled
        width = min(filled, degree_count - filled)
        powers[:, filled : filled + width] = _mulmod(powers[:, :width], step[:, None])
        filled += width
    return powers


def _lagrange_at_zero(xs: Matrix) -> Matrix:
    """Coefficients l_i with f(0) = sum_i l_i f(x_i) for deg f < len(xs)."""
    differences = (xs[None, :] + _P - xs[:, None]) % _P  # x_j - x_i
    np.fill_diagonal(differences, 1)
    denominators = _row_products(differences)
    numerator_all = _row_products(xs[None, :])[0]
    numerators = _mulmod(_inverse(xs), numerator_all)
    return _mulmod(numerators, _inverse(denominators))


def _consistency_checks(xs: Matrix, threshold: int) -> Matrix:
    """Two random parity vectors h with sum_i h_i f(x_i) = 0 whenever deg f < threshold.

    The Reed-Solomon parity checks of the points xs are h_k,i = v_i x_i^k for
    k < len(xs) - threshold, with v_i = 1 / prod_{j != i} (x_i - x_j) (sum_i v_i g(x_i) is
    the top coefficient of the interpolant of g, zero when deg g <= len(xs) - 2). Instead
    of all of them we test two uniformly random combinations, drawn fresh from the OS
    CSPRNG at check time: shares off the polynomial pass one with probability 1/p, both
    with 2^-62, and the check costs O(len(xs)) per secret instead of O(len(xs)^2).
    """
    differences = (xs[:, None] + _P - xs[None, :]) % _P  # x_i - x_j
    np.fill_diagonal(differences, 1)
    weights = _inverse(_row_products(differences))
    combination = _uniform_field_elements(2 * (xs.size - threshold)).reshape(2, -1)
    random_polynomials = _matmul_mod(combination, _vandermonde(xs, xs.size - threshold).T)
    return _mulmod(random_polynomials, weights[None, :])


# --- random coefficients ----------------------------------------------------------------


def _uniform_field_elements(count: int) -> Matrix:
    """``count`` uniform elements of GF(p) from os.urandom (rejection of the value p)."""
    collected: list[npt.NDArray[np.uint32]] = [np.empty(0, dtype=_WORD)]
    missing = count
    while missing > 0:
        draw = missing + missing // 64 + 8
        words = np.frombuffer(os.urandom(4 * draw), dtype=_WORD) & np.uint32(0x7FFFFFFF)
        accepted = words[words < PRIME]
        collected.append(accepted[:missing])
        missing -= collected[-1].size
    return np.concatenate(collected).astype(np.uint64)


# --- secret <-> chunks ------------------------------------------------------------------


def _tag(secret: bytes) -> bytes:
    return hashlib.sha256(_TAG_LABEL + secret).digest()[:_TAG_BYTES]


_BIT_WEIGHTS = np.left_shift(np.uint64(1), np.arange(_CHUNK_BITS, dtype=np.uint64))


def _encode(secrets_of_one_length: Sequence[bytes]) -> Matrix:
    """(S, m) matrix of 30-bit chunks of ``secret || tag`` (little-endian bit order)."""
    length = len(secrets_of_one_length[0])
    payload = np.frombuffer(
        b"".join(secret + _tag(secret) for secret in secrets_of_one_length), dtype=np.uint8
    ).reshape(len(secrets_of_one_length), length + _TAG_BYTES)
    bits = np.unpackbits(payload, axis=1, bitorder="little")
    chunks = chunk_count(length)
    padded = np.zeros((bits.shape[0], chunks * _CHUNK_BITS), dtype=np.uint64)
    padded[:, : bits.shape[1]] = bits
    return padded.reshape(bits.shape[0], chunks, _CHUNK_BITS) @ _BIT_WEIGHTS


def _decode_rows(chunks: Matrix, length: int) -> list[bytes | None]:
    """Inverse of :func:`_encode` per row; ``None`` for a row whose tag or padding is off."""
    payload_bits = 8 * (length + _TAG_BYTES)
    bits = (chunks[:, :, None] >> np.arange(_CHUNK_BITS, dtype=np.uint64)) & _U64(1)
    bits = bits.reshape(chunks.shape[0], -1)
    # Chunks >= 2^30 or set padding bits cannot come from a valid set of shares.
    valid = (chunks < (1 << _CHUNK_BITS)).all(axis=1) & ~bits[:, payload_bits:].any(axis=1)
    payload = np.packbits(bits[:, :payload_bits].astype(np.uint8), axis=1, bitorder="little")
    secrets_out: list[bytes | None] = []
    for row, ok in zip(payload, np.atleast_1d(valid).tolist(), strict=True):
        raw = row.tobytes()
        secret, tag = raw[:length], raw[length:]
        good = ok and hmac.compare_digest(_tag(secret), tag)
        secrets_out.append(secret if good else None)
    return secrets_out


def _decode(chunks: Matrix, length: int) -> list[bytes]:
    """Inverse of :func:`_encode`; raises :class:`ShareError` if any tag or padding is off."""
    secrets_out = []
    for secret in _decode_rows(chunks, length):
        if secret is None:
            raise ShareError(
                "reconstructed secret fails its integrity check: a share was tampered with "
                "or shares of different secrets were mixed"
            )
        secrets_out.append(secret)
    return secrets_out


# --- shares -----------------------------------------------------------------------------


def _int_in(value: object, low: int, high: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ShareError(f"share {name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ShareError(f"share {name} must be in [{low}, {high}], got {int(value)}")
    return int(value)


@dataclass(frozen=True, repr=False, eq=True)
class Share(RefusesPickling):
    """One party's Shamir share: x in 1..n, threshold t, and the values at x (``payload``).

    ``payload`` packs ``chunk_count(secret_length)`` field elements as little-endian
    uint32 words. ``repr`` hides the payload and pickling raises ``TypeError``; use
    :meth:`to_bytes` inside an authenticated-encryption envelope to send a share.
    """

    x: int
    threshold: int
    secret_length: int
    payload: bytes = field(repr=False)
    field_id: int = FIELD_M31

    def __post_init__(self) -> None:
        if type(self.field_id) is not int or self.field_id != FIELD_M31:
            raise ShareError(
                f"unknown share field id {self.field_id!r}; this version supports "
                f"{FIELD_M31} = GF(2^31 - 1)"
            )
        _int_in(self.x, 1, MAX_SHARES, "x")
        _int_in(self.threshold, 1, MAX_SHARES, "threshold")
        _int_in(self.secret_length, MIN_SECRET_BYTES, MAX_SECRET_BYTES, "secret_length")
        if not isinstance(self.payload, bytes):
            raise ShareError("share payload must be bytes")
        expected = 4 * chunk_count(self.secret_length)
        if len(self.payload) != expected:
            raise ShareError(f"share payload must be {expected} bytes, got {len(self.payload)}")
        if (np.frombuffer(self.payload, dtype=_WORD) >= PRIME).any():
            raise ShareError("share payload holds a value outside the field")

    @classmethod
    def _trusted(cls, x: int, threshold: int, secret_length: int, payload: bytes) -> Share:
        share = object.__new__(cls)
        for name, value in (
            ("x", x),
            ("threshold", threshold),
            ("secret_length", secret_length),
            ("payload", payload),
            ("field_id", FIELD_M31),
        ):
            object.__setattr__(share, name, value)
        return share

    @property
    def elements(self) -> npt.NDArray[np.uint32]:
        """The field elements of this share (read-only view)."""
        return np.frombuffer(self.payload, dtype=_WORD)

    def to_bytes(self) -> bytes:
        """Canonical encoding: 7-byte header (version, field, x, t, length) + payload."""
        header = _HEADER.pack(
            _FORMAT_VERSION, self.field_id, self.x, self.threshold, self.secret_length
        )
        return header + self.payload

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Strict inverse of :meth:`to_bytes`; anything malformed raises :class:`ShareError`."""
        if not isinstance(data, bytes | bytearray) or len(data) < _HEADER.size:
            raise ShareError("share encoding is too short")
        version, field_id, x, threshold, secret_length = _HEADER.unpack_from(data)
        if version != _FORMAT_VERSION:
            raise ShareError(f"unknown share format version {version}")
        return cls(x, threshold, secret_length, bytes(data[_HEADER.size :]), field_id)

    def __repr__(self) -> str:
        return (
            f"Share(x={self.x}, threshold={self.threshold}, secret_length="
            f"{self.secret_length}, field_id={self.field_id}, payload=<redacted>)"
        )


# --- splitting --------------------------------------------------------------------------


def _check_n_t(n: object, t: object) -> tuple[int, int]:
    for value, name in ((n, "n"), (t, "t")):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise SecAggValueError(f"{name} must be an int, got {type(value).__name__}")
    n_int, t_int = int(n), int(t)  # type: ignore[call-overload]
    if not 1 <= t_int <= n_int <= MAX_SHARES:
        raise SecAggValueError(f"need 1 <= t <= n <= {MAX_SHARES}, got n={n_int}, t={t_int}")
    return n_int, t_int


def _check_secret(secret: object) -> bytes:
    if not isinstance(secret, bytes | bytearray):
        raise SecAggValueError(f"secret must be bytes, got {type(secret).__name__}")
    if not MIN_SECRET_BYTES <= len(secret) <= MAX_SECRET_BYTES:
        raise SecAggValueError(
            f"secret must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, got {len(secret)}"
        )
    return bytes(secret)


def shamir_split_many(secrets: Sequence[bytes], n: int, t: int) -> list[list[Share]]:
    """Share each secret t-of-n; result[s][i] is the share of secret s for x = i + 1.

    All secrets are evaluated in one matrix product against one Vandermonde matrix.
    Raises :class:`SecAggValueError` for bad n, t or secret lengths (16..64 bytes).
    """
    n, t = _check_n_t(n, t)
    checked = [_check_secret(secret) for secret in secrets]
    if not checked:
        return []
    by_length: dict[int, list[int]] = {}
    for index, secret in enumerate(checked):
        by_length.setdefault(len(secret), []).append(index)
    blocks: list[Matrix] = []
    column_of: dict[int, tuple[int, int]] = {}
    column = 0
    for length, indices in by_length.items():
        encoded = _encode([checked[i] for i in indices])  # (S_len, m)
        blocks.append(encoded.reshape(-1))
        m = chunk_count(length)
        for row, index in enumerate(indices):
            column_of[index] = (column + row * m, m)
        column += encoded.size
    constant_terms = np.concatenate(blocks)
    coefficients = np.empty((t, column), dtype=np.uint64)
    coefficients[0] = constant_terms
    coefficients[1:] = _uniform_field_elements((t - 1) * column).reshape(t - 1, column)
    xs = np.arange(1, n + 1, dtype=np.uint64)
    values = _matmul_mod(_vandermonde(xs, t), coefficients).astype(_WORD)  # (n, columns)
    result = []
    for index, secret in enumerate(checked):
        start, m = column_of[index]
        rows = values[:, start : start + m]
        result.append([Share._trusted(x + 1, t, len(secret), rows[x].tobytes()) for x in range(n)])
    return result


def shamir_split(secret: bytes, n: int, t: int) -> list[Share]:
    """Share ``secret`` (16..64 bytes) t-of-n; shares have x = 1..n. Any t reconstruct."""
    return shamir_split_many([secret], n, t)[0]


# --- combining --------------------------------------------------------------------------


@dataclass(frozen=True)
class _ShareSet:
    threshold: int
    secret_length: int
    xs: tuple[int, ...]  # increasing
    payloads: bytes  # the shares' payloads concatenated in the order of xs


def _check_share_set(shares: Sequence[Share]) -> _ShareSet:
    """Validate one set of shares and return it sorted by x."""
    # Plain comprehensions and set sizes: the server checks ~10^5 shares a round.
    share_list = list(shares)
    if not share_list:
        raise ShareError("no shares given")
    if set(map(type, share_list)) != {Share}:
        bad = next(share for share in share_list if type(share) is not Share)
        raise ShareError(f"expected Share objects, got {type(bad).__name__}")
    parameters = {(s.threshold, s.secret_length, s.field_id) for s in share_list}
    if len(parameters) != 1:
        raise ShareError("mixed shares: field, threshold or secret length differ within one set")
    xs = [share.x for share in share_list]
    if len(set(xs)) != len(xs):
        raise ShareError("duplicate x-coordinates among the shares")
    threshold, secret_length, _ = parameters.pop()
    if len(xs) < threshold:
        raise ShareError(f"too few shares: {len(xs)} given, threshold is {threshold}")
    if sorted(xs) != xs:
        share_list.sort(key=lambda share: share.x)
        xs.sort()
    return _ShareSet(
        threshold=threshold,
        secret_length=secret_length,
        xs=tuple(xs),
        payloads=b"".join([share.payload for share in share_list]),
    )


def shamir_combine_many(share_sets: Sequence[Sequence[Share]]) -> list[bytes]:
    """Reconstruct one secret per share set, batching sets that have the same x-set.

    Lagrange coefficients (and, with more than t shares, the consistency check) are
    computed once per distinct (x-set, threshold) and applied to all its secrets in one
    matrix product. Any malformed, mixed, insufficient, inconsistent or tampered set
    raises :class:`ShareError`; nothing is returned for any set in that case.
    """
    checked = [_check_share_set(shares) for shares in share_sets]
    groups: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    for index, share_set in enumerate(checked):
        groups.setdefault((share_set.threshold, share_set.xs), []).append(index)

    secrets_out: list[bytes] = [b""] * len(checked)
    for (threshold, x_tuple), indices in groups.items():
        rows = len(x_tuple)
        x_array = np.array(x_tuple, dtype=np.uint64)
        lengths = [checked[i].secret_length for i in indices]
        # (rows, total columns): every set's payloads side by side.
        values = np.concatenate(
            [np.frombuffer(checked[i].payloads, dtype=_WORD).reshape(rows, -1) for i in indices],
            axis=1,
        ).astype(np.uint64)
        bounds = np.cumsum([0, *map(chunk_count, lengths)])
        if rows > threshold:
            syndromes = _matmul_mod(_consistency_checks(x_array, threshold), values)
            if syndromes.any():
                raise ShareError(
                    f"inconsistent shares: {rows} shares do not lie on one polynomial of "
                    f"degree < {threshold} (tampered or mixed shares)"
                )
        lagrange = _lagrange_at_zero(x_array[:threshold])[None, :]
        chunks = _matmul_mod(lagrange, values[:threshold])[0]
        by_length: dict[int, list[int]] = {}
        for position, length in enumerate(lengths):
            by_length.setdefault(length, []).append(position)
        for length, positions in by_length.items():
            columns = np.concatenate([np.arange(bounds[p], bounds[p + 1]) for p in positions])
            decoded = _decode(chunks[columns].reshape(len(positions), -1), length)
            for position, secret in zip(positions, decoded, strict=True):
                secrets_out[indices[position]] = secret
    return secrets_out


def shamir_combine(shares: Sequence[Share]) -> bytes:
    """Reconstruct the secret from at least t shares; see :func:`shamir_combine_many`."""
    return shamir_combine_many([shares])[0]


# --- robust reconstruction --------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Reconstruction(RefusesPickling):
    """What :func:`shamir_decode_many` made of one share set.

    ``secret`` is the reconstructed secret, or ``None`` when the set cannot be decoded
    (fewer than t usable shares, or more wrong shares than the code corrects). Every
    share is accounted for by its x: ``malformed`` lists shares that are not a
    well-formed share of this slot (bad encoding, another x, threshold or secret length,
    a value outside the field) and are never used; ``off_polynomial`` lists well-formed
    shares the decoded polynomial does not pass through. ``off_polynomial`` is filled
    only when ``secret`` is not ``None``: a failed decoding locates nothing one could
    rely on, so nobody is named from it.
    """

    secret: bytes | None
    malformed: tuple[int, ...]
    off_polynomial: tuple[int, ...]

    def __repr__(self) -> str:
        state = "decoded" if self.secret is not None else "undecodable"
        return (
            f"Reconstruction({state}, malformed={self.malformed}, "
            f"off_polynomial={self.off_polynomial})"
        )


def _parity_matrix(xs: Matrix, threshold: int) -> Matrix:
    """All m - t Reed-Solomon parity checks h_k,i = v_i x_i^k of the points xs (k < m - t)."""
    differences = (xs[:, None] + _P - xs[None, :]) % _P
    np.fill_diagonal(differences, 1)
    weights = _inverse(_row_products(differences))
    return _mulmod(_vandermonde(xs, xs.size - threshold).T, weights[None, :])


def _locate_errors(
    xs: Matrix, threshold: int, words: Matrix
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Error positions of B received words of RS[m, t] at the points xs, all at once.

    ``words`` is (m, B). Returns ``(errors, located)``: ``errors[i, b]`` marks position i
    of word b as wrong, ``located[b]`` says the locator is trustworthy (its degree is at
    most floor((m - t) / 2) and it has exactly that many roots among the points).

    Syndrome decoding of a generalized Reed-Solomon code: with the parity checks of
    :func:`_parity_matrix`, the syndromes of an error e on positions E are
    S_k = sum_{i in E} (v_i e_i) x_i^k, a sum of |E| geometric sequences, so
    Berlekamp-Massey finds the error locator prod_{i in E} (1 - x_i z) from 2|E| <= m - t
    syndromes; its roots are the 1 / x_i of the wrong positions (Chien search). The
    Berlekamp-Massey iterations run over all B words at once (``np.where`` instead of
    branches), O(B (m - t)^2) work. Written here because library decoders (e.g. galois'
    ReedSolomon) handle cyclic codes evaluated at powers of a primitive element, while
    Shamir shares sit at arbitrary points x (a generalized RS code) and come in batches.
    Correctness does not rest on this function: the caller accepts a
    result only if the remaining shares are consistent and the integrity tag holds.
    """
    m, batch = words.shape
    checks = m - threshold
    syndromes = _matmul_mod(_parity_matrix(xs, threshold), words).T  # (B, checks)
    width = checks + 2  # deg of C and of z^k B stays <= checks (Massey's invariants)
    locator = np.zeros((batch, width), dtype=np.uint64)
    locator[:, 0] = 1
    previous = locator.copy()
    length = np.zeros(batch, dtype=np.int64)
    last_discrepancy = np.ones(batch, dtype=np.uint64)
    for k in range(checks):
        window = syndromes[:, k::-1]  # S_k, ..., S_0
        discrepancy = _mulmod(locator[:, : k + 1], window).sum(axis=1) % _P
        previous = np.roll(previous, 1, axis=1)
        previous[:, 0] = 0
        update = discrepancy != 0
        factor = _mulmod(discrepancy, _inverse(last_discrepancy))
        snapshot = locator
        corrected = (locator + _P - _mulmod(previous, factor[:, None])) % _P
        locator = np.where(update[:, None], corrected, locator)
        grow = update & (2 * length <= k)
        length = np.where(grow, k + 1 - length, length)
        previous = np.where(grow[:, None], snapshot, previous)
        last_discrepancy = np.where(grow, discrepancy, last_discrepancy)
    at_inverse_points = _matmul_mod(_vandermonde(_inverse(xs), width), locator.T)  # (m, B)
    errors = at_inverse_points == 0
    located = (2 * length <= checks) & (errors.sum(axis=0) == length)
    return errors, located


def _weights_and_lagrange(xs: Matrix) -> tuple[Matrix, Matrix]:
    """Parity weights v_i = 1 / prod_{j != i} (x_i - x_j) and Lagrange-at-0 coefficients.

    Both come from one field inversion (of the row products and of the xs together):
    l_i = prod_{j != i} (-x_j) / (x_i - x_j) = (-1)^(m-1) (prod_j x_j / x_i) v_i. Using all
    m points is exact for shares that passed the parity checks (their degree-(m-1)
    interpolant is the degree-(t-1) polynomial itself), and it saves the per-x-set
    inversions that dominate many small groups (SecAgg+).
    """
    m = xs.size
    differences = (xs[:, None] + _P - xs[None, :]) % _P
    np.fill_diagonal(differences, 1)
    inverses = _inverse(np.concatenate([_row_products(differences), xs]))
    weights, inverse_xs = inverses[:m], inverses[m:]
    product = _row_products(xs[None, :])[0]
    lagrange = _mulmod(_mulmod(weights, inverse_xs), product)
    if (m - 1) % 2:
        lagrange = (_P - lagrange) % _P
    return weights, lagrange


def _checked_interpolation(
    xs: Matrix, threshold: int, values: Matrix
) -> tuple[npt.NDArray[np.bool_], Matrix]:
    """Per secret of the (m, S, c) values: (lie on one polynomial of degree < t, f(0)).

    The check is two random combinations of the m - t parity checks (as in
    :func:`_consistency_checks`); f(0) is only meaningful where the check passed.
    """
    m, secrets, columns = values.shape
    weights, lagrange = _weights_and_lagrange(xs)
    flat = values.reshape(m, -1)
    at_zero = _matmul_mod(lagrange[None, :], flat).reshape(secrets, columns)
    if m <= threshold:
        return np.ones(secrets, dtype=np.bool_), at_zero
    combination = _uniform_field_elements(2 * (m - threshold)).reshape(2, -1)
    checks = _mulmod(_matmul_mod(combination, _vandermonde(xs, m - threshold).T), weights[None, :])
    inconsistent = np.asarray(
        _matmul_mod(checks, flat).reshape(2, secrets, columns).any(axis=(0, 2))
    )
    return np.logical_not(inconsistent), at_zero


def _solve_group(
    xs: Matrix, threshold: int, values: Matrix
) -> tuple[Matrix, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Decode S secrets shared at the same m points: (chunks, solved, off-polynomial).

    Fast path first: sets that pass the random parity checks are interpolated directly.
    Only the others are decoded; their wrong shares are located on one random linear
    combination of each secret's chunk columns (fresh OS randomness, so a wrong share
    escapes location with probability 1/p and then only makes the verification fail),
    and each secret is re-interpolated from its own remaining shares and re-checked.
    """
    m, secrets, columns = values.shape
    chunks = np.zeros((secrets, columns), dtype=np.uint64)
    off = np.zeros((m, secrets), dtype=np.bool_)
    clean, at_zero = _checked_interpolation(xs, threshold, values)
    solved = clean.copy()
    chunks[clean] = at_zero[clean]
    dirty = np.flatnonzero(~clean)
    if dirty.size == 0:
        return chunks, solved, off
    combination = _uniform_field_elements(columns)[:, None]
    words = _matmul_mod(values[:, dirty].reshape(-1, columns), combination).reshape(m, -1)
    errors, located = _locate_errors(xs, threshold, words)
    by_survivors: dict[bytes, list[int]] = {}
    for position in np.flatnonzero(located).tolist():
        by_survivors.setdefault(np.packbits(~errors[:, position]).tobytes(), []).append(position)
    for members in by_survivors.values():
        rows = np.flatnonzero(~errors[:, members[0]])
        targets = dirty[members]
        subset = values[rows][:, targets]
        ok, got = _checked_interpolation(xs[rows], threshold, subset)
        for k, target in enumerate(targets.tolist()):
            if ok[k]:
                chunks[target] = got[k]
                solved[target] = True
                off[:, target] = errors[:, members[k]]
    return chunks, solved, off


def _check_decode_arguments(threshold: object, secret_length: object) -> tuple[int, int]:
    for value, name in ((threshold, "threshold"), (secret_length, "secret_length")):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise SecAggValueError(f"{name} must be an int, got {type(value).__name__}")
    t, length = int(threshold), int(secret_length)  # type: ignore[call-overload]
    if not 1 <= t <= MAX_SHARES:
        raise SecAggValueError(f"threshold must be in [1, {MAX_SHARES}], got {t}")
    if not MIN_SECRET_BYTES <= length <= MAX_SECRET_BYTES:
        raise SecAggValueError(
            f"secret_length must be in [{MIN_SECRET_BYTES}, {MAX_SECRET_BYTES}], got {length}"
        )
    return t, length


def shamir_decode_many(
    share_sets: Sequence[Sequence[tuple[int, bytes]]],
    *,
    threshold: int,
    secret_length: int,
    prefix_bytes: int = 0,
) -> list[Reconstruction]:
    """Reconstruct one secret per set of encoded shares, correcting wrong shares.

    Each set lists ``(x, encoding)`` pairs: the x the share must have (its holder's
    position, known to the caller) and the bytes received (:meth:`Share.to_bytes`),
    optionally behind ``prefix_bytes`` bytes this function ignores (e.g. the nonce of a
    commitment opening; saves the caller one copy per share).
    Every set is a t-of-n sharing of a ``secret_length``-byte secret. Malformed shares
    are dropped; of the m well-formed ones, up to floor((m - t) / 2) wrong shares are
    corrected and named. A set with more wrong shares is reported undecodable
    (``secret is None``) rather than answered wrongly: an accepted secret passed the
    consistency checks of its remaining shares and its integrity tag. Sets with the same
    usable x-set share one parity / Lagrange computation; all work is matrix products
    over the batch. Raises :class:`SecAggValueError` for bad arguments (not for bad
    shares, which are the point of this function).
    """
    t, length = _check_decode_arguments(threshold, secret_length)
    if isinstance(prefix_bytes, bool) or not isinstance(prefix_bytes, int) or prefix_bytes < 0:
        raise SecAggValueError("prefix_bytes must be a non-negative int")
    columns = chunk_count(length)
    encoded_length = prefix_bytes + _HEADER.size + 4 * columns
    malformed: list[list[int]] = [[] for _ in share_sets]
    kept_set: list[int] = []
    kept_x: list[int] = []
    kept_data: list[bytes] = []
    for index, items in enumerate(share_sets):
        xs_here = [x for x, _ in items]
        if len(set(xs_here)) != len(xs_here):
            raise SecAggValueError(f"share set {index} names the same x twice")
        for x, data in items:
            if isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= MAX_SHARES:
                raise SecAggValueError(f"share x must be an int in [1, {MAX_SHARES}]")
            if type(data) is bytes and len(data) == encoded_length:
                kept_set.append(index)
                kept_x.append(x)
                kept_data.append(data)
            else:
                malformed[index].append(x)
    usable: list[list[int]] = [[] for _ in share_sets]  # row numbers into ``words``
    words = np.zeros((0, columns), dtype=np.uint32)
    if kept_data:
        raw = np.frombuffer(b"".join(kept_data), dtype=np.uint8).reshape(-1, encoded_length)
        raw = raw[:, prefix_bytes:]
        x_array = np.array(kept_x, dtype=np.int64)
        header = np.empty((raw.shape[0], _HEADER.size), dtype=np.uint8)
        header[:, 0], header[:, 1] = _FORMAT_VERSION, FIELD_M31
        header[:, 2], header[:, 3] = x_array >> 8, x_array & 0xFF
        header[:, 4], header[:, 5], header[:, 6] = t >> 8, t & 0xFF, length
        words = raw[:, _HEADER.size :].copy().view(_WORD)
        well_formed = (raw[:, : _HEADER.size] == header).all(axis=1) & (words < PRIME).all(axis=1)
        order = np.lexsort((x_array, np.array(kept_set, dtype=np.int64)))
        for row in order.tolist():
            if well_formed[row]:
                usable[kept_set[row]].append(row)
            else:
                malformed[kept_set[row]].append(kept_x[row])

    results: list[Reconstruction | None] = [None] * len(share_sets)
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, rows in enumerate(usable):
        if len(rows) < t:
            results[index] = Reconstruction(None, tuple(sorted(malformed[index])), ())
        else:
            groups.setdefault(tuple(kept_x[row] for row in rows), []).append(index)
    for x_tuple, members in groups.items():
        xs = np.array(x_tuple, dtype=np.uint64)
        rows_matrix = np.array([usable[index] for index in members], dtype=np.int64)
        values = words[rows_matrix.T].astype(np.uint64)  # (m, S, c)
        chunks, solved, off = _solve_group(xs, t, values)
        decoded: list[bytes | None] = [None] * len(members)
        if solved.any():
            for position, secret in zip(
                np.flatnonzero(solved).tolist(), _decode_rows(chunks[solved], length), strict=True
            ):
                decoded[position] = secret
        for position, index in enumerate(members):
            secret = decoded[position]
            wrong = () if secret is None else tuple(xs[off[:, position]].astype(int).tolist())
            results[index] = Reconstruction(secret, tuple(sorted(malformed[index])), wrong)
    return [result for result in results if result is not None]
