"""Tests of fishertut.lab.downstream: EWC penalty, diagonal Laplace, calibration and continual metrics.

Expected numbers are worked out by hand in the comments, or come from an independent computation
(torch.func per-sample gradients, the library's empirical Fisher, a linear model's exact linearisation).
"""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

import fishertut as ft
from fishertut.lab import downstream as ds
from fishertut.lab.training import train_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


def _linear_2_1() -> nn.Linear:
    model = nn.Linear(2, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.copy_(torch.tensor([0.5]))
    return model


ANCHOR = {"weight": torch.tensor([[0.0, 4.0]], dtype=torch.float64), "bias": torch.tensor([1.5], dtype=torch.float64)}
FISHER = {"weight": torch.tensor([[2.0, 3.0]], dtype=torch.float64), "bias": torch.tensor([4.0], dtype=torch.float64)}


def test_ewc_penalty_hand_computed() -> None:
    # theta - theta* = (1, -2 | -1); sum F d^2 = 2*1 + 3*4 + 4*1 = 18; lambda/2 * 18 = 4.5 for lambda = 0.5
    model = _linear_2_1()
    value = ds.ewc_penalty(model, FISHER, ANCHOR, strength=0.5)
    assert value.item() == pytest.approx(4.5, abs=1e-12)
    assert ds.ewc_penalty(model, FISHER, ANCHOR).item() == pytest.approx(9.0, abs=1e-12)
    # gradient lambda * F * d = 0.5 * (2*1, 3*(-2) | 4*(-1)) = (1, -3 | -2)
    value.backward()
    assert model.weight.grad[0].tolist() == pytest.approx([1.0, -3.0], abs=1e-12)
    assert model.bias.grad.tolist() == pytest.approx([-2.0], abs=1e-12)


def test_ewc_penalty_is_zero_at_the_anchor_and_for_zero_strength() -> None:
    model = _linear_2_1()
    at_anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert ds.ewc_penalty(model, FISHER, at_anchor, strength=3.0).item() == 0.0
    assert ds.ewc_penalty(model, FISHER, ANCHOR, strength=0.0).item() == 0.0


@pytest.mark.parametrize(
    "fisher, anchor, strength, match",
    [
        ({"weight": FISHER["weight"]}, ANCHOR, 1.0, r"fisher must have one entry per trainable parameter.*'bias'"),
        (
            FISHER,
            {**ANCHOR, "bias": torch.zeros(2, dtype=torch.float64)},
            1.0,
            r"anchor\['bias'\] must be a tensor of shape \(1,\)",
        ),
        (
            {**FISHER, "bias": torch.tensor([-1.0], dtype=torch.float64)},
            ANCHOR,
            1.0,
            r"fisher\['bias'\] has negative entries",
        ),
        ({**FISHER, "bias": torch.tensor([math.nan], dtype=torch.float64)}, ANCHOR, 1.0, r"fisher\['bias'\] has NaN"),
        (FISHER, ANCHOR, -1.0, r"strength must be a finite number >= 0"),
        (FISHER, ANCHOR, math.inf, r"strength must be a finite number >= 0"),
    ],
)
def test_ewc_penalty_argument_checks(fisher, anchor, strength, match) -> None:
    with pytest.raises(ValueError, match=match):
        ds.ewc_penalty(_linear_2_1(), fisher, anchor, strength)


def test_ewc_penalty_rejects_non_dicts() -> None:
    with pytest.raises(TypeError, match="fisher must be a dict"):
        ds.ewc_penalty(_linear_2_1(), [1.0], ANCHOR)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        ds.ewc_penalty("net", FISHER, ANCHOR)


def test_laplace_variance_hand_computed() -> None:
    # 1 / (N F + tau) with N = 2, tau = 1: F = 0, 1, 3 -> 1, 1/3, 1/7
    var = ds.laplace_variance({"w": torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)}, 2, 1.0)
    assert var["w"].tolist() == pytest.approx([1.0, 1 / 3, 1 / 7], abs=1e-15)


