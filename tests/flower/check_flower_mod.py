"""privagg's Flower mod and workflow, checked inside the Flower virtualenv.

Run by ``test_flower_mod.py`` (the main suite) as
``.venv-flower/bin/python -m pytest tests/flower/check_flower_mod.py``; flwr is not a dev
dependency (its pins are older than the dev environment's), so these checks never run in
the main interpreter.

* A Flower simulation (the Ray engine, 16 devices, dropouts in two stages, two rounds of
  FedAvg) gives aggregates bit-identical to privagg's in-process run with the same seeded
  simulation noise, and its signed ledger audits clean.
* A lying server is refused by the device's own checks: simulation noise or weak noise
  against the device policy, a swapped model, an offer the session does not bind, a victim
  listed as both survivor and dropped; retried deliveries get the same answer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import direct_grid
import flower_sim
from flwr.app import Message
from flwr.client import NumPyClient
from flwr.common import ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat

import secagg
from dp.budget import BudgetPolicy
from dp.ledger import PrivacyLedger, audit_ledger, read_entries
from privagg.flower import DevicePolicy, PrivaggMod, PrivaggWorkflow, RoundOffer, client_mod, wire
from protocols import AbortReason, ThreatModel
from protocols.messages import ClientAbort, ConsistencySignature, UnmaskRequest, decode

pytestmark = pytest.mark.filterwarnings(
    "ignore::dp.rng.NonSecureRandomnessWarning", "ignore::DeprecationWarning"
)

NUM_CLIENTS = 16
VANISH_AT = {3: "share", 8: "mask", 15: "mask"}


@pytest.fixture(scope="module")
def simulation(tmp_path_factory: pytest.TempPathFactory) -> flower_sim.SimulationRun:
    tmp = tmp_path_factory.mktemp("flower")
    return flower_sim.run_flower(tmp, num_clients=NUM_CLIENTS, num_rounds=2, vanish_at=VANISH_AT)


def test_simulation_matches_in_process_run_bit_for_bit(
    simulation: flower_sim.SimulationRun,
) -> None:
    assert [r.status for r in simulation.reports] == ["released", "released"]
    assert len(simulation.node_of_partition) == NUM_CLIENTS
    model, rounds = flower_sim.reference_model(
        simulation.reports, simulation.node_of_partition, VANISH_AT
    )
    dropped = {simulation.node_of_partition[p] for p in VANISH_AT}
    for report, (total, included, update_sum) in zip(simulation.reports, rounds, strict=True):
        assert report.included == included
        assert set(report.cohort) - set(report.included) == dropped
        assert report.ring_total is not None and report.update_sum is not None
        assert report.ring_total.dtype == total.dtype
        assert report.ring_total.tobytes() == total.tobytes()
        assert report.update_sum.tobytes() == update_sum.tobytes()
    assert len(simulation.final_model) == len(model)
    for got, want in zip(simulation.final_model, model, strict=True):
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    # The model moved: a real aggregate, not the initial weights handed back.
    assert not np.array_equal(model[0], flower_sim.initial_model()[0])


def test_simulation_charges_every_round_in_a_signed_ledger(
    simulation: flower_sim.SimulationRun,
) -> None:
    # verified against the key the operator pinned, not the one stored in the file
    audit = audit_ledger(simulation.ledger_path, public_key=simulation.extra["ledger_public_key"])
    assert audit.ok, audit.problems + audit.violations
    assert audit.signed and audit.signatures_verified and audit.rows == 2
    conn = sqlite3.connect(simulation.ledger_path)  # reading needs no key
    try:
        entries = read_entries(conn)
    finally:
        conn.close()
    epsilons = [e.cumulative_epsilon for e in entries]
    assert all(np.isfinite(epsilons)) and 0 < epsilons[0] < epsilons[1]
    for entry, report in zip(entries, simulation.reports, strict=True):
        assert entry.status == "released" and entry.cohort_size == NUM_CLIENTS
        assert entry.survivors == NUM_CLIENTS - len(VANISH_AT)
        assert entry.participants == tuple(sorted(str(n) for n in report.included))
        assert entry.event.to_dict()["secure"] is False  # seeded simulation noise, named
        assert report.epsilon == entry.cumulative_epsilon
    history = simulation.history.metrics_distributed_fit
    assert [eps for _, eps in history["privagg_epsilon"]] == epsilons


# --------------------------------------------------------------------------- in-process


class _Device(NumPyClient):  # type: ignore[misc]
    def __init__(self, partition: int) -> None:
        self.partition = partition

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        return flower_sim.train(self.partition, parameters), 16, {"loss": 0.5}


def _run_direct(
    tmp: Path,
    *,
    n: int = 6,
    policy: DevicePolicy | None = None,
    tamper: Any = None,
    repeat: bool = False,
    noise_multiplier: float = 1.0,
    simulation_seed: int | None = 3,
    malicious_mode: bool = False,
    target_epsilon: float | None = None,
) -> tuple[PrivaggWorkflow, direct_grid.DirectGrid, Any]:
    node_ids = [1000 + 17 * i for i in range(n)]
    mod = PrivaggMod(
        policy if policy is not None else DevicePolicy(allow_simulation_noise=True),
        identity=_identity if malicious_mode else None,
    )
    grid = direct_grid.DirectGrid(node_ids, _Device, [mod], tamper=tamper, repeat=repeat)
    ctx = direct_grid.legacy_context(grid, flower_sim.initial_model())
    ledger = PrivacyLedger.create(
        tmp / "ledger.sqlite",
        policy=BudgetPolicy(delta=1e-5, target_epsilon=target_epsilon),
        signing_key=secagg.SigningKey.generate(),
    )
    workflow = PrivaggWorkflow(
        clip_norm=1.0,
        noise_multiplier=noise_multiplier,
        ledger=ledger,
        graph="full",
        dropout_rate=0.2,
        simulation_noise_seed=simulation_seed,
        threat_model=ThreatModel.MALICIOUS_SERVER
        if malicious_mode
        else ThreatModel.HONEST_BUT_CURIOUS,
        verify_keys={nid: _signing_key(nid).public_bytes for nid in node_ids},
    )
    workflow(grid, ctx)
    return workflow, grid, ledger


def _signing_key(node_id: int) -> secagg.SigningKey:
    # A test PKI: deterministic keys, so the device side can rebuild its own in any process.
    return secagg.SigningKey.from_private_bytes(
        hashlib.sha256(b"privagg/test-pki/" + str(node_id).encode()).digest()
    )


def _identity(ctxt: Any) -> tuple[secagg.SigningKey, dict[int, bytes]]:
    pki = {1000 + 17 * i: _signing_key(1000 + 17 * i).public_bytes for i in range(6)}
    return _signing_key(int(ctxt.node_id)), pki


def _replies_of(grid: direct_grid.DirectGrid, node: int, stage: str) -> list[Any]:
    out = []
    for reply in grid.replies:
        if reply.has_error() or reply.metadata.src_node_id != node:
            continue
        if reply.content.config_records[wire.CONFIG_KEY]["stage"] == stage:
            out.append(decode(wire.unpack(reply.content.array_records[wire.PAYLOAD_KEY])))
    return out


def _errors(grid: direct_grid.DirectGrid) -> list[str]:
    return [r.error.reason for r in grid.replies if r.has_error()]


def test_devices_refuse_simulation_noise_unless_their_policy_allows_it(tmp_path: Path) -> None:
    workflow, grid, ledger = _run_direct(tmp_path, policy=DevicePolicy())
    (report,) = workflow.reports
    assert report.status == "aborted" and report.abort_reason.startswith("advertise")
    assert len(_errors(grid)) == 6 and all("not secure" in e for e in _errors(grid))
    (entry,) = ledger.entries()
    assert entry.status == "aborted" and ledger.epsilon == 0.0


def test_devices_refuse_noise_below_their_floor(tmp_path: Path) -> None:
    workflow, grid, _ = _run_direct(tmp_path, noise_multiplier=0.2)
    assert workflow.reports[0].status == "aborted"
    assert all("below the device's floor" in e for e in _errors(grid))


def test_a_round_over_the_budget_contacts_no_device(tmp_path: Path) -> None:
    workflow, grid, ledger = _run_direct(tmp_path, target_epsilon=0.5)
    (report,) = workflow.reports
    assert report.status == "refused" and report.abort_reason.startswith("budget")
    assert grid.replies == [] and ledger.entries() == [] and ledger.epsilon == 0.0


def test_a_device_shown_another_model_refuses_and_the_round_goes_on(tmp_path: Path) -> None:
    victim = 1000 + 17 * 2
    poisoned = [a + np.float32(0.5) for a in flower_sim.initial_model()]

    def swap_model(msg: Message) -> Message:
        content = msg.content
        if msg.metadata.dst_node_id == victim and wire.OFFER_KEY in content.array_records:
            fitins = compat.recorddict_to_fitins(content, keep_input=True)
            fitins.parameters = ndarrays_to_parameters(poisoned)
            for key, record in compat.fitins_to_recorddict(fitins, True).items():
                content[key] = record
        return msg

    workflow, grid, _ = _run_direct(tmp_path, tamper=swap_model)
    (report,) = workflow.reports
    assert report.status == "released" and victim not in report.included
    assert len(report.included) == 5
    assert any("differs from the one the offer names" in e for e in _errors(grid))


def test_a_device_sent_an_offer_the_session_does_not_bind_refuses(tmp_path: Path) -> None:
    victim = 1000 + 17 * 4

    def weaker_offer(msg: Message) -> Message:
        content = msg.content
        if msg.metadata.dst_node_id == victim and wire.OFFER_KEY in content.array_records:
            offer = RoundOffer.from_bytes(wire.unpack(content.array_records[wire.OFFER_KEY]))
            lied = dataclasses.replace(offer, clip_norm=offer.clip_norm * 2)
            content.array_records[wire.OFFER_KEY] = wire.pack(lied.to_bytes())
        return msg

    workflow, grid, _ = _run_direct(tmp_path, tamper=weaker_offer)
    assert workflow.reports[0].status == "released"
    assert victim not in workflow.reports[0].included
    assert any("does not bind the offer" in e for e in _errors(grid))


def test_a_victim_listed_as_survivor_and_dropped_is_never_unmasked(tmp_path: Path) -> None:
    asked = 1000 + 17 * 5  # told that client 0 both survived and dropped

    def both_lists(msg: Message) -> Message:
        content = msg.content
        config = content.config_records.get(wire.CONFIG_KEY)
        if (
            config is not None
            and config["stage"] == "unmask"
            and (msg.metadata.dst_node_id == asked)
        ):
            request = decode(wire.unpack(content.array_records[wire.PAYLOAD_KEY]))
            assert isinstance(request, UnmaskRequest)
            lie = UnmaskRequest(request.survivors, tuple(sorted({*request.dropped, 0})))
            content.array_records[wire.PAYLOAD_KEY] = wire.pack(lie.to_bytes())
        return msg

    workflow, grid, _ = _run_direct(tmp_path, tamper=both_lists)
    aborts = []
    for reply in grid.replies:
        if not reply.has_error() and reply.metadata.src_node_id == asked:
            message = decode(wire.unpack(reply.content.array_records[wire.PAYLOAD_KEY]))
            if isinstance(message, ClientAbort):
                aborts.append(message.reason)
    assert aborts == [AbortReason.BOTH_SHARES_REQUESTED]
    # The other holders answered honestly: the round still completes for everyone else.
    assert workflow.reports[0].status == "released"


def test_malicious_server_mode_runs_the_signed_consistency_round(tmp_path: Path) -> None:
    workflow, grid, _ = _run_direct(tmp_path, malicious_mode=True)
    assert workflow.reports[0].status == "released"
    assert workflow.reports[0].offer is not None
    assert workflow.reports[0].offer.threat_model == "malicious_server"
    signed = [_replies_of(grid, nid, "consistency") for nid in grid.node_ids]
    assert all(len(s) == 1 and isinstance(s[0], ConsistencySignature) for s in signed)


def test_an_unmask_request_without_t_signatures_reveals_nothing(tmp_path: Path) -> None:
    asked = 1000 + 17 * 3

    def strip_signatures(msg: Message) -> Message:
        content = msg.content
        config = content.config_records.get(wire.CONFIG_KEY)
        if (
            config is not None
            and config["stage"] == "unmask"
            and (msg.metadata.dst_node_id == asked)
        ):
            request = decode(wire.unpack(content.array_records[wire.PAYLOAD_KEY]))
            assert isinstance(request, UnmaskRequest) and len(request.signatures) >= 4
            lie = UnmaskRequest(request.survivors, request.dropped, request.signatures[:3])
            content.array_records[wire.PAYLOAD_KEY] = wire.pack(lie.to_bytes())
        return msg

    workflow, grid, _ = _run_direct(tmp_path, malicious_mode=True, tamper=strip_signatures)
    (reply,) = _replies_of(grid, asked, "unmask")
    assert isinstance(reply, ClientAbort)
    assert reply.reason is AbortReason.CONSISTENCY_CHECK_FAILED
    assert workflow.reports[0].status == "released"  # the other five answered honestly


def test_retried_deliveries_get_the_same_answer(tmp_path: Path) -> None:
    workflow, grid, _ = _run_direct(tmp_path, repeat=True)  # the grid asserts equality
    assert grid.retries_answered_alike == 4 * 6  # every stage, every device
    assert workflow.reports[0].status == "released"
    # Once a device has answered the unmasking stage it holds no key of the round.
    sessions = [v for (_, node), v in client_mod._SESSIONS.items() if node in grid.node_ids]
    assert len(sessions) == 6 and all(v.client is None for v in sessions)
    assert len(workflow.reports[0].included) == 6


def test_a_plain_training_request_gets_no_update(tmp_path: Path) -> None:
    from flwr.app import MessageType
    from flwr.common import FitIns

    grid = direct_grid.DirectGrid([4343], _Device, [PrivaggMod()])
    fitins = FitIns(ndarrays_to_parameters(flower_sim.initial_model()), {})
    content = compat.fitins_to_recorddict(fitins, True)
    msg = Message(content, dst_node_id=4343, message_type=MessageType.TRAIN, group_id="1")
    (reply,) = grid.send_and_receive([msg])
    assert reply.has_error() and "refusing a plain training request" in reply.error.reason
    allowed = direct_grid.DirectGrid(
        [4343], _Device, [PrivaggMod(DevicePolicy(allow_plain_training=True))]
    )
    (plain,) = allowed.send_and_receive([msg])
    assert not plain.has_error()  # the control: the same request, allowed by the policy


def test_a_stage_reaching_a_process_without_the_state_is_one_clear_error(
    tmp_path: Path,
) -> None:
    from flwr.app import ConfigRecord, MessageType, RecordDict

    grid = direct_grid.DirectGrid([4242], _Device, [PrivaggMod()])
    content = RecordDict(
        {
            wire.CONFIG_KEY: ConfigRecord({"stage": "mask", "round": 9}),
            wire.PAYLOAD_KEY: wire.pack(b"PA\x01"),
        }
    )
    msg = Message(content, dst_node_id=4242, message_type=MessageType.TRAIN, group_id="9")
    (reply,) = grid.send_and_receive([msg])
    assert reply.has_error() and "SecAgg state is held by" in reply.error.reason
