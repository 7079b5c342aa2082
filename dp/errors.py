"""Typed errors of the ``dp`` package: one small hierarchy, all rooted at :class:`DPError`."""

from __future__ import annotations


class DPError(Exception):
    """Base class of every error raised by ``dp``."""


class DPValueError(DPError, ValueError):
    """An argument is out of range, of the wrong shape, or otherwise invalid."""


class NonFiniteUpdateError(DPValueError):
    """An update contains NaN or infinity; it is rejected instead of propagated."""


class InsecureRandomnessError(DPError):
    """A seed was given to a secure generator, or a non-secure generator was used where a
    secure one is required."""


class UnsupportedEventError(DPError, TypeError):
    """An accountant was asked to interpret an event it does not support."""


class EventDecodeError(DPValueError):
    """A serialized privacy event is malformed, of an unknown type or schema version."""


class PlanningError(DPValueError):
    """A distributed-DP plan is infeasible (e.g. modular wrap-around would be likely)."""


class PrivacyBudgetExceeded(DPError):
    """A round was refused because it would exceed the privacy budget."""


class LedgerError(DPError):
    """A privacy ledger is unreadable, inconsistent or has been tampered with."""


class InsufficientNoiseError(DPError):
    """Fewer noise shares than planned reached the aggregate: releasing it would spend more
    privacy than the plan (and its privacy event) states."""
