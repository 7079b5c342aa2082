"""Issue 15, observations 1-5: a lying server against real ``privagg client`` processes.

The server (``lying_server.LyingServer``: the real gRPC server with announcements forged at
will and a spy on every message received) tells each lie of the issue to devices started
exactly as users start them (``privagg client`` with the safe default policy, a registry,
trust on first use of the signed job manifest). Every lie must be refused *before* the
device sends anything for that round — in particular no masked input — and an honest round
afterwards must still sum every device (the policy does not simply refuse everything).

* obs 1: a DP plan with noise multiplier 0 over S and S ∪ {v} (the differencing attack is
  attempted on whatever the server gets) and a popularity cap larger than the policy's;
* obs 2: k = 2, t = 2 for a 12-device cohort (sparse), and t = 2 on the full graph;
* obs 3: a malicious-server job that assumes corrupt_fraction 0;
* obs 4: a welcome that downgrades a device holding a registry to honest-but-curious;
* obs 5: a plan whose noise is sized for the expected survivors, too little for t − n_C.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sec_stats

pytest.importorskip("grpc", reason="grpcio is not installed (pip install 'privagg[net]')")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))

from lying_server import LyingServer, counts_plan, popularity_payload
from processes import PRIVAGG, reap, spawn

import secagg
from protocols.config import SecAggConfig, Stage, ThreatModel
from protocols.errors import ConfigError
from protocols.net import JobSpec, RoundOutcome, RoundSpec, ServerTLS, make_local_pki
from protocols.net.manifest import JobManifest
from protocols.net.pki import load_registry

REGISTERED, RUNNING, ITEMS, CAP = 12, 4, 200, 8
MALICIOUS = ThreatModel.MALICIOUS_SERVER
GAMMA = 0.1  # the job's stated corrupt fraction (the devices assume at least 0.05)


@dataclass
class Campaign:
    """What one lying server saw and what its devices printed."""

    server: LyingServer
    outcomes: dict[str, RoundOutcome]
    rounds: dict[str, int]
    stdout: dict[int, str]
    stderr: dict[int, str]
    codes: dict[int, int]
    histories: dict[int, np.ndarray]


def _tls(pki: Path) -> ServerTLS:
    return ServerTLS((pki / "server.pem").read_bytes(), (pki / "server.key").read_bytes())


def _device(
    tmp: Path, target: str, cid: int, data: Path, extra: tuple[str, ...] = ()
) -> subprocess.Popen[str]:
    pki = tmp / "pki"
    return spawn(
        [
            *PRIVAGG,
            "client",
            "--server",
            target,
            "--id",
            str(cid),
            "--data",
            str(data),
            "--key",
            str(pki / f"client-{cid}.key"),
            "--ca",
            str(pki / "ca.pem"),
            "--registry",
            str(pki / "registry.json"),
            "--state-dir",
            str(tmp / f"state-{cid}"),
            "--retry-seconds",
            "5",
            "--quiet",
            *extra,
        ]
    )


def _server(tmp: Path, job: JobSpec, *, signed: bool = True) -> LyingServer:
    key = secagg.SigningKey.generate()
    manifest = JobManifest.create(job, key).sign(key) if signed else b""
    server = LyingServer(
        job,
        load_registry(tmp / "pki" / "registry.json"),
        _tls(tmp / "pki"),
        stage_deadline=2.0,
        join_deadline=30.0,
        poll_seconds=1.0,
        linger_seconds=1.5,
        manifest=manifest,
    )
    server.start()
    return server


def _wait_connected(server: LyingServer, ids: set[int], seconds: float = 90.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if ids <= server.connected():
            return
        time.sleep(0.2)
    raise AssertionError(f"devices {sorted(ids - server.connected())} never connected")


def _lie(
    server: LyingServer,
    number: int,
    cohort: tuple[int, ...],
    threshold: int,
    plan_kw: dict[str, float | int],
    *,
    neighbors: int | None = None,
    cap: int = CAP,
) -> RoundOutcome:
    plan = counts_plan(ITEMS, cap=cap, expected=len(cohort), **plan_kw)  # type: ignore[arg-type]
    payload = popularity_payload(
        plan, cap=cap, num_items=ITEMS, population=REGISTERED, release=number + 1
    )
    spec = RoundSpec(cohort, threshold, ITEMS, neighbors, payload)
    n = len(cohort)
    try:  # the server's own state machine runs what it announced, if the honest code allows
        own = SecAggConfig(
            n, threshold, neighbors=neighbors, threat_model=MALICIOUS, corrupt_fraction=GAMMA
        )
    except ConfigError:
        own = SecAggConfig(n, n // 2 + 1)
    return server.announce(number, spec, own)


@pytest.fixture(scope="module")
def per_round(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Campaign]:
    """One training job, six lying rounds and one honest round, four real devices."""
    tmp = tmp_path_factory.mktemp("untrusted")
    make_local_pki(tmp / "pki", num_clients=REGISTERED)
    rng = np.random.default_rng(15)
    histories: dict[int, np.ndarray] = {}
    for cid in range(RUNNING):
        items = rng.choice(ITEMS, size=10, replace=False)
        histories[cid] = np.stack([items, np.arange(10)], axis=1).astype(np.int64)
        np.save(tmp / f"history-{cid}.npy", histories[cid])
    job = JobSpec(
        num_clients=REGISTERED,
        threshold=3,
        vector_length=256,
        rounds=7,
        per_round=True,
        threat_model=MALICIOUS.value,
        corrupt_fraction=GAMMA,
        model_bytes=1 << 16,
    )
    server = _server(tmp, job)
    procs = {
        cid: _device(tmp, server.address, cid, tmp / f"history-{cid}.npy") for cid in range(RUNNING)
    }
    everyone = tuple(range(REGISTERED))
    running = tuple(range(RUNNING))
    outcomes: dict[str, RoundOutcome] = {}
    rounds: dict[str, int] = {}
    server.watch = frozenset(running)
    try:
        _wait_connected(server, set(running))
        lies: list[tuple[str, tuple[int, ...], int, dict[str, float | int], dict[str, int]]] = [
            # obs 1: no noise, over S and S ∪ {v}: the difference would be v's history
            ("zero_noise_S", (0, 1, 2), 3, {"noise_multiplier": 0.0, "min_contributors": 2}, {}),
            ("zero_noise_Sv", running, 3, {"noise_multiplier": 0.0, "min_contributors": 2}, {}),
            # obs 1: enough noise, but a cap the size of the catalogue
            (
                "huge_cap",
                running,
                3,
                {"noise_multiplier": 2.0, "min_contributors": 2},
                {"cap": ITEMS},
            ),
            # obs 2: k = 2, t = 2 on a 12-device cohort, and t = 2 on the full graph
            (
                "k2_t2",
                everyone,
                2,
                {"noise_multiplier": 2.0, "min_contributors": 2},
                {"neighbors": 2},
            ),
            ("full_t2", everyone, 2, {"noise_multiplier": 2.0, "min_contributors": 2}, {}),
            # obs 5: t = 8 of 12 (n_C = 2), noise sized for 11 expected survivors
            (
                "sized_for_expected",
                everyone,
                8,
                {"noise_multiplier": 0.6, "min_contributors": 11},
                {},
            ),
        ]
        for number, (name, cohort, t, plan_kw, extra) in enumerate(lies):
            rounds[name] = number
            outcomes[name] = _lie(server, number, cohort, t, plan_kw, **extra)  # type: ignore[arg-type]
        # control: the same devices accept an honest round (t - n_C = 2 honest shares)
        rounds["honest"] = len(lies)
        outcomes["honest"] = _lie(
            server, len(lies), running, 3, {"noise_multiplier": 2.0, "min_contributors": 2}
        )
        server.finish()
        for proc in procs.values():
            proc.wait(timeout=90)
    finally:
        collected = reap(list(procs.values()))
        server.stop()
    for cid, proc in procs.items():  # kept for a failing run's post-mortem
        (tmp / f"device-{cid}.out").write_text("".join(collected[id(proc)]))
    yield Campaign(
        server,
        outcomes,
        rounds,
        {cid: collected[id(p)][0] for cid, p in procs.items()},
        {cid: collected[id(p)][1] for cid, p in procs.items()},
        {cid: p.returncode for cid, p in procs.items()},
        histories,
    )


def _refused(campaign: Campaign, name: str, fragment: str, devices: tuple[int, ...]) -> None:
    """Every device of ``devices`` refused round ``name`` naming ``fragment`` and sent the
    server nothing for it (no advertised key, no masked input)."""
    number = campaign.rounds[name]
    sec_stats.add("untrusted_scenarios")
    for cid in devices:
        assert campaign.codes[cid] == 0, campaign.stderr[cid]
        lines = [
            line
            for line in campaign.stdout[cid].splitlines()
            if line.startswith(f"client {cid}: aborted round {number}:")
        ]
        assert len(lines) == 1 and fragment in lines[0], (fragment, campaign.stdout[cid])
        sent = campaign.server.messages_from(cid, number)
        sec_stats.add("untrusted_refused")
        sec_stats.add("untrusted_inputs_recovered", int(Stage.MASK in sent))
        assert sent == {}, (name, cid, sent)
    assert campaign.outcomes[name].total is None  # nothing was aggregated


def test_sec_untrusted_obs1_zero_noise_plan_is_refused_and_differencing_fails(
    per_round: Campaign,
) -> None:
    _refused(per_round, "zero_noise_S", "[dp.noise]", (0, 1, 2))
    _refused(per_round, "zero_noise_Sv", "[dp.noise]", tuple(range(RUNNING)))
    # the attack: the difference of the two sums is v's exact indicator if both released
    s, sv = per_round.outcomes["zero_noise_S"], per_round.outcomes["zero_noise_Sv"]
    sec_stats.add("attack_attempts")
    recovered = False
    if s.total is not None and sv.total is not None:
        diff = secagg.centered_lift(secagg.ring_sub(sv.total, s.total, 32), 32)
        v_items = set(per_round.histories[RUNNING - 1][:, 0].tolist())
        recovered = bool(diff.sum() > 0) and set(np.flatnonzero(diff).tolist()) <= v_items
    sec_stats.add("inputs_recovered", int(recovered))
    assert not recovered


def test_sec_untrusted_obs1_cap_beyond_policy_is_refused(per_round: Campaign) -> None:
    _refused(per_round, "huge_cap", "[dp.cap]", tuple(range(RUNNING)))


def test_sec_untrusted_obs2_sparse_or_small_threshold_is_refused(per_round: Campaign) -> None:
    _refused(per_round, "k2_t2", "refused in malicious-server mode", tuple(range(RUNNING)))
    _refused(per_round, "full_t2", "threshold 2", tuple(range(RUNNING)))


def test_sec_untrusted_obs5_noise_for_expected_survivors_is_refused(per_round: Campaign) -> None:
    _refused(
        per_round, "sized_for_expected", "t - n_C = 6 honest noise shares", tuple(range(RUNNING))
    )


def test_sec_untrusted_honest_round_after_the_lies_sums_every_device(per_round: Campaign) -> None:
    number = per_round.rounds["honest"]
    outcome = per_round.outcomes["honest"]
    sec_stats.add("untrusted_scenarios")
    assert outcome.aborted is None, outcome.aborted
    lost = RUNNING - len(outcome.included)
    sec_stats.add("untrusted_honest_lost", lost)
    sec_stats.add("honest_inputs_lost", lost)
    assert lost == 0 and set(outcome.included) == set(range(RUNNING))
    for cid in range(RUNNING):
        assert per_round.server.messages_from(cid, number).get(Stage.MASK) == 1
        assert f"took part in rounds {number}" in per_round.stdout[cid]
        assert "device epsilon spent" in per_round.stdout[cid]
        assert "trusting on first use" in per_round.stdout[cid]  # the fingerprint is printed
    # the sum is the device's counts plus noise: the popularity of at most CAP items each
    assert outcome.total is not None


@pytest.fixture(scope="module")
def welcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Campaign]:
    """Three lying welcomes at once, two registry-holding devices each."""
    tmp = tmp_path_factory.mktemp("welcomes")
    make_local_pki(tmp / "pki", num_clients=REGISTERED)
    np.save(tmp / "vector.npy", np.arange(8, dtype=np.int64))
    jobs = {
        # obs 3: malicious mode, but "no client is corrupt": every bound would be vacuous
        "corrupt_zero": (
            JobSpec(REGISTERED, 7, 8, 1, threat_model=MALICIOUS.value, corrupt_fraction=0.0),
            True,
        ),
        # obs 4: a signed welcome that says honest-but-curious
        "downgrade": (JobSpec(REGISTERED, 7, 8, 1), True),
        # obs 4: the same downgrade from a server that signs nothing
        "downgrade_unsigned": (JobSpec(REGISTERED, 7, 8, 1), False),
        # a valid job, but not the manifest these devices pinned with --job
        "not_pinned": (
            JobSpec(REGISTERED, 8, 8, 1, threat_model=MALICIOUS.value, corrupt_fraction=GAMMA),
            True,
        ),
    }
    servers = {name: _server(tmp, job, signed=signed) for name, (job, signed) in jobs.items()}
    other = secagg.SigningKey.generate()
    pinned = tmp / "pinned.manifest.json"
    pinned.write_bytes(JobManifest.create(jobs["not_pinned"][0], other).sign(other))
    procs: dict[str, dict[int, subprocess.Popen[str]]] = {}
    try:
        for index, (name, server) in enumerate(servers.items()):
            ids = (2 * index, 2 * index + 1)
            extra = ("--job", str(pinned)) if name == "not_pinned" else ()
            procs[name] = {
                cid: _device(tmp, server.address, cid, tmp / "vector.npy", extra) for cid in ids
            }
        for group in procs.values():
            for proc in group.values():
                proc.wait(timeout=90)
    finally:
        collected = reap([p for group in procs.values() for p in group.values()])
        for server in servers.values():
            server.stop()
    return {
        name: Campaign(
            servers[name],
            {},
            {},
            {cid: collected[id(p)][0] for cid, p in group.items()},
            {cid: collected[id(p)][1] for cid, p in group.items()},
            {cid: p.returncode for cid, p in group.items()},
            {},
        )
        for name, group in procs.items()
    }


def _refused_welcome(campaign: Campaign, fragment: str) -> None:
    sec_stats.add("untrusted_scenarios")
    for cid, code in campaign.codes.items():
        err = campaign.stderr[cid].strip()
        assert code == 2, (code, err)
        assert len(err.splitlines()) == 1 and fragment in err, err
        sec_stats.add("untrusted_refused")
        sent = [key for key in campaign.server.sent if key[0] == cid]
        sec_stats.add("untrusted_inputs_recovered", int(bool(sent)))
        assert sent == []  # not even a key advertisement


def test_sec_untrusted_obs3_job_assuming_no_corrupt_client_is_refused(
    welcomes: dict[str, Campaign],
) -> None:
    _refused_welcome(welcomes["corrupt_zero"], "[corrupt-fraction]")


def test_sec_untrusted_obs4_welcome_cannot_downgrade_a_registry_device(
    welcomes: dict[str, Campaign],
) -> None:
    _refused_welcome(welcomes["downgrade"], "[threat-model]")
    _refused_welcome(welcomes["downgrade_unsigned"], "[manifest]")


def test_sec_untrusted_a_job_other_than_the_pinned_manifest_is_refused(
    welcomes: dict[str, Campaign],
) -> None:
    _refused_welcome(welcomes["not_pinned"], "this device pinned")
