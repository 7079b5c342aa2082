"""Federated averaging of any ``torch.nn.Module`` under distributed DP and SecAgg(+).

:func:`train` is the model-agnostic entry point: each client runs ``local_steps`` steps of
gradient descent on its own data, starting from the public model; its update (new minus
old parameters, flattened) is clipped to L2 ``clip_norm``, encoded with its own noise
share and hidden by SecAgg masks; the server only decodes the noisy sum of a cohort and
takes the step ``server_lr · sum / expected cohort`` (DP-FedAvg with a fixed denominator,
McMahan et al. 2018). The noise is calibrated so that all ``rounds`` rounds together stay
within (ε, δ) under client-level zero-out adjacency for distributed DP (a client's whole
dataset is replaced by nothing while its own noise share stays in the sum: the relation the
distributed-DP accountants prove, Kairouz-Liu-Steinke 2021), and under add-or-remove-one-
client adjacency for central DP.

The clients of one block are trained together with ``torch.func`` (``vmap`` of
``grad`` over clients, their datasets padded and masked), so there is no Python loop over
clients; the model must be ``torch.func``-compatible (no in-place buffer updates, e.g.
batch norm in training mode).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from dp.budget import BudgetPolicy
from dp.cohort import Cohort, FullCohort, PoissonCohort, SeededDropouts
from dp.distributed_sum import DistributedDpSum
from dp.ledger import PrivacyLedger
from dp.noiseless_sum import CentralDpSum, NoDpSum
from dp.private_sum import PrivateSum, RingSum, calibrate
from dp.rng import NoiseRng, SecureRng, SimulationRng
from privagg.rounds import PrivateRounds, RoundRecord
from protocols.secagg_sum import PlainRingSum, SecAggSum

__all__ = ["FederatedResult", "train"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ClientData = tuple[Any, Any]


def _per_example_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(outputs, targets, reduction="none")


@dataclass(frozen=True)
class FederatedResult:
    """The trained model (the same object, updated in place), every round, and the spend.

    ``epsilon`` is an upper bound at ``delta`` under the relation ``neighbouring`` names
    (``inf`` without DP); ``noise_multiplier`` is z (noise std z·clip_norm per coordinate
    of each round's sum).
    """

    model: torch.nn.Module
    rounds: tuple[RoundRecord, ...]
    epsilon: float
    delta: float
    noise_multiplier: float
    privacy: str
    neighbouring: str = "zero-out-one-client"


class _Clients:
    """Every client's data, padded to one length with a mask (for ``vmap``)."""

    def __init__(self, clients: Sequence[ClientData]) -> None:
        if len(clients) < 2:
            raise ValueError("federated training needs at least 2 clients")
        xs = [torch.as_tensor(np.asarray(x)) for x, _ in clients]
        ys = [torch.as_tensor(np.asarray(y)) for _, y in clients]
        if any(len(x) != len(y) or len(x) == 0 for x, y in zip(xs, ys, strict=True)):
            raise ValueError("every client needs as many targets as examples, and at least one")
        m = max(len(x) for x in xs)
        self.x = torch.zeros((len(xs), m, *xs[0].shape[1:]), dtype=torch.float32)
        self.y = torch.zeros((len(ys), m, *ys[0].shape[1:]), dtype=ys[0].dtype)
        self.weight = torch.zeros((len(xs), m), dtype=torch.float32)
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):  # once, at setup
            self.x[i, : len(x)] = x.float()
            self.y[i, : len(y)] = y
            self.weight[i, : len(x)] = 1.0

    def __len__(self) -> int:
        return int(self.x.shape[0])


class _LocalTraining:
    """``local_steps`` full-batch gradient steps per client, vectorized over clients."""

    def __init__(
        self, model: torch.nn.Module, clients: _Clients, loss: Loss, steps: int, lr: float
    ) -> None:
        from torch.func import functional_call, grad, vmap

        self.model = model
        self.clients = clients
        self.steps = steps
        self.lr = lr
        self.names = [name for name, _ in model.named_parameters()]
        buffers = dict(model.named_buffers())

        def client_loss(
            params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, w: torch.Tensor
        ) -> torch.Tensor:
            out = functional_call(model, (params, buffers), (x,))
            per_example = loss(out, y)
            return (per_example * w).sum() / w.sum().clamp(min=1.0)

        self._grads = vmap(grad(client_loss))

    def __call__(self, ids: IntArray) -> FloatArray:
        index = torch.as_tensor(ids, dtype=torch.long)
        x, y, w = self.clients.x[index], self.clients.y[index], self.clients.weight[index]
        start = {n: p.detach() for n, p in self.model.named_parameters()}
        params = {n: p.unsqueeze(0).expand(len(ids), *p.shape).clone() for n, p in start.items()}
        for _ in range(self.steps):
            grads = self._grads(params, x, y, w)
            params = {n: params[n] - self.lr * grads[n] for n in self.names}
        delta = torch.cat([(params[n] - start[n]).reshape(len(ids), -1) for n in self.names], 1)
        out: FloatArray = delta.double().numpy()
        return out


