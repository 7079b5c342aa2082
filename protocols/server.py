"""The honest server: collects one stage at a time, enforces t, unmasks in batches.

Drive it with :meth:`SecAggServer.start`, then, per stage, :meth:`receive` every client
message that arrives and :meth:`advance` when the stage closes (all expected replies in,
or a timeout). ``advance`` returns the next messages per client or raises
:class:`~protocols.errors.ProtocolAborted` when fewer than t clients (of some
neighbourhood) are left; it checks this *before* asking for any share, so an abort before
the unmasking stage reveals nothing.

Masked inputs are summed into one accumulator as they arrive (memory O(d), not O(n·d)).
Unmasking rebuilds the survivors' self-mask seeds and the dropped clients' masking keys
from *every* share that arrived with one batched :func:`secagg.shamir_decode_many`
(shares answered by the same holders reuse one parity check and one set of Lagrange
coefficients) and subtracts every mask with :func:`secagg.add_masks` into that
accumulator; nothing loops over coordinates in Python.

Robust unmasking. Every dealt share comes with its dealer's commitment (kept from the
share stage, 64 bytes per pair), and the m revealed shares of one secret form a
Reed-Solomon word. If a secret's shares are not all good, the shares that do not open
their commitment are the holders' lies and are dropped; the others are decoded,
correcting up to floor((m' - t) / 2) shares the dealer itself got wrong. Each bad share is
a typed :class:`ShareFault` blaming the holder or the dealer; the blamed clients join
:attr:`SecAggServer.faulty`. Only when some secret stays undecodable does the round
abort, with :attr:`AbortReason.TOO_MANY_BAD_SHARES` and its suspects; it never releases a
sum rebuilt from unverified shares. Nothing here asks any client for more shares: the
client-side rule "one share kind per peer" is untouched (docs/SECURITY.md).
Late, duplicate or out-of-stage messages are ignored and never counted twice.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

import secagg
from protocols import binding
from protocols.client import ShareKind
from protocols.config import SecAggConfig, Stage
from protocols.errors import AbortReason, ConfigError, DecodeError, ProtocolAborted, StateError
from protocols.graph import GRAPH_SEED_BYTES, CommunicationGraph
from protocols.messages import (
    AdvertiseKeys,
    ClientAbort,
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShares,
    KeyDirectory,
    MaskedInput,
    Message,
    ServerMessage,
    SetupRequest,
    ShareDelivery,
    UnmaskRequest,
    UnmaskShares,
    decode,
)

__all__ = ["AggregateOutput", "SecAggServer", "ShareFault", "ShareFaultCause"]

SELF_MASK_SEED_BYTES = 32
"""Length of the self-mask seed an honest client shares (``secagg.random_seed(32)``)."""
MASKING_KEY_BYTES = 32
"""Length of ``AgreementKey.private_bytes_for_sharing()``, the shared masking key."""

_EXPECTED: dict[Stage, type[Message]] = {
    Stage.ADVERTISE: AdvertiseKeys,
    Stage.SHARE: EncryptedShares,
    Stage.MASK: MaskedInput,
    Stage.CONSISTENCY: ConsistencySignature,
    Stage.UNMASK: UnmaskShares,
}


class ShareFaultCause(enum.Enum):
    """What was wrong with a share revealed at unmasking, and so who is to blame."""

    MISSING = "missing"
    """The holder answered the unmasking request but left this share out (an honest
    holder reveals one share for every owner it holds). Blames the holder."""
    NOT_AS_DEALT = "not_as_dealt"
    """The holder revealed something that does not open the commitment its dealer
    published for it: the holder lied (an honest holder checked that commitment when the
    share arrived). Blames the holder."""
    MALFORMED_AS_DEALT = "malformed_as_dealt"
    """The share opens the dealer's commitment but is not a well-formed share of that slot
    (encoding, x, threshold, length): the dealer dealt it so. Blames the dealer."""
    OFF_POLYNOMIAL_AS_DEALT = "off_polynomial_as_dealt"
    """The share opens the dealer's commitment but is off the polynomial its other shares
    determine: the dealer dealt inconsistent shares. Blames the dealer."""


_DEALER_FAULTS = frozenset(
    {ShareFaultCause.MALFORMED_AS_DEALT, ShareFaultCause.OFF_POLYNOMIAL_AS_DEALT}
)


@dataclass(frozen=True)
class ShareFault:
    """A bad share of ``owner``'s secret ``kind`` revealed by ``holder`` at unmasking."""

    holder: int
    owner: int
    kind: ShareKind
    cause: ShareFaultCause

    @property
    def culprit(self) -> int:
        """The client the evidence blames: the holder, or the owner (its dealer)."""
        return self.owner if self.cause in _DEALER_FAULTS else self.holder


