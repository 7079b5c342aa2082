"""How privagg's protocol messages ride on Flower messages.

Every privagg stage is one Flower ``TRAIN`` message whose content holds a
:data:`CONFIG_KEY` config record (the stage name and the round) and a :data:`PAYLOAD_KEY`
array record with one uint8 array: the canonical bytes of a :mod:`protocols.messages`
message (or, for the offer, of :class:`~privagg.flower.offer.RoundOffer`). Carrying the
bytes as an array, not as a config value, lets Flower split them into its own chunks
(``FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE``), so a masked vector of any model size stays inside
Flower's per-message limits. Replies carry no metrics and no example counts: those would
be per-device plaintext next to the masked vector.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["CONFIG_KEY", "OFFER_KEY", "PAYLOAD_KEY", "STAGES", "pack", "unpack"]

CONFIG_KEY = "privagg.config"
PAYLOAD_KEY = "privagg.payload"
OFFER_KEY = "privagg.offer"
STAGE_FIELD = "stage"
ROUND_FIELD = "round"
STAGES = ("advertise", "share", "mask", "consistency", "unmask")


def pack(payload: bytes) -> Any:
    """An ``ArrayRecord`` holding ``payload`` as one uint8 array (imports flwr lazily)."""
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({"bytes": Array(np.frombuffer(payload, dtype=np.uint8).copy())})


def unpack(record: Any) -> bytes:
    """The bytes :func:`pack` stored; ``ValueError`` if the record is not such a record."""
    try:
        array = record["bytes"].numpy()
    except (KeyError, AttributeError, TypeError) as exc:
        raise ValueError(f"malformed privagg payload record: {exc}") from None
    if array.dtype != np.uint8 or array.ndim != 1:
        raise ValueError("malformed privagg payload record: expected a 1-D uint8 array")
    return bytes(array.tobytes())
