"""Privacy ledger: replay, tamper evidence, budgets, dropouts, and ``privagg audit``."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from analysis import cli
from dp.budget import BudgetPolicy
from dp.calibrate import make_accountant
from dp.errors import DPValueError, LedgerError, PrivacyBudgetExceeded
from dp.events import (
    DistributedDiscreteGaussianEvent,
    GaussianEvent,
    NoOpEvent,
    PoissonSampledEvent,
)
from dp.ledger import LedgerSigner, PrivacyLedger, audit_ledger

DELTA = 1e-5
GAUSS = PoissonSampledEvent(sampling_probability=0.05, event=GaussianEvent(noise_multiplier=1.0))
DDG = PoissonSampledEvent(
    sampling_probability=0.05,
    event=DistributedDiscreteGaussianEvent(
        l2_sensitivity=300.0,
        l1_sensitivity=300.0 * 16,
        local_sigma=100.0,
        dimension=256,
        min_contributors=8,
        expected_contributors=10,
    ),
)


def _key_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def make_ledger(
    path: Path,
    *,
    rounds: int = 6,
    key: Ed25519PrivateKey | LedgerSigner | None = None,
    policy: BudgetPolicy | None = None,
    event: PoissonSampledEvent = GAUSS,
) -> PrivacyLedger:
    ledger = PrivacyLedger.create(
        path, policy=policy or BudgetPolicy(delta=DELTA, target_epsilon=10.0), signing_key=key
    )
    for r in range(rounds):
        users = [f"user{(r * 3 + i) % 17}" for i in range(5)]
        ledger.record_round(
            round_index=r, event=event, cohort_size=5, survivors=5, participants=users
        )
    return ledger


def audit_exit(path: Path, *extra: str) -> int:
    return cli.main(["audit", str(path), *extra])


def tamper(path: Path, *sql: str) -> None:
    conn = sqlite3.connect(path)
    for name in (
        "rounds_append_only_u",
        "rounds_append_only_d",
        "participations_append_only_u",
        "participations_append_only_d",
    ):
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")
    for stmt in sql:
        conn.execute(stmt)
    conn.commit()
    conn.close()


def test_replay_gives_the_recorded_epsilon_exactly(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path / "l.db")
    entries = ledger.entries()
    acc = make_accountant("auto")
    for e in entries:
        acc.compose(e.charged)
        assert acc.get_epsilon(DELTA) == e.cumulative_epsilon
    assert ledger.epsilon == entries[-1].cumulative_epsilon > 0
    report = audit_ledger(tmp_path / "l.db")
    assert report.ok, report.problems + report.violations
    assert [r.replayed for r in report.rounds] == [e.cumulative_epsilon for e in entries]
    # the independent backends bracket every recorded value
    for r in report.rounds:
        assert r.independent_lower is not None and r.independent_upper is not None
        assert r.independent_lower <= r.recorded <= r.independent_upper
    ledger.close()


def test_clean_ledger_audits_ok_text_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = Ed25519PrivateKey.generate()
    make_ledger(tmp_path / "l.db", key=key).close()
    assert audit_exit(tmp_path / "l.db", "--public-key", _key_hex(key)) == 0
    out = capsys.readouterr().out
    assert "result: OK" in out and "signatures: verified" in out
    assert audit_exit(tmp_path / "l.db", "--json", "--delta", "1e-6") == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["ok"] is True and payload["rows"] == 6
    assert payload["epsilon_at_delta"]["epsilon"] > payload["final_epsilon"]


TAMPERS: dict[str, Callable[[Path], None]] = {
    "edit-epsilon": lambda p: tamper(
        p,
        'UPDATE rounds SET body = replace(body, \'"status":"released"\', '
        '\'"status":"aborted"\') WHERE seq = 2',
    ),
    "delete-middle": lambda p: tamper(p, "DELETE FROM rounds WHERE seq = 2"),
    "delete-last": lambda p: tamper(p, "DELETE FROM rounds WHERE seq = 5"),
    "delete-first": lambda p: tamper(p, "DELETE FROM rounds WHERE seq = 0"),
    "reorder": lambda p: tamper(
        p,
        "UPDATE rounds SET seq = -1 WHERE seq = 1",
        "UPDATE rounds SET seq = 1 WHERE seq = 2",
        "UPDATE rounds SET seq = 2 WHERE seq = -1",
    ),
    "drop-participation": lambda p: tamper(
        p, "DELETE FROM participations WHERE rowid = (SELECT min(rowid) FROM participations)"
    ),
    "add-participation": lambda p: tamper(
        p, "INSERT INTO participations (seq, user_id) VALUES (3, 'mallory')"
    ),
    "raise-budget": lambda p: tamper(
        p,
        "UPDATE meta SET body = replace(body, '\"target_epsilon\": 10.0', "
        "'\"target_epsilon\": 99.0')",
    ),
    "drop-head": lambda p: tamper(p, "DELETE FROM head"),
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_tampering_is_detected(tmp_path: Path, name: str) -> None:
    path = tmp_path / "l.db"
    make_ledger(path).close()
    assert audit_exit(path) == 0
    TAMPERS[name](path)
    report = audit_ledger(path)
    assert report.tampered and not report.ok
    assert audit_exit(path) == 1
    with pytest.raises(LedgerError):
        PrivacyLedger.open(path)


def test_recomputed_chain_is_caught_by_signatures(tmp_path: Path) -> None:
    """An attacker without the key edits a row and recomputes every hash after it."""
    from dp.ledger import head_message as _head_message
    from dp.ledger import sha256_hex as _sha256_hex

    key = Ed25519PrivateKey.generate()
    path = tmp_path / "l.db"
    make_ledger(path, key=key).close()
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT seq, body, prev_hash FROM rounds ORDER BY seq").fetchall()
    conn.close()
    prev = rows[0][2]
    statements = []
    for seq, body, _ in rows:
        if seq == 3:
            data = json.loads(body)
            data["cumulative_epsilon"] = data["cumulative_epsilon"] / 2
            body = json.dumps(data, sort_keys=True, separators=(",", ":"))
        new_hash = _sha256_hex(bytes.fromhex(prev), body.encode())
        statements.append(
            f"UPDATE rounds SET body = '{body}', prev_hash = '{prev}', row_hash = '{new_hash}' "
            f"WHERE seq = {seq}"
        )
        prev = new_hash
    statements.append(f"UPDATE head SET head_hash = '{prev}'")
    tamper(path, *statements)
    assert _head_message(6, prev)  # the attacker cannot sign this without the key
    report = audit_ledger(path)
    assert report.tampered
    assert any("signature" in p for p in report.problems)
    assert audit_exit(path) == 1
    # unsigned ledger: the chain is consistent again, but the replayed ε disagrees
    path2 = tmp_path / "u.db"
    make_ledger(path2).close()
    conn = sqlite3.connect(path2)
    rows = conn.execute("SELECT seq, body, prev_hash FROM rounds ORDER BY seq").fetchall()
    conn.close()
    prev = rows[0][2]
    statements = []
    for seq, body, _ in rows:
        if seq == 3:
            data = json.loads(body)
            data["cumulative_epsilon"] = data["cumulative_epsilon"] / 2
            body = json.dumps(data, sort_keys=True, separators=(",", ":"))
        new_hash = _sha256_hex(bytes.fromhex(prev), body.encode())
        statements.append(
            f"UPDATE rounds SET body = '{body}', prev_hash = '{prev}', row_hash = '{new_hash}' "
            f"WHERE seq = {seq}"
        )
        prev = new_hash
    statements.append(f"UPDATE head SET head_hash = '{prev}'")
    tamper(path2, *statements)
    report = audit_ledger(path2)
    assert not report.tampered
    assert any("replay" in v for v in report.violations)
    assert audit_exit(path2) == 1


def test_wrong_public_key_fails(tmp_path: Path) -> None:
    make_ledger(tmp_path / "l.db", key=Ed25519PrivateKey.generate()).close()
    other = _key_hex(Ed25519PrivateKey.generate())
    assert audit_exit(tmp_path / "l.db", "--public-key", other) == 1
    make_ledger(tmp_path / "u.db").close()
    assert audit_exit(tmp_path / "u.db", "--public-key", other) == 1


def test_expected_head_detects_rollback(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path / "l.db")
    head = ledger.head_hash
    ledger.close()
    assert audit_exit(tmp_path / "l.db", "--expected-head", head) == 0
    assert audit_exit(tmp_path / "l.db", "--expected-head", "00" * 32) == 1


def test_not_a_ledger_is_a_usage_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    assert audit_exit(junk) == 2
    assert audit_exit(tmp_path / "missing.db") == 2


def test_round_over_budget_is_refused_before_sampling(tmp_path: Path) -> None:
    policy = BudgetPolicy(delta=DELTA, target_epsilon=1.0)
    ledger = PrivacyLedger.create(tmp_path / "l.db", policy=policy)
    sampled: list[int] = []

    def run_round(r: int) -> None:
        ledger.check_round(GAUSS)  # before any client is sampled
        sampled.append(r)
        ledger.record_round(round_index=r, event=GAUSS, cohort_size=5, survivors=5)

    refused_at = None
    for r in range(200):
        try:
            run_round(r)
        except PrivacyBudgetExceeded:
            refused_at = r
            break
    assert refused_at is not None and sampled == list(range(refused_at))
    assert ledger.epsilon <= 1.0
    trial = ledger.accountant
    trial.compose(GAUSS)
    assert trial.get_epsilon(DELTA) > 1.0
    ledger.close()
    assert audit_exit(tmp_path / "l.db") == 0


def test_budget_overrun_recorded_anyway_is_a_violation(tmp_path: Path) -> None:
    """A trainer that skips check_round cannot hide it: audit fails."""
    policy = BudgetPolicy(delta=DELTA, target_epsilon=0.5)
    ledger = PrivacyLedger.create(tmp_path / "l.db", policy=policy)
    for r in range(40):
        ledger.record_round(round_index=r, event=GAUSS, cohort_size=5, survivors=5)
    ledger.close()
    report = audit_ledger(tmp_path / "l.db")
    assert not report.tampered and any("exceeds the budget" in v for v in report.violations)
    assert audit_exit(tmp_path / "l.db") == 1


def test_per_user_budget_excludes_frequent_users(tmp_path: Path) -> None:
    policy = BudgetPolicy(delta=DELTA, user_epsilon=15.0, exclude_users=True)
    ledger = PrivacyLedger.create(tmp_path / "l.db", policy=policy)
    excluded_at = None
    for r in range(100):
        cohort = ["alice", f"u{r}"]  # alice is sampled every round, the others once
        adm = ledger.admit(cohort, GAUSS)
        if "alice" in adm.excluded:
            excluded_at = r
            assert adm.admitted == (f"u{r}",)
            break
        ledger.record_round(
            round_index=r, event=GAUSS, cohort_size=2, survivors=2, participants=adm.admitted
        )
    assert excluded_at is not None and excluded_at > 1
    assert ledger.user_epsilon("alice") <= 15.0
    assert ledger.user_epsilon("u0") < ledger.user_epsilon("alice")  # sampled less, spends less
    ledger.close()
    assert audit_exit(tmp_path / "l.db") == 0
    strict = BudgetPolicy(delta=DELTA, user_epsilon=15.0, exclude_users=False)
    other = PrivacyLedger.create(tmp_path / "s.db", policy=strict)
    with pytest.raises(PrivacyBudgetExceeded):
        for r in range(100):
            other.admit(["alice"], GAUSS)
            other.record_round(
                round_index=r, event=GAUSS, cohort_size=1, survivors=1, participants=["alice"]
            )
    other.close()


def test_dropout_below_plan_is_charged_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "l.db"
    ledger = PrivacyLedger.create(path, policy=BudgetPolicy(delta=DELTA, target_epsilon=50.0))
    ok = ledger.record_round(round_index=0, event=DDG, cohort_size=10, survivors=9)
    low = ledger.record_round(round_index=1, event=DDG, cohort_size=10, survivors=4)
    assert not ok.below_plan and ok.charged == DDG
    assert low.below_plan and low.backend == "discrete-pld"
    assert low.charged.event.min_contributors == 4  # type: ignore[attr-defined]
    assert (
        low.body["realized_noise"][0]["central_std"] < low.body["planned_noise"][0]["central_std"]
    )
    # charged for the realized noise: more than a planned round would cost
    planned = make_accountant("auto").compose(DDG).compose(DDG).get_epsilon(DELTA)
    assert ledger.epsilon > planned
    ledger.close()
    assert audit_exit(path) == 0
    assert "below plan" in capsys.readouterr().out
    assert audit_exit(path, "--strict") == 1


def test_undercharged_dropout_is_a_violation(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    ledger = PrivacyLedger.create(path, policy=BudgetPolicy(delta=DELTA))
    ledger.record_round(round_index=0, event=DDG, cohort_size=10, survivors=4)
    ledger.close()
    # the writer lies: survivors edited to look within plan, chain recomputed (unsigned)
    conn = sqlite3.connect(path)
    (body,) = conn.execute("SELECT body FROM rounds WHERE seq = 0").fetchone()
    conn.close()
    data = json.loads(body)
    data["survivors"] = 3
    from dp.ledger import LedgerMeta, canonical_bytes
    from dp.ledger import read_meta as _read_meta
    from dp.ledger import sha256_hex as _sha256_hex

    conn = sqlite3.connect(path)
    meta: LedgerMeta = _read_meta(conn)
    conn.close()
    new_body = canonical_bytes(data).decode()
    new_hash = _sha256_hex(bytes.fromhex(meta.genesis_hash()), new_body.encode())
    tamper(
        path,
        f"UPDATE rounds SET body = '{new_body}', row_hash = '{new_hash}' WHERE seq = 0",
        f"UPDATE head SET head_hash = '{new_hash}'",
    )
    report = audit_ledger(path)
    assert any("under-charged" in v for v in report.violations)


def test_aborted_round_costs_nothing(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path / "l.db", rounds=1)
    before = ledger.epsilon
    e = ledger.record_round(round_index=1, event=GAUSS, cohort_size=5, status="aborted")
    assert e.charged == NoOpEvent() and ledger.epsilon == before
    ledger.close()


def test_reopen_and_append_continues_the_chain(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "l.db"
    first = make_ledger(path, key=key, rounds=3)
    eps = first.epsilon
    first.close()
    with pytest.raises(LedgerError):
        PrivacyLedger.open(path)  # signed ledgers need the key to append
    with pytest.raises(LedgerError):
        PrivacyLedger.open(path, signing_key=Ed25519PrivateKey.generate())
    again = PrivacyLedger.open(path, signing_key=key)
    assert again.epsilon == eps
    again.record_round(round_index=3, event=GAUSS, cohort_size=5, survivors=5)
    assert again.epsilon > eps
    again.close()
    assert audit_exit(path) == 0
    with pytest.raises(LedgerError):
        PrivacyLedger.create(path, policy=BudgetPolicy(delta=DELTA))


def test_rows_are_append_only_in_sqlite(tmp_path: Path) -> None:
    make_ledger(tmp_path / "l.db", rounds=1).close()
    conn = sqlite3.connect(tmp_path / "l.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM rounds")
    conn.close()


def test_bad_records_are_rejected_and_nothing_is_written(tmp_path: Path) -> None:
    from tests.dp.test_accounting_contract import MysteryEvent

    ledger = make_ledger(tmp_path / "l.db", rounds=1)
    with pytest.raises(DPValueError):
        ledger.record_round(round_index=1, event=GAUSS, cohort_size=-1)
    with pytest.raises(DPValueError):
        ledger.record_round(round_index=1, event=GAUSS, cohort_size=1, status="maybe")
    from dp.errors import UnsupportedEventError

    with pytest.raises(UnsupportedEventError):
        ledger.record_round(round_index=1, event=MysteryEvent(), cohort_size=1)
    assert len(ledger.entries()) == 1
    ledger.close()
    assert audit_exit(tmp_path / "l.db") == 0


def test_non_private_round_makes_epsilon_infinite(tmp_path: Path) -> None:
    from dp.events import NonPrivateEvent

    path = tmp_path / "l.db"
    ledger = make_ledger(path, rounds=1, policy=BudgetPolicy(delta=DELTA))
    ledger.record_round(round_index=1, event=NonPrivateEvent(), cohort_size=3)
    assert math.isinf(ledger.epsilon)
    ledger.close()
    assert audit_exit(path) == 0


def test_server_signing_key_from_secagg_is_accepted(tmp_path: Path) -> None:
    """The server's own Ed25519 key object (secagg.SigningKey) can sign the ledger."""
    import secagg

    key = secagg.SigningKey.generate()
    path = tmp_path / "l.db"
    make_ledger(path, rounds=2, key=key).close()
    assert audit_exit(path, "--public-key", key.public_bytes.hex()) == 0
    again = PrivacyLedger.open(path, signing_key=key)
    again.record_round(round_index=2, event=GAUSS, cohort_size=5, survivors=5)
    again.close()
    assert audit_ledger(path, public_key=key.public_bytes.hex()).signatures_verified
    # without a pinned key the signatures only show the file is self-consistent
    unpinned = audit_ledger(path)
    assert unpinned.ok and not unpinned.signatures_verified and not unpinned.strict_ok
    assert unpinned.key_status == "self-signed: not verified"


