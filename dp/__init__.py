"""privagg dp: clipping, exact discrete noise, distributed-DP encoding, accounting, ledger.

Mechanisms never compute ε: each returns a frozen privacy event (:mod:`dp.events`) that an
accountant interprets. Noise comes from :class:`SecureRng` unless a caller explicitly
passes the non-secure :class:`SimulationRng`, whose events are marked ``secure=False``.
"""

from dp.central import central_gaussian, central_granularity
from dp.clipping import AdaptiveClipping, ClipResult, clip_l2, l2_norm
from dp.distributed import (
    DecodeReport,
    EncodedUpdate,
    EncodeReport,
    PresampledNoise,
    decode,
    encode,
    encode_many,
    encode_with_report,
)
from dp.errors import (
    DPError,
    DPValueError,
    EventDecodeError,
    InsecureRandomnessError,
    InsufficientNoiseError,
    LedgerError,
    NonFiniteUpdateError,
    PlanningError,
    PrivacyBudgetExceeded,
    UnsupportedEventError,
)
from dp.events import (
    ComposedEvent,
    DiscreteGaussianEvent,
    DiscreteLaplaceEvent,
    DistributedDiscreteGaussianEvent,
    DistributedSkellamCountsEvent,
    DistributedSkellamEvent,
    GaussianEvent,
    NonPrivateEvent,
    NoOpEvent,
    PoissonSampledEvent,
    PrivacyEvent,
    QuantizationInfo,
    SelfComposedEvent,
    StratifiedPoissonSampledEvent,
    event_from_dict,
    event_from_json,
)
from dp.mechanisms import discrete_laplace_mechanism
from dp.planning import DistributedDPPlan, plan_distributed_counts, plan_distributed_dp
from dp.rng import NoiseRng, NonSecureRandomnessWarning, SecureRng, SimulationRng
from dp.samplers import (
    bernoulli,
    discrete_gaussian,
    discrete_laplace,
    poisson,
    rational_at_least,
    skellam,
)

__all__ = [
    "AdaptiveClipping",
    "ClipResult",
    "ComposedEvent",
    "DPError",
    "DPValueError",
    "DecodeReport",
    "DiscreteGaussianEvent",
    "DiscreteLaplaceEvent",
    "DistributedDPPlan",
    "DistributedDiscreteGaussianEvent",
    "DistributedSkellamCountsEvent",
    "DistributedSkellamEvent",
    "EncodeReport",
    "EncodedUpdate",
    "EventDecodeError",
    "GaussianEvent",
    "InsecureRandomnessError",
    "InsufficientNoiseError",
    "LedgerError",
    "NoOpEvent",
    "NoiseRng",
    "NonFiniteUpdateError",
    "NonPrivateEvent",
    "NonSecureRandomnessWarning",
    "PlanningError",
    "PoissonSampledEvent",
    "PresampledNoise",
    "PrivacyBudgetExceeded",
    "PrivacyEvent",
    "QuantizationInfo",
    "SecureRng",
    "SelfComposedEvent",
    "SimulationRng",
    "StratifiedPoissonSampledEvent",
    "UnsupportedEventError",
    "bernoulli",
    "central_gaussian",
    "central_granularity",
    "clip_l2",
    "decode",
    "discrete_gaussian",
    "discrete_laplace",
    "discrete_laplace_mechanism",
    "encode",
    "encode_many",
    "encode_with_report",
    "event_from_dict",
    "event_from_json",
    "l2_norm",
    "plan_distributed_counts",
    "plan_distributed_dp",
    "poisson",
    "rational_at_least",
    "skellam",
]

# --- accounting (owned by the accounting module) ---
from dp.accounting import (  # noqa: I001 - one re-export line, explicit aliases
    AutoAccountant as AutoAccountant,
    DiscretePldAccountant as DiscretePldAccountant,
    PldAccountant as PldAccountant,
    RdpAccountant as RdpAccountant,
    calibrate_event_noise as calibrate_event_noise,
    calibrate_noise as calibrate_noise,
    epsilon as epsilon,
    epsilon_bracket as epsilon_bracket,
    event_epsilon as event_epsilon,
    make_accountant as make_accountant,
    max_sampling_rate as max_sampling_rate,
    max_steps as max_steps,
)
