"""Helpers for running privagg rounds in Flower's simulation engine.

* :func:`backend_config`: one Ray actor for all ClientApps, so every stage of a device's
  round reaches the process that holds its SecAgg state (see :mod:`privagg.flower.client_mod`).
* :func:`dropout_mod`: a mod placed *before* the privagg mod that makes chosen devices
  vanish at a chosen stage (their reply is an error, as a crashed device's would be), to
  exercise dropout recovery.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from privagg.flower import wire

__all__ = ["backend_config", "dropout_mod"]


def backend_config(num_cpus: int = 1) -> dict[str, Any]:
    """A Ray backend configuration with exactly one ClientApp actor of ``num_cpus`` CPUs."""
    return {
        "init_args": {"num_cpus": num_cpus, "include_dashboard": False},
        "client_resources": {"num_cpus": num_cpus, "num_gpus": 0.0},
    }


def dropout_mod(vanish_at: Mapping[int, str]) -> Any:
    """A mod that drops the devices of ``vanish_at`` (partition id -> stage name) from the
    named stage on: they answer that stage and every later one with an error."""
    for stage in vanish_at.values():
        if stage not in wire.STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {wire.STAGES}")
    order = {stage: i for i, stage in enumerate(wire.STAGES)}

    def mod(msg: Any, ctxt: Any, call_next: Any) -> Any:
        from flwr.app import Error, Message
        from flwr.common.constant import ErrorCode

        stage_at = vanish_at.get(int(ctxt.node_config["partition-id"]))
        config = msg.content.config_records.get(wire.CONFIG_KEY) if msg.has_content() else None
        if stage_at is not None and config is not None:
            stage = str(config.get(wire.STAGE_FIELD))
            if order.get(stage, -1) >= order[stage_at]:
                return Message(
                    Error(code=ErrorCode.CLIENT_APP_CRASHED, reason="simulated dropout"),
                    reply_to=msg,
                )
        return call_next(msg, ctxt)

    return mod
