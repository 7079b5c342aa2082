"""Issue 15, observation 9: the neighbouring relation of every ε is named, and the one the
accountant does not prove is refused.

privagg's distributed-DP accountant treats the neighbour of a dataset as the same cohort
with one user's history replaced by zero while that user's own noise share stays in the sum
(zero-out, i.e. replace-one with public participation: the fixed-contributor relation of
Kairouz-Liu-Steinke 2021 and Agarwal-Kairouz-Liu 2021). Under literal add/remove the removed
user's noise share is missing too; the attack below shows that this alone is visible in
the released sum, so an add/remove claim for distributed noise would be false.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import sec_stats

from analysis import cli
from dp.ledger import audit_ledger

SMALL = ["--data", "synthetic", "--users", "40", "--items", "30", "--quiet", "--seed", "1"]
SMALL += ["--no-baselines", "--rounds", "1", "--unsigned"]


def _train(out: Path, *extra: str) -> tuple[int, str, str]:
    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        code = cli.main(["train", *SMALL, *extra, "--out", str(out)])
    return code, buf.getvalue(), err.getvalue()


def test_add_remove_is_refused_for_distributed_noise(tmp_path: Path) -> None:
    code, _, err = _train(tmp_path / "run", "--adjacency", "add-remove")
    assert code == 2
    assert "noise share" in err and "zero-out" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_zero_out_is_named_in_card_ledger_and_audit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _train(tmp_path / "run")
    assert code == 0
    assert "adjacency     user-level zero-out" in out and "add/remove" not in out
    card = json.loads((tmp_path / "run" / "summary.json").read_text())["report_card"]
    assert card["adjacency"].startswith("user-level zero-out")
    assert "Kairouz-Liu-Steinke 2021" in card["adjacency"]
    conn = sqlite3.connect(tmp_path / "run" / "ledger.sqlite")
    (meta,) = conn.execute("SELECT body FROM meta").fetchone()
    conn.close()
    meta_d = json.loads(meta)
    assert meta_d["provenance"]["adjacency"] == "zero-out"
    assert meta_d["adjacency"].startswith("user-level zero-out")
    assert cli.main(["audit", str(tmp_path / "run" / "ledger.sqlite")]) == 0
    assert "adjacency: user-level zero-out" in capsys.readouterr().out
    doc = (Path(__file__).resolve().parents[2] / "docs" / "accounting.md").read_text()
    assert "zero-out" in doc and "add-remove" in doc


def test_central_noise_is_charged_under_add_remove(tmp_path: Path) -> None:
    """A trusted server's noise does not depend on who took part: the same ε holds under
    add/remove, and the ledger says which relation it was charged under."""
    code_ar, _, _ = _train(tmp_path / "ar", "--privacy", "central", "--adjacency", "add-remove")
    code_zo, _, _ = _train(tmp_path / "zo", "--privacy", "central")
    assert code_ar == code_zo == 0
    ar = audit_ledger(tmp_path / "ar" / "ledger.sqlite")
    zo = audit_ledger(tmp_path / "zo" / "ledger.sqlite")
    assert ar.ok and zo.ok
    assert ar.provenance["adjacency"] == {"add-remove": ar.rows}
    assert ar.final_epsilon == pytest.approx(zo.final_epsilon, rel=1e-9)


def test_missing_noise_share_is_visible_in_the_sum() -> None:
    """Why add/remove is refused for distributed noise: with n vs n-1 noise shares the
    sum's variance differs on every coordinate, and over d coordinates that is a test far
    more powerful than the charged ε allows.

    n = 21 shares of unit variance, d = 20 000 coordinates, no data at all: the attacker
    guesses "the user took part" when the sample variance exceeds 20.5. A (1, 1e-5)-DP
    release bounds TPR by e·FPR + δ; the measured TPR/FPR is far above it.
    """
    sim = np.random.default_rng(0)  # an attack simulation: no privacy claim rests on it
    n, d, trials = 21, 20_000, 200
    with_user = sim.standard_normal((trials, d)) * math.sqrt(n)
    without = sim.standard_normal((trials, d)) * math.sqrt(n - 1)
    tpr = float(np.mean(with_user.var(axis=1) > n - 0.5))
    fpr = float(np.mean(without.var(axis=1) > n - 0.5))
    sec_stats.add("scenarios")
    sec_stats.add("attack_attempts", 2 * trials)
    assert tpr > 0.9 and fpr < 0.1
    assert tpr > math.e * fpr + 1e-5  # an ε = 1 claim under add/remove would be false
