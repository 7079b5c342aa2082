"""Bad input to public APIs and the CLI (one typed error, exit code 2, nothing lost) and
hygiene (H1-H3): no secret in logs, exception text or repr; secret holders refuse pickling;
the secure noise generator never touches ``numpy.random``.
"""

from __future__ import annotations

import ast
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import sec_stats

import dp
import secagg
from analysis import cli
from dp.budget import BudgetPolicy
from dp.errors import DPError
from dp.events import GaussianEvent, PoissonSampledEvent
from dp.ledger import PrivacyLedger, audit_ledger
from protocols import ProtocolError, SecAggClient, SecAggConfig, run_secagg

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "call",
    [
        lambda: dp.clip_l2(np.array([1.0, np.nan]), 1.0),
        lambda: dp.clip_l2(np.array([np.inf]), 1.0),
        lambda: dp.clip_l2(np.ones(3), 0.0),
        lambda: dp.clip_l2(np.ones(3), -1.0),
        lambda: dp.clip_l2("abc", 1.0),
        lambda: dp.central_gaussian(np.ones(3), l2_sensitivity=1.0, noise_multiplier=-1.0),
        lambda: dp.plan_distributed_dp(
            dimension=0,
            expected_contributors=10,
            min_contributors=5,
            clip_norm=1.0,
            noise_multiplier=1.0,
            bits=32,
        ),
        lambda: dp.plan_distributed_dp(
            dimension=16,
            expected_contributors=10,
            min_contributors=11,  # more honest survivors than clients: impossible
            clip_norm=1.0,
            noise_multiplier=1.0,
            bits=32,
        ),
        lambda: dp.epsilon(noise_multiplier=0.0, sampling_rate=0.1, steps=10, delta=1e-5),
        lambda: dp.epsilon(noise_multiplier=1.0, sampling_rate=0.1, steps=10, delta=-1e-5),
        lambda: dp.epsilon(noise_multiplier=1.0, sampling_rate=1.5, steps=10, delta=1e-5),
        lambda: BudgetPolicy(delta=0.0),
        lambda: GaussianEvent(noise_multiplier=float("nan")),
    ],
)
def test_sec_dp_api_rejects_bad_input_with_a_typed_error(call: object) -> None:
    sec_stats.add("fuzz_cases")
    with pytest.raises(DPError) as err:
        call()  # type: ignore[operator]
    assert str(err.value)  # one clear message


@pytest.mark.parametrize(
    "call",
    [
        lambda: SecAggConfig(4, 2),  # t <= n/2
        lambda: SecAggConfig(1, 1),  # n = 1 refused
        lambda: SecAggConfig(4, 5),  # impossible threshold
        lambda: run_secagg(np.ones((4, 3), dtype=np.float64), SecAggConfig(4, 3)),
        lambda: run_secagg(np.ones((0, 3), dtype=np.uint32), SecAggConfig(4, 3)),
        lambda: run_secagg(np.ones((4, 3, 1), dtype=np.uint32), SecAggConfig(4, 3)),
        lambda: SecAggClient(0, SecAggConfig(4, 3), np.ones(3, dtype=np.int64)),
    ],
)
def test_sec_protocol_api_rejects_bad_input_with_a_typed_error(call: object) -> None:
    sec_stats.add("fuzz_cases")
    with pytest.raises(ProtocolError) as err:
        call()  # type: ignore[operator]
    assert str(err.value)


@pytest.mark.parametrize(
    "argv",
    [
        ["epsilon", "-z", "-1", "-q", "0.1", "-T", "10", "-d", "1e-5"],
        ["epsilon", "-z", "1", "-q", "0.1", "-T", "10", "-d", "0"],
        ["epsilon", "-z", "nan", "-q", "0.1", "-T", "10", "-d", "1e-5"],
        ["calibrate", "-e", "-1", "-d", "1e-5", "-q", "0.1", "-T", "10"],
        ["audit", "/nonexistent/dir/ledger.db"],
        ["demo", "--secagg-only", "--clients", "1"],
        ["train", "--data", "/nonexistent/ratings.csv", "--out", "/nonexistent/out"],
    ],
)
def test_sec_cli_bad_input_exits_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    sec_stats.add("fuzz_cases")
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err and "Traceback" not in err


