"""GNB (Î1 with minibatch=B) and output-space Hutchinson: values, exact variances, Monte Carlo, errors."""

import functools

import pytest
import sympy as sp
import torch
from torch import nn

import fishertut as ft
import oracle
from helpers import assert_dicts_close
from oracle_minibatch import BruteForce
from problems import PROBLEMS

EXACT = ["cat-tanh-2h", "binary-tanh-1h", "gauss-sigmoid-2h-sigma0.5", "gauss-tanh-1h"]


@functools.cache
def _brute(pid):
    problem = PROBLEMS[pid]()
    return problem, BruteForce(problem), ft.variance_report(problem.model, problem.x, problem.fishertut_family())


def _flat(d):
    return torch.cat([v.flatten() for v in d.values()])


def _close(actual, expected, what):
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= 1e-10 * scale + 1e-14, f"{what}: max error {err:.3e} vs scale {scale:.3e}"


@pytest.mark.parametrize("pid", EXACT)
@pytest.mark.parametrize("estimator", ["i1", "hutchinson"])
@pytest.mark.parametrize("path", ["layerwise", "generic"])
def test_per_input_variances_match_enumeration(pid, estimator, path):
    problem, brute, rep = _brute(pid)
    per = ft.per_input_statistics(problem.model, problem.x, problem.fishertut_family(), path=path)
    got = per.var_i1 if estimator == "i1" else per.var_hutchinson
    for n in range(problem.x.shape[0]):
        mean, var = brute.block_moments((n,), estimator)
        _close(_flat({k: v[n] for k, v in got.items()}), var, f"{estimator} V[{n}]")
        _close(_flat({k: v[n] for k, v in per.fisher.items()}), mean, f"{estimator} mean[{n}]")
    _close(_flat(rep.conditional_variance(estimator)), _flat({k: v.mean(0) for k, v in got.items()}), "report")


@pytest.mark.parametrize("pid", EXACT)
@pytest.mark.parametrize("estimator", ["i1", "hutchinson"])
@pytest.mark.parametrize("minibatch", [2, 3, 4])
def test_given_inputs_variance_matches_enumeration_over_partitions(pid, estimator, minibatch):
    problem, brute, rep = _brute(pid)
    expected = brute.variance_given(estimator, minibatch, samples=3)
    got = rep.estimator_variance(estimator, samples_per_input=3, minibatch=minibatch, inputs="given")
    _close(_flat(got), expected, f"{estimator} B={minibatch}")


@pytest.mark.parametrize("pid", ["cat-tanh-2h", "gauss-sigmoid-2h-sigma0.5"])
@pytest.mark.parametrize("estimator", ["i1", "hutchinson"])
@pytest.mark.parametrize("num_inputs,minibatch", [(3, 1), (3, 2), (4, 2), (3, 3)])
def test_drawn_inputs_variance_matches_enumeration_over_draws(pid, estimator, num_inputs, minibatch):
    problem, brute, rep = _brute(pid)
    expected = brute.variance_drawn(estimator, num_inputs, minibatch, samples=2)
    got = rep.estimator_variance(estimator, num_inputs=num_inputs, samples_per_input=2, minibatch=minibatch)
    _close(_flat(got), expected, f"{estimator} M={num_inputs} B={minibatch}")


def test_i2_variance_ignores_minibatch():
    _, _, rep = _brute("cat-tanh-2h")
    for inputs in ("drawn", "given"):
        one = rep.estimator_variance("i2", samples_per_input=2, inputs=inputs)
        assert_dicts_close(rep.estimator_variance("i2", samples_per_input=2, minibatch=4, inputs=inputs), one)


def test_gnb_variance_formula_by_sympy():
    """Var((s1+s2+s3)^2) for independent zero-mean scores with E s^2 = I, E s^4 = V1 + I^2."""
    i = sp.symbols("I1:4", positive=True)
    v = sp.symbols("V1:4", positive=True)
    s = sp.symbols("s1:4")

    def expect(expr):
        poly = sp.Poly(sp.expand(expr), *s)
        total = 0
        for powers, coeff in poly.terms():
            term = coeff
            for k, p in enumerate(powers):
                term *= {0: 1, 1: 0, 2: i[k], 3: 0, 4: v[k] + i[k] ** 2}[p]
            total += term
        return sp.expand(total)

    q = sum(s) ** 2
    assert sp.simplify(expect(q) - sum(i)) == 0
    variance = expect(q**2) - expect(q) ** 2
    claimed = sum(v) + 2 * (sum(i) ** 2 - sum(x**2 for x in i))
    assert sp.simplify(variance - claimed) == 0


