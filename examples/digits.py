"""Federated training of a torch model on scikit-learn's digits with privagg.

100 simulated clients each hold their own slice of the training images; every round, 10 %
of them drop out (half before sending their masked input, half while unmasking). The same
model is trained four ways and evaluated on the same held-out test images:

* federated, non-private (SecAgg+ only),
* federated with distributed DP + SecAgg+ at ε = 8 and at ε = 1 (δ = 1e-5,
  client-level zero-out adjacency: a client's whole dataset is protected),
* central, non-federated training on the pooled training set (the reference).

Run ``python examples/digits.py`` (needs the ``examples`` extra: scikit-learn); ``--seed``
makes the run reproducible with ``dp``'s explicitly non-secure simulation generator
(default: secure noise from the OS CSPRNG); ``--out DIR`` writes ``digits.json`` there.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import privagg
from dp.rng import NonSecureRandomnessWarning

NUM_CLIENTS = 100
DELTA = 1e-5


def load(seed: int) -> tuple[list[tuple[Any, Any]], Any, Any, Any, Any]:
    """(clients, train x, train y, test x, test y); pixels scaled by their fixed range."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)  # data-independent scaling (0..16 grey levels)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    order = np.random.default_rng(seed).permutation(len(x_train))
    clients = [(x_train[p], y_train[p]) for p in np.array_split(order, NUM_CLIENTS)]
    return clients, x_train, y_train, x_test, y_test


def make_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(64, 10)  # multinomial logistic regression: 650 parameters


def accuracy(model: torch.nn.Module, x: Any, y: Any) -> float:
    with torch.no_grad():
        predicted = model(torch.as_tensor(x)).argmax(1).numpy()
    return float((predicted == y).mean())


def central(x: Any, y: Any, seed: int, epochs: int = 300) -> torch.nn.Module:
    """The reference: the same model trained on the pooled data (full-batch gradient
    descent on the same loss), no federation, no privacy."""
    model = make_model(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    inputs, targets = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(epochs):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seed", type=int, default=None, help="simulation noise (reproducible)")
    parser.add_argument("--secagg", choices=["plus", "full"], default="plus")
    parser.add_argument("--out", type=Path, default=None, help="write digits.json here")
    args = parser.parse_args(argv)
    data_seed = 0 if args.seed is None else args.seed
    clients, x_train, y_train, x_test, y_test = load(data_seed)
    rows: list[dict[str, Any]] = []
    for label, epsilon in (("non-private", None), ("ε = 8", 8.0), ("ε = 1", 1.0)):
        model = make_model(data_seed)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonSecureRandomnessWarning)
            result = privagg.train(
                model,
                clients,
                rounds=args.rounds,
                epsilon=epsilon,
                delta=DELTA,
                secagg=args.secagg,
                dropout=0.1,
                clip_norm=1.0,
                local_steps=10,
                local_lr=0.5,
                seed=args.seed,
            )
        rows.append(
            {
                "training": f"federated, {label}",
                "test_accuracy": accuracy(model, x_test, y_test),
                "epsilon": result.epsilon,
                "noise_multiplier": result.noise_multiplier,
                "mean_included": float(np.mean([r.included for r in result.rounds])),
                "seconds": time.perf_counter() - start,
            }
        )
        print(_line(rows[-1]), flush=True)
    start = time.perf_counter()
    reference = central(x_train, y_train, data_seed)
    rows.append(
        {
            "training": "central, non-federated",
            "test_accuracy": accuracy(reference, x_test, y_test),
            "epsilon": float("inf"),
            "noise_multiplier": 0.0,
            "mean_included": float(len(x_train)),
            "seconds": time.perf_counter() - start,
        }
    )
    print(_line(rows[-1]))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        report = {
            "clients": NUM_CLIENTS,
            "dropout": 0.1,
            "rounds": args.rounds,
            "delta": DELTA,
            "neighbouring": "zero-out-one-client",
            "secure_noise": args.seed is None,
            "rows": rows,
        }
        for row in rows:  # strict JSON: no DP is ε = null
            row["epsilon"] = None if math.isinf(row["epsilon"]) else row["epsilon"]
        (args.out / "digits.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


def _line(row: dict[str, Any]) -> str:
    eps = row["epsilon"]
    eps_text = "∞" if eps == float("inf") else f"{eps:.3f}"
    return (
        f"{row['training']:<28} test accuracy {row['test_accuracy']:.3f}   ε ≤ {eps_text:<6} "
        f"z = {row['noise_multiplier']:.2f}   {row['seconds']:.0f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
