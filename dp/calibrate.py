"""The function API: ε of a Poisson-subsampled Gaussian, and its inverses.

``epsilon`` answers "what ε do these settings give?"; ``calibrate_noise``, ``max_steps`` and
``max_sampling_rate`` answer the questions FL users actually ask ("how much noise for ε = 8?",
"how many rounds can I afford?", "how large a cohort?"). Every inverse returns a value whose
ε has been *computed* and is ≤ the target (never overshoots); the search stops within
0.01 % (σ, q) or at the exact integer (T) of the accountant's own optimum.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from dp.accounting.auto import AutoAccountant
from dp.accounting.base import Accountant, EpsilonBracket
from dp.accounting.discrete_pld import DiscretePldAccountant
from dp.accounting.pld import PldAccountant
from dp.accounting.rdp import RdpAccountant
from dp.accounting.skellam_pld import SkellamPldAccountant
from dp.errors import DPValueError
from dp.events import GaussianEvent, PoissonSampledEvent, PrivacyEvent

BACKENDS: dict[str, Callable[[], Accountant]] = {
    "pld": PldAccountant,
    "rdp": RdpAccountant,
    "auto": AutoAccountant,
    "skellam-pld": SkellamPldAccountant,
    "discrete-pld": DiscretePldAccountant,
}
MAX_NOISE_MULTIPLIER = 1e6
_RELATIVE_XTOL = 1e-4


def event_epsilon(
    event: PrivacyEvent, *, steps: int = 1, delta: float, accountant: str = "auto"
) -> float:
    """The (upper, valid) ε of ``steps`` uses of any privacy ``event`` (e.g. the
    Poisson-sampled event of a distributed DDG / Skellam plan), by the named backend
    (``"auto"``: the tightest that supports it, see :class:`~dp.accounting.AutoAccountant`)."""
    t, d = _steps(steps), _delta(delta)
    acc = make_accountant(accountant)
    if t:
        acc.compose(event, t)
    if isinstance(acc, RdpAccountant):
        return acc.get_epsilon_bracket(d).epsilon_upper  # silent inside searches
    return acc.get_epsilon(d)


def calibrate_event_noise(
    event_of: Callable[[float], PrivacyEvent],
    *,
    target_epsilon: float,
    delta: float,
    steps: int,
    accountant: str = "auto",
) -> float:
    """The smallest noise multiplier z with ε(``steps`` uses of ``event_of(z)``) ≤ target.

    ``event_of`` maps a noise multiplier to the event of one release (for a distributed
    round: ``lambda z: plan_distributed_dp(..., noise_multiplier=z,
    sampling_probability=q).event(secure=True)``); ε must decrease in z. Same search and
    guarantee as :func:`calibrate_noise`: the returned z was evaluated and is feasible,
    within 0.01 % of the accountant's own optimum.
    """
    target = _target(target_epsilon)
    t, d = _steps(steps), _delta(delta)
    if t == 0:
        raise DPValueError("steps must be ≥ 1 to calibrate noise")

    def f(z: float) -> float:
        return event_epsilon(event_of(z), steps=t, delta=d, accountant=accountant)

    return _calibrate_decreasing(f, target)


def make_accountant(name: str = "pld") -> Accountant:
    """A fresh accountant of the named backend (``"pld"``, ``"rdp"``, ``"auto"``,
    ``"skellam-pld"`` or ``"discrete-pld"``)."""
    try:
        return BACKENDS[name]()
    except KeyError:
        raise DPValueError(
            f"unknown accountant {name!r}; choose one of {', '.join(sorted(BACKENDS))}"
        ) from None


def _finite_positive(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, float | int) or not math.isfinite(value):
        raise DPValueError(f"{what} must be a finite number, got {value!r}")
    if value <= 0:
        raise DPValueError(f"{what} must be positive, got {value!r}")
    return float(value)


def _rate(value: object) -> float:
    q = _finite_positive(value, "sampling_rate")
    if q > 1:
        raise DPValueError(f"sampling_rate must be in (0, 1], got {value!r}")
    return q


def _steps(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DPValueError(f"steps must be a non-negative integer, got {value!r}")
    return value


def _delta(value: object) -> float:
    d = _finite_positive(value, "delta")
    if d >= 1:
        raise DPValueError(f"delta must be in (0, 1), got {value!r}")
    return d


def sampled_gaussian_event(noise_multiplier: float, sampling_rate: float) -> PrivacyEvent:
    """The event of one step of the Poisson-subsampled Gaussian (q = 1: no sampling)."""
    event: PrivacyEvent = GaussianEvent(noise_multiplier=noise_multiplier)
    if sampling_rate < 1:
        event = PoissonSampledEvent(sampling_probability=sampling_rate, event=event)
    return event


def epsilon_bracket(
    *,
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: str = "pld",
) -> EpsilonBracket:
    """ε for ``steps`` Poisson-subsampled Gaussian steps, with its certified lower end."""
    sigma = _finite_positive(noise_multiplier, "noise_multiplier")
    q = _rate(sampling_rate)
    t = _steps(steps)
    d = _delta(delta)
    acc = make_accountant(accountant)
    if t:
        acc.compose(sampled_gaussian_event(sigma, q), t)
    return acc.get_epsilon_bracket(d)


def epsilon(
    *,
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: str = "pld",
) -> float:
    """The (upper, valid) ε of ``steps`` steps of a Poisson-subsampled Gaussian mechanism.

    ``noise_multiplier`` is σ / L2-sensitivity, neighbours are add-or-remove-one. The default
    PLD backend is tight (certified bracket, see :func:`epsilon_bracket`); ``"rdp"`` gives the
    classic Rényi-DP bound (Opacus' analysis), looser at small sampling rates.
    """
    sigma = _finite_positive(noise_multiplier, "noise_multiplier")
    q = _rate(sampling_rate)
    t = _steps(steps)
    d = _delta(delta)
    acc = make_accountant(accountant)
    if t:
        acc.compose(sampled_gaussian_event(sigma, q), t)
    # get_epsilon (not the bracket): the RDP backend warns when its optimal order is at
    # the edge of the order grid
    return acc.get_epsilon(d)


def _upper(
    *, noise_multiplier: float, sampling_rate: float, steps: int, delta: float, accountant: str
) -> float:
    """ε upper bound without warnings (used inside searches)."""
    if accountant != "pld":
        return epsilon_bracket(
            noise_multiplier=noise_multiplier,
            sampling_rate=sampling_rate,
            steps=steps,
            delta=delta,
            accountant=accountant,
        ).epsilon_upper
    # PLD's get_epsilon is silent and skips the certified lower end a search never reads
    sigma = _finite_positive(noise_multiplier, "noise_multiplier")
    q, t, d = _rate(sampling_rate), _steps(steps), _delta(delta)
    acc = PldAccountant()
    if t:
        acc.compose(sampled_gaussian_event(sigma, q), t)
    return acc.get_epsilon(d)


def _eps_fn(
    sampling_rate: float, steps: int, delta: float, accountant: str
) -> Callable[[float], float]:
    def f(sigma: float) -> float:
        return _upper(
            noise_multiplier=sigma,
            sampling_rate=sampling_rate,
            steps=steps,
            delta=delta,
            accountant=accountant,
        )

    return f


def _target(value: object) -> float:
    return _finite_positive(value, "target_epsilon")


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sampling_rate: float,
    steps: int,
    accountant: str = "pld",
) -> float:
    """The smallest noise multiplier σ whose ε (at ``delta``) does not exceed the target.

    Geometric bracketing then a secant/bisection hybrid on log σ; the returned σ was checked:
    ε(σ) ≤ target, and ε(σ·(1 − 10⁻⁴)) > target up to the accountant's own resolution.
    """
    target = _target(target_epsilon)
    q, t, d = _rate(sampling_rate), _steps(steps), _delta(delta)
    if t == 0:
        raise DPValueError("steps must be ≥ 1 to calibrate noise")
    return _calibrate_decreasing(_eps_fn(q, t, d, accountant), target)


def _calibrate_decreasing(f: Callable[[float], float], target: float) -> float:
    """Smallest σ with f(σ) ≤ target for f decreasing in σ (bracketing, then regula falsi)."""
    hi = 1.0
    eps_hi = f(hi)
    lo, eps_lo = hi, eps_hi
    if eps_hi <= target:
        while eps_lo <= target:
            hi, eps_hi = lo, eps_lo
            lo = lo / 2.0
            if lo < 1e-3:
                return hi if eps_hi <= target else math.inf  # pragma: no cover
            eps_lo = f(lo)
    else:
        while eps_hi > target:
            lo, eps_lo = hi, eps_hi
            hi = hi * 2.0
            if hi > MAX_NOISE_MULTIPLIER:
                raise DPValueError(
                    f"no noise multiplier ≤ {MAX_NOISE_MULTIPLIER:g} reaches ε={target}"
                )
            eps_hi = f(hi)
    return _shrink_bracket(f, target, lo, eps_lo, hi, eps_hi, increasing=False)


def _shrink_bracket(
    f: Callable[[float], float],
    target: float,
    lo: float,
    f_lo: float,
    hi: float,
    f_hi: float,
    *,
    increasing: bool,
) -> float:
    """Search x in [lo, hi] for the boundary of {x : f(x) ≤ target}; returns the feasible end.

    Invariant: the returned end was evaluated and is feasible. ``increasing`` says whether f
    grows with x (then the feasible end is ``lo``), else ``hi`` is the feasible end.
    Regula falsi on log x / log f (Illinois variant) with bisection safeguards.
    """
    log_t = math.log(target)

    def g(value: float) -> float:
        return (math.log(value) if value > 0 else -745.0) - log_t

    a, b = math.log(lo), math.log(hi)
    ga, gb = g(f_lo), g(f_hi)
    side = 0
    for iteration in range(60):
        if (b - a) <= _RELATIVE_XTOL:
            break
        if math.isfinite(ga) and math.isfinite(gb) and ga != gb and iteration % 3 != 2:
            c = b - gb * (b - a) / (gb - ga)
            # keep strictly inside and not too close to an end
            margin = 0.05 * (b - a)
            c = min(max(c, a + margin), b - margin)
        else:
            c = 0.5 * (a + b)
        fc = f(math.exp(c))
        gc = g(fc)
        feasible = fc <= target
        # feasible side is b when f is decreasing, a when increasing
        if feasible != increasing:
            b, gb = c, gc
            if side == -1:
                ga /= 2
            side = -1
        else:
            a, ga = c, gc
            if side == 1:
                gb /= 2
            side = 1
    return math.exp(a) if increasing else math.exp(b)


def max_steps(
    *,
    noise_multiplier: float,
    sampling_rate: float,
    target_epsilon: float,
    delta: float,
    accountant: str = "pld",
    limit: int = 10**7,
) -> int:
    """The largest number of steps (rounds) T with ε ≤ target (0 if even one step exceeds).

    Galloping then integer bisection; both T and T + 1 are evaluated, so the answer is exact
    for the accountant used.
    """
    sigma = _finite_positive(noise_multiplier, "noise_multiplier")
    q, d, target = _rate(sampling_rate), _delta(delta), _target(target_epsilon)

    def ok(t: int) -> bool:
        return (
            _upper(noise_multiplier=sigma, sampling_rate=q, steps=t, delta=d, accountant=accountant)
            <= target
        )

    if not ok(1):
        return 0
    good, bad = 1, 2
    while ok(bad):
        good, bad = bad, bad * 4
        if good >= limit:
            return limit
    while bad - good > 1:
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


def max_sampling_rate(
    *,
    noise_multiplier: float,
    steps: int,
    target_epsilon: float,
    delta: float,
    accountant: str = "pld",
) -> float:
    """The largest Poisson sampling rate q ∈ (0, 1] with ε ≤ target (0.0 if none ≥ 1e-9).

    Cohort size follows as q·population. The result was evaluated and is feasible; it is
    within 0.01 % of the accountant's own optimum.
    """
    sigma = _finite_positive(noise_multiplier, "noise_multiplier")
    t, d, target = _steps(steps), _delta(delta), _target(target_epsilon)

    def f(q: float) -> float:
        return _upper(
            noise_multiplier=sigma, sampling_rate=q, steps=t, delta=d, accountant=accountant
        )

    eps_one = f(1.0)
    if eps_one <= target:
        return 1.0
    hi, f_hi = 1.0, eps_one
    lo = 0.5
    f_lo = f(lo)
    while f_lo > target:
        hi, f_hi = lo, f_lo
        lo /= 4.0
        if lo < 1e-9:
            return 0.0
        f_lo = f(lo)
    return _shrink_bracket(f, target, lo, f_lo, hi, f_hi, increasing=True)
