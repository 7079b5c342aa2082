"""The contract every accountant backend honours (after dp_accounting's abstract test)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pytest

import dp
from dp.accounting import (
    Accountant,
    AutoAccountant,
    DiscretePldAccountant,
    PldAccountant,
    RdpAccountant,
)
from dp.errors import DPValueError, UnsupportedEventError
from dp.events import (
    ComposedEvent,
    DiscreteLaplaceEvent,
    DistributedDiscreteGaussianEvent,
    GaussianEvent,
    NonPrivateEvent,
    NoOpEvent,
    PoissonSampledEvent,
    PrivacyEvent,
    SelfComposedEvent,
)

BACKENDS = [PldAccountant, RdpAccountant, AutoAccountant, DiscretePldAccountant]
DELTA = 1e-5


@dataclass(frozen=True)
class MysteryEvent(PrivacyEvent):
    """An event no accountant knows."""

    type_name: ClassVar[str] = "Mystery"


SAMPLED = PoissonSampledEvent(sampling_probability=0.01, event=GaussianEvent(noise_multiplier=1.0))
DDG = DistributedDiscreteGaussianEvent(
    l2_sensitivity=100.0,
    l1_sensitivity=1000.0,
    local_sigma=20.0,
    dimension=1024,
    min_contributors=50,
    expected_contributors=60,
)


@pytest.fixture(params=BACKENDS, ids=lambda c: c.name)
def acc(request: pytest.FixtureRequest) -> Accountant:
    backend: type[Accountant] = request.param
    return backend()


def test_no_events_is_zero(acc: Accountant) -> None:
    assert acc.get_epsilon(DELTA) == 0.0
    b = acc.get_epsilon_bracket(DELTA)
    assert (b.epsilon_lower, b.epsilon_upper) == (0.0, 0.0)


def test_noop_is_zero(acc: Accountant) -> None:
    acc.compose(NoOpEvent(), 1000)
    acc.compose(SelfComposedEvent(NoOpEvent(), 5))
    assert acc.get_epsilon(DELTA) == 0.0


def test_non_private_is_infinite(acc: Accountant) -> None:
    acc.compose(SAMPLED, 10)
    acc.compose(NonPrivateEvent())
    assert math.isinf(acc.get_epsilon(DELTA))


def test_non_private_inside_sampling_is_infinite(acc: Accountant) -> None:
    acc.compose(PoissonSampledEvent(0.5, ComposedEvent((GaussianEvent(1.0), NonPrivateEvent()))))
    assert math.isinf(acc.get_epsilon(DELTA))


@pytest.mark.parametrize(
    "bad",
    [
        MysteryEvent(),
        ComposedEvent((GaussianEvent(1.0), MysteryEvent())),
        SelfComposedEvent(ComposedEvent((NoOpEvent(), MysteryEvent())), 3),
        PoissonSampledEvent(0.1, MysteryEvent()),
        PoissonSampledEvent(0.1, PoissonSampledEvent(0.5, GaussianEvent(1.0))),
    ],
    ids=["plain", "composed", "nested", "sampled", "double-sampling"],
)
def test_unsupported_event_raises_and_changes_nothing(acc: Accountant, bad: PrivacyEvent) -> None:
    acc.compose(SAMPLED, 100)
    before = acc.get_epsilon(DELTA)
    events_before = acc.events
    assert not acc.supports(bad)
    with pytest.raises(UnsupportedEventError):
        acc.compose(bad)
    assert acc.events == events_before
    assert acc.get_epsilon(DELTA) == before


def test_compose_is_transactional_for_partially_valid_trees(acc: Accountant) -> None:
    tree = ComposedEvent((SAMPLED, GaussianEvent(2.0), MysteryEvent()))
    with pytest.raises(UnsupportedEventError):
        acc.compose(tree, 10)
    assert acc.events == ()
    assert acc.get_epsilon(DELTA) == 0.0


def test_bad_parameters_are_rejected_without_state_change(acc: Accountant) -> None:
    with pytest.raises(DPValueError):
        acc.compose(SAMPLED, -1)
    with pytest.raises(DPValueError):
        acc.compose(SelfComposedEvent(SAMPLED, -2))
    assert acc.events == ()
    for delta in (0.0, 1.0, -1e-5, float("nan")):
        with pytest.raises(DPValueError):
            acc.get_epsilon(delta)


def test_zero_noise_is_non_private_and_zero_sensitivity_is_free(acc: Accountant) -> None:
    acc.compose(
        PoissonSampledEvent(
            0.5,
            DistributedDiscreteGaussianEvent(
                l2_sensitivity=0.0,
                l1_sensitivity=0.0,
                local_sigma=1.0,
                dimension=4,
                min_contributors=3,
                expected_contributors=3,
            ),
        )
    )
    acc.compose(PoissonSampledEvent(0.0, GaussianEvent(1.0)), 50)
    assert acc.get_epsilon(DELTA) == 0.0
    acc.compose(PoissonSampledEvent(0.01, GaussianEvent(0.0)))
    assert math.isinf(acc.get_epsilon(DELTA))


def test_compose_chains_and_counts_add_up(acc: Accountant) -> None:
    assert acc.compose(SAMPLED, 300).compose(SAMPLED, 700) is acc
    other = type(acc)().compose(SelfComposedEvent(SAMPLED, 1000))
    assert acc.get_epsilon(DELTA) == other.get_epsilon(DELTA)


def test_copy_is_independent(acc: Accountant) -> None:
    acc.compose(SAMPLED, 100)
    twin = acc.copy()
    twin.compose(SAMPLED, 900)
    assert acc.get_epsilon(DELTA) < twin.get_epsilon(DELTA)
    assert len(acc.events) == 1


def test_bracket_is_ordered(acc: Accountant) -> None:
    acc.compose(SAMPLED, 1000)
    b = acc.get_epsilon_bracket(DELTA)
    assert 0.0 <= b.epsilon_lower <= b.epsilon_upper
    assert b.backend in {"pld", "rdp", "discrete-pld"}


def test_gaussians_on_one_sample_collapse_to_effective_noise(acc: Accountant) -> None:
    # two Gaussians of σ=√2 on the same sample are one Gaussian of σ=1
    two = PoissonSampledEvent(0.01, SelfComposedEvent(GaussianEvent(math.sqrt(2.0)), 2))
    acc.compose(two, 500)
    ref = type(acc)().compose(SAMPLED, 500)
    assert acc.get_epsilon(DELTA) == pytest.approx(ref.get_epsilon(DELTA), rel=1e-9)


def test_pld_refuses_discrete_mechanisms_and_auto_routes_them() -> None:
    pld = PldAccountant()
    assert not pld.supports(DDG)
    with pytest.raises(UnsupportedEventError, match="RDP"):
        pld.compose(DDG)
    auto = AutoAccountant().compose(SAMPLED, 10)
    assert auto.active_backend == "pld"
    # sampled distributed discrete Gaussian: the Gaussian-dominated PLD, below RDP
    auto.compose(PoissonSampledEvent(0.01, DDG), 10)
    assert auto.active_backend == "discrete-pld"
    assert auto.get_epsilon_bracket(DELTA).backend == "discrete-pld"
    tight = DiscretePldAccountant().compose(SAMPLED, 10).compose(PoissonSampledEvent(0.01, DDG), 10)
    assert auto.get_epsilon(DELTA) == tight.get_epsilon(DELTA)
    rdp = RdpAccountant().compose(SAMPLED, 10).compose(PoissonSampledEvent(0.01, DDG), 10)
    assert auto.get_epsilon(DELTA) < rdp.get_epsilon(DELTA)
    # discrete Laplace has no Gaussian domination here: the whole composition goes to RDP
    auto.compose(DiscreteLaplaceEvent(l1_sensitivity=1.0, scale=10.0))
    assert auto.active_backend == "rdp"
    rdp.compose(DiscreteLaplaceEvent(l1_sensitivity=1.0, scale=10.0))
    assert auto.get_epsilon(DELTA) == rdp.get_epsilon_bracket(DELTA).epsilon_upper


def test_make_accountant_names() -> None:
    assert isinstance(dp.make_accountant("pld"), PldAccountant)
    assert isinstance(dp.make_accountant("rdp"), RdpAccountant)
    with pytest.raises(DPValueError, match="unknown accountant"):
        dp.make_accountant("prv")
