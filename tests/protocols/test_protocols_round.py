"""Whole rounds: bit-exact sums under random dropouts (hypothesis), aborts, faults."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import secagg
from protocols import (
    AbortReason,
    Direction,
    InMemoryTransport,
    ProtocolAborted,
    SecAggConfig,
    Stage,
    run_secagg,
)
from protocols.errors import ConfigError
from protocols.messages import MaskedInput, decode

STAGES = ("advertise", "share", "mask", "unmask")
BITS = st.sampled_from([8, 16, 32, 48, 62])


def ring_inputs(seed: int, n: int, d: int, bits: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = secagg.ring_dtype(bits)
    high = np.iinfo(dtype).max if bits in (32, 64) else (1 << bits) - 1
    x = rng.integers(0, high, size=(n, d), dtype=dtype, endpoint=True)
    x[0, 0] = high  # the largest ring element always appears
    return x


def plain_sum(x: np.ndarray, included: tuple[int, ...], bits: int) -> np.ndarray:
    """The reference: exact Python-int sum mod 2^bits (independent of numpy wrapping)."""
    rows = x[list(included)].astype(object)
    return (rows.sum(axis=0) % (1 << bits)).astype(x.dtype)


@st.composite
def drop_patterns(draw: st.DrawFn, n: int, budget: int) -> dict[str, list[int]]:
    victims = draw(st.lists(st.integers(0, n - 1), unique=True, max_size=budget))
    stages = draw(st.lists(st.sampled_from(STAGES), min_size=len(victims), max_size=len(victims)))
    plan: dict[str, list[int]] = {}
    for victim, stage in zip(victims, stages, strict=True):
        plan.setdefault(stage, []).append(victim)
    return plan


@st.composite
def full_graph_cases(draw: st.DrawFn) -> tuple[SecAggConfig, dict[str, list[int]], int, int]:
    # mostly small (fast, many shapes); one in four up to 200 (costs n^2 key agreements)
    small = st.integers(3, 40)
    n = draw(st.one_of(small, small, small, st.integers(41, 200)))
    t = draw(st.integers(n // 2 + 1, n))
    d = draw(st.integers(1, 10_000))
    bits = draw(BITS)
    return (
        SecAggConfig(n, t, bits=bits),
        draw(drop_patterns(n, n - t)),
        d,
        draw(st.integers(0, 2**32 - 1)),
    )


@st.composite
def sparse_graph_cases(draw: st.DrawFn) -> tuple[SecAggConfig, dict[str, list[int]], int, int]:
    n = draw(st.integers(5, 200))
    k = draw(st.sampled_from([k for k in (2, 4, 6, 8, 10) if k <= n - 2]))
    t = draw(st.integers(k // 2 + 1, k + 1))
    d = draw(st.integers(1, 10_000))
    cfg = SecAggConfig(n, t, neighbors=k, bits=draw(BITS))
    return cfg, draw(drop_patterns(n, max(0, (k + 1 - t)))), d, draw(st.integers(0, 2**32 - 1))


def check_round(case: tuple[SecAggConfig, dict[str, list[int]], int, int]) -> None:
    cfg, drop, d, seed = case
    x = ring_inputs(seed, cfg.num_clients, d, cfg.bits)
    try:
        result = run_secagg(x, cfg, drop=drop, seed=seed)
    except ProtocolAborted as exc:
        # Only a sparse graph may lose a whole neighbourhood within the global budget.
        assert not cfg.is_full_graph, exc
        assert exc.reason is AbortReason.TOO_FEW_SURVIVORS
        return
    gone_before_unmask = {c for s in ("advertise", "share", "mask") for c in drop.get(s, [])}
    assert set(result.included) == set(range(cfg.num_clients)) - gone_before_unmask
    assert np.array_equal(result.total, plain_sum(x, result.included, cfg.bits))
    assert result.total.dtype == secagg.ring_dtype(cfg.bits)


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(full_graph_cases())
def test_full_graph_total_is_the_exact_sum_of_included_inputs(case: tuple) -> None:  # type: ignore[type-arg]
    check_round(case)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sparse_graph_cases())
def test_secagg_plus_total_is_the_exact_sum_of_included_inputs(case: tuple) -> None:  # type: ignore[type-arg]
    check_round(case)


def test_large_full_graph_round_with_drops_at_every_stage() -> None:
    n, t, d = 200, 101, 10_000
    rng = np.random.default_rng(7)
    victims = rng.choice(n, size=n - t, replace=False).tolist()
    drop = {s: victims[i::4] for i, s in enumerate(STAGES)}
    x = ring_inputs(7, n, d, 32)
    result = run_secagg(x, SecAggConfig(n, t), drop=drop, seed=7)
    assert len(result.included) == n - sum(len(drop[s]) for s in STAGES[:3])
    assert np.array_equal(result.total, plain_sum(x, result.included, 32))


def test_plus_config_round_is_exact() -> None:
    cfg = SecAggConfig.plus(200, dropout_rate=0.05)
    x = ring_inputs(3, 200, 2_000, 32)
    drop = {"mask": list(range(0, 200, 20))}
    result = run_secagg(x, cfg, drop=drop, seed=3)
    assert np.array_equal(result.total, plain_sum(x, result.included, 32))


@pytest.mark.parametrize("stage", STAGES)
def test_fewer_than_t_survivors_aborts_at_that_stage_revealing_no_share(stage: str) -> None:
    n, t = 9, 5
    spy: list[tuple[Stage, bytes]] = []

    def record(direction: Direction, st_: Stage, cid: int, data: bytes) -> bytes | None:
        if direction is Direction.TO_SERVER and data is not None:
            spy.append((st_, data))
        return data

    with pytest.raises(ProtocolAborted) as err:
        run_secagg(
            ring_inputs(1, n, 8, 32),
            SecAggConfig(n, t),
            drop={stage: range(n - t + 1)},
            transport=InMemoryTransport([record]),
        )
    assert err.value.stage == stage
    assert err.value.reason is AbortReason.TOO_FEW_SURVIVORS
    unmask_replies = [data for st_, data in spy if st_ is Stage.UNMASK]
    if stage != "unmask":
        assert unmask_replies == []  # nobody was even asked for a share
    else:  # t - 1 holders answered: fewer than t shares of any secret exist
        assert len(unmask_replies) == t - 1


def test_n_equals_t_with_no_dropout_works_and_one_drop_aborts() -> None:
    x = ring_inputs(2, 4, 3, 32)
    result = run_secagg(x, SecAggConfig(4, 4))
    assert np.array_equal(result.total, plain_sum(x, (0, 1, 2, 3), 32))
    with pytest.raises(ProtocolAborted):
        run_secagg(x, SecAggConfig(4, 4), drop={"unmask": [0]})


def test_d_equals_one_and_extreme_values() -> None:
    n = 5
    top = np.full((n, 1), 2**32 - 1, dtype=np.uint32)
    assert run_secagg(top, SecAggConfig(n, 3)).total.tolist() == [(5 * (2**32 - 1)) % 2**32]
    zeros = np.zeros((n, 1), dtype=np.uint32)
    assert run_secagg(zeros, SecAggConfig(n, 3)).total.tolist() == [0]


def test_result_reports_bytes_and_timings() -> None:
    n, d = 10, 1000
    result = run_secagg(ring_inputs(0, n, d, 32), SecAggConfig(n, 6), drop={"mask": [3]})
    mask = result.stage("mask")
    assert mask.senders == n - 1
    assert mask.upload_bytes_per_client_max == 4 * d + 13  # 4 bytes per coordinate
    assert result.client_seconds > 0 and result.server_seconds > 0
    assert result.wall_seconds >= result.server_seconds
    assert [s.stage for s in result.stages] == list(STAGES)
    assert result.upload_bytes_per_client > 4 * d * (n - 1) / n


def test_input_and_drop_validation() -> None:
    cfg = SecAggConfig(5, 3)
    x = ring_inputs(0, 5, 4, 32)
    with pytest.raises(ConfigError):
        run_secagg(x.astype(np.int64), cfg)
    with pytest.raises(ConfigError):
        run_secagg(x[:4], cfg)
    with pytest.raises(ConfigError):
        run_secagg(x[0], cfg)
    with pytest.raises(ConfigError):
        run_secagg(x, cfg, drop={"later": [1]})
    with pytest.raises(ConfigError):
        run_secagg(x, cfg, drop={"mask": [5]})
    with pytest.raises(ConfigError):
        run_secagg(x, cfg, drop={"consistency": [1]})
    with pytest.raises(ConfigError):
        run_secagg(np.full((5, 4), 300, dtype=np.uint32), SecAggConfig(5, 3, bits=8))


# ------------------------------------------------------------------ fault injection


def hook_on(stage: Stage, client: int, edit: Callable[[bytes], bytes | None]) -> InMemoryTransport:
    def hook(direction: Direction, st_: Stage, cid: int, data: bytes) -> bytes | None:
        if data is not None and direction is Direction.TO_SERVER and st_ is stage and cid == client:
            return edit(data)
        return data

    return InMemoryTransport([hook])


@pytest.mark.parametrize("stage", [Stage.ADVERTISE, Stage.SHARE, Stage.MASK, Stage.UNMASK])
@pytest.mark.parametrize(
    "edit",
    [
        lambda b: b[:-1],  # truncated
        lambda b: b + b"\x00",  # trailing byte
        lambda b: b[:3] + b"\x7f" + b[4:],  # unknown type
        lambda b: bytes([b[0] ^ 1]) + b[1:],  # bad magic
    ],
    ids=["truncated", "trailing", "unknown-type", "bad-magic"],
)
def test_malformed_client_message_counts_as_a_drop(stage: Stage, edit: Callable) -> None:  # type: ignore[type-arg]
    n = 7
    x = ring_inputs(5, n, 6, 32)
    result = run_secagg(x, SecAggConfig(n, 4), transport=hook_on(stage, 2, edit))
    expected = tuple(c for c in range(n) if c != 2 or stage is Stage.UNMASK)
    assert result.included == expected
    assert np.array_equal(result.total, plain_sum(x, expected, 32))


def test_masked_vector_of_wrong_length_or_out_of_range_values_is_rejected() -> None:
    n, bits = 7, 16
    x = ring_inputs(6, n, 6, bits)

    def wrong_length(data: bytes) -> bytes:
        m = decode(data)
        assert isinstance(m, MaskedInput)
        return MaskedInput(m.sender, m.bits, m.vector[:-1]).to_bytes()

    def out_of_range(data: bytes) -> bytes:
        m = decode(data)
        assert isinstance(m, MaskedInput)
        v = m.vector.copy()
        v[0] = 1 << bits
        return MaskedInput(m.sender, m.bits, v).to_bytes()

    for edit in (wrong_length, out_of_range):
        result = run_secagg(
            x, SecAggConfig(n, 4, bits=bits), transport=hook_on(Stage.MASK, 1, edit)
        )
        assert 1 not in result.included
        assert np.array_equal(result.total, plain_sum(x, result.included, bits))


def test_bit_flipped_share_ciphertext_aborts_the_receiver_only() -> None:
    n = 7

    def flip(data: bytes) -> bytes:
        b = bytearray(data)
        b[-5] ^= 0x10  # inside the last ciphertext
        return bytes(b)

    x = ring_inputs(8, n, 6, 32)
    result = run_secagg(x, SecAggConfig(n, 4), transport=hook_on(Stage.SHARE, 0, flip))
    assert len(result.client_aborts) == 1
    ((victim, reason),) = result.client_aborts.items()
    assert reason is AbortReason.SHARE_DECRYPTION_FAILED
    assert victim not in result.included
    assert np.array_equal(result.total, plain_sum(x, result.included, 32))


def test_duplicate_masked_input_is_counted_once_and_late_input_is_ignored() -> None:
    """F3 and S14: a replayed masked input and one arriving after its stage closed."""
    from adversary import MaliciousServer

    n = 7
    x = ring_inputs(9, n, 5, 32)
    adv = MaliciousServer(SecAggConfig(n, 4), x)
    adv.start()
    adv.honest_stage()
    adv.honest_stage()
    late = adv.ask(6, adv.outbound[6])  # client 6 masks, but its upload is delayed
    assert isinstance(late, MaskedInput)
    first = adv.ask(0, adv.outbound[0])
    adv.server.receive(first)
    adv.server.receive(first)  # duplicate delivery
    del adv.outbound[0]
    adv.honest_stage(skip=frozenset({6}))
    ignored = adv.server.ignored_messages
    adv.server.receive(late)  # arrives during the unmask stage: ignored
    assert adv.server.ignored_messages == ignored + 1
    adv.honest_stage()
    out = adv.server.output()
    assert out.included == (0, 1, 2, 3, 4, 5)
    assert np.array_equal(out.total, plain_sum(x, out.included, 32))
