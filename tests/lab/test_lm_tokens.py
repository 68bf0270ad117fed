"""The token-level enumeration of the LM chapter against the library's exact report, and its recipes."""

from __future__ import annotations

import math

import pytest
import torch

import fishertut as ft
from fishertut.lab import gpt, lmstudy, tokens


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    model = gpt.char_gpt(vocab_size=5, context=4, d_model=8, heads=2, layers=1, seed=1, dtype=torch.float64)
    with torch.no_grad():
        model.token.weight.mul_(40)  # away from uniform probabilities, so that the recipes differ
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 5, (6, 3), generator=g)
    targets = torch.randint(0, 5, (6, 3), generator=g)
    stats = tokens.sequence_stats(model, ids, targets, draws=3, generator=torch.Generator().manual_seed(3))
    return model, ids, targets, stats


def close(a, b, rtol=1e-10):
    scale = b.abs().max().item()
    assert (a - b).abs().max().item() <= rtol * scale + 1e-14


def test_enumeration_matches_the_library_report(setting):
    model, ids, targets, stats = setting
    rep = ft.variance_report(model, ids, ft.Categorical())
    for k in rep.fisher:
        close(stats.fisher[k].mean(0), rep.fisher[k])
        close(stats.var_tok[k].mean(0), rep.var_i1[k])
        close(stats.var_seq[k].mean(0), rep.var_i1_sequence[k])
        close(stats.fisher[k].var(0, unbiased=False), rep.var_x[k], rtol=1e-8)
    data = ft.fisher_diagonal(model, ids, ft.Categorical(), estimator="i1", targets=targets)
    argmax = ft.fisher_diagonal(model, ids, ft.Categorical(), estimator="i1", targets="argmax")
    for k in rep.fisher:
        close(stats.data[k].mean(0), data[k])
        close(stats.argmax[k].mean(0), argmax[k])
    assert any((stats.data[k].mean(0) - rep.fisher[k]).abs().max() > 1e-6 for k in rep.fisher)


def test_recipes_reduce_to_each_other(setting):
    _, _, _, stats = setting
    idx = torch.arange(6)
    est = lmstudy.recipe_estimates(stats, idx, draw=1, minibatch=1)
    for k in stats.fisher:
        close(est["GNB, ×B"][k], est["Î1 per sequence"][k])
        close(est["exact"][k], stats.fisher[k].mean(0))
        close(est["√p sum over batch"][k], stats.sqrt_p_score[k].square().mean(0))
    two = lmstudy.recipe_estimates(stats, idx, draw=1, minibatch=2)
    for k in stats.fisher:
        close(two["GNB, no ×B"][k] * 2, two["GNB, ×B"][k])


def test_sampled_draws_are_unbiased_by_monte_carlo():
    model = gpt.char_gpt(vocab_size=4, context=3, d_model=4, heads=1, layers=1, seed=0, dtype=torch.float64)
    ids = torch.tensor([[0, 1, 2]])
    stats = tokens.sequence_stats(model, ids, ids, draws=4000, generator=torch.Generator().manual_seed(0))
    for k in stats.fisher:
        f = stats.fisher[k][0]
        for draws, var in (
            (stats.token_draws[k][0], stats.var_tok[k][0]),
            (stats.sequence_draws[k][0].square(), stats.var_seq[k][0]),
        ):
            se = (var / draws.shape[0]).sqrt()
            assert ((draws.mean(0) - f).abs() <= 5 * se + 1e-12).all()
            close(draws.var(0), var, rtol=0.25)


def test_merge_weight_budget_by_simulation():
    fa, fb = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 3.0])
    va, vb = torch.tensor([4.0, 1.0]), torch.tensor([1.0, 9.0])
    n = lmstudy.merge_weight_budget(fa, fb, va, vb, rtol=0.1, confidence=0.95)
    g = torch.Generator().manual_seed(0)
    reps = 20000
    for i in range(2):
        m = int(n[i])
        a = fa[i] + (va[i] / m).sqrt() * torch.randn(reps, generator=g, dtype=torch.float64)
        b = fb[i] + (vb[i] / m).sqrt() * torch.randn(reps, generator=g, dtype=torch.float64)
        w, w0 = a / (a + b), fa[i] / (fa[i] + fb[i])
        inside = ((w - w0).abs() <= 0.1 * w0).double().mean().item()
        assert abs(inside - 0.95) < 4 * math.sqrt(0.05 * 0.95 / reps) + 0.01


@pytest.mark.parametrize("positions", [1, 2, 4])
def test_summed_score_variance_has_the_cross_position_term(positions):
    import sympy as sp

    from fishertut.lab import symbolic

    mean, var, fisher, fourth = symbolic.summed_score_moments(positions)
    assert sp.simplify(mean - sum(fisher)) == 0
    cross = 2 * (sum(fisher) ** 2 - sum(i**2 for i in fisher))
    assert sp.simplify(var - sum(m - i**2 for m, i in zip(fourth, fisher, strict=True)) - cross) == 0
