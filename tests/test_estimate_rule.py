"""The default rule of ft.estimate, "normal_ucb": it keeps its promise where the pilot's values are estimates.

Each coverage test runs ``estimate`` over independent seeds and counts the parameters whose estimate misses
the exact diagonal by more than ``rtol``. The promise is per parameter: each misses with probability at most
``delta``. Two checks follow from it, with tolerances from the binomial variance:

* the mean over seeds of the fraction of parameters that miss is at most ``delta`` in expectation; one seed's
  fraction is a mean of correlated Bernoulli variables, whose variance is at most ``delta (1 - delta)``
  (perfect correlation), so over ``R`` independent seeds the mean lies below
  ``delta + 3 sqrt(delta (1 - delta) / R)``;
* each parameter's count of misses over the ``R`` seeds is Binomial(R, p <= delta): with ``m`` parameters, no
  count reaches the ``k`` with ``m P(Bin(R, delta) >= k) <= 1e-3`` (union bound), except with probability
  at most 0.001.

The plans must also take fewer draws than Chebyshev's rule (each plan entry reports Chebyshev's count).
"""

import math
from statistics import NormalDist

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import fishertut as ft
from fishertut.pilots import TensorMoments, _with_products
from fishertut.planning import MIN_PILOT, MIN_TERMS, planned_draws, upper_relative_variance
from sequence_models import build, left_padded

RTOL, DELTA, SEEDS = 0.25, 0.1, 30
BASE = dict(estimators=("i1", "hutchinson"), max_samples=10**6)


