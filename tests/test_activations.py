"""Closed-form activation derivatives against autograd (first and second derivative, float64)."""

import pytest
import torch
from torch import nn

from fishertut.engines.activations import SUPPORTED_ACTIVATIONS, derivatives_for

MODULES = [
    nn.Sigmoid(),
    nn.Tanh(),
    nn.Softplus(),
    nn.Softplus(beta=2.0, threshold=3.0),
    nn.ELU(),
    nn.ELU(alpha=0.5),
    nn.GELU(),
    nn.GELU(approximate="tanh"),
    nn.SiLU(),
    nn.ReLU(),
    nn.LeakyReLU(0.2),
]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: repr(m))
def test_derivatives_match_autograd(module):
    z = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    z = z[z.abs() > 1e-3]  # away from kinks
    z = z[(z * getattr(module, "beta", 1.0) - getattr(module, "threshold", 1e9)).abs() > 1e-3]
    zz = z.clone().requires_grad_(True)
    (first,) = torch.autograd.grad(module(zz).sum(), zz, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), zz)
    d = derivatives_for(module)
    torch.testing.assert_close(d.first(z), first.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(d.second(z), second, rtol=1e-10, atol=1e-12)
    assert d.curved == bool(second.abs().max() > 0)
    p1, p2 = d.pair(z)
    torch.testing.assert_close(p1, d.first(z), rtol=1e-15, atol=0)
    torch.testing.assert_close(p2, d.second(z), rtol=1e-15, atol=0)


def test_every_supported_type_is_covered():
    assert {type(m) for m in MODULES} == set(SUPPORTED_ACTIVATIONS)


def test_unknown_module_has_no_derivatives():
    assert derivatives_for(nn.Softmax(dim=1)) is None
