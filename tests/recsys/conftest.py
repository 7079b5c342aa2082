"""Shared fixtures of the recsys tests: the optional MovieLens 100K folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-100k"
ML100K_DIR = Path(os.environ.get("PRIVAGG_ML100K", str(_DEFAULT)))
ML100K_REASON = f"MovieLens 100K not found at {ML100K_DIR} (set PRIVAGG_ML100K to its folder)"


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """The MovieLens 100K folder, or skip with the reason when it is absent."""
    if not (ML100K_DIR / "u.data").exists():
        pytest.skip(ML100K_REASON)
    return ML100K_DIR
