"""Errors of the networked deployment, inside the :mod:`protocols` hierarchy."""

from __future__ import annotations

from protocols.errors import ProtocolError

__all__ = ["AuthenticationError", "JobMissed", "RoundRefused", "TransportError"]


class TransportError(ProtocolError):
    """The network failed: the server is unreachable, or it refused this client's message."""


class JobMissed(TransportError):
    """The server ended the job before this device took part in any round: it joined after
    the join deadline (the server's message says by how much)."""


class AuthenticationError(ProtocolError, ValueError):
    """A request is not signed by the registered key of the client it claims to be."""


class RoundRefused(ProtocolError):
    """A device declines a round (e.g. its public parameters are not acceptable to it); it
    sits that round out and keeps serving the job."""
