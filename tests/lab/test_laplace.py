"""Tests of fishertut.lab.laplace against independent computations in float64.

The logit variances against the Jacobian of torch.func.jacrev; the probit predictive against its formula
and the MAP predictive; the evidence against the exact marginal likelihood of a linear-Gaussian model
whose curvature is diagonal (orthogonal design), where the Laplace approximation is exact.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

import fishertut as ft
from fishertut.lab import laplace as lp

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus"])
def test_logit_variance_equals_the_jacobian_form(activation: str) -> None:
    model = ft.lab.models.mlp([5, 4, 3, 3], activation, seed=1, dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    params = {n: p.detach() for n, p in model.named_parameters()}
    variance = {n: torch.rand(p.shape, generator=gen, dtype=torch.float64) for n, p in params.items()}
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)  # {name: (N, C, *shape)}
    expected = sum((jac[n].flatten(2).square() * variance[n].flatten()).sum(-1) for n in params)
    got = lp.linearised_logit_variance(model, x, variance)
    assert got.shape == (7, 3)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_logit_variance_rejects_layers_with_parameters() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="LayerNorm has parameters"):
        lp.linearised_logit_variance(model, torch.randn(2, 3), {})


def test_probit_predictive_formula_and_map_limit() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]], dtype=torch.float64)
    assert torch.allclose(lp.probit_predictive(logits, torch.zeros_like(logits)), torch.softmax(logits, -1))
    var = torch.tensor([[8 / math.pi * 3.0, 0.0, 8 / math.pi * 15.0]], dtype=torch.float64)  # kappa = 1/2, 1, 1/4
    expected = torch.softmax(torch.tensor([[1.0, 0.0, -0.25]], dtype=torch.float64), -1)
    torch.testing.assert_close(lp.probit_predictive(logits, var), expected, rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="logit_variance must have the shape"):
        lp.probit_predictive(logits, var[:, :2])


def test_log_evidence_is_exact_for_a_linear_gaussian_model_with_diagonal_curvature() -> None:
    # y = X theta + noise (sd 1); X has orthogonal columns, so X^T X and the curvature N F + tau are diagonal.
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(12, 3, generator=gen, dtype=torch.float64))
    x = q * torch.tensor([1.0, 2.5, 0.4], dtype=torch.float64)
    y = x @ torch.tensor([0.7, -1.2, 2.0], dtype=torch.float64) + torch.randn(12, generator=gen, dtype=torch.float64)
    n = x.shape[0]
    fisher = {"w": x.square().mean(0)}  # per-input Fisher of a unit-variance Gaussian: x_i^2, averaged
    for tau in (0.1, 1.0, 7.0):
        theta = torch.linalg.solve(x.T @ x + tau * torch.eye(3, dtype=torch.float64), x.T @ y)  # the MAP
        loglik = float(torch.distributions.Normal(x @ theta, 1.0).log_prob(y).sum())
        cov = torch.eye(n, dtype=torch.float64) + x @ x.T / tau
        exact = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=torch.float64), cov).log_prob(y)
        got = lp.laplace_log_evidence(fisher, n, tau, {"w": theta}, loglik)
        assert float(got) == pytest.approx(float(exact), abs=1e-10)
    many = lp.laplace_log_evidence(fisher, n, torch.tensor([0.1, 1.0]), {"w": theta}, loglik)
    assert many.shape == (2,)


def test_log_evidence_arguments_are_checked() -> None:
    f, m = {"w": torch.ones(2)}, {"w": torch.zeros(2)}
    with pytest.raises(ValueError, match="prior_precision must be finite and > 0"):
        lp.laplace_log_evidence(f, 3, 0.0, m, 0.0)
    with pytest.raises(ValueError, match="fisher has negative entries"):
        lp.laplace_log_evidence({"w": -torch.ones(2)}, 3, 1.0, m, 0.0)
    with pytest.raises(ValueError, match="same parameter names"):
        lp.laplace_log_evidence(f, 3, 1.0, {"v": torch.zeros(2)}, 0.0)
