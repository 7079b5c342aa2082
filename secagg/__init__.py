"""privagg secagg: cryptographic primitives of secure aggregation.

Ring arithmetic over Z_{2^bits} (:mod:`secagg.ring`), quantization with an overflow
budget (:mod:`secagg.quantize`), AES-CTR mask expansion (:mod:`secagg.prg`), X25519 +
HKDF key agreement (:mod:`secagg.keys`), AES-256-GCM share encryption
(:mod:`secagg.aead`), Ed25519 signatures (:mod:`secagg.signing`) and vectorized Shamir
sharing over GF(2^31 - 1) (:mod:`secagg.shamir`). Every secret comes from the OS CSPRNG;
no secret appears in a ``repr`` or an error message; secret holders refuse pickling.
This package imports no other privagg package and no torch.
"""

from secagg.aead import (
    AEAD_KEY_BYTES,
    AEAD_OVERHEAD_BYTES,
    encode_associated_data,
    open_sealed,
    seal,
)
from secagg.errors import (
    DecryptionError,
    OverflowBudgetError,
    SecAggError,
    SecAggValueError,
    ShareError,
    SignatureError,
)
from secagg.kdf import hkdf_sha256
from secagg.keys import (
    MASK_SEED_LABEL,
    PUBLIC_KEY_BYTES,
    SHARE_KEY_LABEL,
    SHARED_KEY_BYTES,
    AgreementKey,
    derive_shared_key,
    random_seed,
    session_id,
)
from secagg.prg import MAX_SEED_BYTES, MIN_SEED_BYTES, add_masks, expand_mask
from secagg.quantize import (
    check_sum_fits,
    dequantize,
    max_quantized_abs,
    quantize,
    required_bits,
    sum_error_bound,
)
from secagg.ring import (
    MAX_BITS,
    MIN_BITS,
    centered_lift,
    ring_add,
    ring_dtype,
    ring_mask,
    ring_neg,
    ring_sub,
    ring_sum,
    to_ring,
)
from secagg.shamir import (
    MAX_SECRET_BYTES,
    MAX_SHARES,
    MIN_SECRET_BYTES,
    Reconstruction,
    Share,
    shamir_combine,
    shamir_combine_many,
    shamir_decode_many,
    shamir_split,
    shamir_split_many,
)
from secagg.signing import SIGNATURE_BYTES, VERIFY_KEY_BYTES, SigningKey, verify_signature

__all__ = [
    "AEAD_KEY_BYTES",
    "AEAD_OVERHEAD_BYTES",
    "MASK_SEED_LABEL",
    "MAX_BITS",
    "MAX_SECRET_BYTES",
    "MAX_SEED_BYTES",
    "MAX_SHARES",
    "MIN_BITS",
    "MIN_SECRET_BYTES",
    "MIN_SEED_BYTES",
    "PUBLIC_KEY_BYTES",
    "SHARED_KEY_BYTES",
    "SHARE_KEY_LABEL",
    "SIGNATURE_BYTES",
    "VERIFY_KEY_BYTES",
    "AgreementKey",
    "DecryptionError",
    "OverflowBudgetError",
    "Reconstruction",
    "SecAggError",
    "SecAggValueError",
    "Share",
    "ShareError",
    "SignatureError",
    "SigningKey",
    "add_masks",
    "centered_lift",
    "check_sum_fits",
    "dequantize",
    "derive_shared_key",
    "encode_associated_data",
    "expand_mask",
    "hkdf_sha256",
    "max_quantized_abs",
    "open_sealed",
    "quantize",
    "random_seed",
    "required_bits",
    "ring_add",
    "ring_dtype",
    "ring_mask",
    "ring_neg",
    "ring_sub",
    "ring_sum",
    "seal",
    "session_id",
    "shamir_combine",
    "shamir_combine_many",
    "shamir_decode_many",
    "shamir_split",
    "shamir_split_many",
    "sum_error_bound",
    "to_ring",
    "verify_signature",
]
