"""A malicious-server test double that drives honest :class:`SecAggClient` objects.

It runs the honest server's logic for the stages a test does not attack, keeps every
client's individual masked input (as a real malicious server would), records every byte a
client sends (a transport spy), and exposes the deviations of the threat model: lie about
dropouts, equivocate key lists, replay or misroute ciphertexts, tamper with or truncate
messages, and try to rebuild a victim's input from whatever shares it harvested.
:class:`MaliciousClient` is the other side's double: one client that impersonates a peer,
sends two different masked inputs, a wrong-length vector, garbage shares, well-formed but
wrong shares at unmasking, inconsistently dealt (but committed) shares, shares to the
wrong receivers, or nothing at all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

import secagg
from protocols import binding
from protocols.client import SecAggClient
from protocols.config import SecAggConfig, Stage
from protocols.messages import (
    ClientAbort,
    ClientMessage,
    EncryptedShares,
    KeyDirectory,
    MaskedInput,
    Message,
    ServerMessage,
    ShareDelivery,
    UnmaskRequest,
    UnmaskShares,
    decode,
)
from protocols.server import SecAggServer
from secagg.shamir import PRIME


@dataclass
class Harvest:
    """Shares a malicious server collected about one victim."""

    seed_shares: list[secagg.Share] = field(default_factory=list)
    key_shares: list[secagg.Share] = field(default_factory=list)
    aborts: list[ClientAbort] = field(default_factory=list)


class MaliciousServer:
    """Honest clients, a server that may deviate. Client ids are 0..n-1."""

    def __init__(
        self,
        config: SecAggConfig,
        inputs: npt.NDArray[Any],
        *,
        graph_seed: bytes = bytes(32),
        context_digest: bytes = bytes(32),
        round_number: int = 0,
    ) -> None:
        n = config.num_clients
        self.config = config
        self.inputs = inputs
        self.signing: list[secagg.SigningKey | None] = [None] * n
        self.verify_keys: dict[int, bytes] | None = None
        if config.consistency_check:
            keys = [secagg.SigningKey.generate() for _ in range(n)]
            self.signing = list(keys)
            self.verify_keys = {i: k.public_bytes for i, k in enumerate(keys)}
        self.server = SecAggServer(
            config,
            inputs.shape[1],
            round_number=round_number,
            graph_seed=graph_seed,
            context_digest=context_digest,
            verify_keys=self.verify_keys,
        )
        self.clients = [
            SecAggClient(
                i,
                config,
                inputs[i],
                signing_key=self.signing[i],
                verify_keys=self.verify_keys,
            )
            for i in range(n)
        ]
        self.sent: list[tuple[int, bytes]] = []  # spy: every reply, as bytes
        self.masked: dict[int, npt.NDArray[Any]] = {}
        self.directory: KeyDirectory | None = None
        self.share_messages: dict[int, EncryptedShares] = {}
        self.outbound: dict[int, ServerMessage] = {}

    # ------------------------------------------------------------ plumbing

    def ask(self, cid: int, message: Message) -> ClientMessage:
        """Send ``message`` (encoded) to client ``cid`` and decode its reply."""
        reply = self.clients[cid].handle_bytes(message.to_bytes())
        self.sent.append((cid, reply))
        decoded = decode(reply)
        assert not isinstance(decoded, ServerMessage.__args__)  # type: ignore[attr-defined]
        return decoded  # type: ignore[return-value]

    def ask_raw(self, cid: int, data: bytes) -> ClientMessage:
        reply = self.clients[cid].handle_bytes(data)
        self.sent.append((cid, reply))
        return decode(reply)  # type: ignore[return-value]

    def honest_stage(self, skip: frozenset[int] = frozenset()) -> dict[int, ClientMessage]:
        """Run the current stage honestly (clients in ``skip`` stay silent)."""
        replies = {}
        for cid, message in sorted(self.outbound.items()):
            if cid in skip:
                continue
            reply = self.ask(cid, message)
            replies[cid] = reply
            if isinstance(reply, MaskedInput):
                self.masked[cid] = np.array(reply.vector)
            if isinstance(reply, EncryptedShares):
                self.share_messages[cid] = reply
            self.server.receive(reply)
        self.outbound = self.server.advance()
        if self.server.stage is Stage.SHARE:
            first = next(iter(self.outbound.values()))
            assert isinstance(first, KeyDirectory)
            self.directory = first
        return replies

    def start(self) -> None:
        self.outbound = self.server.start()

    def run_to_unmask(self, drop_at_mask: frozenset[int] = frozenset()) -> None:
        """Honest advertise, share and mask stages (and consistency, if configured)."""
        self.start()
        self.honest_stage()  # advertise
        self.honest_stage()  # share
        self.honest_stage(drop_at_mask)  # masked inputs
        if self.config.consistency_check:
            self.honest_stage()

    def share_bytes_sent(self) -> int:
        """Bytes of Shamir shares that clients revealed in unmask replies so far."""
        total = 0
        for _, data in self.sent:
            message = decode(data)
            if isinstance(message, UnmaskShares):
                total += sum(len(s) for _, s in message.seed_shares + message.key_shares)
        return total

    # ------------------------------------------------------------ attacks

    def harvest(self, victim: int, requests: dict[int, UnmaskRequest]) -> Harvest:
        """Send each client its (possibly inconsistent) unmask request; keep the shares."""
        harvest = Harvest()
        for cid, request in sorted(requests.items()):
            reply = self.ask(cid, request)
            if isinstance(reply, ClientAbort):
                harvest.aborts.append(reply)
                continue
            assert isinstance(reply, UnmaskShares)
            for owner, data in reply.seed_shares:
                if owner == victim:
                    harvest.seed_shares.append(opened(data))
            for owner, data in reply.key_shares:
                if owner == victim:
                    harvest.key_shares.append(opened(data))
        return harvest

    def unmask_victim(self, victim: int, harvest: Harvest) -> npt.NDArray[Any] | None:
        """Strip every mask off the victim's own y_u if the harvest allows; else None."""
        t = self.config.threshold
        if len(harvest.seed_shares) < t or len(harvest.key_shares) < t:
            return None
        seed = secagg.shamir_combine(_distinct(harvest.seed_shares)[:t])
        private = secagg.shamir_combine(_distinct(harvest.key_shares)[:t])
        return self.strip_masks(victim, seed, private)

    def strip_masks(self, victim: int, seed: bytes, private: bytes) -> npt.NDArray[Any]:
        """Remove the self mask and all pairwise masks of ``victim`` from its y_u."""
        bits = self.config.bits
        key = secagg.AgreementKey.from_private_bytes(private)
        assert self.directory is not None and self.server.session_id is not None
        y = self.masked[victim].copy()
        secagg.add_masks(y, [seed], [-1], bits=bits, domain=binding.SELF_MASK_DOMAIN)
        index = {v: i for i, v in enumerate(self.directory.client_ids)}
        seeds, signs = [], []
        for v in self.server.graph.neighbors(victim):
            if v in self.share_messages:
                _, mask_public, _ = self.directory.entry(index[v])
                seeds.append(
                    secagg.derive_shared_key(
                        key,
                        mask_public,
                        label=binding.MASK_KEY_LABEL,
                        context=self.server.session_id,
                    )
                )
                signs.append(-1 if victim < v else 1)
        secagg.add_masks(y, seeds, signs, bits=bits, domain=binding.PAIRWISE_MASK_DOMAIN)
        return y


