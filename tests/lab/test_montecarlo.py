"""Tests of ``fishertut.lab.montecarlo``.

The class table against ``per_input_statistics`` and ``fisher_diagonal``, replayed random draws and seeded
Monte Carlo (tolerances from the variance) for the simulation, closed forms for the variance of a sample variance.
"""

from __future__ import annotations

import math

import pytest
import torch

import fishertut as ft
from fishertut.lab import montecarlo
from helpers import gaussian_inputs, scaled_net

DT = torch.float64


def _net(activation: str = "sigmoid", sizes=(4, 5, 3), seed: int = 0) -> torch.nn.Sequential:
    return scaled_net(activation, sizes, seed)


def _inputs(n: int = 12, d: int = 4, seed: int = 1) -> torch.Tensor:
    return gaussian_inputs(n, d, seed)


@pytest.fixture(scope="module")
def table_setup():
    net, x, fam = _net("sigmoid", sizes=(4, 5, 3)), _inputs(10), ft.Categorical()
    return net, x, fam, montecarlo.class_table(net, x, fam)


def test_class_table_moments_equal_per_input_statistics(table_setup) -> None:
    net, x, fam, table = table_setup
    st = ft.per_input_statistics(net, x, fam)
    p = table.probs
    torch.testing.assert_close(p, torch.softmax(net(x), 1).detach())
    for name in st.fisher:
        w = p.reshape(*p.shape, *([1] * (table.i1[name].ndim - 2)))
        for terms, var in ((table.i1[name], st.var_i1[name]), (table.i2[name], st.var_i2[name])):
            mean = (w * terms).sum(1)
            torch.testing.assert_close(mean, st.fisher[name], rtol=1e-9, atol=1e-14)
            torch.testing.assert_close((w * (terms - mean.unsqueeze(1)).square()).sum(1), var, rtol=1e-8, atol=1e-14)


def test_class_table_estimate_equals_fisher_diagonal(table_setup) -> None:
    net, x, fam, table = table_setup
    g = torch.Generator().manual_seed(4)
    idx = torch.randint(0, len(x), (7,), generator=g)
    labels = torch.randint(0, 3, (7, 3), generator=g)
    rows = idx.repeat_interleave(3)
    for est in ("i1", "i2"):
        direct = ft.fisher_diagonal(net, x[rows], fam, est, targets=labels.reshape(-1))
        got = table.estimate(est, idx, labels)
        for name in direct:
            torch.testing.assert_close(got[name], direct[name], rtol=1e-10, atol=1e-15)


def test_class_table_select_and_errors(table_setup) -> None:
    net, x, fam, table = table_setup
    keep = {"0.weight": torch.tensor([0, 5, 7]), "2.bias": torch.tensor([1])}
    sub = table.select(keep)
    assert set(sub.i1) == set(keep) and sub.i1["0.weight"].shape == (len(x), 3, 3)
    torch.testing.assert_close(sub.i2["0.weight"], table.i2["0.weight"].reshape(len(x), 3, -1)[:, :, [0, 5, 7]])
    with pytest.raises(TypeError):
        montecarlo.class_table(net, x, ft.Gaussian(1.0))
    with pytest.raises(ValueError):
        table.terms("exact")


