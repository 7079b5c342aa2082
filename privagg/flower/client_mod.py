"""The device side: a Flower mod that replaces ``secaggplus_mod``.

``ClientApp(client_fn=..., mods=[privagg_mod])``. For a privagg round the mod, on the
device:

1. decodes the server's :class:`~privagg.flower.offer.RoundOffer` and checks it against
   the device's :class:`~privagg.flower.policy.DevicePolicy` (one call, before anything
   else happens);
2. checks that the model it was sent is the one the offer names and that the SecAgg
   session binds this offer (``SetupRequest.context_digest``);
3. runs the user's training (``call_next``) on that model, takes the update
   (new − received weights), clips, rotates, rounds and adds its noise share with
   :func:`dp.encode` under the plan it rebuilt itself;
4. masks the ring vector with privagg's own client state machine,
   :class:`protocols.SecAggClient`, which keeps its own view of every peer and decides
   what it may reveal (one share per peer, never both; abort on contradictions).

Nothing else leaves the device: no weights, no metrics, no example counts. A plain
training request (a ``TRAIN`` message without privagg's records, which would return the raw
update) is refused unless the policy says ``allow_plain_training``.

Where the client state lives: :class:`protocols.SecAggClient` holds secret keys and
refuses to be pickled, so it cannot ride in Flower's ``Context`` (which Flower serializes
between messages). It stays in this process, keyed by (run, node); the ``Context`` only
records which process holds it, so a stage that reaches another process gets one clear
error (the server counts the device as dropped) instead of a silent wrong answer. Flower's
simulation engine keeps ClientApps in long-lived Ray actors: run one actor (see
:func:`privagg.flower.simulation.backend_config`). A SuperNode deployment (flwr 1.42 runs
one ClientApp process per message) needs a sealed export/restore of the client state in
:mod:`protocols`, which does not exist yet; until then every device of a deployment
refuses the second stage and the round aborts before any share is revealed.

Retries: a stage message delivered twice (Flower re-sends after a lost reply) gets the
same reply bytes again, never a second, different answer.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import protocols
import secagg
from dp.distributed import encode
from dp.rng import NoiseRng, SimulationRng
from privagg.flower import wire
from privagg.flower.offer import RoundOffer, model_digest, simulation_noise_seed
from privagg.flower.policy import DevicePolicy, OfferRefused
from protocols.messages import SetupRequest, decode

__all__ = ["PrivaggMod", "SessionLost", "privagg_mod"]

_PROCESS_FIELD = "pid"
_ROUND_FIELD = "round"
_STATE_KEY = "privagg.session"


class SessionLost(RuntimeError):
    """A stage reached a process that does not hold this device's round state."""


@dataclass
class _Session:
    round_number: int
    client: protocols.SecAggClient | None  # None once the round is over for this device
    replies: dict[bytes, bytes] = field(default_factory=dict)


Identity = Callable[[Any], tuple[secagg.SigningKey, Mapping[int, bytes]]]
"""Device context -> (its Ed25519 signing key, the PKI: node id -> public key)."""

_SESSIONS: dict[tuple[int, int], _Session] = {}
_LOCK = threading.Lock()


