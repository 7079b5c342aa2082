"""A fault-injecting network between one honest server and n honest clients, and an attacker
that tries to unmask individual inputs from everything the server saw.

:class:`FaultyRound` plays one round message by message. For every message it draws a fault
from a seeded simulation generator (which client vanishes where, which message is lost,
duplicated, delayed past its stage, reordered, truncated or bit-flipped); the protocol's own
keys, seeds and masks still come from the OS CSPRNG. It records the *server's* transcript:
every message the server sent and every byte string that reached it, late or not.

:func:`transcript_attack` is what a curious server would try afterwards with that transcript:
for each client, collect every share of its self-mask seed and of its masking key that any
client revealed, rebuild both secrets if it has t of each, strip every mask from the
client's own masked vector and compare with the true input. A success is an individual
input recovered; the suite counts them and requires zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

import secagg
from protocols import (
    AbortReason,
    ProtocolAborted,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    Stage,
    binding,
)
from protocols.errors import DecodeError
from protocols.messages import (
    ClientAbort,
    KeyDirectory,
    MaskedInput,
    Message,
    ShareDelivery,
    UnmaskShares,
    decode,
)

FAULTS = (
    "vanish_before_reply",  # the client crashes after receiving, before answering
    "crash_after_send",  # the client answers, then is gone for the rest of the round
    "lost_down",
    "lost_up",
    "duplicate_down",
    "duplicate_up",
    "delay_up",  # the reply arrives one stage late (after the deadline)
    "truncate_up",
    "truncate_down",
    "flip_header_up",  # a flipped bit in the envelope (type, sender id)
    "flip_authenticated",  # a flipped bit in AEAD ciphertexts / shares / signatures
)


@dataclass
class Transcript:
    """What the server saw: its own messages and every payload that reached it."""

    sent: dict[Stage, dict[int, Message]] = field(default_factory=dict)
    arrived: list[tuple[Stage, int, bytes]] = field(default_factory=list)


@dataclass
class RoundOutcome:
    """How a faulty round ended, with the facts the invariants need."""

    completed: bool
    total: npt.NDArray[Any] | None
    included: tuple[int, ...]
    abort: ProtocolAborted | None
    intact_masked_senders: set[int]
    faults: list[str]
    client_abort_reasons: list[AbortReason]
    transcript: Transcript
    server: SecAggServer
    clients: list[SecAggClient]


def _flip(data: bytes, position: int, bit: int) -> bytes:
    out = bytearray(data)
    out[position % len(out)] ^= 1 << bit
    return bytes(out)


class FaultyRound:
    """One round of full-graph SecAgg under random faults (probability ``p`` per message)."""

    def __init__(
        self,
        inputs: npt.NDArray[Any],
        config: SecAggConfig,
        rng: np.random.Generator,
        *,
        p: float,
        round_number: int = 0,
        context_digest: bytes = bytes(32),
        graph_seed: bytes = bytes(32),
        forced: dict[tuple[Stage, int], str] | None = None,
    ) -> None:
        self.forced = dict(forced or {})
        self.x = inputs
        self.config = config
        self.rng = rng
        self.p = p
        self.signing: list[secagg.SigningKey | None] = [None] * config.num_clients
        verify: dict[int, bytes] | None = None
        if config.consistency_check:
            keys = [secagg.SigningKey.generate() for _ in range(config.num_clients)]
            self.signing = list(keys)
            verify = {i: k.public_bytes for i, k in enumerate(keys)}
        self.server = SecAggServer(
            config,
            inputs.shape[1],
            round_number=round_number,
            graph_seed=graph_seed,
            context_digest=context_digest,
            verify_keys=verify,
        )
        self.clients = [
            SecAggClient(i, config, inputs[i], signing_key=self.signing[i], verify_keys=verify)
            for i in range(config.num_clients)
        ]
        self.gone: set[int] = set()
        self.faults: list[str] = []
        self.transcript = Transcript()
        self.intact_masked: set[int] = set()
        self.delayed: list[tuple[int, bytes]] = []
        self.stale: list[tuple[int, bytes]] = []  # replayed later as duplicates

    # ------------------------------------------------------------------ faults

    def _fault(self, candidates: tuple[str, ...]) -> str | None:
        if self.rng.random() >= self.p:
            return None
        fault = str(candidates[int(self.rng.integers(len(candidates)))])
        self.faults.append(fault)
        return fault

    def _deliver(self, stage: Stage, cid: int, data: bytes) -> None:
        self.transcript.arrived.append((stage, cid, data))
        before = self.server.stage is Stage.MASK and cid in self.server._masked_from
        self.server.receive_bytes(cid, data)
        if self.server.stage is Stage.MASK and not before and cid in self.server._masked_from:
            message = decode(data)
            if isinstance(message, MaskedInput) and message.sender == cid:
                self.intact_masked.add(cid)

    def _corrupt_authenticated(self, data: bytes, stage: Stage) -> bytes | None:
        """Flip a bit inside an authenticated field, or ``None`` if the message has none.

        Masked vectors travel without a MAC of their own: their integrity is the
        transport's (TLS) job, so flipping one of their bits is not a fault this layer
        claims to detect (docs/SECURITY.md, "out of scope").
        """
        message = decode(data)
        if isinstance(message, MaskedInput):
            return None
        tail = 16 if stage in (Stage.SHARE, Stage.MASK) else 8
        position = len(data) - 1 - int(self.rng.integers(min(tail, len(data) - 8)))
        return _flip(data, position, int(self.rng.integers(8)))

    # ------------------------------------------------------------------ driving

    def run(self) -> RoundOutcome:
        """Play the round to its end: the exact aggregate or a typed abort."""
        outbound = self.server.start()
        abort: ProtocolAborted | None = None
        while not self.server.finished:
            stage = self.server.stage
            assert stage is not None
            self.transcript.sent[stage] = dict(outbound)
            order = sorted(outbound)
            self.rng.shuffle(order)  # reordering within a stage must not matter
            late, self.delayed = self.delayed, []
            for cid in order:
                if late and self.rng.random() < 0.5:
                    self._deliver(stage, *late.pop())  # a reply from an earlier stage
                self._exchange(stage, cid, outbound[cid].to_bytes())
            for item in late:
                self._deliver(stage, *item)
            if self.stale and self.rng.random() < self.p:
                self.faults.append("replay_stale")
                picked = self.stale[int(self.rng.integers(len(self.stale)))]
                self._deliver(stage, *picked)
            try:
                outbound = self.server.advance()
            except ProtocolAborted as exc:
                abort = exc
                break
        completed = abort is None
        output = self.server.output() if completed else None
        return RoundOutcome(
            completed=completed,
            total=None if output is None else output.total,
            included=() if output is None else output.included,
            abort=abort,
            intact_masked_senders=set(self.intact_masked),
            faults=list(self.faults),
            client_abort_reasons=[a.reason for a in self.server.client_aborts.values()],
            transcript=self.transcript,
            server=self.server,
            clients=self.clients,
        )

    def _exchange(self, stage: Stage, cid: int, data: bytes) -> None:
        if cid in self.gone:
            return
        down = self._fault(("lost_down", "duplicate_down", "truncate_down", "flip_authenticated"))
        if down == "lost_down":
            return
        if down == "truncate_down":
            data = data[: int(self.rng.integers(len(data)))]
        elif down == "flip_authenticated":
            data = self._corrupt_authenticated(data, stage) or data
        client = self.clients[cid]
        vanish = self.forced.get((stage, cid)) or self._fault(
            ("vanish_before_reply", "crash_after_send")
        )
        if (stage, cid) in self.forced:
            self.faults.append(self.forced[stage, cid])
        if vanish == "vanish_before_reply":
            self.gone.add(cid)
            return
        reply = client.handle_bytes(data)
        if down == "duplicate_down":
            client.handle_bytes(data)  # the second copy; its reply is never sent
        up = self._fault(
            (
                "lost_up",
                "duplicate_up",
                "delay_up",
                "truncate_up",
                "flip_header_up",
                "flip_authenticated",
            )
        )
        if vanish == "crash_after_send":
            self.gone.add(cid)
        if up == "lost_up":
            return
        if up == "delay_up":
            self.delayed.append((cid, reply))
            return
        if up == "truncate_up":
            reply = reply[: int(self.rng.integers(len(reply)))]
        elif up == "flip_header_up":
            reply = _flip(reply, 2 + int(self.rng.integers(6)), int(self.rng.integers(8)))
        elif up == "flip_authenticated":
            reply = self._corrupt_authenticated(reply, stage) or reply
        self._deliver(stage, cid, reply)
        self.stale.append((cid, reply))
        if up == "duplicate_up":
            self._deliver(stage, cid, reply)


# ---------------------------------------------------------------------- the attack


def _decoded(data: bytes) -> Message | None:
    try:
        return decode(data)
    except DecodeError:
        return None


@dataclass
class Loot:
    """Everything of one victim that a curious server holds after the round."""

    masked: list[npt.NDArray[Any]] = field(default_factory=list)
    seed_shares: dict[int, secagg.Share] = field(default_factory=dict)
    key_shares: dict[int, secagg.Share] = field(default_factory=dict)


def _parse_share(data: bytes) -> secagg.Share | None:
    try:
        return secagg.Share.from_bytes(binding.share_of_opening(data))
    except (secagg.ShareError, DecodeError):
        return None


def collect_loot(transcript: Transcript, victim: int) -> Loot:
    """Every masked vector and every revealed share of ``victim`` in the transcript."""
    loot = Loot()
    for _, sender, data in transcript.arrived:
        message = _decoded(data)
        if isinstance(message, MaskedInput) and message.sender == victim == sender:
            loot.masked.append(np.array(message.vector))
        if isinstance(message, UnmaskShares):
            for owner, raw in message.seed_shares:
                share = _parse_share(raw) if owner == victim else None
                if share is not None:
                    loot.seed_shares.setdefault(share.x, share)
            for owner, raw in message.key_shares:
                share = _parse_share(raw) if owner == victim else None
                if share is not None:
                    loot.key_shares.setdefault(share.x, share)
    return loot


def strip_masks(
    transcript: Transcript,
    config: SecAggConfig,
    victim: int,
    masked: npt.NDArray[Any],
    seed: bytes,
    private: bytes,
) -> npt.NDArray[Any] | None:
    """The victim's y_u minus its self mask and its pairwise masks (as the server saw them)."""
    directory = next(iter(transcript.sent.get(Stage.SHARE, {}).values()), None)
    delivery = transcript.sent.get(Stage.MASK, {}).get(victim)
    setup = transcript.sent[Stage.ADVERTISE][victim]
    if not isinstance(directory, KeyDirectory) or not isinstance(delivery, ShareDelivery):
        return None
    assert hasattr(setup, "digest") and hasattr(setup, "round_number")
    session = binding.round_session_id(setup.round_number, setup.digest(), directory.to_bytes())
    try:
        key = secagg.AgreementKey.from_private_bytes(private)
    except secagg.SecAggValueError:
        return None
    index = {v: i for i, v in enumerate(directory.client_ids)}
    y = masked.copy()
    bits = config.bits
    secagg.add_masks(y, [seed], [-1], bits=bits, domain=binding.SELF_MASK_DOMAIN)
    seeds, signs = [], []
    for peer, _ in delivery.ciphertexts:  # the peers whose shares the victim received
        _, mask_public, _ = directory.entry(index[peer])
        seeds.append(
            secagg.derive_shared_key(
                key, mask_public, label=binding.MASK_KEY_LABEL, context=session
            )
        )
        signs.append(-1 if victim < peer else 1)
    secagg.add_masks(y, seeds, signs, bits=bits, domain=binding.PAIRWISE_MASK_DOMAIN)
    return y


