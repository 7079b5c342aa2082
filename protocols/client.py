"""The honest client: one state per protocol round, driven by typed messages.

``SecAggClient.handle(message)`` consumes one server message and returns the client's
reply. Every check that protects this client's (or a peer's) secrets is made here, from
the client's own view of the round; nothing the server claims is taken on trust:

* its per-peer table (:class:`PeerStatus`) records who advertised keys and who delivered
  shares; an unmasking request must agree with it exactly;
* it reveals, per peer, the self-mask-seed share (peer survived) *or* the masking-key
  share (peer dropped after sharing), never both, also across retried requests;
* it checks every dealt share against the commitment its dealer published (so it can
  never be framed for revealing a share its dealer got wrong), and reveals the opening
  (nonce || share) of the one kind asked for;
* it aborts (and reveals nothing) on fewer than t surviving holders, on being listed as
  dropped, on unknown / duplicate / re-listed ids, on its own keys altered, on duplicate
  public keys, on share ciphertexts that fail authentication (replayed, misrouted or
  tampered) and, in malicious-server mode, on missing or invalid signatures;
* its keys are bound to the session id, which hashes every advertised key and the digest
  of the setup the server sent (model, config, graph): a server that equivocates gets
  shares that do not decrypt, masks that do not cancel, or a failed consistency check.

A protocol violation moves the client to :attr:`ClientState.ABORTED` and the reply is a
:class:`~protocols.messages.ClientAbort`; every later message gets the same reply.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Mapping
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

import secagg
from protocols import binding
from protocols.config import SecAggConfig, Stage
from protocols.errors import AbortReason, ConfigError, DecodeError, StateError
from protocols.graph import CommunicationGraph
from protocols.messages import (
    AdvertiseKeys,
    ClientAbort,
    ClientMessage,
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShares,
    KeyDirectory,
    MaskedInput,
    Message,
    SetupRequest,
    ShareDelivery,
    UnmaskRequest,
    UnmaskShares,
    decode,
)

__all__ = ["ClientState", "PeerStatus", "SecAggClient", "ShareKind"]


class ClientState(enum.Enum):
    """Which server message the client waits for."""

    AWAIT_SETUP = "await_setup"
    AWAIT_KEYS = "await_keys"
    AWAIT_SHARES = "await_shares"
    AWAIT_CONSISTENCY = "await_consistency"
    AWAIT_UNMASK = "await_unmask"
    DONE = "done"
    ABORTED = "aborted"


class PeerStatus(enum.Enum):
    """A share holder's status as *this* client observed it."""

    ALIVE = "alive"
    DROPPED_AT_ADVERTISE = "dropped_at_advertise"
    DROPPED_AT_SHARE = "dropped_at_share"
    DROPPED_AT_MASK = "dropped_at_mask"


class ShareKind(enum.Enum):
    """The two secrets of a client, at most one of which an honest holder reveals."""

    SELF_MASK_SEED = "self_mask_seed"
    MASKING_KEY = "masking_key"


