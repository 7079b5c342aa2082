"""A networked deployment of :mod:`protocols`: the unchanged state machines over gRPC + TLS.

* :class:`AggregationServer` runs a job's rounds for registered clients;
* :func:`run_device` is one client device;
* :func:`make_local_pki` writes a local CA, server certificate, client identity keys and
  the registry the server loads (:func:`load_registry`);
* errors: :class:`TransportError`, :class:`AuthenticationError` (both ``ProtocolError``).

The gRPC parts (client, server) need the ``net`` extra (grpcio) and are imported on first
use, so the PKI and wire format work without it (``privagg certs`` needs no grpc).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from protocols.net.errors import AuthenticationError, JobMissed, RoundRefused, TransportError
from protocols.net.pki import (
    LocalPKI,
    load_identity_key,
    load_registry,
    make_local_pki,
    write_identity_key,
)
from protocols.net.wire import JobSpec, RoundSpec

if TYPE_CHECKING:
    from protocols.net.client import ClientTLS, DeviceReport, RoundInfo, run_device
    from protocols.net.server import AdmissionLimits, AggregationServer, RoundOutcome, ServerTLS

# name -> submodule, for the names whose module imports grpc
_NEEDS_GRPC = {
    "ClientTLS": "client",
    "DeviceReport": "client",
    "RoundInfo": "client",
    "run_device": "client",
    "AdmissionLimits": "server",
    "AggregationServer": "server",
    "RoundOutcome": "server",
    "ServerTLS": "server",
}


def __getattr__(name: str) -> Any:
    module = _NEEDS_GRPC.get(name)
    if module is None:
        raise AttributeError(f"module 'protocols.net' has no attribute {name!r}")
    return getattr(importlib.import_module(f"protocols.net.{module}"), name)


__all__ = [
    "AdmissionLimits",
    "AggregationServer",
    "AuthenticationError",
    "ClientTLS",
    "DeviceReport",
    "JobMissed",
    "JobSpec",
    "LocalPKI",
    "RoundInfo",
    "RoundOutcome",
    "RoundRefused",
    "RoundSpec",
    "ServerTLS",
    "TransportError",
    "load_identity_key",
    "load_registry",
    "make_local_pki",
    "run_device",
    "write_identity_key",
]