def test_sec_bad_round_does_not_lose_what_the_ledger_recorded(tmp_path: Path) -> None:
    """A refused record (bad arguments) leaves every earlier round intact and auditable."""
    path = tmp_path / "l.db"
    ledger = PrivacyLedger.create(path, policy=BudgetPolicy(delta=1e-5))
    event = PoissonSampledEvent(0.05, GaussianEvent(1.0))
    ledger.record_round(round_index=0, event=event, cohort_size=5, survivors=5)
    before = ledger.epsilon
    for bad in (
        {"round_index": 1, "event": event, "cohort_size": -1, "survivors": 5},
        {"round_index": 1, "event": event, "cohort_size": 5, "status": "maybe"},
        {"round_index": 1, "event": "not an event", "cohort_size": 5, "survivors": 5},
    ):
        with pytest.raises(DPError):
            ledger.record_round(**bad)  # type: ignore[arg-type]
        sec_stats.add("fuzz_cases")
    assert ledger.epsilon == before
    ledger.close()
    report = audit_ledger(path)
    assert report.ok and len(report.rounds) == 1


# ---------------------------------------------------------------------------- hygiene


def test_sec_no_secret_in_logs_exceptions_or_repr(caplog: pytest.LogCaptureFixture) -> None:
    """H1: a round with every logger at DEBUG; no seed, private key or input leaks into
    logs, reprs, abort replies or exception text."""
    from adversary import MaliciousServer

    from protocols.messages import UnmaskRequest

    caplog.set_level(logging.DEBUG)
    n = 5
    x = secagg.to_ring(np.full((n, 4), 0x5EC2E7, dtype=np.int64), 32)
    adv = MaliciousServer(SecAggConfig(n, 3), x)
    adv.run_to_unmask()
    secrets = []
    for client in adv.clients:
        assert client._seed is not None and client._mask_key is not None
        secrets += [client._seed, client._mask_key.private_bytes_for_sharing()]
    texts = [repr(c) for c in adv.clients]
    lie = adv.ask(0, UnmaskRequest(tuple(range(n)), (1,)))  # both lists: client 0 aborts
    texts += [repr(lie), repr(adv.clients[0])]
    adv.honest_stage(skip=frozenset({0}))
    texts.append(repr(adv.server.output()))
    try:
        run_secagg(x, SecAggConfig(n, 3), drop={"advertise": [0, 1, 2]})
    except ProtocolError as exc:
        texts += [str(exc), repr(exc)]
    texts += [repr(run_secagg(x, SecAggConfig(n, 3))), repr(dp.SecureRng()), caplog.text]
    blob = "\n".join(texts)
    for secret in secrets:
        assert secret.hex() not in blob and repr(secret) not in blob
    assert "5ec2e7" not in blob.lower() and str(0x5EC2E7) not in blob


@pytest.mark.parametrize(
    "make",
    [
        lambda: SecAggClient(0, SecAggConfig(5, 3), np.zeros(2, dtype=np.uint32)),
        secagg.AgreementKey.generate,
        secagg.SigningKey.generate,
        dp.SecureRng,
        lambda: secagg.shamir_split_many([bytes(32)], 3, 2)[0][0],
    ],
)
def test_sec_secret_holders_refuse_pickling(make: object) -> None:
    """H2: nothing holding a key, seed or share crosses a process boundary by pickle."""
    with pytest.raises(TypeError):
        pickle.dumps(make())  # type: ignore[operator]


def _calls_numpy_random(node: ast.AST) -> list[str]:
    found = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and sub.attr == "random":
            found.append(ast.unparse(sub))
        if isinstance(sub, ast.Name) and sub.id == "random":
            found.append("random")
    return found


def test_sec_secure_noise_path_never_uses_numpy_random() -> None:
    """H3 for dp: SecureRng and the samplers draw only from NoiseRng words."""
    rng_tree = ast.parse((ROOT / "dp" / "rng.py").read_text(encoding="utf-8"))
    classes = {n.name: n for n in rng_tree.body if isinstance(n, ast.ClassDef)}
    assert "SecureRng" in classes and "SimulationRng" in classes
    assert _calls_numpy_random(classes["SecureRng"]) == []
    assert _calls_numpy_random(classes["SimulationRng"])  # the scan does see real uses
    for name in ("samplers.py", "distributed.py", "clipping.py", "rotation.py", "central.py"):
        tree = ast.parse((ROOT / "dp" / name).read_text(encoding="utf-8"))
        assert _calls_numpy_random(tree) == [], name
    for package in ("secagg", "protocols"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            assert _calls_numpy_random(tree) == [], path


def test_sec_ledger_refuses_more_survivors_than_clients(tmp_path: Path) -> None:
    ledger = PrivacyLedger.create(tmp_path / "l.db", policy=BudgetPolicy(delta=1e-5))
    event = PoissonSampledEvent(0.05, GaussianEvent(1.0))
    try:
        with pytest.raises(DPError):
            ledger.record_round(round_index=0, event=event, cohort_size=5, survivors=9)
    finally:
        ledger.close()
