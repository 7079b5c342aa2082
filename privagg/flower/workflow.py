"""The server side: a Flower fit workflow that replaces ``SecAggPlusWorkflow``.

``DefaultWorkflow(fit_workflow=PrivaggWorkflow(...))`` inside a ``ServerApp``. Per round:

1. the strategy (e.g. Flower's ``FedAvg``) samples the cohort (``configure_fit``);
2. the workflow plans the round (:class:`~privagg.flower.offer.RoundOffer`: SecAgg+ when a
   sparse graph meets its bounds, else the full graph; the distributed-DP plan), asks the
   ledger whether the budget allows it (``PrivacyLedger.check_round``) and only then
   contacts any device;
3. it drives privagg's :class:`protocols.SecAggServer` over Flower messages, one
   ``send_and_receive`` per stage with ``timeout``; a device whose reply is missing, late
   or an error is a dropout, and the round goes on while every threshold holds;
4. it decodes the noisy sum of the survivors' updates (:func:`dp.decode`), charges the
   round in the ledger (dropouts charged as they happened) and hands the new global model
   to the strategy as one aggregated result, so ``FedAvg`` keeps its place in the loop.

An aborted round (fewer than t survivors) changes no parameter, reveals no share before
the unmasking stage, and is recorded as ``aborted`` (charged nothing).
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

import protocols
from dp.distributed import DecodeReport, decode
from dp.errors import PrivacyBudgetExceeded
from dp.ledger import PrivacyLedger
from dp.planning import DistributedDPPlan, Mechanism
from privagg.flower import wire
from privagg.flower.offer import RoundOffer, model_digest

__all__ = ["NEIGHBOURING_RELATION", "PrivaggWorkflow", "RoundReport"]

log = logging.getLogger("privagg.flower")

NEIGHBOURING_RELATION = "add/remove one device's whole (clipped) update per round"


@dataclass(frozen=True, eq=False)
class RoundReport:
    """What one privagg round did (kept in :attr:`PrivaggWorkflow.reports`)."""

    round_number: int
    status: str
    cohort: tuple[int, ...]
    included: tuple[int, ...]
    epsilon: float
    seconds: float
    upload_bytes: int
    download_bytes: int
    abort_reason: str = ""
    offer: RoundOffer | None = None
    ring_total: npt.NDArray[Any] | None = field(default=None, repr=False)
    update_sum: npt.NDArray[np.float64] | None = field(default=None, repr=False)
    decode_report: DecodeReport | None = None


class PrivaggWorkflow:
    """Flower fit workflow: distributed DP + SecAgg(+) with privagg, charged in a ledger.

    ``clip_norm`` bounds each device's update (L2, after flattening every layer);
    ``noise_multiplier`` is the central noise std over the clipping norm in any released
    sum of at least ``min_contributors`` = t − ⌈corrupt_fraction·n⌉ honest shares;
    ``dropout_rate`` / ``corrupt_fraction`` are the assumptions the SecAgg(+) threshold is
    chosen for; ``graph`` is ``"auto"`` (SecAgg+ when its bounds hold), ``"plus"`` or
    ``"full"``; ``timeout`` (seconds) is how long one stage waits for replies.
    ``simulation_noise_seed`` asks devices for seeded, non-secure noise (tests and
    reproducible simulations; devices refuse it unless their policy allows it, and the
    ledger records such rounds as ``secure=False``).
    """

    def __init__(
        self,
        *,
        clip_norm: float,
        noise_multiplier: float,
        ledger: PrivacyLedger,
        mechanism: Mechanism = "ddg",
        bits: int = 32,
        dropout_rate: float = 0.1,
        corrupt_fraction: float = 0.0,
        graph: str = "auto",
        timeout: float | None = 300.0,
        simulation_noise_seed: int | None = None,
        threat_model: protocols.ThreatModel = protocols.ThreatModel.HONEST_BUT_CURIOUS,
        verify_keys: Mapping[int, bytes] | None = None,
        on_round: Callable[[RoundReport], None] | None = None,
    ) -> None:
        if graph not in ("auto", "plus", "full"):
            raise ValueError(f"graph must be 'auto', 'plus' or 'full', got {graph!r}")
        if not isinstance(ledger, PrivacyLedger):
            raise TypeError("ledger must be a dp.ledger.PrivacyLedger")
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be positive seconds or None")
        if ledger.meta.public_key is None:
            log.warning(
                "privagg: the ledger is unsigned; pass PrivacyLedger.create(..., "
                "signing_key=secagg.SigningKey.generate()) so its rows cannot be rewritten"
            )
        self.clip_norm = float(clip_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.ledger = ledger
        self.mechanism: Mechanism = mechanism
        self.bits = bits
        self.dropout_rate = dropout_rate
        self.corrupt_fraction = corrupt_fraction
        self.graph = graph
        self.timeout = timeout
        self.simulation_noise_seed = simulation_noise_seed
        if not isinstance(threat_model, protocols.ThreatModel):
            raise TypeError("threat_model must be a protocols.ThreatModel")
        if threat_model is protocols.ThreatModel.MALICIOUS_SERVER and verify_keys is None:
            raise ValueError("the malicious-server mode needs verify_keys (node id -> key)")
        self.threat_model = threat_model
        self.verify_keys = dict(verify_keys or {})
        self.on_round = on_round
        self.reports: list[RoundReport] = []

    # ------------------------------------------------------------------ planning

    def secagg_config(self, n: int) -> protocols.SecAggConfig:
        """SecAgg+ when a sparse graph meets its bounds (``graph="auto"``), else full."""
        if self.graph in ("auto", "plus"):
            try:
                return protocols.SecAggConfig.plus(
                    n,
                    dropout_rate=self.dropout_rate,
                    corrupt_rate=self.corrupt_fraction,
                    threat_model=self.threat_model,
                    bits=self.bits,
                )
            except protocols.ConfigError:
                if self.graph == "plus":
                    raise
        return protocols.SecAggConfig(
            n,
            n // 2 + 1,
            bits=self.bits,
            dropout_rate=self.dropout_rate,
            corrupt_fraction=self.corrupt_fraction,
            threat_model=self.threat_model,
        )

    def offer(
        self, round_number: int, node_ids: tuple[int, ...], arrays: list[npt.NDArray[Any]]
    ) -> tuple[RoundOffer, DistributedDPPlan]:
        """The round's public parameters and its DP plan (validated by both)."""
        config = self.secagg_config(len(node_ids))
        corrupt = config.corrupt_fraction or 0.0
        offer = RoundOffer(
            round_number=round_number,
            node_ids=node_ids,
            threshold=config.threshold,
            neighbors=None if config.is_full_graph else config.neighbors,
            bits=config.bits,
            dropout_rate=config.dropout_rate,
            corrupt_fraction=corrupt,
            clip_norm=self.clip_norm,
            noise_multiplier=self.noise_multiplier,
            mechanism=self.mechanism,
            min_contributors=config.threshold - math.ceil(corrupt * len(node_ids)),
            rotation_seed=secrets.token_bytes(32),
            model_sha256=model_digest(arrays),
            simulation_noise_seed=self.simulation_noise_seed,
            threat_model=self.threat_model.value,
        )
        dimension = sum(int(a.size) for a in arrays)
        return offer, offer.plan(dimension)

    # ------------------------------------------------------------------ the round

    def __call__(self, grid: Any, context: Any) -> None:
        from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
        from flwr.common import parameters_to_ndarrays as to_arrays
        from flwr.compat.common import recorddict_compat as compat
        from flwr.server.compat.legacy_context import LegacyContext
        from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

        if not isinstance(context, LegacyContext):
            raise TypeError(f"expected a LegacyContext, got {type(context).__name__}")
        start = time.perf_counter()
        round_number = int(context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])
        parameters = compat.arrayrecord_to_parameters(
            context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
        )
        instructions = context.strategy.configure_fit(
            round_number, parameters, context.client_manager
        )
        if not instructions:
            log.info("privagg: round %d: the strategy sampled no clients", round_number)
            return
        by_node = {proxy.node_id: (proxy, fitins) for proxy, fitins in instructions}
        node_ids = tuple(sorted(by_node))
        arrays = to_arrays(parameters)
        for _, fitins in by_node.values():
            if model_digest(to_arrays(fitins.parameters)) != model_digest(arrays):
                raise ValueError("the strategy sent devices different models in one round")
        offer, plan = self.offer(round_number, node_ids, arrays)
        event = plan.event(secure=self.simulation_noise_seed is None)
        try:
            self.ledger.check_round(event)
        except PrivacyBudgetExceeded as exc:
            # Refused before any device is contacted: nothing to charge, nothing to record.
            log.error("privagg: round %d not run: %s", round_number, exc)
            self._finish(
                RoundReport(
                    round_number=round_number,
                    status="refused",
                    cohort=node_ids,
                    included=(),
                    epsilon=self.ledger.epsilon,
                    seconds=time.perf_counter() - start,
                    upload_bytes=0,
                    download_bytes=0,
                    abort_reason=f"budget: {exc}",
                    offer=offer,
                )
            )
            return
        config = offer.secagg_config()
        verify_keys = None
        if config.consistency_check:
            missing = [nid for nid in node_ids if nid not in self.verify_keys]
            if missing:
                raise ValueError(f"no verify key for sampled nodes {missing[:3]}")
            verify_keys = {i: self.verify_keys[nid] for i, nid in enumerate(node_ids)}
        server = protocols.SecAggServer(
            config,
            plan.padded_dimension,
            round_number=round_number,
            graph_seed=secrets.token_bytes(32),
            context_digest=offer.context_digest(),
            verify_keys=verify_keys,
        )
        first = {
            nid: compat.fitins_to_recorddict(fitins, True) for nid, (_, fitins) in by_node.items()
        }
        offer_bytes = offer.to_bytes()
        up = down = 0
        try:
            outbound = server.start()
            while not server.finished:
                stage = server.stage
                assert stage is not None
                sent, received = self._exchange(
                    grid, server, outbound, node_ids, round_number, first, offer_bytes
                )
                first = {}
                down += sent
                up += received
                outbound = server.advance()
        except protocols.ProtocolAborted as exc:
            self.ledger.record_round(
                round_index=round_number,
                event=event,
                cohort_size=len(node_ids),
                status="aborted",
            )
            report = RoundReport(
                round_number=round_number,
                status="aborted",
                cohort=node_ids,
                included=(),
                epsilon=self.ledger.epsilon,
                seconds=time.perf_counter() - start,
                upload_bytes=up,
                download_bytes=down,
                abort_reason=f"{exc.stage}: {exc.reason.value}",
                offer=offer,
            )
            self._finish(report)
            log.error("privagg: round %d aborted at %s", round_number, report.abort_reason)
            return
        output = server.output()
        included = tuple(node_ids[i] for i in output.included)
        update_sum, decoded = decode(
            output.total,
            plan,
            rotation_seed=offer.rotation_seed,
            num_contributors=len(included),
        )
        entry = self.ledger.record_round(
            round_index=round_number,
            event=event,
            cohort_size=len(node_ids),
            survivors=len(included),
            participants=[str(nid) for nid in included],
        )
        new_arrays = apply_mean_update(arrays, update_sum, len(included))
        result = FitRes(
            status=Status(code=Code.OK, message=""),
            parameters=ndarrays_to_parameters(new_arrays),
            num_examples=1,  # one aggregate: FedAvg's weighted mean of it is itself
            metrics={},
        )
        proxy = by_node[included[0]][0]
        aggregated, metrics = context.strategy.aggregate_fit(round_number, [(proxy, result)], [])
        if aggregated is not None:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                aggregated, True
            )
        metrics = dict(metrics or {})
        metrics.update(
            {
                "privagg_epsilon": entry.cumulative_epsilon,
                "privagg_contributors": len(included),
                "privagg_below_plan": int(entry.below_plan),
            }
        )
        context.history.add_metrics_distributed_fit(server_round=round_number, metrics=metrics)
        report = RoundReport(
            round_number=round_number,
            status="released",
            cohort=node_ids,
            included=included,
            epsilon=entry.cumulative_epsilon,
            seconds=time.perf_counter() - start,
            upload_bytes=up,
            download_bytes=down,
            ring_total=output.total,
            update_sum=update_sum,
            decode_report=decoded,
            offer=offer,
        )
        self._finish(report)
        log.info(
            "privagg: round %d released the noisy sum of %d/%d devices; cumulative "
            "epsilon = %.4g at delta = %g (%s)",
            round_number,
            len(included),
            len(node_ids),
            entry.cumulative_epsilon,
            self.ledger.meta.policy.delta,
            NEIGHBOURING_RELATION,
        )

    def _finish(self, report: RoundReport) -> None:
        self.reports.append(report)
        if self.on_round is not None:
            self.on_round(report)

    def _exchange(
        self,
        grid: Any,
        server: protocols.SecAggServer,
        outbound: dict[int, Any],
        node_ids: tuple[int, ...],
        round_number: int,
        first: dict[int, Any],
        offer_bytes: bytes,
    ) -> tuple[int, int]:
        """One stage: every outbound protocol message as a Flower message, replies in."""
        from flwr.app import ConfigRecord, Message, MessageType, RecordDict

        stage = server.stage
        assert stage is not None
        index = {nid: i for i, nid in enumerate(node_ids)}
        encoded: dict[int, bytes] = {}
        messages = []
        sent = 0
        for cid in sorted(outbound):
            message = outbound[cid]
            data = encoded.get(id(message))
            if data is None:  # a broadcast is serialized once
                data = encoded[id(message)] = message.to_bytes()
            nid = node_ids[cid]
            content = first[nid] if nid in first else RecordDict()
            content.config_records[wire.CONFIG_KEY] = ConfigRecord(
                {wire.STAGE_FIELD: stage.value, wire.ROUND_FIELD: round_number}
            )
            content.array_records[wire.PAYLOAD_KEY] = wire.pack(data)
            if first:
                content.array_records[wire.OFFER_KEY] = wire.pack(offer_bytes)
            sent += len(data)
            messages.append(
                Message(
                    content=content,
                    dst_node_id=nid,
                    message_type=MessageType.TRAIN,
                    group_id=str(round_number),
                )
            )
        received = 0
        for reply in grid.send_and_receive(messages, timeout=self.timeout):
            nid = reply.metadata.src_node_id
            if nid not in index or reply.has_error() or not reply.has_content():
                if reply.has_error():
                    log.info("privagg: node %s dropped: %s", nid, reply.error.reason)
                continue  # a dropout: the protocol tolerates it while t holds
            config = reply.content.config_records.get(wire.CONFIG_KEY)
            if config is None or config.get(wire.STAGE_FIELD) != stage.value:
                continue
            try:
                payload = wire.unpack(reply.content.array_records[wire.PAYLOAD_KEY])
            except (KeyError, ValueError):
                payload = b""  # the server marks the sender faulty
            received += len(payload)
            server.receive_bytes(index[nid], payload)
        return sent, received


def apply_mean_update(
    arrays: list[npt.NDArray[Any]], update_sum: npt.NDArray[np.float64], contributors: int
) -> list[npt.NDArray[Any]]:
    """Each layer plus its slice of the mean update, in the layer's own dtype."""
    mean = update_sum / contributors
    out = []
    offset = 0
    for array in arrays:
        size = int(array.size)
        step = mean[offset : offset + size].reshape(array.shape)
        out.append((np.asarray(array, dtype=np.float64) + step).astype(array.dtype))
        offset += size
    return out
