"""A networked deployment of :mod:`protocols`: the unchanged state machines over gRPC + TLS.

* :class:`AggregationServer` runs a job's rounds for registered clients;
* :func:`run_device` is one client device;
* :func:`make_local_pki` writes a local CA, server certificate, client identity keys and
  the registry the server loads (:func:`load_registry`);
* errors: :class:`TransportError`, :class:`AuthenticationError` (both ``ProtocolError``).

Requires the ``net`` extra (grpcio).
"""

from protocols.net.client import ClientTLS, DeviceReport, RoundInfo, run_device
from protocols.net.errors import AuthenticationError, JobMissed, RoundRefused, TransportError
from protocols.net.pki import (
    LocalPKI,
    load_identity_key,
    load_registry,
    make_local_pki,
    write_identity_key,
)
from protocols.net.server import AdmissionLimits, AggregationServer, RoundOutcome, ServerTLS
from protocols.net.wire import JobSpec, RoundSpec

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