@dataclass(frozen=True, eq=False)
class AggregateOutput:
    """The unmasked sum mod 2^bits of the inputs of ``included`` (sorted ids).

    ``share_faults`` lists every bad share that was corrected or ignored on the way (by
    holder, owner, kind and cause); the clients they blame are in ``culprits``. A
    culprit's own masked input stays in the sum (it was summed before unmasking, and its
    self mask is rebuilt from the other holders' shares).
    """

    total: npt.NDArray[Any]
    included: tuple[int, ...]
    share_faults: tuple[ShareFault, ...] = ()

    @property
    def culprits(self) -> tuple[int, ...]:
        """Sorted ids of the clients blamed for at least one bad share."""
        return tuple(sorted({fault.culprit for fault in self.share_faults}))


class SecAggServer:
    """Server of one round of SecAgg / SecAgg+ with public parameters ``config``.

    ``graph_seed`` (32 public bytes) fixes the SecAgg+ graph; ``context_digest`` is a
    hash of what else the server sends for this round (e.g. the model), bound into the
    session id; ``verify_keys`` is the PKI of the malicious-server mode.
    """

    def __init__(
        self,
        config: SecAggConfig,
        vector_length: int,
        *,
        round_number: int = 0,
        graph_seed: bytes | None = None,
        context_digest: bytes = bytes(32),
        verify_keys: Mapping[int, bytes] | None = None,
    ) -> None:
        if not isinstance(config, SecAggConfig):
            raise ConfigError("config must be a protocols.SecAggConfig")
        if isinstance(vector_length, bool) or not isinstance(vector_length, int):
            raise ConfigError("vector_length must be an int")
        if not 1 <= vector_length <= 1 << 28:
            raise ConfigError(f"vector_length must be in [1, 2^28], got {vector_length}")
        if isinstance(round_number, bool) or not 0 <= round_number < 1 << 64:
            raise ConfigError("round_number must be an int in [0, 2^64)")
        if not isinstance(context_digest, bytes) or len(context_digest) != 32:
            raise ConfigError("context_digest must be 32 bytes")
        if config.consistency_check and verify_keys is None:
            raise ConfigError("malicious-server mode needs the clients' verify keys")
        seed = secagg.random_seed(GRAPH_SEED_BYTES) if graph_seed is None else graph_seed
        self.config = config
        self.graph = CommunicationGraph(config.num_clients, config.neighbors, seed)
        self.setup = SetupRequest(
            round_number=round_number,
            num_clients=config.num_clients,
            threshold=config.threshold,
            neighbors=None if config.is_full_graph else config.neighbors,
            bits=config.bits,
            threat_model=config.threat_model,
            vector_length=vector_length,
            graph_seed=seed,
            context_digest=context_digest,
        )
        self._verify_keys = dict(verify_keys or {})
        self._probe_key = secagg.AgreementKey.generate()  # only to reject unusable keys
        self.stage: Stage | None = None
        self.finished = False
        self.session_id: bytes | None = None
        self.client_aborts: dict[int, ClientAbort] = {}
        self.ignored_messages = 0
        self.faulty: set[int] = set()
        self.share_faults: tuple[ShareFault, ...] = ()
        self._keys: dict[int, AdvertiseKeys] = {}
        self._shares_out: dict[int, EncryptedShares] = {}
        # dealer -> (its receivers, sorted; their commitment pairs, one 64-byte row each)
        self._commitments: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]] = {}
        self._u1: tuple[int, ...] = ()
        self._u2: tuple[int, ...] = ()
        self._u3: tuple[int, ...] = ()
        self._dropped: tuple[int, ...] = ()
        self._recipients: tuple[int, ...] = ()
        self._expected: tuple[Stage | None, frozenset[int]] = (None, frozenset())
        self._acc: npt.NDArray[Any] | None = None
        self._masked_from: set[int] = set()
        self._signatures: dict[int, bytes] = {}
        self._unmask_from: dict[int, UnmaskShares] = {}
        self._output: AggregateOutput | None = None

    # ------------------------------------------------------------------ driving

    def start(self) -> dict[int, ServerMessage]:
        """Open the round: the same :class:`SetupRequest` goes to every client."""
        if self.stage is not None:
            raise StateError("the round has already started")
        self.stage = Stage.ADVERTISE
        return {cid: self.setup for cid in range(self.config.num_clients)}

    def expected_senders(self) -> tuple[int, ...]:
        """Clients whose reply the current stage waits for."""
        stage = self.stage
        if stage is Stage.ADVERTISE:
            return tuple(range(self.config.num_clients))
        if stage is Stage.SHARE:
            return self._u1
        if stage is Stage.MASK:
            return self._u2
        if stage in (Stage.CONSISTENCY, Stage.UNMASK):
            return self._recipients
        return ()

    def receive_bytes(self, sender: int, data: bytes) -> None:
        """Decode and :meth:`receive`; a malformed message marks ``sender`` as faulty."""
        try:
            message = decode(data)
        except DecodeError:
            message = None
        if message is None or getattr(message, "sender", sender) != sender:
            # Garbage, or envelope and content disagree. Once a client's message of this
            # stage has been accepted (and possibly summed) later noise is only ignored.
            if self._accepted(sender) or sender not in self._expected_set():
                self.ignored_messages += 1
            else:
                self.faulty.add(sender)
            return
        self.receive(message)

    def receive(self, message: Message) -> None:
        """Accept one client message of the current stage; anything else is ignored."""
        stage = self.stage
        if stage is None or self.finished:
            self.ignored_messages += 1
            return
        sender = getattr(message, "sender", None)
        if not isinstance(sender, int) or sender not in self._expected_set():
            self.ignored_messages += 1
            return
        if self._accepted(sender) or sender in self.faulty or sender in self.client_aborts:
            # Duplicates and late noise are never counted twice, and nothing is accepted
            # from a client that already aborted (a replay of its old masked input would
            # otherwise be summed for a client the round treats as dropped).
            self.ignored_messages += 1
            return
        if isinstance(message, ClientAbort):
            self.client_aborts.setdefault(sender, message)
            return
        if not isinstance(message, _EXPECTED[stage]):
            self.ignored_messages += 1
            return
        handler = {
            Stage.ADVERTISE: self._on_advertise,
            Stage.SHARE: self._on_shares,
            Stage.MASK: self._on_masked,
            Stage.CONSISTENCY: self._on_signature,
            Stage.UNMASK: self._on_unmask_shares,
        }[stage]
        handler(sender, message)

    def advance(self) -> dict[int, ServerMessage]:
        """Close the current stage and return the next stage's messages per client."""
        stage = self.stage
        if stage is None or self.finished:
            raise StateError("advance() needs a running round")
        if stage is Stage.ADVERTISE:
            return self._close_advertise()
        if stage is Stage.SHARE:
            return self._close_share()
        if stage is Stage.MASK:
            return self._close_mask()
        if stage is Stage.CONSISTENCY:
            return self._close_consistency()
        self._close_unmask()
        return {}

    def output(self) -> AggregateOutput:
        """The aggregate, once the unmasking stage has been closed."""
        if self._output is None:
            raise StateError("no aggregate: the round has not completed")
        return self._output

    # ------------------------------------------------------------------ helpers

    def _expected_set(self) -> frozenset[int]:
        if self._expected[0] is not self.stage:
            self._expected = (self.stage, frozenset(self.expected_senders()))
        return self._expected[1]

    def _accepted(self, sender: int) -> bool:
        """Whether ``sender``'s message of the current stage was already accepted."""
        stage = self.stage
        if stage is Stage.ADVERTISE:
            return sender in self._keys
        if stage is Stage.SHARE:
            return sender in self._shares_out
        if stage is Stage.MASK:
            return sender in self._masked_from
        if stage is Stage.CONSISTENCY:
            return sender in self._signatures
        return sender in self._unmask_from

    def _alive(self, candidates: Mapping[int, Any] | set[int]) -> tuple[int, ...]:
        return tuple(
            sorted(c for c in candidates if c not in self.faulty and c not in self.client_aborts)
        )

    def _require(self, survivors: tuple[int, ...], stage: Stage) -> None:
        if len(survivors) < self.config.threshold:
            raise ProtocolAborted(
                stage.value,
                AbortReason.TOO_FEW_SURVIVORS,
                f"{len(survivors)} clients left, threshold {self.config.threshold}",
            )

    def _require_holders(self, owners: tuple[int, ...], alive: set[int], stage: Stage) -> None:
        """Every owner needs t live holders of its shares (SecAgg+ neighbourhoods)."""
        if self.graph.is_full:
            return
        t = self.config.threshold
        for owner in owners:
            if sum(1 for v in self.graph.holders(owner) if v in alive) < t:
                raise ProtocolAborted(
                    stage.value,
                    AbortReason.TOO_FEW_SURVIVORS,
                    f"client {owner} has fewer than {t} live share holders",
                )

    # ------------------------------------------------------------------ round 0

    def _on_advertise(self, sender: int, message: Message) -> None:
        assert isinstance(message, AdvertiseKeys)
        if self.config.consistency_check:
            payload = binding.advertise_payload(
                round_number=self.setup.round_number,
                setup_digest=self.setup.digest(),
                sender=sender,
                enc_public=message.enc_public,
                mask_public=message.mask_public,
            )
            key = self._verify_keys.get(sender)
            try:
                if key is None:
                    raise secagg.SignatureError("no verify key")
                secagg.verify_signature(key, payload, message.signature)
            except secagg.SignatureError:
                self.faulty.add(sender)
                return
        try:  # a low-order or malformed key would make every peer's key agreement fail
            for public in (message.enc_public, message.mask_public):
                secagg.derive_shared_key(
                    self._probe_key, public, label=b"privagg/v1/key-check", context=b""
                )
        except secagg.SecAggValueError:
            self.faulty.add(sender)
            return
        self._keys[sender] = message

    def _close_advertise(self) -> dict[int, ServerMessage]:
        u1 = self._alive(self._keys)
        self._require(u1, Stage.ADVERTISE)
        self._u1 = u1
        keys = [self._keys[c] for c in u1]
        directory = KeyDirectory(
            u1,
            b"".join(k.enc_public for k in keys),
            b"".join(k.mask_public for k in keys),
            b"".join(k.signature for k in keys) if self.config.consistency_check else b"",
        )
        self.session_id = binding.round_session_id(
            self.setup.round_number, self.setup.digest(), directory.to_bytes()
        )
        self.stage = Stage.SHARE
        return dict.fromkeys(u1, directory)

    # ------------------------------------------------------------------ round 1

    def _on_shares(self, sender: int, message: Message) -> None:
        assert isinstance(message, EncryptedShares)
        u1 = self._expected_set()  # during the share stage: exactly U1
        expected = {v for v in self.graph.holders(sender) if v != sender and v in u1}
        receivers = [v for v, _ in message.ciphertexts]
        if len(receivers) != len(expected) or set(receivers) != expected:
            self.faulty.add(sender)  # an honest client encrypts to exactly these holders
            return
        if any(len(blob) <= binding.COMMITMENTS_BYTES for _, blob in message.ciphertexts):
            self.faulty.add(sender)  # no room for the share commitments
            return
        self._shares_out[sender] = message

    def _close_share(self) -> dict[int, ServerMessage]:
        u2 = self._alive(self._shares_out)
        self._require(u2, Stage.SHARE)
        self._u2 = u2
        inbox: dict[int, list[tuple[int, bytes]]] = {c: [] for c in u2}
        for sender in u2:
            delivered = [
                (receiver, ciphertext)
                for receiver, ciphertext in self._shares_out[sender].ciphertexts
                if receiver in inbox
            ]
            for receiver, ciphertext in delivered:
                inbox[receiver].append((sender, ciphertext))
            self._keep_commitments(sender, delivered)
        self._shares_out.clear()
        self.stage = Stage.MASK
        return {c: ShareDelivery(tuple(items)) for c, items in inbox.items()}

    # ------------------------------------------------------------------ round 2

    def _on_masked(self, sender: int, message: Message) -> None:
        assert isinstance(message, MaskedInput)
        vector = message.vector
        if message.bits != self.config.bits or vector.size != self.setup.vector_length:
            self.faulty.add(sender)
            return
        if self._acc is None:
            self._acc = np.zeros(self.setup.vector_length, dtype=secagg.ring_dtype(message.bits))
        np.add(self._acc, vector, out=self._acc)
        self._masked_from.add(sender)

    def _close_mask(self) -> dict[int, ServerMessage]:
        # A client found faulty after its vector was added would poison the sum.
        if self._masked_from & (self.faulty | set(self.client_aborts)):
            raise StateError("a summed masked input was later marked faulty")
        u3 = self._alive(self._masked_from)
        self._require(u3, Stage.MASK)
        dropped = tuple(c for c in self._u2 if c not in self._masked_from)
        alive = set(u3)
        self._require_holders(u3, alive, Stage.MASK)
        self._require_holders(dropped, alive, Stage.MASK)
        self._u3, self._dropped = u3, dropped
        self._recipients = u3
        if self.config.consistency_check:
            self.stage = Stage.CONSISTENCY
            return dict.fromkeys(u3, ConsistencyRequest(u3))
        self.stage = Stage.UNMASK
        return dict.fromkeys(u3, UnmaskRequest(u3, dropped))

    # ------------------------------------------------------------------ round 3

    def _on_signature(self, sender: int, message: Message) -> None:
        assert isinstance(message, ConsistencySignature) and self.session_id is not None
        payload = binding.consistency_payload(self.session_id, self._u3)
        try:
            secagg.verify_signature(self._verify_keys[sender], payload, message.signature)
        except (secagg.SignatureError, KeyError):
            self.faulty.add(sender)
            return
        self._signatures[sender] = message.signature

    def _close_consistency(self) -> dict[int, ServerMessage]:
        u4 = self._alive(self._signatures)
        self._require(u4, Stage.CONSISTENCY)
        signatures = tuple((c, self._signatures[c]) for c in u4)
        self._require_holders(self._u3, set(u4), Stage.CONSISTENCY)
        self._require_holders(self._dropped, set(u4), Stage.CONSISTENCY)
        self._recipients = u4
        self.stage = Stage.UNMASK
        return dict.fromkeys(u4, UnmaskRequest(self._u3, self._dropped, signatures))

    # ------------------------------------------------------------------ round 4

    def _on_unmask_shares(self, sender: int, message: Message) -> None:
        assert isinstance(message, UnmaskShares)
        self._unmask_from[sender] = message

    def _gather(
        self, owners: tuple[int, ...], responses: list[UnmaskShares], seeds: bool
    ) -> tuple[list[list[tuple[int, bytes]]], list[dict[int, int]]]:
        """For each owner: every (x, share bytes) its holders revealed, and x -> holder.

        A holder's x comes from the graph, not from the share: a share claiming another x
        is malformed for this slot. Shares revealed by non-holders are ignored.
        """
        graph = self.graph
        full = graph.is_full
        sets: dict[int, list[tuple[int, bytes]]] = {o: [] for o in owners}
        holder_of: dict[int, dict[int, int]] = {o: {} for o in owners}
        for response in responses:
            holder = response.sender
            for owner, data in response.seed_shares if seeds else response.key_shares:
                bucket = sets.get(owner)
                if bucket is None:
                    continue
                x = holder + 1 if full else graph.share_xs(owner).get(holder)
                if x is None or x in holder_of[owner]:
                    continue  # not a holder of this owner, or a repeated entry
                holder_of[owner][x] = holder
                bucket.append((x, data))
        return [sets[o] for o in owners], [holder_of[o] for o in owners]

    def _keep_commitments(self, dealer: int, delivered: list[tuple[int, bytes]]) -> None:
        """Keep who got which commitments from ``dealer`` (for unmasking), compactly."""
        receivers = np.array([receiver for receiver, _ in delivered], dtype=np.int64)
        rows = np.frombuffer(
            b"".join([ciphertext[: binding.COMMITMENTS_BYTES] for _, ciphertext in delivered]),
            dtype=np.uint8,
        ).reshape(-1, binding.COMMITMENTS_BYTES)
        order = np.argsort(receivers)
        self._commitments[dealer] = (receivers[order], rows[order])

    def _dealt(self, dealer: int, holder: int) -> bytes | None:
        """The commitment pair ``dealer`` sent ``holder``, or ``None`` if it sent none."""
        kept = self._commitments.get(dealer)
        if kept is None:
            return None
        receivers, rows = kept
        position = int(np.searchsorted(receivers, holder))
        if position == receivers.size or receivers[position] != holder:
            return None
        return bytes(rows[position])

    def _opens(self, owner: int, holder: int, kind: ShareKind, opening: bytes) -> bool:
        """Whether ``opening`` opens the commitment ``owner`` published for ``holder``."""
        pair = self._dealt(owner, holder)
        if pair is None:
            return False  # the owner dealt this holder nothing
        seeds = kind is ShareKind.SELF_MASK_SEED
        label = binding.SEED_COMMITMENT_LABEL if seeds else binding.KEY_COMMITMENT_LABEL
        commitment = pair[: binding.COMMITMENT_BYTES] if seeds else pair[binding.COMMITMENT_BYTES :]
        assert self.session_id is not None
        computed = binding.opening_commitment(label, self.session_id, owner, holder, opening)
        return hmac.compare_digest(computed, commitment)

    def _missing(
        self,
        owners: tuple[int, ...],
        responses: list[UnmaskShares],
        holder_of: list[dict[int, int]],
        kind: ShareKind,
    ) -> list[ShareFault]:
        """Holders that answered but left out a share they were dealt."""
        answered = {response.sender for response in responses}
        full = self.graph.is_full
        faults: list[ShareFault] = []
        for owner, holders in zip(owners, holder_of, strict=True):
            if full and len(holders) == len(answered):
                continue  # everybody who answered revealed this owner's share
            absent = answered.intersection(self.graph.holders(owner)).difference(holders.values())
            faults.extend(
                ShareFault(h, owner, kind, ShareFaultCause.MISSING)
                for h in sorted(absent)
                if h == owner or self._dealt(owner, h) is not None
            )
        return faults

    def _decode(
        self, sets: list[list[tuple[int, bytes]]], seeds: bool
    ) -> list[secagg.Reconstruction]:
        return secagg.shamir_decode_many(
            sets,
            threshold=self.config.threshold,
            secret_length=SELF_MASK_SEED_BYTES if seeds else MASKING_KEY_BYTES,
            prefix_bytes=binding.OPENING_NONCE_BYTES,
        )

    def _reconstruct(
        self, owners: tuple[int, ...], responses: list[UnmaskShares], kind: ShareKind
    ) -> tuple[list[bytes | None], list[ShareFault], set[int]]:
        """Every owner's secret of ``kind`` (``None`` if undecodable), the faults, suspects.

        Fast path: decode every set as it arrived. Only a set with any bad share takes the
        slow path: each opening is checked against its dealer's commitment; the ones that
        do not open it are the holders' lies (dropped), and the set is decoded again from
        the openings that do. Whatever is still bad then is as the dealer dealt it.
        """
        seeds = kind is ShareKind.SELF_MASK_SEED
        sets, holder_of = self._gather(owners, responses, seeds)
        results = self._decode(sets, seeds)
        secrets: list[bytes | None] = [result.secret for result in results]
        suspicious = [
            i
            for i, result in enumerate(results)
            if result.secret is None or result.malformed or result.off_polynomial
        ]
        faults = self._missing(owners, responses, holder_of, kind)
        suspects: set[int] = set()
        if not suspicious:
            return secrets, faults, suspects
        threshold = self.config.threshold
        vouched: list[list[tuple[int, bytes]]] = []  # openings that open their commitment
        owns: list[tuple[int, bytes] | None] = []
        for i in suspicious:
            owner, holders, kept = owners[i], holder_of[i], []
            own: tuple[int, bytes] | None = None
            for x, opening in sets[i]:
                if holders[x] == owner:
                    own = (x, opening)  # the one share no commitment vouches for
                elif self._opens(owner, holders[x], kind, opening):
                    kept.append((x, opening))
                else:
                    faults.append(ShareFault(holders[x], owner, kind, ShareFaultCause.NOT_AS_DEALT))
            vouched.append(kept)
            owns.append(own)
        # Decode with the owner's own share first (one more share of redundancy); if that
        # fails, without it: a corrupt owner must not spoil its word with its own share.
        with_own = [kept + ([own] if own else []) for kept, own in zip(vouched, owns, strict=True)]
        retried = self._decode(with_own, seeds)
        again = [
            k
            for k, result in enumerate(retried)
            if result.secret is None and owns[k] is not None and len(vouched[k]) >= threshold
        ]
        for k, result in zip(again, self._decode([vouched[k] for k in again], seeds), strict=True):
            if result.secret is not None:
                retried[k], with_own[k] = result, vouched[k]
        for i, items, result in zip(suspicious, with_own, retried, strict=True):
            owner, holders = owners[i], holder_of[i]
            for cause, xs in (
                (ShareFaultCause.MALFORMED_AS_DEALT, result.malformed),
                (ShareFaultCause.OFF_POLYNOMIAL_AS_DEALT, result.off_polynomial),
            ):
                faults.extend(ShareFault(holders[x], owner, kind, cause) for x in xs)
            secrets[i] = result.secret
            if result.secret is None:
                liars = {f.holder for f in faults if f.owner == owner}
                suspects |= liars
                # With t honest openings left the dealer's own shares are inconsistent.
                if len(items) >= threshold or not liars:
                    suspects.add(owner)
        return secrets, faults, suspects

    def _robust_secrets(
        self, survivors: tuple[int, ...], dropped: tuple[int, ...], responses: list[UnmaskShares]
    ) -> tuple[list[bytes], list[bytes]]:
        """Self-mask seeds of ``survivors`` and masking keys of ``dropped``, or a typed abort."""
        seeds, seed_faults, seed_suspects = self._reconstruct(
            survivors, responses, ShareKind.SELF_MASK_SEED
        )
        keys, key_faults, key_suspects = self._reconstruct(
            dropped, responses, ShareKind.MASKING_KEY
        )
        self.share_faults = (*seed_faults, *key_faults)
        self.faulty |= {fault.culprit for fault in self.share_faults}
        owners_and_secrets = (
            *zip(survivors, seeds, strict=True),
            *zip(dropped, keys, strict=True),
        )
        failed = [owner for owner, secret in owners_and_secrets if secret is None]
        if failed:
            suspects = seed_suspects | key_suspects
            raise ProtocolAborted(
                Stage.UNMASK.value,
                AbortReason.TOO_MANY_BAD_SHARES,
                f"the secrets of clients {failed} cannot be decoded from the shares that "
                f"arrived; suspects: {sorted(suspects)}",
                suspects=tuple(suspects),
            )
        return _all_bytes(seeds), _all_bytes(keys)

    def _close_unmask(self) -> None:
        assert self.session_id is not None
        responders = self._alive(self._unmask_from)
        self._require(responders, Stage.UNMASK)
        responses = [self._unmask_from[c] for c in responders]
        bits, survivors, dropped = self.config.bits, self._u3, self._dropped
        seeds, keys = self._robust_secrets(survivors, dropped, responses)
        acc = self._acc
        assert acc is not None
        secagg.add_masks(acc, seeds, [-1] * len(seeds), bits=bits, domain=binding.SELF_MASK_DOMAIN)
        pair_seeds: list[bytes] = []
        pair_signs: list[int] = []
        survivor_set = set(survivors)
        for v, private in zip(dropped, keys, strict=True):
            try:
                key = secagg.AgreementKey.from_private_bytes(private)
            except secagg.SecAggValueError:
                raise ProtocolAborted(
                    Stage.UNMASK.value, AbortReason.RECONSTRUCTION_FAILED, f"client {v}"
                ) from None
            if not hmac.compare_digest(key.public_bytes, self._keys[v].mask_public):
                raise ProtocolAborted(
                    Stage.UNMASK.value,
                    AbortReason.RECONSTRUCTION_FAILED,
                    f"rebuilt masking key of client {v} does not match its advertised key",
                )
            for u in self.graph.neighbors(v):
                if u in survivor_set:
                    pair_seeds.append(
                        secagg.derive_shared_key(
                            key,
                            self._keys[u].mask_public,
                            label=binding.MASK_KEY_LABEL,
                            context=self.session_id,
                        )
                    )
                    # u added +mask if u < v, -mask otherwise; take it back out.
                    pair_signs.append(-1 if u < v else 1)
        secagg.add_masks(
            acc, pair_seeds, pair_signs, bits=bits, domain=binding.PAIRWISE_MASK_DOMAIN
        )
        if bits not in (32, 64):
            np.bitwise_and(acc, acc.dtype.type(secagg.ring_mask(bits)), out=acc)
        acc.flags.writeable = False
        self._output = AggregateOutput(acc, survivors, self.share_faults)
        self.finished = True


def _all_bytes(secrets: Sequence[bytes | None]) -> list[bytes]:
    out = [secret for secret in secrets if secret is not None]
    assert len(out) == len(secrets)  # guaranteed by the caller's abort on failures
    return out