class PrivaggMod:
    """Flower mod running privagg's distributed DP + SecAgg(+) client on the device.

    ``policy`` is the device's floor on what a server may propose (default:
    :class:`DevicePolicy`). ``identity`` is needed only for the malicious-server mode: called
    on the device with its ``Context``, it returns the device's Ed25519 signing key and the
    PKI it trusts (Flower node id -> Ed25519 public key), never taken from the server. It
    runs where the ClientApp runs, so it must be picklable (a function, not a key object).
    Instances are callables with Flower's mod signature.
    """

    def __init__(
        self, policy: DevicePolicy | None = None, *, identity: Identity | None = None
    ) -> None:
        self.policy = policy if policy is not None else DevicePolicy()
        self.identity = identity
        # Flower pickles the ClientApp (and so this mod) for every message it runs in a
        # simulation actor: the live sessions must be process state, not instance state.
        self._sessions = _SESSIONS
        self._lock = _LOCK

    def __getstate__(self) -> dict[str, Any]:
        return {"policy": self.policy, "identity": self.identity}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["policy"], identity=state["identity"])  # type: ignore[misc]

    def __call__(self, msg: Any, ctxt: Any, call_next: Any) -> Any:
        from flwr.app import ConfigRecord, Error, Message, MessageType, RecordDict
        from flwr.common.constant import ErrorCode

        content = msg.content if msg.has_content() else None
        if msg.metadata.message_type != MessageType.TRAIN or content is None:
            return call_next(msg, ctxt)
        if wire.CONFIG_KEY not in content.config_records:
            if self.policy.allow_plain_training:
                return call_next(msg, ctxt)
            # A plain fit instruction would have the device send its raw update: the one
            # way around private aggregation a server could try.
            return Message(
                Error(
                    code=ErrorCode.MOD_FAILED_PRECONDITION,
                    reason="privagg: refusing a plain training request; this device sends "
                    "its update only through private aggregation",
                ),
                reply_to=msg,
            )
        try:
            stage, round_number, reply = self._handle(msg, ctxt, call_next)
        except (OfferRefused, SessionLost) as exc:
            return Message(
                Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=f"privagg: {exc}"),
                reply_to=msg,
            )
        if isinstance(reply, Message):  # the user's training failed: pass its error on
            return reply
        out = RecordDict(
            {
                wire.CONFIG_KEY: ConfigRecord(
                    {wire.STAGE_FIELD: stage, wire.ROUND_FIELD: round_number}
                ),
                wire.PAYLOAD_KEY: wire.pack(reply),
            }
        )
        return Message(out, reply_to=msg)

    # ------------------------------------------------------------------ stages

    def _handle(self, msg: Any, ctxt: Any, call_next: Any) -> tuple[str, int, Any]:
        content = msg.content
        config = content.config_records[wire.CONFIG_KEY]
        stage, round_number = config.get(wire.STAGE_FIELD), config.get(wire.ROUND_FIELD)
        if stage not in wire.STAGES or isinstance(round_number, bool):
            raise OfferRefused(f"malformed privagg stage message (stage {stage!r})")
        if not isinstance(round_number, int):
            raise OfferRefused("malformed privagg stage message (round)")
        try:
            payload = wire.unpack(content.array_records[wire.PAYLOAD_KEY])
        except (KeyError, ValueError) as exc:
            raise OfferRefused(str(exc)) from None
        key = (int(msg.metadata.run_id), int(msg.metadata.dst_node_id))
        digest = hashlib.sha256(f"{stage}:{round_number}:".encode() + payload).digest()
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and session.round_number == round_number:
                cached = session.replies.get(digest)
                if cached is not None:  # a retried delivery: the same answer again
                    return stage, round_number, cached
        if stage == "advertise":
            result = self._start(msg, ctxt, call_next, payload, round_number, key)
            if not isinstance(result, bytes):
                return stage, round_number, result
            with self._lock:
                self._sessions[key].replies[digest] = result
            return stage, round_number, result
        if session is None or session.round_number != round_number:
            holder = _recorded_process(ctxt)
            where = f"process {holder[0]} (round {holder[1]})" if holder else "no process on record"
            raise SessionLost(
                f"stage {stage!r} of round {round_number} reached process {os.getpid()}, but "
                f"this device's SecAgg state is held by {where}; run the ClientApp in one "
                "long-lived process per device for the whole round"
            )
        client = session.client
        if client is None:
            raise SessionLost(
                f"round {round_number} is over for this device; it answers only exact "
                "retries of messages it already answered"
            )
        reply = client.handle_bytes(payload)
        with self._lock:
            session.replies[digest] = reply
            if client.state in (protocols.ClientState.DONE, protocols.ClientState.ABORTED):
                # Done or aborted: forget the keys; exact retries still get their answer.
                session.client = None
        return stage, round_number, reply

    def _start(
        self,
        msg: Any,
        ctxt: Any,
        call_next: Any,
        payload: bytes,
        round_number: int,
        key: tuple[int, int],
    ) -> Any:
        from flwr.app import ConfigRecord
        from flwr.common import parameters_to_ndarrays
        from flwr.compat.common import recorddict_compat as compat

        content = msg.content
        try:
            offer = RoundOffer.from_bytes(wire.unpack(content.array_records[wire.OFFER_KEY]))
        except (KeyError, ValueError) as exc:
            raise OfferRefused(str(exc)) from None
        node_id = key[1]
        if offer.round_number != round_number:
            raise OfferRefused("the offer is for another round than the stage message")
        if node_id not in offer.node_ids:
            raise OfferRefused(f"this device (node {node_id}) is not in the offered cohort")
        self.policy.check(offer)  # the device's own decision, before any work
        try:
            config = offer.secagg_config()
        except protocols.ConfigError as exc:
            raise OfferRefused(f"invalid SecAgg configuration: {exc}") from None
        try:
            setup = decode(payload)
        except protocols.DecodeError as exc:
            raise OfferRefused(f"malformed setup request: {exc}") from None
        if not isinstance(setup, SetupRequest):
            raise OfferRefused("the first stage must carry a SecAgg setup request")
        if setup.context_digest != offer.context_digest() or setup.round_number != round_number:
            raise OfferRefused("the SecAgg session does not bind the offer this device was sent")
        received = parameters_to_ndarrays(
            compat.recorddict_to_fitins(content, keep_input=True).parameters
        )
        if model_digest(received) != offer.model_sha256:
            raise OfferRefused("the model sent differs from the one the offer names")

        out = call_next(msg, ctxt)  # the user's training, on the model checked above
        if out.has_error():
            return out
        trained = parameters_to_ndarrays(
            compat.recorddict_to_fitres(out.content, keep_input=False).parameters
        )
        update = flat_update(received, trained)
        plan = offer.plan(update.size)
        rng: NoiseRng | None = None
        if offer.simulation_noise_seed is not None:  # the policy allowed it
            rng = SimulationRng(
                simulation_noise_seed(offer.simulation_noise_seed, round_number, node_id)
            )
        ring, _ = encode(update, plan, rotation_seed=offer.rotation_seed, rng=rng)
        signing_key, verify_keys = self._keys(ctxt, offer, node_id, config)
        client = protocols.SecAggClient(
            offer.node_ids.index(node_id),
            config,
            ring,
            signing_key=signing_key,
            verify_keys=verify_keys,
        )
        reply = client.handle_bytes(payload)
        with self._lock:  # a new round replaces (and forgets) the device's previous one
            self._sessions[key] = _Session(round_number, client)
        ctxt.state.config_records[_STATE_KEY] = ConfigRecord(
            {_PROCESS_FIELD: os.getpid(), _ROUND_FIELD: round_number}
        )
        return reply

    def _keys(
        self, ctxt: Any, offer: RoundOffer, node_id: int, config: protocols.SecAggConfig
    ) -> tuple[secagg.SigningKey | None, dict[int, bytes] | None]:
        """The device's signing key and the cohort's verify keys, from its own PKI."""
        if not config.consistency_check:
            return None, None
        if self.identity is None:
            raise OfferRefused(
                "the malicious-server mode needs this device's signing key and PKI "
                "(PrivaggMod(identity=...))"
            )
        signing_key, pki = self.identity(ctxt)
        unknown = [nid for nid in offer.node_ids if nid not in pki]
        if unknown:
            raise OfferRefused(f"nodes {unknown[:3]} are not in this device's PKI")
        if pki[node_id] != signing_key.public_bytes:
            raise OfferRefused("this device's signing key is not the one its PKI names")
        return signing_key, {i: pki[nid] for i, nid in enumerate(offer.node_ids)}


def flat_update(received: list[Any], trained: list[Any]) -> Any:
    """trained − received as one float64 vector (layer order), or ``OfferRefused`` when the
    training returned arrays of other shapes than the model it was given."""
    if len(received) != len(trained) or any(
        a.shape != b.shape for a, b in zip(received, trained, strict=True)
    ):
        raise OfferRefused("training returned arrays whose shapes differ from the model's")
    if not received:
        raise OfferRefused("the model has no parameters")
    return np.concatenate(
        [
            (np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)).ravel()
            for a, b in zip(received, trained, strict=True)
        ]
    )


def _recorded_process(ctxt: Any) -> tuple[int, int] | None:
    record = ctxt.state.config_records.get(_STATE_KEY)
    if record is None:
        return None
    return int(record[_PROCESS_FIELD]), int(record[_ROUND_FIELD])


privagg_mod = PrivaggMod()
"""The mod with the default :class:`DevicePolicy` (secure noise only)."""
