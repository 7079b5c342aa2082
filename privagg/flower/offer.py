"""The round offer: every public parameter of one private Flower round, and its digest.

The server sends the offer with the first stage; the device rebuilds the DP plan and the
SecAgg configuration from it with the same pure functions the server used
(:func:`RoundOffer.plan`, :func:`RoundOffer.secagg_config`), so nothing derived is taken
on trust. :func:`RoundOffer.context_digest` (SHA-256 over the canonical offer and the
model the device received) is bound into the SecAgg session (``SetupRequest``): a server
that shows different devices different models or parameters ends with shares that do not
decrypt and no aggregate (Pasquini et al. 2022).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

import protocols
from dp.planning import DistributedDPPlan, Mechanism, plan_distributed_dp

__all__ = ["OFFER_VERSION", "RoundOffer", "model_digest", "simulation_noise_seed"]

OFFER_VERSION = 1
_OFFER_LABEL = b"privagg/flower/offer/v1"
_MODEL_LABEL = b"privagg/flower/model/v1"
_NOISE_LABEL = b"privagg/flower/simulation-noise/v1"


def model_digest(arrays: Sequence[npt.NDArray[Any]]) -> bytes:
    """SHA-256 over dtype, shape and bytes of every array, in order."""
    h = hashlib.sha256(_MODEL_LABEL)
    for array in arrays:
        a = np.ascontiguousarray(array)
        header = json.dumps([a.dtype.str, list(a.shape)]).encode()
        h.update(len(header).to_bytes(4, "little") + header)
        h.update(len(a.data).to_bytes(8, "little"))
        h.update(a.tobytes())
    return h.digest()


def simulation_noise_seed(base_seed: int, round_number: int, node_id: int) -> int:
    """The seed of one device's :class:`dp.SimulationRng` in a seeded simulation.

    A pure function of public values, so an in-process reference run can draw the same
    (non-secure) noise; never used unless the device's policy allows simulation noise.
    """
    raw = f"{base_seed}:{round_number}:{node_id}".encode()
    return int.from_bytes(hashlib.sha256(_NOISE_LABEL + raw).digest()[:8], "little") >> 1


@dataclass(frozen=True)
class RoundOffer:
    """Public parameters of one round (canonical JSON on the wire)."""

    round_number: int
    node_ids: tuple[int, ...]
    threshold: int
    neighbors: int | None
    bits: int
    dropout_rate: float
    corrupt_fraction: float
    clip_norm: float
    noise_multiplier: float
    mechanism: Mechanism
    min_contributors: int
    rotation_seed: bytes
    model_sha256: bytes
    simulation_noise_seed: int | None = None
    threat_model: str = protocols.ThreatModel.HONEST_BUT_CURIOUS.value
    version: int = OFFER_VERSION

    def to_bytes(self) -> bytes:
        body = asdict(self)
        body["node_ids"] = list(self.node_ids)
        body["rotation_seed"] = self.rotation_seed.hex()
        body["model_sha256"] = self.model_sha256.hex()
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> RoundOffer:
        """Strict decoding; anything malformed raises ``ValueError``."""
        try:
            body = json.loads(data)
            if not isinstance(body, dict) or body.get("version") != OFFER_VERSION:
                raise ValueError(f"unsupported offer version {body.get('version')!r}")
            offer = cls(
                round_number=_int(body["round_number"]),
                node_ids=tuple(_int(v) for v in body["node_ids"]),
                threshold=_int(body["threshold"]),
                neighbors=None if body["neighbors"] is None else _int(body["neighbors"]),
                bits=_int(body["bits"]),
                dropout_rate=float(body["dropout_rate"]),
                corrupt_fraction=float(body["corrupt_fraction"]),
                clip_norm=float(body["clip_norm"]),
                noise_multiplier=float(body["noise_multiplier"]),
                mechanism=_mechanism(body["mechanism"]),
                min_contributors=_int(body["min_contributors"]),
                rotation_seed=bytes.fromhex(body["rotation_seed"]),
                model_sha256=bytes.fromhex(body["model_sha256"]),
                simulation_noise_seed=None
                if body["simulation_noise_seed"] is None
                else _int(body["simulation_noise_seed"]),
                threat_model=protocols.ThreatModel(body["threat_model"]).value,
                version=OFFER_VERSION,
            )
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed round offer: {exc}") from None
        if set(body) != set(asdict(offer)):
            raise ValueError("malformed round offer: unexpected fields")
        if len(set(offer.node_ids)) != len(offer.node_ids) or list(offer.node_ids) != sorted(
            offer.node_ids
        ):
            raise ValueError("malformed round offer: node ids must be sorted and distinct")
        if len(offer.rotation_seed) != 32 or len(offer.model_sha256) != 32:
            raise ValueError("malformed round offer: seeds and digests are 32 bytes")
        return offer

    def context_digest(self) -> bytes:
        """What the SecAgg session binds: the canonical offer (which holds the model hash)."""
        return hashlib.sha256(_OFFER_LABEL + self.to_bytes()).digest()

    def secagg_config(self) -> protocols.SecAggConfig:
        """The SecAgg(+) configuration (validated by :class:`protocols.SecAggConfig`)."""
        return protocols.SecAggConfig(
            len(self.node_ids),
            self.threshold,
            neighbors=self.neighbors,
            bits=self.bits,
            dropout_rate=self.dropout_rate,
            corrupt_fraction=self.corrupt_fraction,
            threat_model=protocols.ThreatModel(self.threat_model),
        )

    def plan(self, dimension: int) -> DistributedDPPlan:
        """The distributed-DP plan for a ``dimension``-float update (pure function)."""
        n = len(self.node_ids)
        return plan_distributed_dp(
            dimension=dimension,
            expected_contributors=n,
            min_contributors=self.min_contributors,
            clip_norm=self.clip_norm,
            noise_multiplier=self.noise_multiplier,
            bits=self.bits,
            mechanism=self.mechanism,
        )


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an int, got {type(value).__name__}")
    return value


def _mechanism(value: object) -> Mechanism:
    if value == "ddg":
        return "ddg"
    if value == "skellam":
        return "skellam"
    raise TypeError(f"unknown mechanism {value!r}")
