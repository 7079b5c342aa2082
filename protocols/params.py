"""Failure-probability bounds behind the SecAgg+ parameter choice (Bell et al. 2020).

Bell, Bonawitz, Gascón, Lepoint, Raykova, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead", CCS 2020 (ePrint 2020/704), run Bonawitz et al.'s protocol on
a Harary graph H(n, k) laid over a uniformly random permutation of the clients and pick
the degree k and the threshold t so that, except with probability 2^-σ (security) or
2^-η (correctness), (i) no honest client can have both of its secrets rebuilt by the
adversary, (ii) the graph of honest surviving clients stays connected (so the server only
learns the sum over all of them, never a sub-sum) and (iii) every client keeps at least t
responsive neighbours. The paper tabulates its own bounds; we evaluate the three events
directly with union bounds that hold for *this* graph construction:

Let c = ⌈γn⌉ corrupt and r = ⌈δn⌉ dropped clients, m = k + 1 the size of a closed
neighbourhood (shares of a client's secrets go to its k neighbours and to itself). In
H(n, k) over a random permutation the k neighbours of a fixed client are a uniformly
random k-subset of the other n - 1 clients, so the number of corrupt (dropped) neighbours
is hypergeometric, Hyp(n - 1, c, k) (resp. Hyp(n - 1, r, k)).

* (i) honest-but-curious: a client is exposed iff at least t of its neighbours are
  corrupt (they hold both of its shares): p_i = n · P[Hyp(n-1, c, k) >= t].
  Malicious server: honest neighbours reveal one share type each, corrupt ones both, so
  the server can split the honest ones iff c_u >= 2t - m: p_i = n · P[Hyp >= 2t - m]
  (for the full graph this is the deterministic rule t > (n + c)/2 of Bonawitz et al.).
* (ii) H(n, k) minus a vertex set stays connected unless k/2 cyclically consecutive
  positions are all removed (otherwise consecutive remaining vertices are at ring
  distance <= k/2, hence adjacent). With c + r removed vertices placed uniformly,
  p_ii <= n · Π_{j<k/2} (c + r - j)/(n - j).
* (iii) correctness: a dropped client's key needs t responsive holders among its k
  neighbours (a survivor also has its own share, so this is the binding case):
  p_iii = n · P[Hyp(n-1, r', k) > k - t] with r' = r (honest-but-curious) or r + c
  (malicious: corrupt clients may withhold); p_iii = 0 when r' = 0.

We require p_i + p_ii <= 2^-σ and p_iii <= 2^-η (defaults σ = 40, η = 30, the values of
Bell et al.). Dropouts are assumed independent of the graph and the graph uniformly random:
that is the honest-but-curious model, where the server draws the seed as the protocol says.
A malicious server chooses the graph seed and then who "drops" (adversarial dropouts: it can
declare every honest neighbour of a victim dropped), which these bounds do not cover; Bell
et al.'s malicious analysis needs randomness the server cannot bias and degrees near 3 % of
n at n = 10^4 with 5 % corrupt clients. :class:`~protocols.config.SecAggConfig` therefore
refuses sparse graphs in malicious-server mode, and the ``malicious=True`` branch below is
kept only to evaluate (never to certify) such a choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["GraphGuarantee", "evaluate_graph"]


@dataclass(frozen=True)
class GraphGuarantee:
    """Union-bound failure probabilities of one (n, k, t) choice (see module docstring)."""

    exposure: float
    disconnection: float
    correctness: float

    @property
    def security_failure(self) -> float:
        """Probability that some honest client's input is not protected as stated."""
        return self.exposure + self.disconnection


def _upper_tail(population: int, marked: int, draws: int, at_least: int) -> float:
    """P[Hyp(population, marked, draws) >= at_least]."""
    if at_least <= 0:
        return 1.0
    if marked <= 0 or at_least > min(marked, draws):
        return 0.0
    from scipy.stats import hypergeom  # lazy: importing scipy.stats takes ~1 s

    return float(hypergeom.sf(at_least - 1, population, marked, draws))


def evaluate_graph(
    num_clients: int,
    degree: int,
    threshold: int,
    *,
    corrupt: int,
    dropped: int,
    malicious: bool,
) -> GraphGuarantee:
    """Evaluate the three failure bounds for a Harary graph of even ``degree``."""
    n, k, t = num_clients, degree, threshold
    group = k + 1
    exposed_at = 2 * t - group if malicious else t
    exposure = min(1.0, n * _upper_tail(n - 1, corrupt, k, exposed_at))
    removed = corrupt + dropped
    half = k // 2
    if k >= n - 1 or removed < half:
        disconnection = 0.0
    else:
        disconnection = min(1.0, n * math.prod((removed - j) / (n - j) for j in range(half)))
    unresponsive = dropped + (corrupt if malicious else 0)
    if unresponsive == 0:
        correctness = 0.0  # every holder answers, the owner's own share included
    else:
        correctness = min(1.0, n * _upper_tail(n - 1, unresponsive, k, k - t + 1))
    return GraphGuarantee(exposure, disconnection, correctness)
