"""The digits example runs end to end (one round of each training) and writes its report
under ``--out`` only."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

pytest.importorskip(
    "sklearn", reason="scikit-learn is not installed (pip install 'privagg[examples]')"
)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits.py"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")
def test_digits_example_reports_every_row(tmp_path: Path) -> None:
    main = runpy.run_path(str(EXAMPLE))["main"]
    assert main(["--rounds", "1", "--seed", "1", "--secagg", "full", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "digits.json").read_text())
    rows = {row["training"]: row for row in report["rows"]}
    assert set(rows) == {
        "federated, non-private",
        "federated, ε = 8",
        "federated, ε = 1",
        "central, non-federated",
    }
    assert rows["federated, ε = 8"]["epsilon"] <= 8.0
    assert rows["federated, ε = 1"]["epsilon"] <= 1.0
    assert rows["federated, non-private"]["epsilon"] is None
    assert rows["central, non-federated"]["test_accuracy"] > 0.9
    assert report["clients"] == 100 and report["dropout"] == 0.1
    assert [p.name for p in tmp_path.iterdir()] == ["digits.json"]
