"""privagg protocols: SecAgg (Bonawitz et al. 2017) and SecAgg+ (Bell et al. 2020).

Client and server are explicit state machines exchanging typed, immutable messages with a
canonical versioned encoding; :func:`run_secagg` runs one whole round in-process.

>>> import numpy as np, secagg, protocols
>>> x = secagg.to_ring(np.arange(12).reshape(4, 3), 32)
>>> result = protocols.run_secagg(x, protocols.SecAggConfig(4, 3), drop={"mask": [1]})
>>> result.included, result.total.tolist()
((0, 2, 3), [15, 18, 21])
"""

from protocols.client import ClientState, PeerStatus, SecAggClient, ShareKind
from protocols.config import MAX_CLIENTS, SecAggConfig, Stage, ThreatModel
from protocols.errors import (
    AbortReason,
    ConfigError,
    DecodeError,
    ProtocolAborted,
    ProtocolError,
    StateError,
)
from protocols.graph import CommunicationGraph
from protocols.params import GraphGuarantee
from protocols.round import SecAggResult, StageReport, run_secagg
from protocols.server import AggregateOutput, SecAggServer, ShareFault, ShareFaultCause
from protocols.transport import Direction, FaultHook, InMemoryTransport, Transport

__all__ = [
    "MAX_CLIENTS",
    "AbortReason",
    "AggregateOutput",
    "ClientState",
    "CommunicationGraph",
    "ConfigError",
    "DecodeError",
    "Direction",
    "FaultHook",
    "GraphGuarantee",
    "InMemoryTransport",
    "PeerStatus",
    "ProtocolAborted",
    "ProtocolError",
    "SecAggClient",
    "SecAggConfig",
    "SecAggResult",
    "SecAggServer",
    "ShareFault",
    "ShareFaultCause",
    "ShareKind",
    "Stage",
    "StageReport",
    "StateError",
    "ThreatModel",
    "Transport",
    "run_secagg",
]
