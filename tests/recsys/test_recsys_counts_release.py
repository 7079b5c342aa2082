"""The popularity release goes through the integer-counts encoding under distributed DP:
the charged event is the exact Skellam counts event, the released counts are the survivors'
exact counts plus integer noise (nothing rotated or rounded), a ring too narrow for the
counts falls back to the rotated plan, and a counts release must be √cap-clipped."""

from __future__ import annotations

import numpy as np
import pytest

from dp import DistributedSkellamCountsEvent
from recsys.channels import ChannelSpec, make_channel
from recsys.data import synthetic_ratings
from recsys.errors import ConfigError
from recsys.features import item_features
from recsys.federated import PopularityTask
from recsys.recommender import ModelConfig
from recsys.split import leave_last_out
from recsys.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")


def _spec(bits: int = 32) -> ChannelSpec:
    return ChannelSpec(
        privacy="distributed",
        secagg="plus",
        dropout=0.1,
        mechanism="discrete_gaussian",
        bits=bits,
        delta=1e-5,
        seed=1,
        simulation_noise=True,
    )


def test_popularity_is_released_as_exact_counts_plus_integer_skellam_noise() -> None:
    ratings = synthetic_ratings(60, 35, seed=4, mean_activity=12, min_activity=4)
    split = leave_last_out(ratings)
    config = TrainConfig(
        epsilon=4.0,
        rounds=0,
        seed=5,
        eval_every=0,
        simulation_noise=True,
        model=ModelConfig(kind="popfeat", cap=6),
    )
    trainer = Trainer(split, item_features(ratings), config)
    result = trainer.run()
    (event,) = trainer.released_events
    assert isinstance(event, DistributedSkellamCountsEvent)
    assert event.max_ones == 6 and event.dimension == 35
    assert result.records[0].epsilon <= 4.0 + 1e-9
    released = trainer.recommender.server.popularity
    assert released is not None
    # every device uploads its 0/1 indicator of at most 6 items: the noise is what is left,
    # and it is integral (no rotation, no rounding, no scaling)
    task = PopularityTask(35, cap=6)
    uploads = task.local_updates(
        trainer.recommender.fleet, trainer.recommender.server, np.arange(60)
    )
    assert set(np.unique(uploads)) <= {0.0, 1.0} and uploads.sum(axis=1).max() <= 6
    noise_plus_dropped = released - uploads.sum(axis=0)
    np.testing.assert_array_equal(noise_plus_dropped, np.rint(noise_plus_dropped))


def test_counts_plan_when_the_ring_holds_the_counts_else_the_rotated_one() -> None:
    channel = make_channel(_spec(bits=32))
    plan = channel.plan(100, 20**0.5, 3.0, 943, count_cap=20)
    assert plan.encoding == "counts" and plan.padded_dimension == 100
    assert channel.masked_input_size(100, 943, count_cap=20)[0] == 100
    float_plan = channel.plan(100, 20**0.5, 3.0, 943)
    assert float_plan.encoding == "rotated" and float_plan.padded_dimension == 128
    narrow = make_channel(_spec(bits=11))  # 2^9 < the ~1,140 possible contributors
    assert not narrow.counts_encoding(20, 943)
    assert narrow.masked_input_size(100, 943, count_cap=20)[0] == 128


def test_a_counts_release_needs_the_cap_as_its_sensitivity() -> None:
    channel = make_channel(_spec())
    with pytest.raises(ConfigError, match="clip_norm"):
        channel.plan(100, 1.0, 3.0, 943, count_cap=20)
