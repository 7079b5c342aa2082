"""Forging a privacy ledger: each forgery of issue 16 against `privagg train` ledgers.

The forger holds the ledger file but not the operator's signing key (unless the test says
the operator itself lies). Every forgery is made the strong way: the forger re-computes the
ε of the edited rows with the ledger's own backend and re-chains every hash after them, so
only a signature checked against a *pinned* key, the published head line or the
consistency replay can catch it. Verdicts: exit 0 OK, 1 tampering / violation / strict
failure, 2 usage error (docs/accounting.md, "Auditing a run end to end").
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sec_stats
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from analysis import cli
from dp.budget import BudgetPolicy
from dp.calibrate import make_accountant
from dp.charging import min_contributors, noise_levels
from dp.errors import DPValueError
from dp.events import (
    DistributedSkellamCountsEvent,
    NoOpEvent,
    PoissonSampledEvent,
    event_from_dict,
)
from dp.ledger import (
    PrivacyLedger,
    Provenance,
    audit_ledger,
    canonical_bytes,
    head_message,
    public_key_hex,
    sha256_hex,
)
from dp.ledger.keys import load_signing_key

SMALL = ["--data", "synthetic", "--users", "40", "--items", "30", "--quiet", "--seed", "1"]
TRAIN = [*SMALL, "--model", "popfeat+fcf", "--rounds", "2", "--active-items", "10"]
TRAIN += ["--no-baselines", "--eval-every", "0"]


def _train(out: Path, *extra: str, key: Path | None = None) -> str:
    """Run `privagg train` and return its published line."""
    argv = ["train", *TRAIN, *extra, "--out", str(out)]
    if key is not None:
        argv += ["--signing-key", str(key)]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(argv) == 0
    lines = [x for x in buf.getvalue().splitlines() if x.startswith("publish ")]
    assert len(lines) == 1
    return lines[0].split(None, 1)[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Signed, unsigned and second runs by one operator key (made once for the module)."""
    base = tmp_path_factory.mktemp("forgery-runs")
    key_path = base / "operator.pem"
    from dp.ledger.keys import generate_signing_key

    generate_signing_key(key_path)
    signed = _train(base / "signed", key=key_path)
    unsigned = _train(base / "unsigned", "--unsigned")
    other = _train(base / "other", "--seed", "2", key=key_path)
    return {
        "base": base,
        "key_path": key_path,
        "key": load_signing_key(key_path),
        "pub": (Path(str(key_path) + ".pub")).read_text().strip(),
        "signed": (base / "signed" / "ledger.sqlite", signed),
        "unsigned": (base / "unsigned" / "ledger.sqlite", unsigned),
        "other": (base / "other" / "ledger.sqlite", other),
    }


def _copy(runs: dict[str, Any], name: str, dest: Path) -> tuple[Path, str]:
    src, line = runs[name]
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / "ledger.sqlite"
    shutil.copy(src, target)
    return target, line


def audit(path: Path, *extra: str) -> int:
    sec_stats.add("attack_attempts")
    return cli.main(["audit", str(path), *extra])


# --------------------------------------------------------------------------- the forger
Body = dict[str, Any]


