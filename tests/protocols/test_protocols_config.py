"""Configuration validation (S15, F9) and the SecAgg+ parameter search."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import SecAggConfig, ThreatModel
from protocols.errors import ConfigError, ProtocolError
from protocols.params import evaluate_graph

MALICIOUS = ThreatModel.MALICIOUS_SERVER


def test_config_error_is_a_protocol_error_and_a_value_error() -> None:
    assert issubclass(ConfigError, ProtocolError) and issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((1, 1), {}, "num_clients"),  # n = 1 is refused
        ((10, 5), {}, "must exceed"),  # t <= n/2 (honest-but-curious)
        ((10, 11), {}, "threshold"),
        ((10, 0), {}, "threshold"),
        ((10, 6), {"threat_model": MALICIOUS, "corrupt_fraction": 0.3}, "malicious"),
        ((10, 6), {"corrupt_fraction": 0.6}, "colluding"),
        ((10, 9), {"dropout_rate": 0.2}, "leaves 8"),
        ((10, 6), {"neighbors": 3}, "even"),
        ((10, 6), {"neighbors": 10}, "neighbors"),
        ((10, 2), {"neighbors": 4}, "must exceed"),
        ((300, 151), {"bits": 8}, "cannot hold"),
        ((100, 51), {"bits": 16, "max_abs_input": 1000}, "ring too narrow"),
        ((10, 6), {"bits": 63}, "bits"),
        ((10, 6), {"dropout_rate": 1.0}, "dropout_rate"),
        ((10, True), {}, "threshold"),
    ],
)
def test_invalid_configurations_raise_before_any_key_exists(
    args: tuple[int, int], kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        SecAggConfig(*args, **kwargs)  # type: ignore[arg-type]


def test_malicious_threshold_rule_is_t_greater_than_n_plus_corrupt_over_two() -> None:
    # n = 10, 2 corrupt: t > 6 is required
    with pytest.raises(ConfigError):
        SecAggConfig(10, 6, threat_model=MALICIOUS, corrupt_fraction=0.2)
    assert SecAggConfig(10, 7, threat_model=MALICIOUS, corrupt_fraction=0.2).threshold == 7


def test_valid_full_graph_config() -> None:
    cfg = SecAggConfig(100, 51)
    assert cfg.is_full_graph and cfg.degree == 99 and cfg.group_size == 100
    assert not cfg.consistency_check
    assert SecAggConfig(5, 5).threshold == 5  # n = t exactly
    assert SecAggConfig(2, 2).num_clients == 2


def test_sparse_config_without_a_guarantee_is_refused() -> None:
    # k = 4 with 20 % dropouts: the honest survivors' graph may split
    with pytest.raises(ConfigError, match="security guarantee"):
        SecAggConfig(500, 3, neighbors=4, dropout_rate=0.2)


def test_plus_matches_its_own_bounds() -> None:
    cfg = SecAggConfig.plus(1000, dropout_rate=0.1, corrupt_rate=0.05)
    g = cfg.guarantee()
    assert g.security_failure <= 2.0**-40 and g.correctness <= 2.0**-30
    assert cfg.neighbors is not None and cfg.neighbors % 2 == 0
    assert 2 * cfg.threshold > cfg.group_size
    # k is minimal: the next smaller degree has no valid threshold
    k = cfg.neighbors
    n, c, r = 1000, math.ceil(0.05 * 1000), math.ceil(0.1 * 1000)
    for t in range(k // 2 + 1, k):
        smaller = evaluate_graph(n, k - 2, t, corrupt=c, dropped=r, malicious=False)
        assert smaller.security_failure > 2.0**-40 or smaller.correctness > 2.0**-30


def test_plus_grows_k_logarithmically_not_linearly() -> None:
    k = {
        n: SecAggConfig.plus(n, dropout_rate=0.05, corrupt_rate=0.05).degree for n in (1000, 10_000)
    }
    assert k[10_000] < 2 * k[1000]
    assert k[10_000] / 10_000 < 0.01


def test_plus_is_refused_in_malicious_mode() -> None:
    # The sparse-graph bounds assume a random graph and random dropouts; a malicious server
    # picks the seed and who drops (issue 15, observation 3): no guarantee is printed.
    with pytest.raises(ConfigError, match="refused in malicious-server mode"):
        SecAggConfig.plus(2000, dropout_rate=0.05, corrupt_rate=0.05, threat_model=MALICIOUS)
    with pytest.raises(ConfigError, match="refused in malicious-server mode"):
        SecAggConfig(100, 12, neighbors=22, threat_model=MALICIOUS, corrupt_fraction=0.05)


def test_plus_refuses_when_no_sparse_graph_helps() -> None:
    with pytest.raises(ConfigError, match="full graph"):
        SecAggConfig.plus(20, dropout_rate=0.45)
    with pytest.raises(ConfigError, match="full graph"):
        SecAggConfig.plus(1000, dropout_rate=0.5)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 400),
    t=st.integers(1, 400),
    gamma=st.floats(0, 0.5),
    malicious=st.booleans(),
)
def test_full_graph_validation_is_exactly_the_stated_rules(
    n: int, t: int, gamma: float, malicious: bool
) -> None:
    c = math.ceil(gamma * n)
    model = MALICIOUS if malicious else ThreatModel.HONEST_BUT_CURIOUS
    ok = t <= n and 2 * t > n and c < t and (not malicious or 2 * t > n + c)
    if ok:
        assert SecAggConfig(n, t, threat_model=model, corrupt_fraction=gamma).threshold == t
    else:
        with pytest.raises(ConfigError):
            SecAggConfig(n, t, threat_model=model, corrupt_fraction=gamma)


def test_evaluate_graph_full_graph_matches_deterministic_rules() -> None:
    g = evaluate_graph(10, 9, 7, corrupt=2, dropped=0, malicious=True)
    assert g.exposure == 0.0 and g.correctness == 0.0  # 2t = 14 > n + c = 12
    g = evaluate_graph(10, 9, 6, corrupt=2, dropped=0, malicious=True)
    assert g.exposure == 1.0  # 2t = 12 = n + c: the server can split the holders
    g = evaluate_graph(10, 9, 8, corrupt=0, dropped=3, malicious=False)
    assert g.correctness == 1.0  # 7 responders < 8