def _mlp():
    """The issue's setting: a small tanh/softplus MLP on 40 inputs, and 24 held-out inputs of its own."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Softplus(), nn.Linear(5, 3))
    model = model.double().eval()
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    held_out = torch.randn(24, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    return model, x, held_out


def _sparse():
    """Inputs whose features are non-zero one time in ten, and a held-out pilot of 16.

    First-layer weights carry information on few inputs, and a pilot's estimate of their relative variance
    is often far too low.
    """
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3)).double().eval()
    g = torch.Generator().manual_seed(4)

    def draw(n):
        values = torch.randn(n, 8, generator=g, dtype=torch.float64)
        return values * (torch.rand(n, 8, generator=g, dtype=torch.float64) < 0.1)

    return model, draw(100), draw(16)


def _binomial_ceiling(seeds: int, delta: float, params: int) -> int:
    """The least ``k`` with ``params * P(Binomial(seeds, delta) >= k) <= 1e-3``."""

    def tail(k):
        return sum(math.comb(seeds, j) * delta**j * (1 - delta) ** (seeds - j) for j in range(k, seeds + 1))

    return next(k for k in range(seeds + 2) if params * tail(k) <= 1e-3)


def _coverage(model, x, fam, rtol, delta, seeds, mask=None, **kwargs):
    """Run ``estimate`` over ``seeds`` seeds; check both promises; return (mean fraction missed, draws saved).

    With ``kwargs["rule"] == "normal"``, return ``(mean fraction, worst count, its ceiling)`` unchecked.
    """
    exact = ft.fisher_diagonal(
        model, x, fam, mask=mask, **({"normalize": kwargs["normalize"]} if "normalize" in kwargs else {})
    )
    misses = {k: torch.zeros_like(f) for k, f in exact.items()}
    fractions, draws, chebyshev = [], 0, 0
    for seed in range(seeds):
        gen = torch.Generator().manual_seed(seed)
        est = ft.estimate(model, x, fam, rtol=rtol, delta=delta, generator=gen, mask=mask, **kwargs)
        outside = total = 0
        for k, f in exact.items():
            live = f > 0
            miss = ((est[k] - f).abs() > rtol * f) & live
            misses[k] += miss
            outside, total = outside + int(miss.sum()), total + int(live.sum())
            plan = est.plan[k]
            assert plan.rule == kwargs.get("rule", "normal_ucb") and plan.predicted_rtol <= rtol * (1 + 1e-9)
            draws, chebyshev = draws + plan.samples_per_input, chebyshev + plan.chebyshev_samples
        fractions.append(outside / total)
    mean = sum(fractions) / seeds
    live_params = sum(int((f > 0).sum()) for f in exact.values())
    worst = max(int(m.max()) for m in misses.values())
    if kwargs.get("rule") == "normal":
        return mean, worst, _binomial_ceiling(seeds, delta, live_params)
    assert mean <= delta + 3 * math.sqrt(delta * (1 - delta) / seeds), f"mean fraction outside rtol {mean:.3f}"
    assert worst < _binomial_ceiling(seeds, delta, live_params), f"a parameter missed in {worst} of {seeds} seeds"
    assert draws < chebyshev, (draws, chebyshev)
    return mean, 1 - draws / chebyshev


def test_the_issues_setting_pilot_is_the_data(one_thread):
    """(a) 40 inputs, the pilot all of them, rtol 0.25, delta 0.1, "i1" and "hutchinson", 30 seeds."""
    model, x, _ = _mlp()
    _coverage(model, x, ft.Categorical(), RTOL, DELTA, SEEDS, pilot=40, **BASE)


def test_a_held_out_pilot_of_24_inputs(one_thread):
    """(b) The plan sees 24 other inputs only (where rule="normal" misses too often for its worst parameters)."""
    model, x, held_out = _mlp()
    _coverage(model, x, ft.Categorical(), RTOL, DELTA, SEEDS, pilot=held_out, **BASE)


@pytest.mark.parametrize("held_out", [False, True])
def test_a_sampled_pilot(held_out, one_thread):
    """(c) Every statistic of the plan from 4 draws per pilot input: the pilot the data, or 24 held-out inputs."""
    model, x, other = _mlp()
    pilot = other if held_out else 40
    _coverage(model, x, ft.Categorical(), RTOL, DELTA, SEEDS, pilot=pilot, pilot_statistics="sampled", **BASE)


def test_a_masked_sequence_model_with_a_sampled_pilot(one_thread):
    """(d) A GRU language model on left-padded sequences (mask), a sampled pilot of 16 of its 24 inputs."""
    model = build("gru")
    ids, mask = left_padded(24, 3, 4, [i % 3 for i in range(24)], seed=7)
    _coverage(model, ids, ft.Categorical(), 0.35, 0.2, 16, mask=mask, pilot=16, pilot_statistics="sampled", **BASE)


def test_sparse_inputs_and_a_small_held_out_pilot(one_thread):
    """(e) Where rule="normal" breaks the promise, the default keeps it.

    With the same 30 seeds, "normal" misses one parameter's tolerance in at least as many seeds as the
    binomial ceiling allows (it takes the pilot's relative variance for the truth); "normal_ucb" passes both
    checks.
    """
    model, x, pilot = _sparse()
    kwargs = dict(pilot=pilot, **BASE)
    _, worst, ceiling = _coverage(model, x, ft.Categorical(), RTOL, DELTA, SEEDS, rule="normal", **kwargs)
    assert worst >= ceiling, (worst, ceiling)
    _coverage(model, x, ft.Categorical(), RTOL, DELTA, SEEDS, **kwargs)


def test_planned_draws_of_the_default_rule():
    # z2 = Phi^-1(1 - 0.1/4) = 1.959964: S = ceil(1.959964^2 * 4 / 0.25^2) = ceil(245.85) = 246
    s, cheb, reached = planned_draws(rho=1.0, rtol=0.25, delta=0.1, groups=40, max_samples=10**6, rho_upper=4.0)
    assert (s, cheb) == (246, 160) and abs(reached - 1.959964 * math.sqrt(4 / 246)) < 1e-6
    s, _, _ = planned_draws(rho=0.01, rtol=0.25, delta=0.1, groups=3, max_samples=10**6, rho_upper=0.02)
    assert s == 10  # at least 30 terms: 10 draws of 3 groups
    s, _, reached = planned_draws(rho=1.0, rtol=0.25, delta=0.1, groups=1, max_samples=5, rho_upper=4.0)
    assert s == 5 and abs(reached - math.sqrt(2 * 4 / (5 * 0.1))) < 1e-12  # too few terms: Chebyshev at delta/2


@pytest.mark.parametrize("minibatch", [1, 4, 10])
def test_the_upper_bound_is_the_delta_method(minibatch):
    """rho+ against an independent computation: autograd's gradient of rho(V, I, Q) and torch.cov of the values."""
    g = torch.Generator().manual_seed(0)
    p, params, n, z = 20, 7, 10, 1.3
    i = torch.rand(p, params, generator=g, dtype=torch.float64) + 0.1
    values = {"I": i, "Q": i.square() + 0.01 * torch.rand(p, params, generator=g, dtype=torch.float64)}
    values["V:hutchinson"] = i.square() * torch.rand(p, params, generator=g, dtype=torch.float64)
    sums = {name: v.sum(0) for name, v, _ in _with_products(values, ("hutchinson",))}
    got = upper_relative_variance(TensorMoments(sums, p), "hutchinson", n, minibatch, z)
    pairs = sum(b * (b - 1) for b in [minibatch] * (n // minibatch) + [n % minibatch])
    for j in range(params):

        def rho(m, j=j):
            v, f, q = m
            return v / (n * f**2) + 2 * pairs / n**2 * (1 - (q / f**2 - 1) / (n - 1))

        data = torch.stack([values["V:hutchinson"][:, j], values["I"][:, j], values["Q"][:, j]])
        means = data.mean(1)
        grad = torch.autograd.functional.jacobian(rho, means)
        se = (grad @ torch.cov(data) @ grad / p).sqrt()
        r = rho(means)
        torch.testing.assert_close(got[j], r + z * se, rtol=1e-10, atol=0)


def test_a_small_pilot_falls_back_to_chebyshev():
    model, x, _ = _mlp()
    est = ft.estimate(model, x, ft.Categorical(), generator=torch.Generator().manual_seed(0), pilot=MIN_PILOT - 1)
    assert {e.rule for e in est.plan.values()} == {"chebyshev"}
    assert all(e.samples_per_input == e.chebyshev_samples for e in est.plan.values() if e.estimator != "exact")


def test_the_default_rule_and_its_names_are_checked():
    model, x, _ = _mlp()
    est = ft.estimate(model, x, ft.Categorical(), rtol=0.3, generator=torch.Generator().manual_seed(0), **BASE)
    assert {e.rule for e in est.plan.values()} == {"normal_ucb"}
    with pytest.raises(ValueError, match=r"rule must be one of \('normal_ucb', 'chebyshev', 'normal'\)"):
        ft.estimate(model, x, ft.Categorical(), rule="clt")
    assert NormalDist().inv_cdf(1 - 0.1 / 4) ** 2 < 1 / 0.1  # the draws z2^2 takes against Chebyshev's 1/delta


@given(
    rho=st.floats(1e-6, 1e3),
    inflate=st.floats(1.0, 10.0),
    rtol=st.floats(0.01, 2.0),
    delta=st.floats(0.001, 0.5),
    groups=st.integers(1, 500),
)
def test_the_default_rule_meets_rtol_with_terms_enough_unless_capped(rho, inflate, rtol, delta, groups):
    """Uncapped, the plan reaches rtol at the bound, with at least MIN_TERMS terms; capped, it says so."""
    cap = 10**4
    s, _, reached = planned_draws(rho, rtol, delta, groups, cap, rho_upper=rho * inflate)
    z2 = NormalDist().inv_cdf(1 - delta / 4)
    if s < cap:
        assert s * groups >= MIN_TERMS and reached <= rtol * (1 + 1e-12)
        assert s == 1 or s * groups - groups < MIN_TERMS or z2 * math.sqrt(rho * inflate / (s - 1)) > rtol
    else:
        assert reached >= min(rtol, z2 * math.sqrt(rho * inflate / cap)) * (1 - 1e-12)