def test_per_user_epsilon_is_tight_with_full_participation(tmp_path: Path) -> None:
    """Everyone takes part in every round: each user's ε is the run's ε (the tight backend),
    not a loose RDP bound at an order tuned for another ε (issue 16: 9.24 printed for ε = 4)."""
    full = PoissonSampledEvent(sampling_probability=1.0, event=GaussianEvent(noise_multiplier=2.0))
    path = tmp_path / "l.db"
    ledger = PrivacyLedger.create(path, policy=BudgetPolicy(delta=DELTA, target_epsilon=10.0))
    users = [f"user{i}" for i in range(6)]
    for r in range(4):
        ledger.record_round(
            round_index=r, event=full, cohort_size=6, survivors=6, participants=users
        )
    ledger.close()
    report = audit_ledger(path)
    assert report.max_user_epsilon is not None
    assert report.max_user_epsilon == pytest.approx(report.final_epsilon, rel=1e-9)
    assert "pld backend" in report.user_epsilon_method
    # sampled users: no amplification for a known participant, yet never a vacuous number
    sampled = tmp_path / "s.db"
    make_ledger(sampled).close()
    rep = audit_ledger(sampled)
    assert rep.max_user_epsilon is not None and rep.final_epsilon < rep.max_user_epsilon < 20


