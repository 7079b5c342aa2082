"""``privagg study``: the four efficiency studies behind one command and their index."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from analysis.cli import main
from analysis.commands import study


def test_every_study_module_has_the_run_entry_point() -> None:
    for name in study.STUDIES:  # re-exported from analysis.studies
        module = importlib.import_module(f"analysis.studies.{name}")
        assert callable(module.run)


def test_index_holds_exactly_the_reports_that_exist(tmp_path: Path) -> None:
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "report_devices.md").write_text("# Devices\n\nbody\n")
    study._index(tmp_path)
    index = (tmp_path / "report.md").read_text()
    assert "## Devices\n\nbody" in index  # included, headings one level down
    assert "report_sampling.md" not in index  # nothing for a report that is absent
    assert "privagg study all" in index


def test_unknown_study_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["study", "everything"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
