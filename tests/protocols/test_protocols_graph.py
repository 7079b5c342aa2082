"""The SecAgg+ Harary graph over a keyed permutation."""

from __future__ import annotations

import numpy as np
import pytest

from protocols import CommunicationGraph
from protocols.errors import ConfigError


@pytest.mark.parametrize(("n", "k"), [(5, 2), (20, 4), (101, 10), (300, 18)])
def test_harary_graph_is_k_regular_and_symmetric(n: int, k: int) -> None:
    g = CommunicationGraph(n, k, bytes(range(32)))
    for a in range(n):
        holders = g.holders(a)
        assert len(holders) == k + 1 and a in holders and list(holders) == sorted(holders)
        assert len(g.neighbors(a)) == k
        for b in g.neighbors(a):
            assert a in g.holders(b) and g.are_linked(a, b)
        assert [g.share_x(a, b) for b in holders] == list(range(1, k + 2))


def test_graph_is_a_deterministic_function_of_the_public_seed() -> None:
    a = CommunicationGraph(200, 8, b"\x01" * 32)
    b = CommunicationGraph(200, 8, b"\x01" * 32)
    c = CommunicationGraph(200, 8, b"\x02" * 32)
    rows = lambda g: [tuple(g.holders(i)) for i in range(200)]  # noqa: E731
    assert rows(a) == rows(b) and rows(a) != rows(c)


def test_permutation_is_not_the_identity_ring() -> None:
    g = CommunicationGraph(1000, 4, bytes(32))
    # in the identity ring every client's neighbours are i +- 1, i +- 2
    near = sum(set(g.neighbors(i)) == {(i + d) % 1000 for d in (-2, -1, 1, 2)} for i in range(1000))
    assert near < 10


def test_neighbours_look_uniform() -> None:
    # each client is a neighbour of exactly k others, and neighbour ids spread evenly
    g = CommunicationGraph(500, 10, b"\x07" * 32)
    ids = np.concatenate([np.array(g.neighbors(i)) for i in range(500)])
    assert np.bincount(ids, minlength=500).tolist() == [10] * 500
    gaps = np.abs(np.array([[i - j for j in g.neighbors(i)] for i in range(500)]))
    assert gaps.mean() > 100  # the identity ring would give 3


def test_full_graph() -> None:
    g = CommunicationGraph(7, None, bytes(32))
    assert g.is_full and list(g.holders(3)) == list(range(7)) and g.share_x(3, 6) == 7
    assert g.neighbors(3) == (0, 1, 2, 4, 5, 6)


def test_bad_graph_arguments() -> None:
    with pytest.raises(ConfigError):
        CommunicationGraph(10, 3, bytes(32))
    with pytest.raises(ConfigError):
        CommunicationGraph(10, 4, bytes(31))
    g = CommunicationGraph(20, 4, bytes(32))
    outsider = next(v for v in range(20) if v not in g.holders(0))
    with pytest.raises(ConfigError):
        g.share_x(0, outsider)
