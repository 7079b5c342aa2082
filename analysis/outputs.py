"""Where commands write their results: ``--out``, by default a fresh folder under ``runs/``.

No command writes into ``docs/`` unless asked: the committed results are regenerated only by
an explicit ``--out docs/...``, and a smoke run (``--quick``) is refused there.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from analysis.errors import AnalysisError

RUNS_DIR = "runs"


def fresh_out(command: str, *, root: str | os.PathLike[str] = RUNS_DIR) -> str:
    """A folder that does not exist yet: ``runs/<command>-<UTC time>[-k]``."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{command}-{stamp}"
    candidate, k = base, 1
    while candidate.exists():
        k += 1
        candidate = base.with_name(f"{base.name}-{k}")
    return str(candidate)


def is_under_docs(out: str | os.PathLike[str]) -> bool:
    """Whether ``out`` lies in a ``docs`` folder (the committed results live there)."""
    return "docs" in Path(os.path.abspath(out)).parts


def refuse_smoke_run_in_docs(out: str | os.PathLike[str], command: str) -> None:
    """A ``--quick`` run's figures are not the committed ones: never over them."""
    if is_under_docs(out):
        raise AnalysisError(
            f"{command} --quick is a smoke run; refusing to write it into {out} (the "
            "committed results): drop --quick or give --out outside docs/"
        )