def rewrite(
    path: Path,
    *,
    edit: Callable[[Body], Body | None] | None = None,
    edit_meta: Callable[[Body], None] | None = None,
    key: Ed25519PrivateKey | None = None,
    keep_rows: int | None = None,
) -> None:
    """Re-write a ledger as a careful forger would: edit rows (``None`` drops one), keep the
    first ``keep_rows``, re-compute every ε with the ledger's backend, re-chain every hash,
    rewrite the head and (with ``key``) re-sign everything."""
    conn = sqlite3.connect(path)
    for name in ("rounds", "participations"):
        for op in ("u", "d"):
            conn.execute(f"DROP TRIGGER IF EXISTS {name}_append_only_{op}")
    (meta_text,) = conn.execute("SELECT body FROM meta").fetchone()
    meta = json.loads(meta_text)
    if edit_meta is not None:
        edit_meta(meta)
    if key is not None:
        meta["public_key"] = public_key_hex(key)
    rows = conn.execute("SELECT seq, body FROM rounds ORDER BY seq").fetchall()
    bodies = [json.loads(b) for _, b in rows]
    if keep_rows is not None:
        bodies = bodies[:keep_rows]
    if edit is not None:
        bodies = [b for b in (edit(dict(x)) for x in bodies) if b is not None]
    accountant = make_accountant(meta["backend"])
    prev = sha256_hex(b"privagg.ledger.genesis/1", canonical_bytes(meta))
    conn.execute("DELETE FROM rounds")
    kept = {b["seq"] for b in bodies}
    conn.execute(
        f"DELETE FROM participations WHERE seq NOT IN ({','.join(map(str, kept)) or '-1'})"
    )
    for b in bodies:
        accountant.compose(event_from_dict(b["charged_event"]))
        bracket = accountant.get_epsilon_bracket(meta["policy"]["delta"])
        b["cumulative_epsilon"] = bracket.epsilon_upper
        b["epsilon_lower"] = bracket.epsilon_lower
        b["backend"] = bracket.backend
        text = canonical_bytes(b).decode()
        row_hash = sha256_hex(bytes.fromhex(prev), text.encode())
        sig = key.sign(bytes.fromhex(row_hash)).hex() if key is not None else None
        conn.execute(
            "INSERT INTO rounds (seq, body, prev_hash, row_hash, signature) VALUES (?,?,?,?,?)",
            (b["seq"], text, prev, row_hash, sig),
        )
        prev = row_hash
    conn.execute("UPDATE meta SET body = ?", (json.dumps(meta, sort_keys=True),))
    head_sig = key.sign(head_message(len(bodies), prev)).hex() if key is not None else None
    conn.execute(
        "UPDATE head SET count = ?, head_hash = ?, signature = ?", (len(bodies), prev, head_sig)
    )
    conn.commit()
    conn.close()


def more_noise(b: Body) -> Body:
    """Every release's noise multiplied by 50 on paper: ε falls by orders of magnitude."""

    def scale(d: Any) -> Any:
        if isinstance(d, dict):
            out = {k: scale(v) for k, v in d.items()}
            if "local_variance" in d:
                out["local_variance"] = d["local_variance"] * 2500.0
            if "local_sigma" in d:
                out["local_sigma"] = d["local_sigma"] * 50.0
            return out
        if isinstance(d, list):
            return [scale(v) for v in d]
        return d

    b["event"] = scale(b["event"])
    b["charged_event"] = scale(b["charged_event"])
    return rederive(b)


def rederive(b: Body) -> Body:
    """Re-derive the noise fields of a row from its (edited) events, as the writer would."""
    event, charged = event_from_dict(b["event"]), event_from_dict(b["charged_event"])
    b["min_contributors"] = min_contributors(event)
    b["planned_noise"] = noise_levels(event)
    b["realized_noise"] = noise_levels(charged) if b["status"] == "released" else []
    return b


# --------------------------------------------------------------------------- forgeries
def test_forgery_rechain_unsigned_ledger(runs: dict[str, Any], tmp_path: Path) -> None:
    """Noise ×50 and re-chained: an unsigned ledger cannot prove who wrote it, so only a
    strict audit, a pinned key or the published line catches it; a signed one fails."""
    path, line = _copy(runs, "unsigned", tmp_path)
    before = audit_ledger(path).final_epsilon
    rewrite(path, edit=more_noise)
    forged = audit_ledger(path)
    assert forged.final_epsilon < before / 10  # the forgery is real
    assert forged.ok and forged.key_status == "unsigned" and not forged.strict_ok
    assert audit(path) == 0
    assert audit(path, "--strict") == 1
    assert audit(path, "--public-key", runs["pub"]) == 1
    assert audit(path, "--expected-head", line) == 1
    signed, _ = _copy(runs, "signed", tmp_path / "second")
    rewrite(signed, edit=more_noise)  # no key: the old signatures no longer match
    assert audit(signed) == 1
    assert audit_ledger(signed).tampered