def try_unmask(
    transcript: Transcript,
    config: SecAggConfig,
    victim: int,
    loot: Loot,
    truth: npt.NDArray[Any],
) -> bool:
    """Whether ``loot`` lets the server rebuild ``victim``'s own input exactly."""
    t = config.threshold
    if not loot.masked or len(loot.seed_shares) < t or len(loot.key_shares) < t:
        return False
    try:
        seed = secagg.shamir_combine([loot.seed_shares[x] for x in sorted(loot.seed_shares)][:t])
        private = secagg.shamir_combine([loot.key_shares[x] for x in sorted(loot.key_shares)][:t])
    except secagg.ShareError:
        return False
    for masked in loot.masked:
        recovered = strip_masks(transcript, config, victim, masked, seed, private)
        if recovered is not None and np.array_equal(recovered, truth):
            return True
    return False


def transcript_attack(outcome: RoundOutcome, inputs: npt.NDArray[Any]) -> tuple[int, int]:
    """(attempts, successes) of unmasking every client's input from the transcript."""
    config = outcome.server.config
    successes = 0
    for victim in range(config.num_clients):
        loot = collect_loot(outcome.transcript, victim)
        successes += try_unmask(outcome.transcript, config, victim, loot, inputs[victim])
    return config.num_clients, successes


