"""Signed job manifests: the server commits to a job once, every device pins it.

A :class:`JobManifest` is the public statement of a job — the :class:`JobSpec` (threat
model, cohort bounds ``threshold``..``num_clients``, the corrupt fraction n_C/n, ring
width, number of rounds) plus the rule its DP plans follow (``dp_rule``: an opaque JSON
object to this layer; ``dp.policy`` fields such as ``min_noise_multiplier``) and a random
``job_id`` — signed with the server's Ed25519 key (:mod:`secagg.signing`). The server sends
the signed bytes in its welcome. A device pins it: by file (``privagg client --job
job.manifest.json``: only this exact manifest is accepted) or by trust on first use (the
server key is remembered per server address in a small pin file and the manifest's
fingerprint printed, so a later key change is refused and operators can compare
fingerprints out of band). Every round announcement is then checked against the pinned job.

Encoding: canonical JSON (sorted keys, no whitespace) ``{"manifest": {...}, "signature":
hex}``, the signature over ``b"privagg/v1/job-manifest" || canonical manifest``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import secagg
from protocols.errors import ConfigError
from protocols.net.wire import JobSpec
from protocols.policy import PolicyViolation, Rule

__all__ = ["JobManifest", "PinStore"]

_LABEL = b"privagg/v1/job-manifest"
_VERSION = 1


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class JobManifest:
    """The signed, public description of one job (see the module docstring)."""

    job: JobSpec
    server_key: bytes
    job_id: str
    dp_rule: str = "{}"

    def __post_init__(self) -> None:
        if not isinstance(self.server_key, bytes) or len(self.server_key) != 32:
            raise ConfigError("a manifest's server_key is a 32-byte Ed25519 public key")
        try:
            rule = json.loads(self.dp_rule)
        except ValueError:
            raise ConfigError("a manifest's dp_rule must be a JSON object") from None
        if not isinstance(rule, dict):
            raise ConfigError("a manifest's dp_rule must be a JSON object")

    @classmethod
    def create(
        cls, job: JobSpec, key: secagg.SigningKey, dp_rule: Mapping[str, Any] | None = None
    ) -> JobManifest:
        """A manifest of ``job`` for the server key ``key`` with a fresh random job id."""
        return cls(job, key.public_bytes, secrets.token_hex(16), _canonical(dp_rule or {}).decode())

    @property
    def rule(self) -> dict[str, Any]:
        """The DP plan rule as a mapping."""
        parsed: dict[str, Any] = json.loads(self.dp_rule)
        return parsed

    def _fields(self) -> dict[str, Any]:
        return {
            "version": _VERSION,
            "job": asdict(self.job),
            "server_key": self.server_key.hex(),
            "job_id": self.job_id,
            "dp_rule": self.rule,
        }

    def body(self) -> bytes:
        """The canonical bytes the signature covers (after the label)."""
        return _canonical(self._fields())

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the manifest, hex in groups of 4 (what operators compare)."""
        digest = hashlib.sha256(_LABEL + self.body()).hexdigest()
        return ":".join(digest[i : i + 4] for i in range(0, 32, 4))

    def sign(self, key: secagg.SigningKey) -> bytes:
        """The signed manifest (what the welcome carries and ``--job`` pins)."""
        if key.public_bytes != self.server_key:
            raise ConfigError("the manifest names another server key than the signing key")
        signature = key.sign(_LABEL + self.body())
        return _canonical({"manifest": self._fields(), "signature": signature.hex()})

    @classmethod
    def verify(cls, data: bytes) -> JobManifest:
        """Parse a signed manifest and check its signature under its own server key (the
        caller pins that key or the whole manifest); PolicyViolation(MANIFEST) if not."""
        try:
            outer = json.loads(data)
            fields, signature = outer["manifest"], bytes.fromhex(outer["signature"])
            if set(outer) != {"manifest", "signature"} or fields.get("version") != _VERSION:
                raise ValueError
            if set(fields) != {"version", "job", "server_key", "job_id", "dp_rule"}:
                raise ValueError
            if not isinstance(fields["job_id"], str) or not isinstance(fields["dp_rule"], dict):
                raise ValueError
            manifest = cls(
                JobSpec.from_mapping(fields["job"]),
                bytes.fromhex(fields["server_key"]),
                fields["job_id"],
                _canonical(fields["dp_rule"]).decode(),
            )
        except (ValueError, KeyError, TypeError, AttributeError, ConfigError):
            raise PolicyViolation(Rule.MANIFEST, "the job manifest is malformed") from None
        try:
            secagg.verify_signature(manifest.server_key, _LABEL + manifest.body(), signature)
        except secagg.SecAggError:
            raise PolicyViolation(
                Rule.MANIFEST, "the job manifest's signature is invalid"
            ) from None
        return manifest


class PinStore:
    """Trust on first use: server address → the Ed25519 key that signed its manifests.

    A small JSON file, written atomically; a server whose key differs from the pinned one
    is refused (:class:`PolicyViolation` with rule ``manifest``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            servers = data["servers"]
            if data.get("version") != _VERSION or not isinstance(servers, dict):
                raise ValueError
            return {str(k): str(v) for k, v in servers.items()}
        except (OSError, ValueError, KeyError, TypeError):
            raise PolicyViolation(
                Rule.MANIFEST, f"the pin file {self.path} is damaged; refusing to trust"
            ) from None

    def check_or_pin(self, target: str, server_key: bytes) -> bool:
        """True if ``server_key`` was pinned now (first use), False if it matched the pin."""
        pins = self._read()
        known = pins.get(target)
        if known is not None:
            if known != server_key.hex():
                raise PolicyViolation(
                    Rule.MANIFEST,
                    f"server {target} signs with key {server_key.hex()[:16]}..., but this "
                    f"device pinned {known[:16]}... (remove the pin only if you trust the change)",
                )
            return False
        pins[target] = server_key.hex()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"version": _VERSION, "servers": pins}, sort_keys=True))
        os.replace(tmp, self.path)
        return True
