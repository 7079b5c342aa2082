"""Issue 15, observations 3 and 5 at the configuration level, and the device policy's parts.

The loopback campaign (``test_sec_untrusted_server.py``) shows the refusals on real device
processes; here each rule is driven directly: the malicious-mode SecAgg+ bounds that printed
guarantees which do not hold (obs 3), plans sized for the expected survivors instead of
t − n_C (obs 5, with the ε a server keeping t survivors would get), the DP and SecAgg policy
rules, the device's ε budget file and the pinned, signed job manifest.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import sec_stats

pytest.importorskip("grpc", reason="grpcio is not installed (pip install 'privagg[net]')")

import secagg
from dp.ledger import charged_event
from dp.planning import plan_distributed_counts
from dp.policy import DeviceBudget, DPPolicy, DPPolicyViolation, DPRule
from protocols.config import SecAggConfig, ThreatModel
from protocols.errors import ConfigError
from protocols.net.guard import DeviceGuard
from protocols.net.manifest import JobManifest, PinStore
from protocols.net.wire import JobSpec
from protocols.policy import PolicyViolation, Rule, SecAggPolicy
from recsys.channels import Channel, ChannelSpec
from recsys.privacy import epsilon_of

MALICIOUS = ThreatModel.MALICIOUS_SERVER


def test_sec_untrusted_obs3_malicious_bounds_are_never_vacuous() -> None:
    sec_stats.add("untrusted_scenarios")
    # the corrupt fraction is an explicit assumption in malicious mode
    with pytest.raises(ConfigError, match="explicit corrupt_fraction"):
        SecAggConfig(20, 11, threat_model=MALICIOUS)
    with pytest.raises(ConfigError, match="corrupt"):
        JobSpec(20, 11, 8, 1, threat_model=MALICIOUS.value)
    # k = 22, t = 12 of 100 (one corrupt neighbour recovered the victim) and Bell et al.'s
    # n = 10^4 case (k = 114 printed with failure 4.8e-13): both refused, no bound printed
    with pytest.raises(ConfigError, match="refused in malicious-server mode"):
        SecAggConfig.plus(100, dropout_rate=0.1, threat_model=MALICIOUS)
    with pytest.raises(ConfigError, match="refused in malicious-server mode"):
        SecAggConfig.plus(10_000, dropout_rate=0.05, corrupt_rate=0.05, threat_model=MALICIOUS)
    with pytest.raises(ConfigError, match="refused in malicious-server mode"):
        SecAggConfig(100, 12, neighbors=22, threat_model=MALICIOUS, corrupt_fraction=0.05)
    # the full graph falls to 2 corrupt clients at n = 20, t = 11: refused once they count
    with pytest.raises(ConfigError, match="malicious server with 2 corrupt"):
        SecAggConfig(20, 11, threat_model=MALICIOUS, corrupt_fraction=0.1)
    assert SecAggConfig(20, 12, threat_model=MALICIOUS, corrupt_fraction=0.1).threshold == 12
    # and the device refuses a job that assumes fewer corrupt clients than it does
    with pytest.raises(PolicyViolation) as caught:
        SecAggPolicy().check_job(threat_model=MALICIOUS, corrupt_fraction=0.0, bits=32, rounds=1)
    assert caught.value.rule is Rule.CORRUPT_FRACTION
    sec_stats.add("untrusted_refused")


def _channel(population: int) -> Channel:
    return Channel(
        ChannelSpec(
            privacy="distributed",
            secagg="plus",
            dropout=0.1,
            mechanism="skellam",
            bits=32,
            delta=1e-5,
            seed=0,
            simulation_noise=True,
            population=population,
        )
    )


@pytest.mark.parametrize("devices", [300, 1000, 5000])
def test_sec_untrusted_obs5_plans_carry_their_noise_at_t_minus_n_c(devices: int) -> None:
    """A server that keeps only t survivors (SecAgg accepts it) still releases a sum with
    the planned noise: plans are sized for t − n_C, not for E(1 − p) − 4σ."""
    sec_stats.add("untrusted_scenarios")
    channel = _channel(devices)
    config = channel.secagg_config(devices)
    floor = config.threshold - config.corrupt_clients
    plan = channel.plan(devices, 2.0, 1.0, devices, count_cap=4)
    assert plan.min_contributors <= floor < channel.survivors_bound(devices)
    planned = plan.event(secure=False)
    kept_t = charged_event(planned, "released", config.threshold)
    # what the ledger charges when only t survive is what was planned: no overspend
    assert epsilon_of([kept_t], 1e-5) == pytest.approx(epsilon_of([planned], 1e-5))
    # the price: at the expected survivors the sum carries sqrt(E(1-p) / (t - n_C)) x noise
    assert plan.extra_noise_factor(channel.survivors_bound(devices)) == pytest.approx(
        math.sqrt(channel.survivors_bound(devices) / plan.min_contributors)
    )


def _counts(z: float, n_min: int, cap: int = 4, bits: int = 32) -> object:
    return plan_distributed_counts(
        dimension=50,
        max_ones=cap,
        expected_contributors=20,
        min_contributors=n_min,
        noise_multiplier=z,
        bits=bits,
    )


def test_sec_dp_policy_names_each_rule() -> None:
    policy = DPPolicy(min_noise_multiplier=0.5, max_count_cap=8, min_bits=20)
    cases = [
        (_counts(0.0, 10), 10, DPRule.NOISE),  # no noise at all
        (_counts(1.0, 20), 4, DPRule.NOISE),  # sized for 20, only 4 honest: z 0.45
        (_counts(1.0, 4, cap=9), 4, DPRule.CAP),
        (_counts(1.0, 4, bits=18), 4, DPRule.RING),
    ]
    for plan, floor, rule in cases:
        with pytest.raises(DPPolicyViolation) as caught:
            policy.check_plan(plan, floor)  # type: ignore[arg-type]
        assert caught.value.rule is rule and f"[dp.{rule.value}]" in str(caught.value)
    event = policy.check_plan(_counts(1.0, 4), 4)  # type: ignore[arg-type]
    assert "Poisson" not in type(event).__name__  # charged unamplified


def test_sec_secagg_policy_names_each_rule() -> None:
    policy = SecAggPolicy()
    with pytest.raises(PolicyViolation, match=r"\[threat-model\]"):
        policy.check_job(
            threat_model=ThreatModel.HONEST_BUT_CURIOUS, corrupt_fraction=None, bits=32, rounds=1
        )
    with pytest.raises(PolicyViolation, match=r"\[ring\]"):
        policy.check_job(threat_model=MALICIOUS, corrupt_fraction=0.1, bits=8, rounds=1)
    hbc = SecAggPolicy(threat_model=ThreatModel.HONEST_BUT_CURIOUS)
    sparse = SecAggConfig(12, 2, neighbors=2)  # valid with no corrupt client assumed
    with pytest.raises(PolicyViolation, match=r"\[graph\]"):
        hbc.check_round(sparse, vector_length=4, participations=0)
    with pytest.raises(PolicyViolation, match=r"\[participations\]"):
        hbc.check_round(SecAggConfig(12, 7), vector_length=4, participations=10**6)
    with pytest.raises(PolicyViolation, match=r"\[honest-survivors\]"):
        SecAggPolicy(min_honest_survivors=5).check_round(
            SecAggConfig(6, 5, threat_model=MALICIOUS, corrupt_fraction=0.2),
            vector_length=4,
            participations=0,
        )
    ok = SecAggConfig(12, 8, threat_model=MALICIOUS, corrupt_fraction=0.1)
    policy.check_round(ok, vector_length=4, participations=0)
    assert policy.honest_floor(ok) == 8 - 2


def test_sec_device_budget_refuses_before_overspending_and_fails_closed(tmp_path: Path) -> None:
    policy = DPPolicy(epsilon_budget=3.0, delta=1e-5)
    budget = DeviceBudget(tmp_path / "budget.json", policy)
    event = policy.check_plan(_counts(3.0, 4), 4)  # type: ignore[arg-type]
    spent = []
    with pytest.raises(DPPolicyViolation) as caught:
        for r in range(100):
            spent.append(budget.charge(event, label=f"round {r}"))
    assert caught.value.rule is DPRule.EPSILON_BUDGET
    assert spent and all(a < b <= 3.0 for a, b in itertools.pairwise(spent))
    before = (tmp_path / "budget.json").read_text()
    with pytest.raises(DPPolicyViolation):
        budget.charge(event, label="again")
    assert (tmp_path / "budget.json").read_text() == before  # a refusal changes nothing
    assert len(json.loads(before)["charges"]) == len(spent)
    (tmp_path / "budget.json").write_text("{not json")
    with pytest.raises(DPPolicyViolation) as damaged:
        DeviceBudget(tmp_path / "budget.json", DPPolicy()).charge(event, label="x")
    assert damaged.value.rule is DPRule.BUDGET_FILE


def test_sec_job_manifest_is_signed_pinned_and_checked(tmp_path: Path) -> None:
    key = secagg.SigningKey.generate()
    job = JobSpec(12, 8, 4, 2, threat_model=MALICIOUS.value, corrupt_fraction=0.1)
    manifest = JobManifest.create(job, key, {"min_noise_multiplier": 0.5})
    signed = manifest.sign(key)
    assert JobManifest.verify(signed) == manifest
    forged = json.loads(signed)
    forged["manifest"]["job"]["rounds"] = 99  # a valid job, not the signed one
    with pytest.raises(PolicyViolation, match="signature is invalid"):
        JobManifest.verify(json.dumps(forged).encode())
    # pinned by file: another manifest (even validly signed by the same key) is refused
    other = JobManifest.create(job, key).sign(key)
    guard = DeviceGuard(SecAggPolicy(), pinned=manifest)
    with pytest.raises(PolicyViolation, match=r"\[manifest\]"):
        guard.check_welcome("server:1", job, other)
    guard.check_welcome("server:1", job, signed)
    # the welcome's job must be the manifest's
    lying = JobSpec(12, 8, 4, 3, threat_model=MALICIOUS.value, corrupt_fraction=0.1)
    with pytest.raises(PolicyViolation, match="not its signed manifest"):
        DeviceGuard(SecAggPolicy()).check_welcome("server:1", lying, signed)
    # trust on first use: the key is remembered, a new key for the same server is refused
    notices: list[str] = []
    pins = PinStore(tmp_path / "pins.json")
    DeviceGuard(SecAggPolicy(), pins=pins, notice=notices.append).check_welcome(
        "server:1", job, signed
    )
    assert manifest.fingerprint in notices[0] and "first use" in notices[0]
    impostor = secagg.SigningKey.generate()
    with pytest.raises(PolicyViolation, match="pinned"):
        DeviceGuard(SecAggPolicy(), pins=pins).check_welcome(
            "server:1", job, JobManifest.create(job, impostor).sign(impostor)
        )
    # a round beyond the job's rounds is refused
    guard.joined(0)
    guard.joined(1)
    with pytest.raises(PolicyViolation, match=r"\[rounds\]"):
        guard.check_round(job, 2, job.secagg_config(), 4)


def test_sec_policy_file_toml_json_and_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    from analysis.cli import main
    from protocols.policy import load_policy_file

    toml = tmp_path / "policy.toml"
    toml.write_text("[secagg]\ncorrupt_fraction = 0.1\n[dp]\nepsilon_budget = 4.0\n")
    tables = load_policy_file(toml)
    assert SecAggPolicy.from_mapping(tables["secagg"]).corrupt_fraction == 0.1
    assert DPPolicy.from_mapping(tables["dp"]).epsilon_budget == 4.0
    bad = tmp_path / "bad.json"
    vector = tmp_path / "v.npy"
    np.save(vector, np.zeros(3, dtype=np.int64))
    for text, fragment in (
        ('{"secagg": {"corrupt": 0.1}}', "unknown secagg policy fields"),
        ('{"dp": {"min_noise_multiplier": 0}}', "min_noise_multiplier"),
        ('{"other": {}}', "'secagg' and/or a 'dp' table"),
        ("not json", "not a valid policy file"),
    ):
        bad.write_text(text)
        args = ["client", "--server", "127.0.0.1:1", "--id", "0", "--data", str(vector)]
        args += ["--key", "k.pem", "--ca", "ca.pem", "--policy", str(bad)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert fragment in err and len(err.strip().splitlines()) == 1, err


def test_sec_plan_must_keep_the_dp_rule_signed_in_the_manifest() -> None:
    from dp.policy import check_manifest_rule

    plan = _counts(1.0, 4, cap=8)
    check_manifest_rule(plan, {"max_count_cap": 8, "bits": 32, "min_noise_multiplier": 1.0})  # type: ignore[arg-type]
    for rule in ({"max_count_cap": 4}, {"bits": 16}, {"min_noise_multiplier": 2.0}):
        with pytest.raises(DPPolicyViolation) as caught:
            check_manifest_rule(plan, rule)  # type: ignore[arg-type]
        assert caught.value.rule is DPRule.MANIFEST_RULE
