"""privagg recsys: data, honest evaluation, baselines, federated models and the trainer.

* data: :func:`load_ratings` (MovieLens 100K/1M/10M/20M/25M/latest, generic CSV; public
  item metadata when present) and :func:`synthetic_ratings` (seeded, always labelled);
* evaluation: :func:`leave_last_out` (temporal, tie-break by item id) and
  :func:`evaluate_ranking` (full ranking HR@K / NDCG@K / MRR with bootstrap intervals;
  sampled negatives only as a labelled option), :func:`paired_test`;
* baselines: :mod:`recsys.baselines` (popularity, DP capped popularity, ALS, EASE);
* federated models: :mod:`recsys.federated` (devices, item server, dense client tasks) and
  :class:`FederatedRecommender` ("popfeat", "fcf", "popfeat+fcf");
* training: :class:`Trainer` composes the devices with ``dp`` (distributed DP encoding,
  accounting, ledger) and ``protocols`` (SecAgg / SecAgg+ with dropouts).
"""

from recsys.data import Ratings, load_ratings, synthetic_ratings
from recsys.errors import (
    ConfigError,
    DataFormatError,
    DataNotFoundError,
    RecsysError,
    ReleaseAborted,
)
from recsys.features import item_features
from recsys.federated import FCFConfig, FeatureModelConfig
from recsys.metrics import RankingReport, evaluate_ranking, paired_test, sampled_negatives
from recsys.recommender import FederatedRecommender, ModelConfig, choose_model_kind
from recsys.split import Interactions, Split, leave_last_out
from recsys.trainer import RoundRecord, TrainConfig, Trainer, TrainResult, open_ledger

__all__ = [
    "ConfigError",
    "DataFormatError",
    "DataNotFoundError",
    "FCFConfig",
    "FeatureModelConfig",
    "FederatedRecommender",
    "Interactions",
    "ModelConfig",
    "RankingReport",
    "Ratings",
    "RecsysError",
    "ReleaseAborted",
    "RoundRecord",
    "Split",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "choose_model_kind",
    "evaluate_ranking",
    "item_features",
    "leave_last_out",
    "load_ratings",
    "open_ledger",
    "paired_test",
    "sampled_negatives",
    "synthetic_ratings",
]