def opened(opening: bytes) -> secagg.Share:
    """The Shamir share inside a revealed or dealt opening (nonce || share)."""
    return secagg.Share.from_bytes(binding.share_of_opening(opening))


def _distinct(shares: list[secagg.Share]) -> list[secagg.Share]:
    by_x = {s.x: s for s in shares}
    return [by_x[x] for x in sorted(by_x)]


def digest(label: str) -> bytes:
    """A 32-byte stand-in for the hash of a model the server distributes."""
    return hashlib.sha256(label.encode()).digest()


def replace_delivery(delivery: ShareDelivery, sender: int, ciphertext: bytes) -> ShareDelivery:
    """The same delivery with ``sender``'s ciphertext swapped for ``ciphertext``."""
    return ShareDelivery(
        tuple((s, ciphertext if s == sender else c) for s, c in delivery.ciphertexts)
    )


def falsify(data: bytes, delta: int = 1) -> bytes:
    """The same revealed share, still well formed, but moved off the owner's polynomial.

    The last four bytes of a revealed share are its last field element (little endian);
    moving it by ``delta`` mod p keeps every header field and the field range intact.
    """
    last = int.from_bytes(data[-4:], "little")
    moved = (last + delta) % PRIME
    return data[:-4] + moved.to_bytes(4, "little")


