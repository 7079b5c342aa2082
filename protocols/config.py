"""Protocol configuration: cohort size, threshold, graph, ring width and threat model.

Everything is validated when the object is built, before any key exists. The rules:

* ``threshold`` t is a strict majority of a closed neighbourhood (all n clients for the
  full graph, the k neighbours plus the client itself for SecAgg+), so two disjoint sets
  of responders can never both reach t. This is what stops a server that lies about
  dropouts from collecting both shares of one client through different honest clients.
* honest-but-curious: fewer than t colluding clients (c = ⌈corrupt_fraction · n⌉; a
  missing ``corrupt_fraction`` means none);
  malicious server: t > (n + c)/2 on the full graph (Bonawitz et al. 2017), and
  ``corrupt_fraction`` is an explicit assumption: ``None`` is refused (pass 0.0 only if you
  really assume no corrupt client).
* malicious server and SecAgg+: refused. The sparse-graph bounds of :mod:`protocols.params`
  assume a uniformly random graph and dropouts independent of it, but the server picks the
  graph seed and decides who counts as dropped (it can drop every honest neighbour of a
  victim it likes); Bell et al. 2020's malicious bounds need unbiasable randomness and
  k ≈ 3 % of n at n = 10^4, 5 % corrupt. No configuration prints a guarantee that does not
  hold in its stated model, so malicious mode runs on the full graph.
* the stated ``dropout_rate`` must leave at least t responders (with probability
  1 - 2^-η for SecAgg+).
* the ring must hold the sum of n inputs: with ``max_abs_input`` given,
  ``secagg.check_sum_fits`` proves a centered sum cannot wrap; without it, at least
  ``num_clients <= 2^bits``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import secagg
from protocols.errors import ConfigError
from protocols.params import GraphGuarantee, evaluate_graph

__all__ = [
    "MAX_CLIENTS",
    "SPARSE_MALICIOUS_REFUSAL",
    "SecAggConfig",
    "Stage",
    "ThreatModel",
    "malicious_threshold",
]

MAX_CLIENTS = 1 << 20
"""Largest cohort a configuration (and the wire format) accepts."""

SPARSE_MALICIOUS_REFUSAL = (
    "SecAgg+ (a sparse graph) is refused in malicious-server mode: its failure bounds assume "
    "a random graph and random dropouts, but a malicious server picks the graph seed and who "
    "counts as dropped; use the full graph (neighbors=None) with t > (n + n_C)/2"
)


def malicious_threshold(num_clients: int, corrupt_fraction: float) -> int:
    """The smallest t with t > (n + n_C)/2, n_C = ⌈corrupt_fraction · n⌉ (full graph)."""
    corrupt = math.ceil(corrupt_fraction * num_clients)
    return (num_clients + corrupt) // 2 + 1


class ThreatModel(enum.Enum):
    """Which server the protocol defends against (Bonawitz et al. 2017, §2 and §6)."""

    HONEST_BUT_CURIOUS = "honest_but_curious"
    """The server follows the protocol; privacy against it plus < t colluding clients."""
    MALICIOUS_SERVER = "malicious_server"
    """The server may lie, equivocate and replay: signed keys (a PKI) and a signed
    consistency-check round are added, and t must exceed (n + corrupt)/2."""


class Stage(enum.Enum):
    """The client-to-server messages of one round, in protocol order."""

    ADVERTISE = "advertise"
    SHARE = "share"
    MASK = "mask"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"


def _check_int(value: object, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be in {bound}, got {value}")
    return value


def _check_fraction(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {type(value).__name__}")
    if not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value}")
    return float(value)


@dataclass(frozen=True)
class SecAggConfig:
    """Public parameters of one secure-aggregation round.

    ``neighbors=None`` runs classic SecAgg on the full graph; an even integer k runs
    SecAgg+ on a random k-regular Harary graph, each client sharing t-of-(k+1) with its
    neighbours and itself. Use :meth:`plus` to have k and t chosen from the dropout and
    corruption rates. ``corrupt_fraction`` and ``dropout_rate`` are the assumptions the
    threshold is checked against; ``max_abs_input`` (largest |centered input| of one
    client) enables the exact ring-overflow check.
    """

    num_clients: int
    threshold: int
    neighbors: int | None = None
    bits: int = 32
    threat_model: ThreatModel = ThreatModel.HONEST_BUT_CURIOUS
    corrupt_fraction: float | None = None
    dropout_rate: float = 0.0
    max_abs_input: int | None = None
    security_bits: int = 40
    correctness_bits: int = 30

    def __post_init__(self) -> None:
        n = _check_int(self.num_clients, "num_clients", 2, MAX_CLIENTS)
        _check_int(self.bits, "bits", 1, 62)
        if not isinstance(self.threat_model, ThreatModel):
            raise ConfigError("threat_model must be a protocols.ThreatModel")
        malicious = self.threat_model is ThreatModel.MALICIOUS_SERVER
        if self.corrupt_fraction is None and malicious:
            raise ConfigError(
                "malicious-server mode needs an explicit corrupt_fraction (the assumed "
                "fraction of corrupt clients, n_C = ceil(fraction * n)); pass 0.0 only if you "
                "really assume that no client colludes with the server"
            )
        gamma = self.assumed_corrupt_fraction
        if self.corrupt_fraction is not None:
            gamma = _check_fraction(self.corrupt_fraction, "corrupt_fraction")
        delta = _check_fraction(self.dropout_rate, "dropout_rate")
        _check_int(self.security_bits, "security_bits", 1, 256)
        _check_int(self.correctness_bits, "correctness_bits", 1, 256)
        if self.neighbors is not None:
            k = _check_int(self.neighbors, "neighbors", 2, n - 1)
            if k % 2:
                raise ConfigError(
                    f"neighbors must be even (each client links k/2 clients on each side "
                    f"of the ring), got {k}"
                )
        if malicious and not self.is_full_graph:
            raise ConfigError(SPARSE_MALICIOUS_REFUSAL)
        group = self.group_size
        t = _check_int(self.threshold, "threshold", 1, group)
        if 2 * t <= group:
            where = "n" if self.is_full_graph else "neighbors + 1"
            raise ConfigError(
                f"threshold {t} must exceed {where} / 2 = {group / 2:g}: otherwise two "
                "disjoint groups of t clients exist and a server lying about dropouts "
                "could collect both shares of one client"
            )
        if n > (1 << self.bits):
            raise ConfigError(f"a {self.bits}-bit ring cannot hold the sum of {n} clients")
        if self.max_abs_input is not None:
            bound = _check_int(self.max_abs_input, "max_abs_input", 0)
            try:
                secagg.check_sum_fits(num_summands=n, max_abs_value=bound, bits=self.bits)
            except secagg.OverflowBudgetError as exc:
                raise ConfigError(
                    f"ring too narrow: {n} inputs of magnitude <= {bound} can wrap "
                    f"Z_2^{self.bits} ({exc}); widen bits or quantize more coarsely"
                ) from exc
        corrupt = math.ceil(gamma * n)
        dropped = math.ceil(delta * n)
        if self.is_full_graph:
            self._check_full_graph(t, corrupt, dropped)
        else:
            self._check_sparse_graph(self.guarantee())

    def _check_full_graph(self, t: int, corrupt: int, dropped: int) -> None:
        n = self.num_clients
        if self.threat_model is ThreatModel.MALICIOUS_SERVER and 2 * t <= n + corrupt:
            raise ConfigError(
                f"threshold {t} too small against a malicious server with {corrupt} "
                f"corrupt clients: need t > (n + corrupt)/2 = {(n + corrupt) / 2:g}"
            )
        if corrupt >= t:
            raise ConfigError(
                f"{corrupt} colluding clients (corrupt_fraction={self.corrupt_fraction}) "
                f"reach the threshold {t}: they could rebuild any client's secrets"
            )
        if n - dropped < t:
            raise ConfigError(
                f"dropout_rate={self.dropout_rate} leaves {n - dropped} clients, fewer "
                f"than the threshold {t}"
            )

    def _check_sparse_graph(self, g: GraphGuarantee) -> None:
        if g.security_failure > 2.0**-self.security_bits:
            raise ConfigError(
                f"SecAgg+ with neighbors={self.neighbors}, threshold={self.threshold} "
                f"gives no 2^-{self.security_bits} security guarantee at "
                f"corrupt_fraction={self.corrupt_fraction}, dropout_rate={self.dropout_rate} "
                f"(failure bound {g.security_failure:.3g}); use SecAggConfig.plus() or "
                "the full graph"
            )
        if g.correctness > 2.0**-self.correctness_bits:
            raise ConfigError(
                f"SecAgg+ with neighbors={self.neighbors}, threshold={self.threshold} "
                f"fails with probability up to {g.correctness:.3g} at "
                f"dropout_rate={self.dropout_rate} (allowed 2^-{self.correctness_bits}); "
                "lower the threshold or raise neighbors"
            )

    @property
    def assumed_corrupt_fraction(self) -> float:
        """The corrupt fraction the checks use (0 when honest-but-curious and unstated)."""
        return 0.0 if self.corrupt_fraction is None else float(self.corrupt_fraction)

    @property
    def corrupt_clients(self) -> int:
        """n_C = ⌈corrupt_fraction · n⌉: clients assumed to collude with the server."""
        return math.ceil(self.assumed_corrupt_fraction * self.num_clients)

    @property
    def min_honest_survivors(self) -> int:
        """Honest clients in any sum the protocol lets the server unmask: at least t
        survivors (every survivor's self mask needs t holders, all of them survivors),
        n_C of which may be corrupt. The distributed-DP noise must be sized for this."""
        return max(0, self.threshold - self.corrupt_clients)

    @property
    def is_full_graph(self) -> bool:
        """True for classic SecAgg (every client is every other client's neighbour)."""
        return self.neighbors is None or self.neighbors >= self.num_clients - 1

    @property
    def degree(self) -> int:
        """Number of neighbours of each client (n - 1 on the full graph)."""
        return self.num_clients - 1 if self.is_full_graph else int(self.neighbors or 0)

    @property
    def group_size(self) -> int:
        """Number of holders of each client's shares: its neighbours and itself."""
        return self.degree + 1

    @property
    def consistency_check(self) -> bool:
        """Whether the signed consistency-check round runs (malicious-server mode)."""
        return self.threat_model is ThreatModel.MALICIOUS_SERVER

    def guarantee(self) -> GraphGuarantee:
        """Failure-probability bounds of this configuration (see :mod:`protocols.params`)."""
        return evaluate_graph(
            self.num_clients,
            self.degree,
            self.threshold,
            corrupt=self.corrupt_clients,
            dropped=math.ceil(self.dropout_rate * self.num_clients),
            malicious=self.threat_model is ThreatModel.MALICIOUS_SERVER,
        )

    @classmethod
    def plus(
        cls,
        num_clients: int,
        *,
        dropout_rate: float,
        corrupt_rate: float | None = None,
        threat_model: ThreatModel = ThreatModel.HONEST_BUT_CURIOUS,
        bits: int = 32,
        max_abs_input: int | None = None,
        sigma: int = 40,
        eta: int = 30,
    ) -> SecAggConfig:
        """SecAgg+ with the smallest even degree k (and, for it, the largest t) that meets
        the 2^-sigma security and 2^-eta correctness bounds of :mod:`protocols.params`.

        Raises :class:`ConfigError` when no sparse graph gives the guarantee; for small
        cohorts the full graph (``SecAggConfig(n, t)``) is then the answer. In
        malicious-server mode it always raises (see the module docstring): use the full
        graph with t > (n + n_C)/2.
        """
        n = _check_int(num_clients, "num_clients", 2, MAX_CLIENTS)
        delta = _check_fraction(dropout_rate, "dropout_rate")
        if threat_model is ThreatModel.MALICIOUS_SERVER:
            raise ConfigError(SPARSE_MALICIOUS_REFUSAL)
        gamma = 0.0 if corrupt_rate is None else _check_fraction(corrupt_rate, "corrupt_rate")
        corrupt, dropped = math.ceil(gamma * n), math.ceil(delta * n)
        # A majority threshold needs most neighbours to respond: hopeless (and a
        # quadratic search) when half the cohort may not.
        max_degree = n - 2 if 2 * dropped < n else 0
        for k in range(2, max_degree + 1, 2):
            for t in range(k + 1, (k + 1) // 2, -1):
                g = evaluate_graph(n, k, t, corrupt=corrupt, dropped=dropped, malicious=False)
                if g.correctness > 2.0**-eta:
                    continue  # a smaller t tolerates more dropouts
                if g.security_failure > 2.0**-sigma:
                    break  # a smaller t is less secure still
                return cls(
                    n,
                    t,
                    neighbors=k,
                    bits=bits,
                    threat_model=threat_model,
                    corrupt_fraction=gamma,
                    dropout_rate=delta,
                    max_abs_input=max_abs_input,
                    security_bits=sigma,
                    correctness_bits=eta,
                )
        raise ConfigError(
            f"no sparse graph on {n} clients meets the 2^-{sigma} / 2^-{eta} bounds at "
            f"dropout_rate={delta}, corrupt_rate={gamma}; for a cohort this small use the "
            f"full graph, e.g. SecAggConfig({n}, {n // 2 + 1})"
        )
