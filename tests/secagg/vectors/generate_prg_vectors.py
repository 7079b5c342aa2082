"""Regenerate ``prg_expand_mask.json``: privagg's own known-answer vectors for expand_mask.

The file pins the PRG output (AES-128-CTR keyed by HKDF-SHA256 of the seed, little-endian
words, masked to ``bits``) so that any change to the derivation, the word order or the
masking fails ``test_secagg_prg.py``. Regenerate ONLY for a deliberate, versioned change
of the mask format (bump ``MASK_LABEL`` too), never to make a failing test pass:

    .venv/bin/python tests/secagg/vectors/generate_prg_vectors.py

Short outputs are stored element by element; long ones as the SHA-256 of their
little-endian bytes. Expected failures store the error class and a message fragment.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from secagg import expand_mask

OUT = Path(__file__).with_name("prg_expand_mask.json")

SEED16 = bytes(range(16))
SEED32 = bytes(range(32))
SEED64 = hashlib.sha512(b"privagg prg vector seed").digest()

CASES: list[dict[str, Any]] = [
    {"seed": SEED16, "length": 8, "bits": 32, "domain": b""},
    {"seed": SEED32, "length": 8, "bits": 32, "domain": b""},
    {"seed": SEED64, "length": 8, "bits": 32, "domain": b""},
    {"seed": SEED32, "length": 8, "bits": 32, "domain": b"pairwise"},
    {"seed": SEED32, "length": 0, "bits": 32, "domain": b""},
    {"seed": SEED32, "length": 1, "bits": 1, "domain": b""},
    {"seed": SEED32, "length": 16, "bits": 4, "domain": b""},
    {"seed": SEED32, "length": 8, "bits": 16, "domain": b"self-mask"},
    {"seed": SEED32, "length": 8, "bits": 31, "domain": b""},
    {"seed": SEED32, "length": 8, "bits": 33, "domain": b""},
    {"seed": SEED32, "length": 8, "bits": 48, "domain": b""},
    {"seed": SEED32, "length": 8, "bits": 62, "domain": b""},
    # Longer than one 256 KiB chunk, so chunk boundaries are pinned as well.
    {"seed": SEED32, "length": 100_000, "bits": 32, "domain": b"", "digest_only": True},
    {"seed": SEED32, "length": 70_001, "bits": 62, "domain": b"x", "digest_only": True},
]

FAILURES: list[dict[str, Any]] = [
    {"seed": bytes(15), "length": 4, "bits": 32, "error": "SecAggValueError", "match": "16 to 64"},
    {"seed": bytes(65), "length": 4, "bits": 32, "error": "SecAggValueError", "match": "16 to 64"},
    {
        "seed": SEED32,
        "length": -1,
        "bits": 32,
        "error": "SecAggValueError",
        "match": "non-negative",
    },
    {
        "seed": SEED32,
        "length": 4,
        "bits": 0,
        "error": "SecAggValueError",
        "match": "bits must be in",
    },
    {
        "seed": SEED32,
        "length": 4,
        "bits": 63,
        "error": "SecAggValueError",
        "match": "bits must be in",
    },
    {
        "seed": SEED32,
        "length": 4,
        "bits": 64,
        "error": "SecAggValueError",
        "match": "bits must be in",
    },
]


def build() -> dict[str, Any]:
    """The JSON document for the current implementation."""
    vectors = []
    for case in CASES:
        mask = expand_mask(case["seed"], case["length"], bits=case["bits"], domain=case["domain"])
        entry: dict[str, Any] = {
            "seed": case["seed"].hex(),
            "length": case["length"],
            "bits": case["bits"],
            "domain": case["domain"].hex(),
            "dtype": str(mask.dtype),
        }
        little_endian = mask.astype(mask.dtype.newbyteorder("<")).tobytes()
        if case.get("digest_only"):
            entry["sha256_le"] = hashlib.sha256(little_endian).hexdigest()
        else:
            entry["values"] = [int(v) for v in np.asarray(mask)]
        vectors.append(entry)
    failures = [
        {
            "seed": case["seed"].hex(),
            "length": case["length"],
            "bits": case["bits"],
            "domain": "",
            "error": case["error"],
            "match": case["match"],
        }
        for case in FAILURES
    ]
    return {
        "description": (
            "privagg expand_mask known answers: AES-128-CTR(key = HKDF-SHA256(seed, "
            "info = b'privagg/v1/mask' + domain), counter block 0) over zeros, little-endian "
            "words, masked to bits. Hex fields are raw bytes."
        ),
        "vectors": vectors,
        "expected_failures": failures,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