def test_forgery_rekey_and_resign(runs: dict[str, Any], tmp_path: Path) -> None:
    """An attacker swaps in its own key and re-signs everything: self-consistent, but not
    the pinned key."""
    path, line = _copy(runs, "signed", tmp_path)
    rewrite(path, edit=more_noise, key=Ed25519PrivateKey.generate())
    report = audit_ledger(path)
    assert report.ok and report.key_status == "self-signed: not verified"
    assert audit(path) == 0  # nothing pinned: reported, not proved
    assert audit(path, "--strict") == 1
    assert audit(path, "--public-key", runs["pub"]) == 1
    assert audit(path, "--expected-head", line) == 1
    trusted = tmp_path / "trusted.txt"
    trusted.write_text(f"# operator\n{runs['pub']}\n")
    assert audit(path, "--trusted-keys", str(trusted)) == 1
    pinned = audit_ledger(path, public_key=runs["pub"])
    assert pinned.tampered and "not a pinned key" in pinned.problems[0]


def test_forgery_strip_signatures(runs: dict[str, Any], tmp_path: Path) -> None:
    path, line = _copy(runs, "signed", tmp_path)

    def unsign(meta: Body) -> None:
        meta["public_key"] = None

    rewrite(path, edit=more_noise, edit_meta=unsign)
    assert audit_ledger(path).key_status == "unsigned"
    assert audit(path, "--public-key", runs["pub"]) == 1
    assert audit(path, "--strict") == 1
    assert audit(path, "--expected-head", line) == 1