def _replay(problem, estimator, minibatch, samples, seed):
    """The estimate by brute force, replaying the library's draws.

    One draw call per minibatch, or one for all inputs with ``minibatch=1`` (the engines draw per batch, and
    these problems fit in one batch).
    """
    fam = problem.fishertut_family()
    gen = torch.Generator().manual_seed(seed)
    brute = BruteForce(problem)
    total = 0
    step = minibatch if minibatch > 1 else problem.x.shape[0]
    for start in range(0, problem.x.shape[0], step):
        xb = problem.x[start : start + step]
        with torch.no_grad():
            h = problem.model(xb)
        if estimator == "i1":
            labels = fam.sample(h, samples, gen)
            scores = [
                [_flat(oracle.score_and_neg_hessian(problem, xb[j], labels[j, s])[0]) for j in range(xb.shape[0])]
                for s in range(samples)
            ]
        else:
            xi = torch.randint(0, 2, (xb.shape[0], samples, h.shape[1]), generator=gen).double() * 2 - 1
            scores = [[xi[j, s] @ brute.a[start + j] for j in range(xb.shape[0])] for s in range(samples)]
        for row in scores:
            for first in range(0, len(row), minibatch):
                total = total + sum(row[first : first + minibatch]).square()
    return total / (problem.x.shape[0] * samples)


@pytest.mark.parametrize("pid", ["cat-tanh-2h", "gauss-sigmoid-2h-sigma0.5"])
@pytest.mark.parametrize("estimator", ["i1", "hutchinson"])
@pytest.mark.parametrize("minibatch", [1, 3, 4])
def test_estimate_matches_brute_force_with_the_same_draws(pid, estimator, minibatch):
    problem = PROBLEMS[pid]()
    fam = problem.fishertut_family()
    got = ft.fisher_diagonal(
        problem.model,
        problem.x,
        fam,
        estimator,
        samples_per_input=2,
        minibatch=minibatch,
        generator=torch.Generator().manual_seed(7),
    )
    assert got.minibatch == minibatch and got.path == "layerwise"
    _close(_flat(got), _replay(problem, estimator, minibatch, 2, seed=7), f"{estimator} B={minibatch}")


@pytest.mark.parametrize("estimator", ["i1", "hutchinson"])
def test_batch_size_and_input_batching_never_change_the_result(estimator):
    problem = PROBLEMS["cat-relu-2h"]()
    fam = problem.fishertut_family()
    x = torch.cat([problem.x] * 3)

    def run(inputs, batch_size):
        return ft.fisher_diagonal(
            problem.model,
            inputs,
            fam,
            estimator,
            minibatch=5,
            samples_per_input=2,
            generator=torch.Generator().manual_seed(1),
            batch_size=batch_size,
        )

    ref = run(x, None)
    assert_dicts_close(run(x, 2), ref, rtol=1e-12)
    assert_dicts_close(run(list(x.split(4)), 3), ref, rtol=1e-12)


def test_data_labels_give_the_squared_minibatch_sum():
    problem = PROBLEMS["cat-tanh-2h"]()
    fam = problem.fishertut_family()
    y = torch.tensor([0, 2, 1, 1])
    got = ft.fisher_diagonal(problem.model, problem.x, fam, "i1", targets=y, minibatch=2)
    g = [sum(_flat(oracle.score_and_neg_hessian(problem, problem.x[n], y[n])[0]) for n in b) for b in ((0, 1), (2, 3))]
    _close(_flat(got), (g[0].square() + g[1].square()) / 4, "data-label GNB")
    assert got.labels == "given"