def falsify_unmask(message: UnmaskShares, *, seeds: bool, keys: bool) -> UnmaskShares:
    """``message`` with every seed share and/or key share replaced by a wrong one."""
    return UnmaskShares(
        message.sender,
        tuple((o, falsify(s) if seeds else s) for o, s in message.seed_shares),
        tuple((o, falsify(s) if keys else s) for o, s in message.key_shares),
    )


def deal_inconsistently(client: SecAggClient, message: EncryptedShares, victims: int) -> bytes:
    """``message`` re-dealt so that the first ``victims`` holders get a wrong seed share.

    The corrupt dealer re-encrypts each bad share under the pair key it shares with the
    holder and publishes a *matching* commitment, so the holder accepts it: the share is
    only seen to be off the dealer's polynomial at unmasking.
    """
    assert client.session_id is not None and client._setup is not None
    session, me = client.session_id, client.client_id
    associated = binding.ShareAssociatedData(session, client._setup.round_number)
    out = []
    for index, (holder, blob) in enumerate(message.ciphertexts):
        if index < victims:
            key = client._share_keys[holder]
            commitments, sealed = binding.split_committed_ciphertext(blob)
            plain = secagg.open_sealed(
                key, sealed, associated_data=associated(me, holder) + commitments
            )
            _, _, seed_opening, key_opening = binding.unpack_share_plaintext(plain)
            seed_opening = falsify(seed_opening)
            commitments = binding.share_commitments(session, me, holder, seed_opening, key_opening)
            plain = binding.pack_share_plaintext(me, holder, seed_opening, key_opening)
            ad = associated(me, holder) + commitments
            blob = commitments + secagg.seal(key, plain, associated_data=ad)
        out.append((holder, blob))
    return EncryptedShares(me, tuple(out)).to_bytes()


class MaliciousClient:
    """A client that deviates on its uploads (the malicious-client double).

    It wraps an honest :class:`SecAggClient` and rewrites the reply of one stage with one
    of :data:`MALICIOUS_CLIENT_MOVES`; ``uploads(message)`` returns every byte string it
    sends for one server message (possibly several, possibly none).
    """

    def __init__(self, honest: SecAggClient, stage: Stage, move: str) -> None:
        if move not in MALICIOUS_CLIENT_MOVES:
            raise ValueError(f"unknown move {move!r}")
        self.honest = honest
        self.stage = stage
        self.move = move
        self.previous: bytes | None = None
        self.victims = 1  # holders dealt a wrong share by the "inconsistent_dealing" move

    def uploads(self, message: Message, stage: Stage) -> list[bytes]:
        reply = self.honest.handle_bytes(message.to_bytes())
        if stage is not self.stage:
            return [reply]
        me, decoded = self.honest.client_id, decode(reply)
        if self.move == "impersonate":  # claims to be the next client
            other = (me + 1) % self.honest.config.num_clients
            return [reply[:4] + other.to_bytes(4, "little") + reply[8:]]
        if self.move == "two_inputs" and isinstance(decoded, MaskedInput):
            second = (decoded.vector.astype(np.uint64) + 12345).astype(decoded.vector.dtype)
            return [reply, MaskedInput(me, decoded.bits, second).to_bytes()]
        if self.move == "wrong_length" and isinstance(decoded, MaskedInput):
            return [MaskedInput(me, decoded.bits, decoded.vector[:-1]).to_bytes()]
        if self.move == "garbage_shares" and isinstance(decoded, UnmaskShares):
            bad = tuple((o, bytes(len(s))) for o, s in decoded.seed_shares)
            return [UnmaskShares(me, bad, decoded.key_shares).to_bytes()]
        if self.move == "wrong_share" and isinstance(decoded, UnmaskShares):
            return [falsify_unmask(decoded, seeds=True, keys=True).to_bytes()]
        if self.move == "inconsistent_dealing" and isinstance(decoded, EncryptedShares):
            return [deal_inconsistently(self.honest, decoded, victims=self.victims)]
        if self.move == "wrong_receivers" and isinstance(decoded, EncryptedShares):
            return [EncryptedShares(me, decoded.ciphertexts[:-1]).to_bytes()]
        if self.move == "silent":
            return []
        return [reply]


MALICIOUS_CLIENT_MOVES = (
    "impersonate",
    "two_inputs",
    "wrong_length",
    "garbage_shares",
    "wrong_share",
    "inconsistent_dealing",
    "wrong_receivers",
    "silent",
)