def control_attack(outcome: RoundOutcome, inputs: npt.NDArray[Any]) -> bool | None:
    """Positive control: give the attacker both share kinds of one included client.

    The shares come from the honest holders' own state (what a client that does not check
    its requests would hand out). ``None`` when no included client has t holders left
    that still keep its shares (aborted clients wipe them).
    """
    config = outcome.server.config
    t = config.threshold
    for victim in outcome.included:
        holders = [c for c in outcome.clients if c.client_id != victim and victim in c._received][
            :t
        ]
        if len(holders) < t:
            continue
        loot = collect_loot(outcome.transcript, victim)
        loot.seed_shares = {}
        loot.key_shares = {}
        for holder in holders:
            seed_raw, key_raw = holder._received[victim]
            seed_share, key_share = (
                secagg.Share.from_bytes(binding.share_of_opening(seed_raw)),
                secagg.Share.from_bytes(binding.share_of_opening(key_raw)),
            )
            loot.seed_shares[seed_share.x] = seed_share
            loot.key_shares[key_share.x] = key_share
        return try_unmask(outcome.transcript, config, victim, loot, inputs[victim])
    return None


def aborts_of(outcome: RoundOutcome) -> list[str]:
    """Typed reasons of the round abort and of every client abort the server received."""
    reasons = [r.value for r in outcome.client_abort_reasons]
    if outcome.abort is not None:
        reasons.append(f"round:{outcome.abort.stage}:{outcome.abort.reason.value}")
    return reasons


__all__ = [
    "FAULTS",
    "ClientAbort",
    "FaultyRound",
    "Loot",
    "RoundOutcome",
    "Transcript",
    "aborts_of",
    "collect_loot",
    "control_attack",
    "transcript_attack",
    "try_unmask",
]
