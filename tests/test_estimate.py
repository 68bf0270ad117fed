"""ft.estimate: meets rtol with probability 1 - delta over seeds, handles zero information, rejects bad arguments."""

import pytest
import torch
from torch import nn

import fishertut as ft
from fishertut.precision import MIN_TERMS, PER_INPUT_COST, planned_draws
from problems import _problem


class _Skip(nn.Module):
    """Only the generic engine takes it (the graph engine has no products): one-backward estimators only."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.inner = nn.Linear(3, 3)
        self.out = nn.Linear(3, 4)

    def forward(self, x):
        return self.out(torch.tanh(self.inner(x)) * x + x)


def _skip_problem():
    x = torch.randn(48, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    return _Skip().double().eval(), x, ft.Categorical()


def _net(kind):
    if kind == "skip":
        return _skip_problem()
    sizes, act, family = {"cat": ([3, 5, 4], nn.Tanh, "categorical"), "gauss": ([3, 4, 2], nn.Sigmoid, "gaussian")}[
        kind
    ]
    p = _problem(kind, sizes, act, family, n=48, sigma=0.7)
    return p.model, p.x, p.fishertut_family()


@pytest.mark.parametrize(
    "kind,estimators",
    [("cat", ("i1",)), ("cat", ("hutchinson",)), ("gauss", ("i1", "hutchinson")), ("skip", ("i1", "hutchinson"))],
)
def test_meets_rtol_with_probability_one_minus_delta(kind, estimators, one_thread):
    """Over 20 seeds, the fraction of parameters off by more than rtol stays below delta (the default rule)."""
    model, x, fam = _net(kind)
    exact = ft.fisher_diagonal(model, x, fam)
    rtol, delta, seeds = 0.3, 0.2, 20
    outside = total = 0
    for seed in range(seeds):
        est = ft.estimate(
            model,
            x,
            fam,
            rtol=rtol,
            delta=delta,
            generator=torch.Generator().manual_seed(seed),
            pilot=48,
            estimators=estimators,
            max_samples=10**6,
        )
        for k, f in exact.items():
            live = f > 0
            outside += int(((est[k] - f).abs() > rtol * f)[live].sum())
            total += int(live.sum())
            assert est.plan[k].predicted_rtol <= rtol * (1 + 1e-9)
            assert est.plan[k].estimator in estimators
            assert est.stderr[k].shape == f.shape
        if kind == "skip":
            assert all(e.minibatch > 1 for e in est.plan.values())
    assert outside / total <= delta, f"{outside}/{total} parameters outside rtol"


def test_exact_when_it_is_cheapest_and_stderr_zero():
    model, x, fam = _net("cat")
    est = ft.estimate(model, x, fam, rtol=0.01, delta=0.01, generator=torch.Generator().manual_seed(0))
    exact = ft.fisher_diagonal(model, x, fam)
    for k, e in est.plan.items():
        assert e.estimator == "exact" and e.cost == PER_INPUT_COST * 4
        assert torch.equal(est.stderr[k], torch.zeros_like(exact[k]))
        torch.testing.assert_close(est[k], exact[k], rtol=1e-12, atol=0)


def test_zero_information_does_not_force_infinite_samples():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3)).double().eval()
    with torch.no_grad():
        model[0].bias[0] = -1e3  # unit 0 is dead on every input: its weights carry no information
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    est = ft.estimate(
        model,
        x,
        ft.Categorical(),
        rtol=0.2,
        delta=0.1,
        generator=torch.Generator().manual_seed(2),
        estimators=("hutchinson",),
    )
    plan = est.plan["0.weight"]
    assert plan.zero_information == 3 and plan.samples_per_input < 1000
    assert torch.equal(est["0.weight"][0], torch.zeros(3, dtype=torch.float64))


def test_capped_plan_reports_the_error_it_reaches():
    model, x, fam = _net("cat")
    est = ft.estimate(
        model,
        x,
        fam,
        rtol=0.01,
        delta=0.01,
        generator=torch.Generator().manual_seed(0),
        estimators=("i1",),
        max_samples=3,
    )
    for e in est.plan.values():
        assert e.samples_per_input <= 3 and e.predicted_rtol > 0.01


def test_bad_arguments():
    model, x, fam = _net("cat")
    for rtol in (0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rtol"):
            ft.estimate(model, x, fam, rtol=rtol)
    for delta in (0, 1, 1.5, -0.2):
        with pytest.raises(ValueError, match="delta"):
            ft.estimate(model, x, fam, delta=delta)
    with pytest.raises(ValueError, match="batch_size=49 is larger than the data"):
        ft.estimate(model, x, fam, batch_size=49)
    with pytest.raises(ValueError, match="estimators"):
        ft.estimate(model, x, fam, estimators=("i2",))
    with pytest.raises(TypeError, match="inputs must be a tensor"):
        ft.estimate(model, [x], fam)
    skip, xs, cat = _skip_problem()
    with pytest.raises(ValueError, match="need a fast path"):
        ft.estimate(skip, xs, cat, estimators=("exact",))


def test_a_held_out_pilot_plans_without_seeing_the_inputs(one_thread):
    """A pilot tensor of its own plans alone; the estimate over the other inputs still meets rtol.

    Over 20 seeds at most delta of the parameters miss rtol, as the plan promises.
    """
    model, x, fam = _net("cat")
    pilot, rest = x[:24], x[24:]
    exact = ft.fisher_diagonal(model, rest, fam)
    rtol, delta = 0.3, 0.2
    outside = total = 0
    for seed in range(20):
        kwargs = dict(rtol=rtol, delta=delta, estimators=("i1",), max_samples=10**6)
        est = ft.estimate(model, rest, fam, generator=torch.Generator().manual_seed(seed), pilot=pilot, **kwargs)
        same = ft.estimate(model, pilot, fam, generator=torch.Generator().manual_seed(seed), pilot=24, **kwargs)
        assert {k: e.samples_per_input for k, e in est.plan.items()} != {} and est.num_inputs == 24
        assert [(e.estimator, e.minibatch) for e in est.plan.values()] == [
            (e.estimator, e.minibatch) for e in same.plan.values()
        ]
        for k, f in exact.items():
            live = f > 0
            outside += int(((est[k] - f).abs() > rtol * f)[live].sum())
            total += int(live.sum())
    assert outside / total <= delta, f"{outside}/{total} parameters outside rtol"


def test_a_pilot_tensor_must_be_shaped_like_the_inputs():
    model, x, fam = _net("cat")
    with pytest.raises(ValueError, match=r"pilot must be a number of inputs or a non-empty tensor .*\(P, 3\)"):
        ft.estimate(model, x, fam, pilot=torch.zeros(4, 2, dtype=x.dtype))


def test_clt_plan_keeps_its_promise_and_saves_draws(one_thread):
    """rule="normal" with the pilot the data itself: tanh/softplus MLP, 40 inputs, rtol 0.25, delta 0.1, 30 seeds.

    Per seed, the fraction of parameters outside the tolerance has mean at most delta if the plan keeps its
    promise (each parameter misses with probability <= delta); over 30 independent seeds, their mean lies
    within 3 standard deviations sqrt(delta (1 - delta) / 30) of at most delta. The plan must also take fewer
    draws than Chebyshev's rule for some tensor (the draws saved are reported in each plan entry).
    """
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Softplus(), nn.Linear(5, 3))
    model = model.double().eval()
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    fam = ft.Categorical()
    exact = ft.fisher_diagonal(model, x, fam)
    rtol, delta, seeds = 0.25, 0.1, 30
    fractions, saved = [], 0
    for seed in range(seeds):
        est = ft.estimate(
            model,
            x,
            fam,
            rtol=rtol,
            delta=delta,
            generator=torch.Generator().manual_seed(seed),
            pilot=40,
            estimators=("i1", "hutchinson"),
            max_samples=10**6,
            rule="normal",
        )
        outside = total = 0
        for k, f in exact.items():
            live = f > 0
            outside += int(((est[k] - f).abs() > rtol * f)[live].sum())
            total += int(live.sum())
            plan = est.plan[k]
            assert plan.samples_per_input <= plan.chebyshev_samples
            saved += plan.chebyshev_samples - plan.samples_per_input
        fractions.append(outside / total)
    mean = sum(fractions) / seeds
    assert mean <= delta + 3 * (delta * (1 - delta) / seeds) ** 0.5, f"mean fraction outside rtol {mean:.3f}"
    assert saved > 0


def test_planned_draws_rule():
    # Chebyshev: rho / (delta r^2); CLT: z^2 rho / r^2 with z = 1.645 for delta = 0.1, at least MIN_TERMS terms
    s, cheb, reached = planned_draws(rho=4.0, rtol=0.25, delta=0.1, groups=40, max_samples=10**6, rule="normal")
    assert cheb == 640 and s == 174 and reached <= 0.25
    s, cheb, _ = planned_draws(rho=0.01, rtol=0.25, delta=0.1, groups=1, max_samples=10**6, rule="normal")
    assert (s, cheb) == (2, 2)  # too few terms for the normal approximation: Chebyshev's count
    s, cheb, _ = planned_draws(rho=0.5, rtol=0.25, delta=0.1, groups=1, max_samples=10**6, rule="normal")
    assert (s, cheb) == (MIN_TERMS, 80)


def test_the_chebyshev_rule():
    s, cheb, reached = planned_draws(rho=4.0, rtol=0.25, delta=0.1, groups=40, max_samples=10**6, rule="chebyshev")
    assert s == cheb == 640 and abs(reached - 0.25) < 1e-12  # sqrt(4 / (640 * 0.1))