def _server_step(model: torch.nn.Module, server_lr: float) -> Callable[[FloatArray, float], None]:
    def step(total: FloatArray, expected: float) -> None:
        with torch.no_grad():
            vector = torch.nn.utils.parameters_to_vector(model.parameters())
            update = torch.as_tensor(total, dtype=vector.dtype) * (server_lr / expected)
            torch.nn.utils.vector_to_parameters(vector + update, model.parameters())

    return step


def _kind(
    privacy: str, inner: RingSum, rng: NoiseRng, dropout: float, bits: int, seed: int, n: int
) -> PrivateSum:
    if privacy == "distributed":
        return DistributedDpSum(inner, bits=bits, dropout=dropout, population=n, seed=seed, rng=rng)
    if privacy == "central":
        return CentralDpSum(inner, rng=rng)
    if privacy == "none":
        return NoDpSum(inner, rng=rng)
    raise ValueError(f"privacy must be 'distributed', 'central' or 'none', got {privacy!r}")


def train(
    model: torch.nn.Module,
    clients: Sequence[ClientData],
    *,
    rounds: int = 20,
    epsilon: float | None = 8.0,
    delta: float = 1e-5,
    privacy: Literal["distributed", "central", "none"] = "distributed",
    secagg: Literal["plus", "full", "off"] = "plus",
    sampling_rate: float = 1.0,
    dropout: float = 0.1,
    clip_norm: float = 1.0,
    local_steps: int = 5,
    local_lr: float = 0.1,
    server_lr: float = 1.0,
    loss: Loss = _per_example_cross_entropy,
    bits: int = 32,
    ledger: str | Path | PrivacyLedger | None = None,
    user_epsilon: float | None = None,
    seed: int | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> FederatedResult:
    """Train ``model`` by federated averaging on ``clients`` (a sequence of (inputs,
    targets) pairs, one per client: its own data) and return it with its privacy spend.

    ``epsilon=None`` (or ``privacy="none"``) trains without DP (still under SecAgg);
    ``privacy="central"`` trusts the server with the noise. ``sampling_rate`` is the
    Poisson rate of each round's cohort (1: every client), ``dropout`` the fraction of
    clients that vanish in each round (half before sending their masked input, half while
    unmasking). ``loss(outputs, targets)`` returns per-example losses. ``ledger`` (a path
    to create, or an open :class:`dp.ledger.PrivacyLedger`) records every round and
    enforces the budget; ``user_epsilon`` adds per-client admission (a Rényi filter).
    ``seed`` makes the run reproducible with ``dp``'s explicitly non-secure simulation
    generator (the events say ``secure=False``); by default noise and sampling come from
    the OS CSPRNG.
    """
    if epsilon is None:
        privacy = "none"
    if rounds < 1 or local_steps < 0:
        raise ValueError("rounds must be at least 1 and local_steps non-negative")
    if not (clip_norm > 0 and math.isfinite(clip_norm)):
        raise ValueError(f"clip_norm must be positive and finite, got {clip_norm!r}")
    data = _Clients(clients)
    n = len(data)
    rng: NoiseRng = SecureRng() if seed is None else SimulationRng(seed)
    public_seed = secrets.randbits(31) if seed is None else seed
    inner: RingSum = (
        PlainRingSum()
        if secagg == "off"
        else SecAggSum(secagg, dropout_rate=dropout, seed=public_seed)
    )
    kind = _kind(privacy, inner, rng, dropout, bits, public_seed, n)
    cohort: Cohort = FullCohort() if sampling_rate >= 1 else PoissonCohort(sampling_rate, rng)
    dimension = sum(p.numel() for p in model.parameters())
    expected = max(2, round(cohort.expected(n)))
    z = 0.0
    if privacy != "none":
        assert epsilon is not None
        z = calibrate(
            kind,
            cohort,
            target_epsilon=epsilon,
            delta=delta,
            rounds=rounds,
            dimension=dimension,
            clip_norm=clip_norm,
            expected=expected,
        )
        if isinstance(kind, DistributedDpSum):
            kind.check_ring(dimension, clip_norm, z, expected)
    owned = isinstance(ledger, str | Path)
    book: PrivacyLedger | None
    if isinstance(ledger, str | Path):
        target = None if privacy == "none" else epsilon
        policy = BudgetPolicy(delta=delta, target_epsilon=target, user_epsilon=user_epsilon)
        book = PrivacyLedger.create(ledger, policy=policy, run_id="privagg.train")
    else:
        book = ledger
    loop = PrivateRounds(
        kind,
        cohort,
        population=n,
        dimension=dimension,
        clip_norm=clip_norm,
        noise_multiplier=z,
        delta=delta,
        dropouts=SeededDropouts(dropout, public_seed),
        ledger=book,
        device_ids=lambda i: f"client{i}",
    )
    local = _LocalTraining(model, data, loss, local_steps, local_lr)
    step = _server_step(model, server_lr)
    records = []
    try:
        for _ in range(rounds):
            record = loop.run_round(local, step)
            records.append(record)
            if on_round is not None:
                on_round(record)
        spent = loop.epsilon
    finally:
        if owned and book is not None:
            book.close()
    neighbouring = "add-or-remove-one-client" if privacy == "central" else "zero-out-one-client"
    return FederatedResult(model, tuple(records), spent, delta, z, privacy, neighbouring)