def test_simulate_estimates_replays_its_draws(table_setup) -> None:
    _, x, _, table = table_setup
    n, s = 6, 4
    out = montecarlo.simulate_estimates(table, "i1", n, s, repetitions=1, generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    idx = torch.randint(0, len(x), (1, n), generator=g)
    labels = torch.multinomial(table.probs[idx.reshape(-1)], s, replacement=True, generator=g)
    ref = table.estimate("i1", idx[0], labels)
    for name in ref:
        torch.testing.assert_close(out[name][0], ref[name], rtol=1e-12, atol=1e-15)


def test_simulate_estimates_mean_and_variance(table_setup) -> None:
    net, x, fam, table = table_setup
    rep = ft.variance_report(net, x, fam)
    g = torch.Generator().manual_seed(11)
    reps, n, s = 4000, 5, 2
    for est in ("i1", "i2"):
        # chunked (max_rows small) must not change the distribution, only the memory
        sims = montecarlo.simulate_estimates(table, est, n, s, reps, g, max_rows=64)
        pred = rep.estimator_variance(est, num_inputs=n, samples_per_input=s)
        for name in sims:
            f, var = rep.fisher[name].flatten(), pred[name].flatten()
            samples = sims[name].reshape(reps, -1)
            live = var > 0
            z_mean = (samples.mean(0) - f)[live] / (var[live] / reps).sqrt()
            assert float(z_mean.abs().max()) < 5
            emp, se = montecarlo.empirical_variance(samples, mean=f)
            z_var = (emp - var)[live] / se[live]
            assert float(z_var.abs().max()) < 5, (est, name)
            torch.testing.assert_close(samples[:, ~live], f[~live].expand(reps, -1))


def test_empirical_variance_known_mean() -> None:
    x = torch.tensor([[1.0, 3.0], [3.0, 5.0], [2.0, 1.0], [6.0, 3.0]], dtype=DT)
    mu = torch.tensor([2.0, 3.0], dtype=DT)
    var, se = montecarlo.empirical_variance(x, mean=mu)
    sq = (x - mu).square()
    torch.testing.assert_close(var, sq.mean(0))
    torch.testing.assert_close(se, sq.std(0) / 2.0)


def test_empirical_variance_unknown_mean_closed_form() -> None:
    r = 50  # a Rademacher sample with exactly population moments
    x = torch.tensor([1.0, -1.0] * (r // 2), dtype=DT)
    var, se = montecarlo.empirical_variance(x)
    assert float(var) == pytest.approx(r / (r - 1))  # unbiased s²
    # Var(s²) = (μ4 - (R-3)/(R-1) σ⁴)/R with μ4 = σ⁴ = 1
    assert float(se) ** 2 == pytest.approx(2 / (r * (r - 1)))
    # Gaussian data: Var(s²) = 2σ⁴/(R-1); the standard error estimates the spread of s² over experiments
    g = torch.Generator().manual_seed(0)
    samples = 2.0 * torch.randn(2000, 40, generator=g, dtype=DT)  # 2000 experiments of R = 40
    s2, se2 = montecarlo.empirical_variance(samples, dim=1)
    true_sd = math.sqrt(2 * 16 / 39)
    assert float(s2.mean()) == pytest.approx(4.0, abs=5 * true_sd / math.sqrt(2000))
    assert float(s2.std()) == pytest.approx(true_sd, rel=0.1)
    assert float(se2.square().mean().sqrt()) == pytest.approx(true_sd, rel=0.15)
    with pytest.raises(ValueError):
        montecarlo.empirical_variance(x[:3])
    with pytest.raises(ValueError):
        montecarlo.empirical_variance(x[:1], mean=torch.tensor(0.0, dtype=DT))


def test_bonferroni_z_controls_the_family_wise_level() -> None:
    # one test: the two-sided 1e-3 quantile of the standard normal, 3.2905...
    assert montecarlo.bonferroni_z(1) == pytest.approx(3.290526731491926, rel=1e-12)
    # m tests at level a: P(|Z| > z*) = a/m for each, checked with the complementary error function
    for m, level in [(10, 1e-3), (4096, 1e-3), (50_000, 0.05)]:
        z = montecarlo.bonferroni_z(m, level)
        assert math.erfc(z / math.sqrt(2)) == pytest.approx(level / m, rel=1e-9)
    # independent z-scores: the largest of m exceeds z* with probability 1 - (1 - a/m)^m <= a
    g = torch.Generator().manual_seed(0)
    m, level, runs = 200, 0.2, 4000
    z = montecarlo.bonferroni_z(m, level)
    exceed = (torch.randn(runs, m, generator=g, dtype=DT).abs().amax(1) > z).double().mean()
    expected = 1 - (1 - level / m) ** m
    assert float(exceed) == pytest.approx(expected, abs=5 * math.sqrt(expected * (1 - expected) / runs))
    for bad in [dict(num_tests=0), dict(num_tests=3, level=0.0), dict(num_tests=3, level=1.5)]:
        with pytest.raises(ValueError):
            montecarlo.bonferroni_z(**bad)