class _Residual(nn.Module):
    """A model outside the layer-wise engine: a skip connection."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.inner = nn.Linear(3, 3)
        self.out = nn.Linear(3, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.inner(x)) + x)


@pytest.mark.parametrize("estimator", ["i1", "hutchinson"])
def test_one_backward_works_on_any_model(estimator):
    model = _Residual().double().eval()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    problem = oracle.Problem("residual", model, x, "categorical")
    got = ft.fisher_diagonal(
        model,
        x,
        ft.Categorical(),
        estimator,
        minibatch=2,
        samples_per_input=2,
        generator=torch.Generator().manual_seed(3),
    )
    _close(_flat(got), _replay(problem, estimator, 2, 2, seed=3), estimator)


def _consecutive_variance(per, estimator, minibatch, samples):
    """Exact variance for consecutive minibatches from the per-input I_n and V_n."""
    cond = per.var_i1 if estimator == "i1" else per.var_hutchinson
    out = {}
    for k, fisher in per.fisher.items():
        n = fisher.shape[0]
        var = 0
        for start in range(0, n, minibatch):
            block = fisher[start : start + minibatch]
            var = var + cond[k][start : start + minibatch].sum(0) + 2 * (block.sum(0).square() - block.square().sum(0))
        out[k] = var / (n * n * samples)
    return out


@pytest.mark.parametrize("pid", ["cat-sigmoid-1h", "binary-tanh-1h", "gauss-tanh-1h"])
@pytest.mark.parametrize("estimator", ["i1", "hutchinson"])
def test_monte_carlo_mean_and_variance(pid, estimator, one_thread):
    """400 seeded repeats: mean and sample variance within 5 standard errors of I and the exact variance.

    The standard error of the sample variance is sqrt((m4 - var^2)/R), m4 the sample fourth central moment.
    """
    problem = PROBLEMS[pid]()
    fam = problem.fishertut_family()
    per = ft.per_input_statistics(problem.model, problem.x, fam)
    minibatch, repeats = 2, 400
    exact_var = _flat(_consecutive_variance(per, estimator, minibatch, 1))
    fisher = _flat({k: v.mean(0) for k, v in per.fisher.items()})
    gen = torch.Generator().manual_seed(12)
    draws = torch.stack(
        [
            _flat(ft.fisher_diagonal(problem.model, problem.x, fam, estimator, minibatch=minibatch, generator=gen))
            for _ in range(repeats)
        ]
    )
    live = exact_var > 1e-20
    mean_z = (draws.mean(0) - fisher).abs() / (exact_var / repeats).sqrt()
    assert (mean_z[live] <= 5).all(), f"mean: max z {mean_z[live].max():.2f}"
    centred = draws - draws.mean(0)
    var = centred.square().mean(0)
    se = ((centred**4).mean(0) - var.square()).clamp_min(0).div(repeats).sqrt()
    var_z = (var - exact_var).abs() / se
    assert (var_z[live] <= 5).all(), f"variance: max z {var_z[live].max():.2f}"


def test_bad_arguments():
    problem = PROBLEMS["cat-tanh-2h"]()
    fam = problem.fishertut_family()
    m, x = problem.model, problem.x
    with pytest.raises(ValueError, match="minibatch"):
        ft.fisher_diagonal(m, x, fam, "i1", minibatch=0)
    with pytest.raises(ValueError, match="exact"):
        ft.fisher_diagonal(m, x, fam, "exact", minibatch=2)
    for b in (1, 2):
        with pytest.raises(ValueError, match="hutchinson"):
            ft.fisher_diagonal(m, x, fam, "hutchinson", targets=torch.zeros(4, dtype=torch.long), minibatch=b)
    rep = ft.variance_report(m, x, fam)
    with pytest.raises(ValueError, match="inputs"):
        rep.estimator_variance("i1", inputs="shuffled")
    with pytest.raises(ValueError, match="num_inputs"):
        rep.estimator_variance("i1", num_inputs=7, inputs="given")
    with pytest.raises(ValueError, match="estimator"):
        rep.estimator_variance("gnb")


def test_per_input_hutchinson_signs_do_not_depend_on_batching():
    problem = PROBLEMS["cat-relu-2h"]()
    fam = problem.fishertut_family()
    x = torch.cat([problem.x] * 3)

    def run(batch_size):
        return ft.fisher_diagonal(
            problem.model,
            x,
            fam,
            "hutchinson",
            samples_per_input=3,
            batch_size=batch_size,
            generator=torch.Generator().manual_seed(4),
        )

    assert_dicts_close(run(5), run(None), rtol=1e-12)


class _BatchCentred(nn.Module):
    """Each output depends on the whole batch: the Fisher per input is undefined."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(x - x.mean(0))


def test_one_backward_refuses_models_whose_rows_depend_on_each_other():
    model = _BatchCentred().double().eval()
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ft.UnsupportedModelError, match="depends on the other inputs"):
        ft.fisher_diagonal(model, x, ft.Categorical(), "hutchinson", minibatch=3)
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        ft.fisher_diagonal(
            nn.Sequential(nn.Linear(3, 3), nn.Flatten(0)).double(), x, ft.Categorical(), "i1", minibatch=3
        )