def test_per_user_epsilon_under_the_filter_never_exceeds_the_target(tmp_path: Path) -> None:
    policy = BudgetPolicy(delta=DELTA, user_epsilon=4.0, exclude_users=True)
    path = tmp_path / "l.db"
    ledger = PrivacyLedger.create(path, policy=policy)
    quiet = PoissonSampledEvent(0.05, GaussianEvent(noise_multiplier=4.0))
    excluded = 0
    for r in range(40):
        adm = ledger.admit(["alice", f"u{r}"], quiet)
        excluded += len(adm.excluded)
        ledger.record_round(
            round_index=r, event=quiet, cohort_size=2, survivors=2, participants=adm.admitted
        )
    ledger.close()
    assert excluded > 0  # alice hit her budget
    report = audit_ledger(path)
    assert report.ok and report.max_user_epsilon is not None
    assert 0 < report.max_user_epsilon <= 4.0
    assert "Rényi filter" in report.user_epsilon_method


def test_consistency_findings_are_typed(tmp_path: Path) -> None:
    """Impossible counts written by a lying (key-holding) writer: typed findings, exit 1."""
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "l.db"
    ledger = PrivacyLedger.create(
        path, policy=BudgetPolicy(delta=DELTA, target_epsilon=10.0), signing_key=key
    )
    ledger.record_round(round_index=0, event=DDG, cohort_size=10, survivors=9)
    ledger.close()
    with pytest.raises(DPValueError):
        PrivacyLedger.open(path, signing_key=key).record_round(
            round_index=1, event=GAUSS, cohort_size=2, participants=["a", "b", "c"]
        )
    from dp.ledger import head_message, sha256_hex

    conn = sqlite3.connect(path)
    (body,) = conn.execute("SELECT body FROM rounds WHERE seq = 0").fetchone()
    (meta_text,) = conn.execute("SELECT body FROM meta").fetchone()
    conn.close()
    from dp.ledger import LedgerMeta, canonical_bytes

    data = json.loads(body)
    data["survivors"] = 12  # more survivors than the cohort
    new_body = canonical_bytes(data).decode()
    genesis = LedgerMeta.from_dict(json.loads(meta_text)).genesis_hash()
    row_hash = sha256_hex(bytes.fromhex(genesis), new_body.encode())
    tamper(
        path,
        f"UPDATE rounds SET body = '{new_body}', row_hash = '{row_hash}', "
        f"signature = '{key.sign(bytes.fromhex(row_hash)).hex()}' WHERE seq = 0",
        f"UPDATE head SET head_hash = '{row_hash}', "
        f"signature = '{key.sign(head_message(1, row_hash)).hex()}'",
    )
    report = audit_ledger(path, public_key=_key_hex(key))
    assert report.signatures_verified and not report.tampered
    kinds = {(f.kind, f.round_index) for f in report.findings}
    assert ("impossible", 0) in kinds and not report.ok
    assert audit_exit(path, "--public-key", _key_hex(key)) == 1