class _Abort(Exception):
    def __init__(self, reason: AbortReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


def _abort(reason: AbortReason) -> NoReturn:
    raise _Abort(reason)


_STAGE_OF_STATE = {
    ClientState.AWAIT_SETUP: Stage.ADVERTISE,
    ClientState.AWAIT_KEYS: Stage.SHARE,
    ClientState.AWAIT_SHARES: Stage.MASK,
    ClientState.AWAIT_CONSISTENCY: Stage.CONSISTENCY,
    ClientState.AWAIT_UNMASK: Stage.UNMASK,
    ClientState.DONE: Stage.UNMASK,
}


class SecAggClient:
    """Client ``client_id`` of a round with the public parameters ``config``.

    ``inputs`` is this client's vector of ring elements (dtype ``secagg.ring_dtype(bits)``,
    values below 2^bits); it is only read. In malicious-server mode the client needs its
    ``signing_key`` and the PKI's ``verify_keys`` (client id -> Ed25519 public key).
    Instances hold secrets: their ``repr`` is redacted and they refuse pickling.
    """

    def __init__(
        self,
        client_id: int,
        config: SecAggConfig,
        inputs: npt.NDArray[Any],
        *,
        signing_key: secagg.SigningKey | None = None,
        verify_keys: Mapping[int, bytes] | None = None,
    ) -> None:
        if not isinstance(config, SecAggConfig):
            raise ConfigError("config must be a protocols.SecAggConfig")
        if isinstance(client_id, bool) or not 0 <= client_id < config.num_clients:
            raise ConfigError(f"client_id must be in [0, {config.num_clients})")
        dtype = secagg.ring_dtype(config.bits)
        if not isinstance(inputs, np.ndarray) or inputs.ndim != 1 or inputs.dtype != dtype:
            raise ConfigError(
                f"inputs must be a 1-D numpy array of dtype {dtype} for bits={config.bits}"
            )
        if config.consistency_check and (signing_key is None or verify_keys is None):
            raise ConfigError("malicious-server mode needs a signing key and the verify keys")
        self.client_id = client_id
        self.config = config
        self._inputs = inputs
        self._signing_key = signing_key
        self._verify_keys = dict(verify_keys or {})
        self.state = ClientState.AWAIT_SETUP
        self.abort_reason: AbortReason | None = None
        self.session_id: bytes | None = None
        self._abort_reply: ClientAbort | None = None
        self._setup: SetupRequest | None = None
        self._setup_digest = b""
        self._graph: CommunicationGraph | None = None
        self._enc_key: secagg.AgreementKey | None = None
        self._mask_key: secagg.AgreementKey | None = None
        self._seed: bytes | None = None
        self._status: dict[int, PeerStatus] = {}
        self._enc_public: dict[int, bytes] = {}
        self._mask_public: dict[int, bytes] = {}
        self._own_shares: tuple[bytes, bytes] = (b"", b"")
        self._received: dict[int, tuple[bytes, bytes]] = {}
        self._share_keys: dict[int, bytes] = {}
        self._share_senders: frozenset[int] = frozenset()
        self._signed_survivors: tuple[int, ...] | None = None
        self._revealed: dict[int, ShareKind] = {}
        self._unmask_reply: UnmaskShares | None = None

    # ------------------------------------------------------------------ public API

    def handle(self, message: Message) -> ClientMessage:
        """Consume one server message and return the reply (a ``ClientAbort`` on abort)."""
        if self._abort_reply is not None:
            return self._abort_reply
        stage = _STAGE_OF_STATE[self.state]
        try:
            return self._dispatch(message)
        except _Abort as exc:
            return self._enter_abort(stage, exc.reason)
        except secagg.SecAggValueError:
            # Network input the primitives refuse (a bad key, share or length): never
            # let it escape as an exception from inside the crypto layer.
            return self._enter_abort(stage, AbortReason.INVALID_PUBLIC_KEY)

    def handle_bytes(self, data: bytes) -> bytes:
        """Decode, :meth:`handle` and encode; malformed bytes abort the client."""
        if self._abort_reply is not None:
            return self._abort_reply.to_bytes()
        try:
            message = decode(data)
        except DecodeError:
            stage = _STAGE_OF_STATE[self.state]
            return self._enter_abort(stage, AbortReason.MALFORMED_MESSAGE).to_bytes()
        return self.handle(message).to_bytes()

    def status(self, peer: int) -> PeerStatus | None:
        """This client's view of share holder ``peer`` (``None`` if not a holder)."""
        return self._status.get(peer)

    @property
    def revealed(self) -> Mapping[int, ShareKind]:
        """Which share this client revealed for each owner (read-only copy)."""
        return dict(self._revealed)

    def __repr__(self) -> str:
        return f"SecAggClient(client_id={self.client_id}, state={self.state.value})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecAggClient holds secret keys and cannot be pickled")

    # ------------------------------------------------------------------ dispatch

    def _enter_abort(self, stage: Stage, reason: AbortReason) -> ClientAbort:
        self.state = ClientState.ABORTED
        self.abort_reason = reason
        # Drop every secret: an aborted client has nothing more to say this round.
        self._enc_key = self._mask_key = None
        self._seed = None
        self._own_shares = (b"", b"")
        self._received.clear()
        self._share_keys.clear()
        self._abort_reply = ClientAbort(self.client_id, stage, reason)
        return self._abort_reply

    def _dispatch(self, message: Message) -> ClientMessage:
        state = self.state
        if state is ClientState.AWAIT_SETUP and isinstance(message, SetupRequest):
            return self._on_setup(message)
        if state is ClientState.AWAIT_KEYS and isinstance(message, KeyDirectory):
            return self._on_keys(message)
        if state is ClientState.AWAIT_SHARES and isinstance(message, ShareDelivery):
            return self._on_shares(message)
        if state is ClientState.AWAIT_CONSISTENCY and isinstance(message, ConsistencyRequest):
            return self._on_consistency(message)
        if state in (ClientState.AWAIT_UNMASK, ClientState.DONE) and isinstance(
            message, UnmaskRequest
        ):
            return self._on_unmask(message)
        _abort(AbortReason.UNEXPECTED_MESSAGE)

    def _graph_or_fail(self) -> CommunicationGraph:
        if self._graph is None:  # pragma: no cover - guarded by the state machine
            raise StateError("graph used before setup")
        return self._graph

    # ------------------------------------------------------------------ round 0

    def _on_setup(self, setup: SetupRequest) -> AdvertiseKeys:
        cfg = self.config
        setup_full = setup.neighbors is None or setup.neighbors >= setup.num_clients - 1
        if (
            setup.num_clients != cfg.num_clients
            or setup.threshold != cfg.threshold
            or setup_full != cfg.is_full_graph
            or (not setup_full and setup.neighbors != cfg.neighbors)
            or setup.bits != cfg.bits
            or setup.threat_model is not cfg.threat_model
            or setup.vector_length != self._inputs.size
        ):
            _abort(AbortReason.CONFIG_MISMATCH)
        self._setup = setup
        self._setup_digest = setup.digest()
        self._graph = CommunicationGraph(cfg.num_clients, cfg.neighbors, setup.graph_seed)
        self._enc_key = secagg.AgreementKey.generate()
        self._mask_key = secagg.AgreementKey.generate()
        self._seed = secagg.random_seed(32)
        enc_public, mask_public = self._enc_key.public_bytes, self._mask_key.public_bytes
        signature = b""
        if self._signing_key is not None and cfg.consistency_check:
            signature = self._signing_key.sign(
                binding.advertise_payload(
                    round_number=setup.round_number,
                    setup_digest=self._setup_digest,
                    sender=self.client_id,
                    enc_public=enc_public,
                    mask_public=mask_public,
                )
            )
        self.state = ClientState.AWAIT_KEYS
        return AdvertiseKeys(self.client_id, enc_public, mask_public, signature)

    # ------------------------------------------------------------------ round 1

    def _on_keys(self, directory: KeyDirectory) -> EncryptedShares:
        cfg, graph, me = self.config, self._graph_or_fail(), self.client_id
        assert self._setup is not None and self._enc_key is not None
        assert self._mask_key is not None and self._seed is not None
        ids = directory.client_ids
        if ids and max(ids) >= cfg.num_clients:
            _abort(AbortReason.UNKNOWN_CLIENT)
        index = dict(zip(ids, range(len(ids)), strict=True))
        if len(index) != len(ids):
            _abort(AbortReason.DUPLICATE_CLIENT)
        if me not in index:
            _abort(AbortReason.SELF_LISTED_AS_DROPPED)
        own_enc, own_mask, _ = directory.entry(index[me])
        if own_enc != self._enc_key.public_bytes or own_mask != self._mask_key.public_bytes:
            _abort(AbortReason.OWN_KEYS_ALTERED)
        holders = graph.holders(me)
        seen: set[bytes] = set()
        for v in holders:
            if v not in index:
                self._status[v] = PeerStatus.DROPPED_AT_ADVERTISE
                continue
            enc, mask, signature = directory.entry(index[v])
            if enc in seen or mask in seen or enc == mask:
                _abort(AbortReason.DUPLICATE_PUBLIC_KEY)
            seen.update((enc, mask))
            if cfg.consistency_check and v != me:
                self._check_advertise_signature(v, enc, mask, signature)
            self._status[v] = PeerStatus.ALIVE
            self._enc_public[v], self._mask_public[v] = enc, mask
        alive = [v for v in holders if self._status[v] is PeerStatus.ALIVE]
        if len(alive) < cfg.threshold:
            _abort(AbortReason.TOO_FEW_SURVIVORS)
        session = binding.round_session_id(
            self._setup.round_number, self._setup_digest, directory.to_bytes()
        )
        self.session_id = session
        seed_shares, key_shares = secagg.shamir_split_many(
            [self._seed, self._mask_key.private_bytes_for_sharing()],
            len(holders),
            cfg.threshold,
        )
        associated_data = binding.ShareAssociatedData(session, self._setup.round_number)
        ciphertexts = []
        for v in alive:
            x = graph.share_x(me, v)
            # Each share travels as an opening (nonce || share) with a public commitment,
            # so at unmasking the server can tell a lying holder from a lying dealer.
            seed_opening = binding.new_opening(seed_shares[x - 1].to_bytes())
            key_opening = binding.new_opening(key_shares[x - 1].to_bytes())
            if v == me:
                self._own_shares = (seed_opening, key_opening)
                continue
            key = secagg.derive_shared_key(
                self._enc_key,
                self._enc_public[v],
                label=binding.SHARE_KEY_LABEL,
                context=session,
            )
            self._share_keys[v] = key  # the same key opens v's shares in the next stage
            plaintext = binding.pack_share_plaintext(me, v, seed_opening, key_opening)
            commitments = binding.share_commitments(session, me, v, seed_opening, key_opening)
            ad = associated_data(me, v) + commitments
            sealed = secagg.seal(key, plaintext, associated_data=ad)
            ciphertexts.append((v, commitments + sealed))
        self.state = ClientState.AWAIT_SHARES
        return EncryptedShares(me, tuple(ciphertexts))

    def _check_advertise_signature(self, v: int, enc: bytes, mask: bytes, sig: bytes) -> None:
        assert self._setup is not None
        verify_key = self._verify_keys.get(v)
        if verify_key is None:
            _abort(AbortReason.UNKNOWN_CLIENT)
        payload = binding.advertise_payload(
            round_number=self._setup.round_number,
            setup_digest=self._setup_digest,
            sender=v,
            enc_public=enc,
            mask_public=mask,
        )
        try:
            secagg.verify_signature(verify_key, payload, sig)
        except secagg.SignatureError:
            _abort(AbortReason.BAD_SIGNATURE)

    # ------------------------------------------------------------------ round 2

    def _on_shares(self, delivery: ShareDelivery) -> MaskedInput:
        cfg, me = self.config, self.client_id
        assert self._setup is not None and self._enc_key is not None
        assert self._mask_key is not None and self._seed is not None
        assert self.session_id is not None
        associated_data = binding.ShareAssociatedData(self.session_id, self._setup.round_number)
        received: dict[int, tuple[bytes, bytes]] = {}
        for sender, ciphertext in delivery.ciphertexts:
            status = self._status.get(sender)
            if status is None or sender >= cfg.num_clients:
                _abort(AbortReason.UNKNOWN_CLIENT)
            if sender == me:
                _abort(AbortReason.MISROUTED_SHARE)
            if status is not PeerStatus.ALIVE:
                _abort(AbortReason.PEER_ALREADY_DROPPED)
            if sender in received:
                _abort(AbortReason.DUPLICATE_CLIENT)
            key = self._share_keys[sender]
            try:
                commitments, sealed = binding.split_committed_ciphertext(ciphertext)
            except DecodeError:
                _abort(AbortReason.MALFORMED_MESSAGE)
            ad = associated_data(sender, me) + commitments
            try:
                plaintext = secagg.open_sealed(key, sealed, associated_data=ad)
            except secagg.DecryptionError:
                _abort(AbortReason.SHARE_DECRYPTION_FAILED)
            try:
                from_id, to_id, seed_opening, key_opening = binding.unpack_share_plaintext(
                    plaintext
                )
            except DecodeError:
                _abort(AbortReason.MALFORMED_MESSAGE)
            if (from_id, to_id) != (sender, me):
                _abort(AbortReason.MISROUTED_SHARE)
            expected = binding.share_commitments(
                self.session_id, sender, me, seed_opening, key_opening
            )
            if not hmac.compare_digest(expected, commitments):
                _abort(AbortReason.SHARE_COMMITMENT_MISMATCH)
            received[sender] = (seed_opening, key_opening)
        if len(received) + 1 < cfg.threshold:
            _abort(AbortReason.TOO_FEW_SURVIVORS)
        for v, status in self._status.items():
            if status is PeerStatus.ALIVE and v != me and v not in received:
                self._status[v] = PeerStatus.DROPPED_AT_SHARE
        self._received = received
        self._share_keys.clear()
        self._share_senders = frozenset(received) | {me}
        masked = self._mask_input(sorted(received))
        self.state = (
            ClientState.AWAIT_CONSISTENCY if cfg.consistency_check else ClientState.AWAIT_UNMASK
        )
        return MaskedInput(me, cfg.bits, masked)

    def _mask_input(self, peers: list[int]) -> npt.NDArray[Any]:
        bits, me = self.config.bits, self.client_id
        assert self._mask_key is not None and self._seed is not None
        assert self.session_id is not None
        masked = np.array(self._inputs, dtype=secagg.ring_dtype(bits), order="C", copy=True)
        secagg.add_masks(masked, [self._seed], [1], bits=bits, domain=binding.SELF_MASK_DOMAIN)
        seeds = [
            secagg.derive_shared_key(
                self._mask_key,
                self._mask_public[v],
                label=binding.MASK_KEY_LABEL,
                context=self.session_id,
            )
            for v in peers
        ]
        signs = [1 if me < v else -1 for v in peers]
        secagg.add_masks(masked, seeds, signs, bits=bits, domain=binding.PAIRWISE_MASK_DOMAIN)
        masked.flags.writeable = False
        return masked

    # ------------------------------------------------------------------ round 3

    def _on_consistency(self, request: ConsistencyRequest) -> ConsistencySignature:
        assert self.session_id is not None and self._signing_key is not None
        survivors = self._check_id_list(request.survivors)
        self._check_survivor_view(survivors)
        self._signed_survivors = tuple(sorted(survivors))
        signature = self._signing_key.sign(
            binding.consistency_payload(self.session_id, self._signed_survivors)
        )
        self.state = ClientState.AWAIT_UNMASK
        return ConsistencySignature(self.client_id, signature)

    # ------------------------------------------------------------------ round 4

    def _on_unmask(self, request: UnmaskRequest) -> UnmaskShares:
        cfg, me, graph = self.config, self.client_id, self._graph_or_fail()
        survivors = self._check_id_list(request.survivors)
        dropped = self._check_id_list(request.dropped)
        if survivors & dropped:
            _abort(AbortReason.BOTH_SHARES_REQUESTED)
        if me in dropped:
            _abort(AbortReason.SELF_LISTED_AS_DROPPED)
        self._check_survivor_view(survivors)
        holders = set(graph.holders(me))
        for v in dropped & holders:
            if v not in self._share_senders:
                _abort(AbortReason.PEER_ALREADY_DROPPED)
        if (survivors | dropped) & holders != self._share_senders:
            _abort(AbortReason.INCONSISTENT_SURVIVORS)
        if cfg.consistency_check:
            self._check_consistency_proof(survivors, request.signatures)
        plan = {v: ShareKind.SELF_MASK_SEED for v in survivors & holders}
        plan.update({v: ShareKind.MASKING_KEY for v in dropped & holders})
        if self._unmask_reply is not None:  # a retried request: same answer or nothing
            if any(self._revealed.get(v, kind) is not kind for v, kind in plan.items()):
                _abort(AbortReason.BOTH_SHARES_REQUESTED)
            if plan != self._revealed:
                _abort(AbortReason.INCONSISTENT_SURVIVORS)
            return self._unmask_reply
        seed_shares, key_shares = [], []
        for v in sorted(plan):
            seed_share, key_share = self._own_shares if v == me else self._received[v]
            if plan[v] is ShareKind.SELF_MASK_SEED:
                seed_shares.append((v, seed_share))
            else:
                key_shares.append((v, key_share))
                self._status[v] = PeerStatus.DROPPED_AT_MASK
        self._revealed = plan
        self._unmask_reply = UnmaskShares(me, tuple(seed_shares), tuple(key_shares))
        self.state = ClientState.DONE
        return self._unmask_reply

    def _check_id_list(self, ids: tuple[int, ...]) -> set[int]:
        if ids and max(ids) >= self.config.num_clients:
            _abort(AbortReason.UNKNOWN_CLIENT)
        unique = set(ids)
        if len(unique) != len(ids):
            _abort(AbortReason.DUPLICATE_CLIENT)
        return unique

    def _check_survivor_view(self, survivors: set[int]) -> None:
        """Survivors must be holders this client saw share, include it, and reach t."""
        me, graph = self.client_id, self._graph_or_fail()
        if me not in survivors:
            _abort(AbortReason.SELF_LISTED_AS_DROPPED)
        holders = set(graph.holders(me))
        local = survivors & holders
        if not local <= self._share_senders:
            _abort(AbortReason.PEER_ALREADY_DROPPED)
        if len(local) < self.config.threshold:
            _abort(AbortReason.TOO_FEW_SURVIVORS)

    def _check_consistency_proof(
        self, survivors: set[int], signatures: tuple[tuple[int, bytes], ...]
    ) -> None:
        assert self.session_id is not None
        if self._signed_survivors is None or tuple(sorted(survivors)) != self._signed_survivors:
            _abort(AbortReason.CONSISTENCY_CHECK_FAILED)
        payload = binding.consistency_payload(self.session_id, self._signed_survivors)
        signers: set[int] = set()
        for signer, signature in signatures:
            verify_key = self._verify_keys.get(signer)
            if signer not in survivors or signer in signers or verify_key is None:
                _abort(AbortReason.CONSISTENCY_CHECK_FAILED)
            try:
                secagg.verify_signature(verify_key, payload, signature)
            except secagg.SignatureError:
                _abort(AbortReason.CONSISTENCY_CHECK_FAILED)
            signers.add(signer)
        if len(signers) < self.config.threshold:
            _abort(AbortReason.CONSISTENCY_CHECK_FAILED)
