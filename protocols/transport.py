"""Transports move encoded messages; the state machines never see them.

:class:`Transport` is the one method a deployment has to provide. :class:`InMemoryTransport`
is the in-process transport of :func:`protocols.run_secagg`: it counts bytes per stage and
direction and runs fault hooks that may drop (return ``None``), delay-as-drop, corrupt,
truncate or replace any message, which is how the fault-injection tests work.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Protocol

from protocols.config import Stage

__all__ = ["Direction", "FaultHook", "InMemoryTransport", "Transport"]


class Direction(enum.Enum):
    """Which way a message travels."""

    TO_CLIENT = "to_client"
    TO_SERVER = "to_server"


FaultHook = Callable[[Direction, Stage, int, bytes], bytes | None]
"""``hook(direction, stage, client_id, payload)`` -> payload to deliver, or ``None`` to drop.

``stage`` is the stage whose client reply the message belongs to (a server message
carries the stage of the reply it asks for)."""


class Transport(Protocol):
    """Carries one encoded message to or from client ``client_id``."""

    def send(
        self, direction: Direction, stage: Stage, client_id: int, payload: bytes
    ) -> bytes | None:
        """Deliver ``payload``; return what arrives, or ``None`` if it is lost."""
        ...


class InMemoryTransport:
    """Lossless in-process delivery, byte accounting and optional fault hooks."""

    def __init__(self, hooks: Sequence[FaultHook] = ()) -> None:
        self.hooks = tuple(hooks)
        self.sent_bytes: defaultdict[tuple[Direction, Stage], list[int]] = defaultdict(list)
        self.lost: defaultdict[tuple[Direction, Stage], int] = defaultdict(int)

    def send(
        self, direction: Direction, stage: Stage, client_id: int, payload: bytes
    ) -> bytes | None:
        """Count the sender's bytes, then let every hook rewrite or drop the message."""
        self.sent_bytes[direction, stage].append(len(payload))
        delivered = payload
        for hook in self.hooks:
            rewritten = hook(direction, stage, client_id, delivered)
            if rewritten is None:
                self.lost[direction, stage] += 1
                return None
            delivered = rewritten
        return delivered
