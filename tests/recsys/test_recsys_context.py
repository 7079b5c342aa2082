"""On-device context: loaders, the scoring-time model, and that no upload ever depends on it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dp import distributed_sum as private_sum_module
from protocols import secagg_sum as secagg_sum_module
from recsys.context import (
    AGE_AT_RELEASE_EDGES,
    ContextConfig,
    OnDeviceContext,
    UserContext,
    item_release_times,
    load_user_context,
    synthetic_user_context,
)
from recsys.data import load_ratings, synthetic_ratings
from recsys.errors import ConfigError, DataFormatError
from recsys.features import item_features
from recsys.federated import FCFConfig
from recsys.recommender import ModelConfig
from recsys.split import leave_last_out
from recsys.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.filterwarnings("ignore::dp.rng.NonSecureRandomnessWarning")


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    r = synthetic_ratings(45, 40, seed=6, mean_activity=14, min_activity=4)
    return r, leave_last_out(r), item_features(r)


def _random_context(r: Any, rng: np.random.Generator) -> UserContext:
    """Arbitrary context values: any age, gender, occupation, region and request time."""
    n = r.num_users
    lo, hi = int(r.timestamps.min()) - 10**8, int(r.timestamps.max()) + 10**8
    return UserContext(
        age=rng.uniform(0.0, 100.0, n),
        gender=rng.integers(-1, 2, n),
        occupation=rng.integers(-1, 21, n),
        region=rng.integers(-1, 10, n),
        request_time=rng.integers(lo, hi, n),
        reference_time=float(rng.integers(lo, hi)),
        source="arbitrary",
        synthetic=True,
    )


def _record_uploads(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """Spy on every upload: the clipped float updates the devices encode, the encoded ring
    vectors they send, and the ring matrix handed to SecAgg."""
    # the channel's release encodes in dp.distributed_sum and runs SecAgg in protocols.secagg_sum
    seen: list[np.ndarray] = []
    real_encode = private_sum_module.encode_many
    real_secagg = secagg_sum_module.run_secagg

    def encode_spy(block: Any, *args: Any, **kw: Any) -> Any:
        seen.append(np.array(block, copy=True))
        encoded, info = real_encode(block, *args, **kw)
        seen.append(np.array(encoded, copy=True))
        return encoded, info

    def secagg_spy(inputs: Any, *args: Any, **kw: Any) -> Any:
        seen.append(np.array(inputs, copy=True))
        return real_secagg(inputs, *args, **kw)

    monkeypatch.setattr(private_sum_module, "encode_many", encode_spy)
    monkeypatch.setattr(secagg_sum_module, "run_secagg", secagg_spy)
    return seen


def _train(data: Any, context: OnDeviceContext | None, monkeypatch: pytest.MonkeyPatch) -> Any:
    _, split, feats = data
    config = TrainConfig(
        privacy="distributed",
        epsilon=8.0,
        rounds=2,
        secagg="full",
        dropout=0.1,
        seed=4,
        eval_every=1,  # evaluation (which uses the context) runs between the releases
        simulation_noise=True,
        model=ModelConfig(kind="popfeat+fcf", cap=5, fcf=FCFConfig(dim=3, active_items=20)),
    )
    with monkeypatch.context() as m:
        seen = _record_uploads(m)
        result = Trainer(split, feats, config, context=context).run()
    return seen, result


def test_no_context_value_or_anything_derived_from_it_enters_an_upload(
    data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every upload — float update, ring encoding (same noise seed), SecAgg input — is bit
    for bit the same whatever the context holds, while the context does change the scores."""
    r, split, _ = data
    release = item_release_times(r)
    runs = []
    for seed in (1, 2, 3):
        everything = ContextConfig(request_time=True, freshness=True, age=True)
        ctx = OnDeviceContext(_random_context(r, np.random.default_rng(seed)), release, everything)
        runs.append(_train(data, ctx, monkeypatch))
    baseline = _train(data, None, monkeypatch)
    ref = runs[0][0]
    assert len(ref) == 3 * 3  # 3 releases x (float block, ring block, SecAgg input)
    for seen, _ in [*runs[1:], baseline]:
        assert len(seen) == len(ref)
        for a, b in zip(ref, seen, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.tobytes() == b.tobytes()
    # the context is really used on the device: rankings differ between contexts
    users = split.eval_users
    scores = [res.recommender.scores(users) for _, res in runs]
    assert not np.array_equal(scores[0], scores[1])
    assert not np.array_equal(scores[0], baseline[1].recommender.scores(users))


def test_request_time_hides_unreleased_items(data: Any) -> None:
    r, split, _ = data
    release = item_release_times(r)
    ctx = synthetic_user_context(r, split, seed=0)
    model = OnDeviceContext(ctx, release, ContextConfig(age=False))
    users = np.arange(r.num_users, dtype=np.int64)
    scores = np.zeros((len(users), r.num_items))
    out = model.adjust(users, scores)
    hidden = out < -1e29
    when = ctx.request_time[users]
    expected = (when[:, None] > 0) & (release[None, :] > when[:, None])
    assert np.array_equal(hidden, expected)
    # unknown request time (0): nothing hidden
    later = model.context.with_request_times(np.zeros(r.num_users, dtype=np.int64))
    assert not (OnDeviceContext(later, release).adjust(users, scores) < 0).any()
    # a grace period hides fewer
    graced = OnDeviceContext(ctx, release, ContextConfig(grace_days=400.0)).adjust(users, scores)
    assert (graced < -1e29).sum() <= hidden.sum()


@settings(max_examples=25, deadline=None)
@given(age=st.floats(0.0, 99.0), years_after=st.floats(-60.0, 60.0))
def test_age_at_release_bins(age: float, years_after: float) -> None:
    """The one-hot bin is the user's age when the item came out."""
    assume(min(abs(years_after - e) for e in AGE_AT_RELEASE_EDGES) > 1e-6)  # no rounding ties
    ref = dt.datetime(1998, 1, 1, tzinfo=dt.UTC).timestamp()
    year = 365.2425 * 86_400
    birth = ref - age * year
    release = np.array([birth + years_after * year, np.nan])
    ctx = UserContext(
        age=np.array([age]),
        gender=np.array([1]),
        occupation=np.array([0]),
        region=np.array([0]),
        request_time=np.array([0]),
        reference_time=ref,
        source="t",
    )
    onehot = OnDeviceContext(ctx, release).age_at_release(np.array([0], dtype=np.int64))[0]
    assert onehot.sum(axis=1).tolist() == [1.0, 1.0]
    assert onehot[0].argmax() == np.digitize(years_after, AGE_AT_RELEASE_EDGES)
    assert onehot[1].argmax() == len(AGE_AT_RELEASE_EDGES) + 1  # unknown release


def test_u_user_loader_is_strict(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("1\t10\t5\t100\n2\t10\t3\t200\n2\t11\t4\t300\n")
    r = load_ratings(tmp_path)
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|K1A0B\n")
    ctx = load_user_context(tmp_path, r)
    assert ctx.age.tolist() == [24.0, 53.0] and ctx.gender.tolist() == [1, 0]
    assert ctx.region.tolist() == [8, -1]
    assert [ctx.occupations[i] for i in ctx.occupation] == ["technician", "other"]
    for bad, line in (("1|x|M|a|1\n", 1), ("1|24|M|a|1\n2|30|Q|a|1\n", 2), ("1|24|M\n", 1)):
        (tmp_path / "u.user").write_text(bad)
        with pytest.raises(DataFormatError, match=f"u.user:{line}"):
            load_user_context(tmp_path, r)
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n")
    with pytest.raises(DataFormatError, match="no row"):
        load_user_context(tmp_path, r)


def test_context_must_cover_the_fleet(data: Any) -> None:
    r, split, feats = data
    small = synthetic_ratings(10, 40, seed=1, mean_activity=8, min_activity=4)
    ctx = OnDeviceContext(synthetic_user_context(small), item_release_times(r))
    config = TrainConfig(privacy="none", rounds=0, model=ModelConfig(kind="popfeat"))
    with pytest.raises(ConfigError, match="every device"):
        Trainer(split, feats, config, context=ctx).run()


def test_ml100k_context_loads(ml100k_dir: Path) -> None:
    r = load_ratings(ml100k_dir)
    split = leave_last_out(r)
    ctx = load_user_context(ml100k_dir, r, split)
    assert ctx.num_users == 943 and not ctx.synthetic
    assert ctx.age.min() >= 7 and ctx.age.max() <= 73
    assert len(ctx.occupations) == 21
    release = item_release_times(r, ml100k_dir)
    assert np.isfinite(release).sum() >= 1680
    assert np.array_equal(ctx.request_time, split.target_timestamps)


def test_per_device_fit_matches_the_shared_feature_fit(data: Any) -> None:
    """With the same design on every device, the per-device Newton fit is the public-feature
    model's fit."""
    from recsys.context import _fit_per_user
    from recsys.features import fit_feature_weights

    r, _, feats = data
    rng = np.random.default_rng(0)
    obs = rng.random((5, r.num_items)) * (rng.random((5, r.num_items)) < 0.2)
    obs /= obs.sum(axis=1, keepdims=True)
    offset = rng.normal(0.0, 1.0, r.num_items)
    shared = fit_feature_weights(obs, feats, offset, l2=0.1, iterations=6)
    none = np.zeros((5, r.num_items, 0))
    np.testing.assert_allclose(
        _fit_per_user(obs, feats, none, offset, l2=0.1, iterations=6),
        shared,
        rtol=1e-9,
        atol=1e-12,
    )
    # private columns that are the same on every device: the fit of the stacked design
    extra = (rng.random((r.num_items, 3)) < 0.3).astype(float)
    stacked = fit_feature_weights(obs, np.hstack([feats, extra]), offset, l2=0.1, iterations=6)
    private = np.broadcast_to(extra, (5, *extra.shape))
    np.testing.assert_allclose(
        _fit_per_user(obs, feats, private, offset, l2=0.1, iterations=6),
        stacked,
        rtol=1e-8,
        atol=1e-10,
    )


def test_item_age_at_request_bins(data: Any) -> None:
    r, split, _ = data
    day = 86_400.0
    release = np.full(r.num_items, np.nan)
    release[:4] = [100 * day, 50 * day, 10 * day, -2000 * day]
    ctx = OnDeviceContext(synthetic_user_context(r, split), release)
    onehot = ctx.item_age(np.array([70 * day, 0.0]))
    # at day 70: unreleased, 20 days, 60 days, 2070 days old; unknown release; unknown time
    assert onehot[0, :4].argmax(axis=1).tolist() == [0, 1, 2, 5]
    assert onehot[0, 4].argmax() == 6 and (onehot[1].argmax(axis=1) == 6).all()
