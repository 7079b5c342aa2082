"""The typed errors of ``analysis`` (sweeps, audits, attacks)."""

from __future__ import annotations

__all__ = ["AnalysisError", "AuditInputError", "SweepError"]


class AnalysisError(ValueError):
    """Root of the analysis package's errors: the user's input cannot be analysed."""


class SweepError(AnalysisError):
    """A sweep grid or its outputs are invalid."""


class AuditInputError(AnalysisError):
    """Scores, labels or parameters given to an empirical audit or attack are invalid."""