@pytest.mark.parametrize(
    "num_data, tau, match",
    [
        (0, 1.0, "num_data must be a positive integer"),
        (2.5, 1.0, "num_data must be a positive integer"),
        (10, 0.0, "prior_precision must be a finite number > 0"),
    ],
)
def test_laplace_variance_argument_checks(num_data, tau, match) -> None:
    with pytest.raises(ValueError, match=match):
        ds.laplace_variance({"w": torch.ones(3)}, num_data, tau)
    with pytest.raises(ValueError, match=r"fisher\['w'\] has negative entries"):
        ds.laplace_variance({"w": -torch.ones(3)}, 10, 1.0)


def _net() -> nn.Module:
    return ft.lab.models.mlp([5, 7, 4], "tanh", seed=3, dtype=torch.float64)


@pytest.mark.parametrize("linearized", [True, False])
def test_laplace_predictive_with_zero_variance_is_the_map_predictive(linearized: bool) -> None:
    model = _net()
    x = torch.randn(11, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    zero = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    probs = ds.laplace_predictive(
        model, x, zero, num_samples=3, linearized=linearized, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        expected = torch.softmax(model(x), dim=-1)
    torch.testing.assert_close(probs, expected, rtol=0, atol=1e-15)


def test_laplace_predictive_linearised_equals_sampled_for_a_linear_model() -> None:
    # A linear model is its own linearisation: with the same draws both predictives agree.
    model = nn.Linear(5, 3).double()
    x = torch.randn(8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    var = {n: torch.full_like(p, 0.3) for n, p in model.named_parameters()}
    a, b = (
        ds.laplace_predictive(model, x, var, num_samples=4, linearized=lin, generator=torch.Generator().manual_seed(5))
        for lin in (True, False)
    )
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert float((a - torch.softmax(model(x).detach(), -1)).abs().max()) > 1e-3  # the noise does change the output
    torch.testing.assert_close(a.sum(-1), torch.ones(8, dtype=torch.float64))


def test_laplace_predictive_matches_a_direct_monte_carlo_average() -> None:
    # Independent draws in the same order: delta ~ N(0, var) per parameter, h(theta* + delta), mean softmax.
    model = _net()
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    var = {n: torch.full_like(p, 0.05) for n, p in model.named_parameters()}
    probs = ds.laplace_predictive(
        model, x, var, num_samples=3, linearized=False, generator=torch.Generator().manual_seed(7)
    )
    gen = torch.Generator().manual_seed(7)
    total = torch.zeros(6, 4, dtype=torch.float64)
    for _ in range(3):
        theta = {
            n: p.detach() + 0.05**0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype)
            for n, p in model.named_parameters()
        }
        total += torch.softmax(functional_call(model, theta, (x,)), -1)
    torch.testing.assert_close(probs, total / 3, rtol=0, atol=1e-14)


def test_laplace_predictive_linearised_matches_explicit_jacobians() -> None:
    # h(theta*) + J delta with J from torch.func.jacrev, the same draws in the same order.
    model = _net()
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    var = {n: torch.full_like(p, 0.2) for n, p in model.named_parameters()}
    probs = ds.laplace_predictive(model, x, var, num_samples=3, generator=torch.Generator().manual_seed(9))
    params = {n: p.detach() for n, p in model.named_parameters()}
    jac = jacrev(lambda theta: functional_call(model, theta, (x,)))(params)  # name -> (6, 4, *shape)
    gen = torch.Generator().manual_seed(9)
    total = torch.zeros(6, 4, dtype=torch.float64)
    for _ in range(3):
        h = functional_call(model, params, (x,))
        for n, p in params.items():
            delta = 0.2**0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype)
            h = h + (jac[n] * delta).flatten(2).sum(-1)
        total += torch.softmax(h, -1)
    torch.testing.assert_close(probs, total / 3, rtol=0, atol=1e-13)


def test_laplace_predictive_argument_checks() -> None:
    model = _net()
    x = torch.randn(3, 5, dtype=torch.float64)
    var = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        ds.laplace_predictive(model, x, var, num_samples=0)
    with pytest.raises(ValueError, match=r"variance must have one entry per trainable parameter.*'2.bias'"):
        ds.laplace_predictive(model, x, {k: v for k, v in var.items() if k != "2.bias"})
    with pytest.raises(TypeError, match="x must be a tensor"):
        ds.laplace_predictive(model, x.tolist(), var)


# Five inputs, three classes: confidences .95, .85, .72, .64, .40; correct, wrong, correct, wrong, correct.
PROBS = torch.tensor(
    [[0.95, 0.03, 0.02], [0.85, 0.10, 0.05], [0.20, 0.72, 0.08], [0.64, 0.30, 0.06], [0.40, 0.35, 0.25]],
    dtype=torch.float64,
)
LABELS = torch.tensor([0, 1, 1, 2, 0])


def test_ece_on_a_toy_case() -> None:
    # 10 bins: one input per bin, ECE = mean |correct - confidence| = (.05 + .85 + .28 + .64 + .60) / 5
    assert ds.expected_calibration_error(PROBS, LABELS, num_bins=10) == pytest.approx(2.42 / 5, abs=1e-12)
    # 2 bins: {.40} (accuracy 1) and the other four (accuracy 1/2, mean confidence .79):
    # (1 * |1 - .40| + 4 * |.5 - .79|) / 5
    assert ds.expected_calibration_error(PROBS, LABELS, num_bins=2) == pytest.approx(1.76 / 5, abs=1e-12)
    # 1 bin: |accuracy - mean confidence| = |3/5 - 3.56/5|
    assert ds.expected_calibration_error(PROBS, LABELS, num_bins=1) == pytest.approx(0.56 / 5, abs=1e-12)


def test_nll_and_entropy_on_the_toy_case() -> None:
    expected = -(math.log(0.95) + math.log(0.10) + math.log(0.72) + math.log(0.06) + math.log(0.40)) / 5
    assert ds.negative_log_likelihood(PROBS, LABELS) == pytest.approx(expected, abs=1e-12)
    uniform = torch.full((2, 4), 0.25)
    assert ds.predictive_entropy(uniform).tolist() == pytest.approx([math.log(4)] * 2, abs=1e-12)
    assert ds.predictive_entropy(torch.tensor([[1.0, 0.0]])).item() == 0.0


@pytest.mark.parametrize(
    "probs, labels, bins, match",
    [
        (PROBS * 2, LABELS, 10, "probs must hold probabilities"),
        (PROBS[0], LABELS, 10, r"probs must be a non-empty tensor \(N, C\)"),
        (PROBS, LABELS[:3], 10, r"labels must be an integer tensor of shape \(5,\)"),
        (PROBS, LABELS.double(), 10, "labels must be an integer tensor"),
        (PROBS, LABELS + 3, 10, r"labels must be class indices in \[0, 2\]"),
        (PROBS, LABELS, 0, "num_bins must be a positive integer"),
    ],
)
def test_ece_argument_checks(probs, labels, bins, match) -> None:
    with pytest.raises(ValueError, match=match):
        ds.expected_calibration_error(probs, labels, num_bins=bins)


def test_continual_metrics_hand_computed() -> None:
    acc = torch.tensor([[0.90, 0.10, 0.10], [0.70, 0.95, 0.20], [0.60, 0.80, 0.90]])
    average, forgetting = ds.continual_metrics(acc)
    assert average == pytest.approx((0.6 + 0.8 + 0.9) / 3, abs=1e-7)
    assert forgetting == pytest.approx(((0.9 - 0.6) + (0.95 - 0.8)) / 2, abs=1e-7)
    with pytest.raises(ValueError, match=r"accuracy must be a square tensor \(T, T\) with T >= 2"):
        ds.continual_metrics(torch.ones(2, 3))


def _data(n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(4)
    return torch.randn(n, 5, dtype=torch.float64, generator=gen), torch.randint(0, 4, (n,), generator=gen)


def test_squared_minibatch_mean_gradient_against_per_sample_gradients() -> None:
    model = _net()
    x, y = _data(20)
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(theta, xi, yi):
        h = functional_call(model, theta, (xi[None],))
        return torch.nn.functional.cross_entropy(h, yi[None])

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    # batches of 8, 8 and 4: the squared mean of each, then the mean over the three batches
    expected = {n: sum(g[s : s + 8].mean(0).square() for s in (0, 8, 16)) / 3 for n, g in per_sample.items()}
    got = ds.squared_minibatch_mean_gradient(model, x, y, batch_size=8)
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-12, atol=1e-15)


def test_squared_minibatch_mean_gradient_of_batch_size_one_is_the_empirical_fisher() -> None:
    model = _net()
    x, y = _data(12)
    got = ds.squared_minibatch_mean_gradient(model, x, y, batch_size=1)
    emp = ft.fisher_diagonal(model, x, ft.Categorical(), estimator="i1", targets=y)
    for n in emp:
        torch.testing.assert_close(got[n], emp[n], rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        ds.squared_minibatch_mean_gradient(model, x, y, batch_size=0)
    with pytest.raises(ValueError, match="x and y must be tensors with the same, non-zero number of rows"):
        ds.squared_minibatch_mean_gradient(model, x, y[:3])


def test_training_with_an_ewc_penalty_stays_near_the_anchor() -> None:
    x, y = _data(64)
    free, held = _net(), _net()
    anchor = {n: p.detach().clone() for n, p in held.named_parameters()}
    ones = {n: torch.ones_like(p) for n, p in held.named_parameters()}
    train_classifier(free, x, y, epochs=3, batch_size=16, lr=1e-2)
    train_classifier(
        held, x, y, epochs=3, batch_size=16, lr=1e-2, penalty=lambda m: ds.ewc_penalty(m, ones, anchor, strength=1e4)
    )

    def moved(model):
        return sum(float((p.detach() - anchor[n]).square().sum()) for n, p in model.named_parameters()) ** 0.5

    assert moved(held) < 0.1 * moved(free)


def test_plot_bands_draws_the_mean_and_t_interval_of_each_diagonal() -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from fishertut.lab import plotting

    # two diagonals, two strengths, three seeds; "other" has values 1, 2, 6 at strength 10
    table = pd.DataFrame(
        {
            "fisher": ["exact"] * 6 + ["other"] * 6,
            "strength": [1.0, 10.0] * 6,
            "metric": [0.5, 0.6, 0.5, 0.6, 0.5, 0.6, 0.0, 1.0, 0.0, 2.0, 0.0, 6.0],
            "seed": [0, 0, 1, 1, 2, 2] * 2,
        }
    )
    fig, ax = plt.subplots()
    styles = {"exact": ("black", "-"), "other": ("red", "--", "s"), "absent": ("blue", ":")}
    plotting.plot_bands(ax, table, "metric", styles)
    plotting.plot_baseline(ax, pd.Series([1.0, 2.0, 3.0]), "baseline")
    assert [line.get_label() for line in ax.lines] == ["exact", "other", "baseline"]
    x, y = ax.lines[1].get_data()
    assert list(x) == [1.0, 10.0] and list(y) == pytest.approx([0.0, 3.0])
    assert ax.lines[0].get_linewidth() > ax.lines[1].get_linewidth()  # the reference is drawn wide
    assert ax.lines[1].get_marker() == "s"
    # band at strength 10: mean 3 +- t_{0.975, 2} sd(1, 2, 6)/sqrt(3) = 3 +- 4.302653 sqrt(7)/sqrt(3)
    band = ax.collections[1].get_paths()[0].vertices
    half = 4.302653 * math.sqrt(7) / math.sqrt(3)
    assert np.isclose(band[:, 1].max(), 3 + half) and np.isclose(band[:, 1].min(), 3 - half)
    assert ax.lines[2].get_ydata()[0] == pytest.approx(2.0) and ax.get_xscale() == "log"
    plt.close(fig)
