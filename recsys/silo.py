"""Silo mode: one client that holds many users' rows (an organization) trains with Opacus.

Cross-device users are protected by user-level DP through secure aggregation; a silo (a
partner that already holds a log of many users' interactions) is one party with many
*records*. It trains an implicit-feedback MF model on its rows locally with Opacus DP-SGD
(per-record clipping, Gaussian noise, Poisson sampling: **record-level** DP) and releases
only the item factors and biases, which warm-start the federated item model. Its privacy
cost is a different unit from the devices' user-level ε, so it is recorded in its own
``dp`` ledger beside the user-level one (never silently composed with it), as the event
Opacus ran — ``SelfComposed(PoissonSampled(q, Gaussian(σ)), steps)`` — together with
Opacus' own ε for the same run, so the two accountants can be compared.

Model: score(u, i) = p_u · v_i + b_i, logistic loss on each record (u, i⁺) and
``negatives`` items drawn uniformly for it (the sampled negatives belong to the record,
so per-record clipping bounds the whole term). User factors stay inside the silo.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dp.budget import BudgetPolicy
from dp.events import GaussianEvent, PoissonSampledEvent, PrivacyEvent, SelfComposedEvent
from dp.ledger import PrivacyLedger
from recsys.errors import ConfigError
from recsys.privacy import epsilon_of
from recsys.split import Interactions

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

__all__ = ["SiloConfig", "SiloResult", "train_silo"]


@dataclass(frozen=True)
class SiloConfig:
    """DP-SGD settings of the silo (Opacus) and its MF model."""

    dim: int = 8
    epochs: int = 2
    batch_size: int = 512
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    learning_rate: float = 0.05
    negatives: int = 4
    delta: float = 1e-5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 1 or self.epochs < 1 or self.batch_size < 1 or self.negatives < 1:
            raise ConfigError("silo needs dim, epochs, batch_size and negatives >= 1")
        if self.noise_multiplier <= 0 or self.max_grad_norm <= 0 or self.learning_rate <= 0:
            raise ConfigError("silo needs noise_multiplier, max_grad_norm, learning_rate > 0")
        if not 0 < self.delta < 1:
            raise ConfigError("silo delta must lie in (0, 1)")


@dataclass(frozen=True, eq=False)
class SiloResult:
    """What the silo releases (item side only) and what it cost (record-level)."""

    item_factors: FloatArray
    item_bias: FloatArray
    event: PrivacyEvent
    epsilon: float
    epsilon_opacus: float
    sample_rate: float
    steps: int
    records: int
    users: int


def train_silo(
    train: Interactions,
    silo_users: IntArray,
    config: SiloConfig,
    *,
    ledger_path: str | Path | None = None,
) -> SiloResult:
    """Train the silo's MF model with Opacus DP-SGD on the rows of ``silo_users``.

    With ``ledger_path``, a new ``dp`` ledger records the silo's record-level event.
    """
    import torch
    from opacus import PrivacyEngine
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    users = np.unique(np.asarray(silo_users, dtype=np.int64))
    if len(users) < 2:
        raise ConfigError("a silo needs at least 2 users")
    if users[0] < 0 or users[-1] >= train.num_users:
        raise ConfigError("silo users must be valid user ids")
    starts, ends = train.indptr[users], train.indptr[users + 1]
    rows = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
    if len(rows) < config.batch_size:
        raise ConfigError(f"the silo holds {len(rows)} records, fewer than one batch")
    local_user = np.repeat(np.arange(len(users)), ends - starts)
    items = train.items[rows]
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    dataset = TensorDataset(torch.as_tensor(local_user), torch.as_tensor(items))
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, generator=gen)

    class MF(nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.user = nn.Embedding(len(users), config.dim)
            self.item = nn.Embedding(train.num_items, config.dim)
            self.bias = nn.Embedding(train.num_items, 1)
            nn.init.normal_(self.user.weight, std=0.1)
            nn.init.normal_(self.item.weight, std=0.1)
            nn.init.zeros_(self.bias.weight)

        def forward(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            # u: (B,), i: (B, 1 + negatives); one embedding call each keeps every record's
            # positive and negatives in one per-sample gradient (row b of the batch)
            return (self.user(u).unsqueeze(1) * self.item(i)).sum(-1) + self.bias(i).squeeze(-1)

    model = MF()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    with warnings.catch_warnings():
        # Opacus warns that its noise is not from a CSPRNG (secure_mode needs torchcsprng,
        # not installed): the event below is marked secure=False, which is the honest record.
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        model, optimizer, loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=config.noise_multiplier,
            max_grad_norm=config.max_grad_norm,
            poisson_sampling=True,
        )
    loss_fn = nn.BCEWithLogitsLoss(reduction="mean")
    steps = 0
    with warnings.catch_warnings():
        # torch notes that the embedding inputs need no gradient (Opacus' hooks): harmless
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        steps = _run_epochs(model, optimizer, loader, loss_fn, config, train.num_items, gen)
    sample_rate = config.batch_size / len(rows)
    event = SelfComposedEvent(
        PoissonSampledEvent(
            sample_rate,
            GaussianEvent(noise_multiplier=config.noise_multiplier, secure=engine.secure_mode),
        ),
        steps,
    )
    eps = epsilon_of([event], config.delta)
    eps_opacus = float(engine.get_epsilon(config.delta))
    inner = model._module if hasattr(model, "_module") else model
    v = inner.item.weight.detach().numpy().astype(np.float64)
    b = inner.bias.weight.detach().numpy().astype(np.float64)[:, 0]
    if ledger_path is not None:
        with PrivacyLedger.create(
            ledger_path,
            policy=BudgetPolicy(delta=config.delta),
            run_id=(
                f"privagg silo (Opacus DP-SGD, RECORD-level DP): {len(users)} users, "
                f"{len(rows)} records, q={sample_rate:.6g}, sigma={config.noise_multiplier}, "
                f"steps={steps}, opacus_rdp_epsilon={eps_opacus:.6g}"
            ),
        ) as ledger:
            ledger.record_round(round_index=0, event=event, cohort_size=len(rows))
    if not math.isfinite(eps):
        raise ConfigError("the silo's privacy cost is not finite")
    return SiloResult(v, b, event, eps, eps_opacus, sample_rate, steps, len(rows), len(users))


def _run_epochs(
    model: Any,
    optimizer: Any,
    loader: Any,
    loss_fn: Any,
    config: SiloConfig,
    num_items: int,
    gen: Any,
) -> int:
    """The DP-SGD loop (Opacus' optimizer clips per record and adds the noise)."""
    import torch

    steps = 0
    for _ in range(config.epochs):
        for u_batch, i_batch in loader:
            if len(u_batch) == 0:
                continue
            optimizer.zero_grad()
            neg = torch.randint(0, num_items, (len(u_batch), config.negatives), generator=gen)
            logits = model(u_batch, torch.cat([i_batch.unsqueeze(1), neg], dim=1))
            labels = torch.zeros_like(logits)
            labels[:, 0] = 1.0
            loss = loss_fn(logits, labels)
            loss.backward()
            optimizer.step()
            steps += 1
    return steps
