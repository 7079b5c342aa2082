"""The communication graph: who exchanges keys, shares and masks with whom.

Classic SecAgg uses the complete graph. SecAgg+ (Bell et al. 2020) uses a Harary graph
H(n, k): clients sit on a ring in a random order and each links the k/2 nearest clients
on either side. The order is a permutation derived from a 32-byte *public* seed with the
AES-CTR stream of :func:`secagg.expand_mask` (never a non-cryptographic generator), so
every party rebuilds the same graph from the seed the server announced.

Each client's secrets are Shamir-shared among its *closed* neighbourhood (its neighbours
and itself); a holder's x-coordinate is its 1-based rank in that sorted list, so on the
full graph holder ``v`` always gets x = v + 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import secagg
from protocols.errors import ConfigError

__all__ = ["GRAPH_SEED_BYTES", "CommunicationGraph"]

GRAPH_SEED_BYTES = 32
_PERMUTATION_DOMAIN = b"privagg/v1/graph-permutation"


class CommunicationGraph:
    """Neighbourhoods of ``num_clients`` clients: full (``degree=None``) or Harary H(n, k)."""

    def __init__(self, num_clients: int, degree: int | None, seed: bytes) -> None:
        if num_clients < 2:
            raise ConfigError("a graph needs at least 2 clients")
        if not isinstance(seed, bytes) or len(seed) != GRAPH_SEED_BYTES:
            raise ConfigError(f"graph seed must be {GRAPH_SEED_BYTES} bytes")
        self.num_clients = num_clients
        self.is_full = degree is None or degree >= num_clients - 1
        self.degree = num_clients - 1 if self.is_full else int(degree or 0)
        self._all = range(num_clients)
        self._order: np.ndarray | None = None
        self._position: np.ndarray | None = None
        self._rows: dict[int, np.ndarray] = {}
        self._xs: dict[int, dict[int, int]] = {}
        if not self.is_full:
            if self.degree < 2 or self.degree % 2:
                raise ConfigError(f"Harary degree must be even and >= 2, got {degree}")
            # 62-bit keys: a tie (argsort then falls back on index order) has probability
            # < n^2 / 2^63, and the stable sort keeps even that case deterministic.
            keys = secagg.expand_mask(seed, num_clients, bits=62, domain=_PERMUTATION_DOMAIN)
            self._order = np.argsort(keys, kind="stable")
            self._position = np.empty(num_clients, dtype=np.int64)
            self._position[self._order] = np.arange(num_clients)

    def _row(self, owner: int) -> np.ndarray:
        """Sorted closed neighbourhood of ``owner`` on the Harary ring (cached)."""
        row = self._rows.get(owner)
        if row is None:
            assert self._order is not None and self._position is not None
            half = self.degree // 2
            slots = (self._position[owner] + np.arange(-half, half + 1)) % self.num_clients
            row = self._rows[owner] = np.sort(self._order[slots])
        return row

    def holders(self, owner: int) -> Sequence[int]:
        """Sorted closed neighbourhood of ``owner``: the holders of its shares."""
        if self.is_full:
            return self._all
        return tuple(self._row(owner).tolist())

    def neighbors(self, owner: int) -> tuple[int, ...]:
        """Sorted neighbours of ``owner`` (without ``owner`` itself)."""
        return tuple(v for v in self.holders(owner) if v != owner)

    def share_x(self, owner: int, holder: int) -> int:
        """Shamir x-coordinate of ``holder``'s share of ``owner``'s secrets."""
        if self.is_full:
            return holder + 1
        row = self._row(owner)
        index = int(np.searchsorted(row, holder))
        if index >= row.size or row[index] != holder:
            raise ConfigError(f"client {holder} holds no share of client {owner}")
        return index + 1

    def share_xs(self, owner: int) -> dict[int, int]:
        """Map holder -> Shamir x-coordinate for ``owner``'s shares (cached)."""
        xs = self._xs.get(owner)
        if xs is None:
            holders = self.holders(owner)
            xs = self._xs[owner] = dict(zip(holders, range(1, len(holders) + 1), strict=True))
        return xs

    def are_linked(self, a: int, b: int) -> bool:
        """Whether ``a`` and ``b`` are neighbours (or the same client)."""
        if self.is_full:
            return True
        assert self._position is not None
        gap = abs(int(self._position[a]) - int(self._position[b]))
        return min(gap, self.num_clients - gap) <= self.degree // 2
