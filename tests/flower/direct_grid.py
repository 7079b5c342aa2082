"""An in-process stand-in for Flower's Grid: messages go straight to ClientApp mod chains.

For the fast checks that need no simulation engine (attacks, retries, policy refusals):
each message is handed to ``mods`` around a NumPyClient's ``fit``, in this process, with one
persistent ``Context`` per node. ``tamper`` may rewrite any outbound message first (a
lying server) and ``repeat`` delivers every message twice (Flower re-sending after a lost
reply).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.client import NumPyClient
from flwr.common import ConfigRecord, ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat
from flwr.server import ServerConfig
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.supercore.task_identity import TaskIdentity

TaskIdentity.run_id = 1
TaskIdentity.node_id = 0
TaskIdentity.task_id = 1


class DirectGrid:
    def __init__(
        self,
        node_ids: Sequence[int],
        client: Callable[[int], NumPyClient],
        mods: Sequence[Any],
        *,
        tamper: Callable[[Message], Message] | None = None,
        repeat: bool = False,
    ) -> None:
        self.node_ids = list(node_ids)
        self.client = client
        self.mods = list(mods)
        self.tamper = tamper
        self.repeat = repeat
        self.contexts = {
            nid: Context(
                run_id=1,
                node_id=nid,
                node_config={"partition-id": i, "num-partitions": len(node_ids)},
                state=RecordDict(),
                run_config={},
            )
            for i, nid in enumerate(node_ids)
        }
        self.replies: list[Message] = []
        self.retries_answered_alike = 0

    def _fit(self, msg: Message, ctxt: Context) -> Message:
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        res = self.client(int(ctxt.node_config["partition-id"])).to_client().fit(fitins)
        return Message(compat.fitres_to_recorddict(res, keep_input=False), reply_to=msg)

    def _deliver(self, msg: Message) -> Message:
        ctxt = self.contexts[msg.metadata.dst_node_id]

        def chain(i: int) -> Callable[[Message, Context], Message]:
            if i == len(self.mods):
                return self._fit
            return lambda m, c: self.mods[i](m, c, chain(i + 1))

        return chain(0)(msg, ctxt)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        out = []
        for msg in messages:
            if self.tamper is not None:
                msg = self.tamper(msg)
            reply = self._deliver(msg)
            if self.repeat:
                again = self._deliver(msg)
                assert _payload(again) == _payload(reply), "a retried stage changed its answer"
                self.retries_answered_alike += 1
            out.append(reply)
        self.replies.extend(out)
        return out


def _payload(msg: Message) -> bytes:
    if msg.has_error():
        return msg.error.reason.encode()
    return bytes(msg.content.array_records["privagg.payload"]["bytes"].numpy().tobytes())


def legacy_context(grid: DirectGrid, model: list[np.ndarray], round_number: int = 1) -> Any:
    n = len(grid.node_ids)
    strategy = FedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n
    )
    base = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    ctx = LegacyContext(context=base, config=ServerConfig(num_rounds=1), strategy=strategy)
    for nid in grid.node_ids:
        ctx.client_manager.register(GridClientProxy(nid, grid, 1))  # type: ignore[arg-type]
    ctx.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: round_number})
    ctx.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(model), True
    )
    return ctx
