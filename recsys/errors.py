"""Typed errors of the ``recsys`` package: one small hierarchy rooted at :class:`RecsysError`."""

from __future__ import annotations


class RecsysError(Exception):
    """Base class of every error raised by ``recsys``."""


class ConfigError(RecsysError, ValueError):
    """A model, split, metric or trainer argument is out of range or inconsistent."""


class DataFormatError(RecsysError, ValueError):
    """A ratings or metadata file is malformed; names the file and the 1-based line."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class DataNotFoundError(RecsysError, FileNotFoundError):
    """No ratings file of a known format was found at the given path."""


class ReleaseAborted(RecsysError):
    """A round could not be released (secure aggregation aborted, too few devices); the
    server model and the ledger are left as they were before the round."""
