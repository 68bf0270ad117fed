"""Declared test settings with readable ids (model, inputs, family), all float64."""

from __future__ import annotations

import torch
from torch import nn

from oracle import Problem


def _mlp(sizes, act, bias=True, seed=0):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers).double().eval()


def _problem(id_, sizes, act, family, n=4, sigma=1.0, bias=True, seed=0):
    model = _mlp(sizes, act, bias, seed)
    gen = torch.Generator().manual_seed(seed + 100)
    x = torch.randn(n, sizes[0], generator=gen, dtype=torch.float64)
    return Problem(id_, model, x, family, sigma)


def _gelu_tanh():
    return nn.GELU(approximate="tanh")


def _softplus():
    return nn.Softplus(beta=1.5)


# (id, builder) pairs; builders are cheap and deterministic.
PROBLEMS = {
    "cat-sigmoid-1h": lambda: _problem("cat-sigmoid-1h", [3, 4, 3], nn.Sigmoid, "categorical"),
    "cat-tanh-2h": lambda: _problem("cat-tanh-2h", [3, 4, 5, 4], nn.Tanh, "categorical"),
    "cat-softplus-3h": lambda: _problem("cat-softplus-3h", [2, 3, 4, 3, 3], _softplus, "categorical"),
    "cat-relu-2h": lambda: _problem("cat-relu-2h", [3, 5, 4, 3], nn.ReLU, "categorical"),
    "cat-sigmoid-4h-nobias": lambda: _problem(
        "cat-sigmoid-4h-nobias", [2, 3, 3, 3, 3, 4], nn.Sigmoid, "categorical", bias=False
    ),
    "binary-tanh-1h": lambda: _problem("binary-tanh-1h", [3, 4, 2], nn.Tanh, "categorical"),
    "cat-elu-2h": lambda: _problem("cat-elu-2h", [3, 4, 3, 3], nn.ELU, "categorical"),
    "cat-gelu-2h": lambda: _problem("cat-gelu-2h", [3, 4, 3, 3], nn.GELU, "categorical"),
    "cat-gelutanh-1h": lambda: _problem("cat-gelutanh-1h", [3, 4, 3], _gelu_tanh, "categorical"),
    "cat-silu-2h": lambda: _problem("cat-silu-2h", [3, 4, 3, 3], nn.SiLU, "categorical"),
    "cat-leakyrelu-1h": lambda: _problem("cat-leakyrelu-1h", [3, 4, 3], lambda: nn.LeakyReLU(0.1), "categorical"),
    "gauss-tanh-1h": lambda: _problem("gauss-tanh-1h", [3, 4, 2], nn.Tanh, "gaussian"),
    "gauss-sigmoid-2h-sigma0.5": lambda: _problem(
        "gauss-sigmoid-2h-sigma0.5", [3, 4, 3, 2], nn.Sigmoid, "gaussian", sigma=0.5
    ),
    "gauss-softplus-3h-D1": lambda: _problem("gauss-softplus-3h-D1", [2, 3, 3, 3, 1], _softplus, "gaussian"),
    "gauss-relu-2h-D3": lambda: _problem("gauss-relu-2h-D3", [3, 4, 4, 3], nn.ReLU, "gaussian", sigma=2.0),
    "gauss-sigmoid-4h-nobias": lambda: _problem(
        "gauss-sigmoid-4h-nobias", [2, 3, 3, 3, 3, 2], nn.Sigmoid, "gaussian", bias=False
    ),
}

# A subset used by the slower checks.
CORE = [
    "cat-sigmoid-1h",
    "cat-tanh-2h",
    "cat-softplus-3h",
    "cat-relu-2h",
    "binary-tanh-1h",
    "gauss-tanh-1h",
    "gauss-sigmoid-2h-sigma0.5",
    "gauss-softplus-3h-D1",
]