def test_train_signs_by_default_with_a_key_outside_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    small = ["train", "--data", "synthetic", "--users", "30", "--items", "20", "--quiet"]
    small += ["--no-baselines"]
    assert cli.main([*small, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    key = tmp_path / "cfg" / "privagg" / "ledger-key.pem"
    assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600
    assert "new key generated at" in out and "publish       privagg-ledger/2 run=" in out
    assert not any(p.suffix in (".pem", ".pub") for p in (tmp_path / "a").rglob("*"))
    pub = Path(str(key) + ".pub")
    assert audit_exit(tmp_path / "a" / "ledger.sqlite", "--public-key", str(pub)) == 0
    assert audit_exit(tmp_path / "a" / "ledger.sqlite", "--strict") == 1  # nothing pinned
    # generated once: the next run is signed by the same key
    assert cli.main([*small, "--out", str(tmp_path / "b")]) == 0
    assert "new key" not in capsys.readouterr().out
    assert audit_exit(tmp_path / "b" / "ledger.sqlite", "--public-key", str(pub), "--strict") == 0
    # a named key must exist; a key inside the published folder is refused
    assert (
        cli.main(
            [*small, "--signing-key", str(tmp_path / "nope.pem"), "--out", str(tmp_path / "c")]
        )
        == 2
    )
    (tmp_path / "d").mkdir()
    shutil.copy(key, tmp_path / "d" / "k.pem")
    assert (
        cli.main(
            [*small, "--signing-key", str(tmp_path / "d" / "k.pem"), "--out", str(tmp_path / "d")]
        )
        == 2
    )
    assert "inside the published run folder" in capsys.readouterr().err
    assert cli.main([*small, "--unsigned", "--out", str(tmp_path / "e")]) == 0
    assert "UNSIGNED" in capsys.readouterr().out
    assert audit_ledger(tmp_path / "e" / "ledger.sqlite").key_status == "unsigned"


def test_runs_generating_the_default_key_at_once_share_one_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep starts many trainings at once: each either generates the default key or,
    having lost the race, signs with the winner's; never a half-written or second key."""
    from concurrent.futures import ThreadPoolExecutor

    from dp.ledger.keys import default_key_path, resolve_signing_key

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    target = default_key_path()
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: resolve_signing_key(None, None), range(16)))
    assert len({key.public_hex for key in keys}) == 1
    assert sum(key.generated for key in keys) == 1
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".ledger-key-")]
