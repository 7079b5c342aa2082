"""Exception hierarchy of :mod:`protocols`.

Every error raised on purpose by this package derives from :class:`ProtocolError`.
Messages and attributes carry non-secret diagnostics only (stage names, reason codes,
client ids, counts); never key, seed, share or mask material.
"""

from __future__ import annotations

import enum

__all__ = [
    "AbortReason",
    "ConfigError",
    "DecodeError",
    "ProtocolAborted",
    "ProtocolError",
    "StateError",
]


class ProtocolError(Exception):
    """Base class of every error raised by :mod:`protocols`."""


class ConfigError(ProtocolError, ValueError):
    """A protocol configuration or an argument of the round driver is invalid."""


class DecodeError(ProtocolError, ValueError):
    """Bytes are not a well-formed message of the expected type and version."""


class StateError(ProtocolError):
    """A state machine was driven out of order by its *local* caller (a programming error).

    Out-of-order messages from the network are not programming errors: they abort the
    protocol with :attr:`AbortReason.UNEXPECTED_MESSAGE` instead.
    """


class AbortReason(enum.Enum):
    """Why a client or the server stopped the protocol (non-secret diagnostics)."""

    TOO_FEW_SURVIVORS = "too_few_survivors"
    """Fewer than the threshold t of clients (of a neighbourhood) are still alive."""
    SELF_LISTED_AS_DROPPED = "self_listed_as_dropped"
    UNKNOWN_CLIENT = "unknown_client"
    DUPLICATE_CLIENT = "duplicate_client"
    PEER_ALREADY_DROPPED = "peer_already_dropped"
    """The server re-lists a peer that this client already saw drop at an earlier stage."""
    INCONSISTENT_SURVIVORS = "inconsistent_survivors"
    """The survivor / dropped lists contradict this client's own view of the round."""
    BOTH_SHARES_REQUESTED = "both_shares_requested"
    """Revealing the requested share would give the server both secrets of one peer."""
    OWN_KEYS_ALTERED = "own_keys_altered"
    DUPLICATE_PUBLIC_KEY = "duplicate_public_key"
    INVALID_PUBLIC_KEY = "invalid_public_key"
    """A peer's public key is not a usable X25519 key (e.g. a low-order point)."""
    BAD_SIGNATURE = "bad_signature"
    CONSISTENCY_CHECK_FAILED = "consistency_check_failed"
    SHARE_DECRYPTION_FAILED = "share_decryption_failed"
    """A share ciphertext does not authenticate: tampered, replayed or misrouted."""
    SHARE_COMMITMENT_MISMATCH = "share_commitment_mismatch"
    """A dealt share does not open the commitment its dealer published with it (a corrupt
    dealer trying to make this holder look like a liar at unmasking)."""
    MISROUTED_SHARE = "misrouted_share"
    CONFIG_MISMATCH = "config_mismatch"
    MALFORMED_MESSAGE = "malformed_message"
    UNEXPECTED_MESSAGE = "unexpected_message"
    """A message arrived that the current protocol state does not accept."""
    RECONSTRUCTION_FAILED = "reconstruction_failed"
    """The server could not rebuild a secret consistently from the revealed shares."""
    TOO_MANY_BAD_SHARES = "too_many_bad_shares"
    """More shares of some secret were missing, malformed or wrong than the code corrects
    (m usable shares correct up to floor((m - t) / 2) wrong ones); ``suspects`` names them."""


class ProtocolAborted(ProtocolError):
    """The round stopped at ``stage`` for ``reason``; no aggregate is released.

    ``client_id`` names the client that aborted (``None`` for the server). When the round
    aborts before the unmasking stage no share of any secret has been revealed.
    ``suspects`` names the clients the server holds responsible (e.g. the senders of bad
    shares when too many of them arrived to decode), sorted.
    """

    def __init__(
        self,
        stage: str,
        reason: AbortReason,
        detail: str = "",
        *,
        client_id: int | None = None,
        suspects: tuple[int, ...] = (),
    ) -> None:
        self.stage = stage
        self.reason = reason
        self.detail = detail
        self.client_id = client_id
        self.suspects = tuple(sorted(suspects))
        who = "server" if client_id is None else f"client {client_id}"
        text = f"{who} aborted at stage {stage!r}: {reason.value}"
        super().__init__(f"{text} ({detail})" if detail else text)

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_aborted,
            (self.stage, self.reason, self.detail, self.client_id, self.suspects),
        )


def _rebuild_aborted(
    stage: str,
    reason: AbortReason,
    detail: str,
    client_id: int | None,
    suspects: tuple[int, ...] = (),
) -> ProtocolAborted:
    return ProtocolAborted(stage, reason, detail, client_id=client_id, suspects=suspects)