def test_forgery_truncate_with_head_rewritten(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = _copy(runs, "signed", tmp_path)
    rows = audit_ledger(path).rows
    rewrite(path, keep_rows=rows - 1)  # head rewritten, but its signature cannot be
    assert audit(path, "--public-key", runs["pub"]) == 1
    unsigned, uline = _copy(runs, "unsigned", tmp_path / "second")
    rewrite(unsigned, keep_rows=rows - 1)
    assert audit_ledger(unsigned).ok  # the file alone is consistent…
    capsys.readouterr()
    assert audit(unsigned, "--expected-head", uline) == 1  # …the published line is not
    assert "truncated or rolled back" in capsys.readouterr().out


def test_forgery_relabel_released_as_aborted(runs: dict[str, Any], tmp_path: Path) -> None:
    """Released FCF rounds relabelled 'aborted' (charged nothing) and re-chained."""
    path, _ = _copy(runs, "signed", tmp_path)

    def relabel(b: Body) -> Body:
        if b["round"] > 1:
            b["status"] = "aborted"
            b["charged_event"] = NoOpEvent().to_dict()
        return rederive(b)

    rewrite(path, edit=relabel)
    assert audit(path, "--public-key", runs["pub"]) == 1  # no key: signatures break
    # the operator itself lies (re-signs with its own key): the survivors and participants
    # it left in the rows make the relabelled rounds impossible
    liar, _ = _copy(runs, "signed", tmp_path / "second")
    rewrite(liar, edit=relabel, key=runs["key"])
    report = audit_ledger(liar, public_key=runs["pub"])
    assert report.signatures_verified
    assert any(f.kind == "impossible" and "relabelled" in f.message for f in report.findings)
    assert audit(liar, "--public-key", runs["pub"]) == 1


def test_forgery_impossible_counts(runs: dict[str, Any], tmp_path: Path) -> None:
    """10,000 guaranteed noise shares from a cohort of 10 (ε 0.14 instead of 6.5): the writer
    refuses it, and a signed row saying so is an impossible finding."""
    key = runs["key"]
    path = tmp_path / "l.sqlite"
    counts = DistributedSkellamCountsEvent(
        max_ones=20,
        local_variance=4.0,
        dimension=30,
        min_contributors=10,
        expected_contributors=10,
    )
    ledger = PrivacyLedger.create(
        path,
        policy=BudgetPolicy(delta=1e-5, target_epsilon=10.0),
        signing_key=key,
        provenance=Provenance("secure", "secagg-full", "honest-but-curious"),
    )
    inflated = PoissonSampledEvent(
        1.0,
        DistributedSkellamCountsEvent(
            max_ones=20,
            local_variance=4.0,
            dimension=30,
            min_contributors=10_000,
            expected_contributors=10_000,
        ),
    )
    with pytest.raises(DPValueError, match="noise shares"):
        ledger.record_round(round_index=0, event=inflated, cohort_size=10)
    ledger.record_round(round_index=0, event=counts, cohort_size=10)
    ledger.close()
    honest = audit_ledger(path, public_key=runs["pub"]).final_epsilon

    def inflate(b: Body) -> Body:
        b["event"] = b["charged_event"] = inflated.to_dict()
        return rederive(b)

    rewrite(path, edit=inflate, key=key)  # the operator signs its own lie
    report = audit_ledger(path, public_key=runs["pub"])
    assert report.signatures_verified and report.final_epsilon < honest / 10
    assert any(
        f.kind == "impossible" and "10000 noise shares" in f.message for f in report.findings
    )
    assert audit(path, "--public-key", runs["pub"]) == 1


@pytest.mark.parametrize(
    ("flag", "shown"),
    [("--simulation-noise", "noise: simulated"), ("--secagg=off", "aggregation: secagg-off")],
)
def test_how_the_release_was_made_fails_strict(
    runs: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    shown: str,
) -> None:
    """A simulated-noise run and a SecAgg-off run are shown as such and fail --strict."""
    line = _train(tmp_path / "run", flag, key=runs["key_path"])
    path = tmp_path / "run" / "ledger.sqlite"
    pin = ["--public-key", runs["pub"], "--expected-head", line]
    capsys.readouterr()
    assert audit(path, *pin) == 0
    out = capsys.readouterr().out
    assert shown in out and "signatures: verified" in out
    assert audit(path, *pin, "--strict") == 1
    assert "STRICT:" in capsys.readouterr().out
    honest_path, honest_line = runs["signed"]
    assert (
        audit(honest_path, "--public-key", runs["pub"], "--expected-head", honest_line, "--strict")
        == 0
    )


def test_query_and_fragment_characters_in_the_path(runs: dict[str, Any], tmp_path: Path) -> None:
    """`good.sqlite?x` is not `good.sqlite`, `tam#per.sqlite` is that file, and the audit
    creates or changes nothing."""
    src, _ = runs["signed"]
    good = tmp_path / "good.sqlite"
    shutil.copy(src, good)
    hashed = tmp_path / "tam#per.sqlite"
    shutil.copy(src, hashed)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    assert audit(Path(str(good) + "?x"), "--public-key", runs["pub"]) == 2
    assert audit(hashed, "--public-key", runs["pub"]) == 0
    assert audit(tmp_path / "tam", "--public-key", runs["pub"]) == 2
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    assert after == before  # no `tam`, no journal, no change


def test_replacement_by_another_run(
    runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another run's complete, correctly signed ledger put in this run's place."""
    _, line = runs["signed"]
    other, _ = _copy(runs, "other", tmp_path)
    assert audit(other, "--public-key", runs["pub"]) == 0  # a fine ledger…
    capsys.readouterr()
    assert audit(other, "--public-key", runs["pub"], "--expected-head", line) == 1
    assert "replaced by another run" in capsys.readouterr().out


def test_published_prefix_passes_after_appends(runs: dict[str, Any], tmp_path: Path) -> None:
    """A line published earlier still matches once the operator appended rows."""
    path, line = _copy(runs, "signed", tmp_path)
    ledger = PrivacyLedger.open(path, signing_key=runs["key"])
    ledger.record_round(round_index=99, event=NoOpEvent(), cohort_size=0, status="aborted")
    ledger.close()
    assert audit(path, "--public-key", runs["pub"], "--expected-head", line) == 0
    head = line.split("head=")[1].split()[0]
    assert audit(path, "--expected-head", head) == 1  # a bare head pins the last row


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--public-key", "zz"], "--public-key must be"),
        (["--expected-head", "abc"], "--expected-head"),
        (["--trusted-keys", "/nonexistent/keys"], "--trusted-keys"),
    ],
)
def test_bad_pins_are_usage_errors(
    runs: dict[str, Any], argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = runs["signed"]
    assert audit(path, *argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_json_into_a_closed_pipe_is_silent(runs: dict[str, Any]) -> None:
    """`privagg audit --json L | head` : the reader goes away, the audit says nothing."""
    path, _ = runs["signed"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "analysis.cli", "audit", "--json", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the audit writes anything
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) in (0, 1)
    assert "Broken pipe" not in err and "Traceback" not in err and err == ""
