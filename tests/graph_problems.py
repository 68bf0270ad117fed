"""Declared convolutional and residual test settings for the graph engine (readable ids), all float64.

Images are small (1-2 channels, 8x8) and batches have 3 inputs, so that the generic engine and the oracle
stay cheap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from oracle import Problem


class ResidualBlock(nn.Module):
    """conv -> act -> conv, plus the identity; batch norm (eval) optional; activations as functions."""

    def __init__(self, channels, act, norm=False):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=not norm)
        self.bn1 = nn.BatchNorm2d(channels) if norm else nn.Identity()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=not norm)
        self.bn2 = nn.BatchNorm2d(channels) if norm else nn.Identity()
        self.act = act

    def forward(self, x):
        y = self.act(self.bn1(self.conv1(x)))
        return self.act(x + self.bn2(self.conv2(y)))


class ResNetTiny(nn.Module):
    def __init__(self, act, norm, out=3):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.block = ResidualBlock(2, act, norm)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2, out)

    def forward(self, x):
        x = self.block(torch.tanh(self.stem(x)))
        return self.head(torch.flatten(self.pool(x), 1))


def _randomise_norms(model, gen):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=gen, dtype=torch.float64))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen, dtype=torch.float64))
            m.weight.data.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=gen, dtype=torch.float64))
            m.bias.data.copy_(0.2 * torch.randn(m.bias.shape, generator=gen, dtype=torch.float64))


def _problem(id_, build, shape, family="categorical", sigma=1.0, n=3, seed=0):
    torch.manual_seed(seed)
    model = build().double()
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        _randomise_norms(model, gen)
    model.eval()
    x = torch.randn(n, *shape, generator=gen, dtype=torch.float64)
    return Problem(id_, model, x, family, sigma)


def _seq(*layers):
    return lambda: nn.Sequential(*layers())


GRAPH_PROBLEMS = {
    "conv2d-stride2-pad1-tanh": lambda: _problem(
        "conv2d-stride2-pad1-tanh",
        lambda: nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(48, 3)),
        (1, 8, 8),
    ),
    "conv2d-groups2-dilation2-nobias-sigmoid": lambda: _problem(
        "conv2d-groups2-dilation2-nobias-sigmoid",
        lambda: nn.Sequential(
            nn.Conv2d(2, 4, 3, groups=2, dilation=2, bias=False),
            nn.Sigmoid(),
            nn.Conv2d(4, 2, 2, stride=2),
            nn.Softplus(beta=1.5),
            nn.Flatten(),
            nn.Linear(8, 3),
        ),
        (2, 8, 8),
    ),
    "conv1d-stride2-elu-maxpool1d": lambda: _problem(
        "conv1d-stride2-elu-maxpool1d",
        lambda: nn.Sequential(
            nn.Conv1d(2, 3, 3, stride=2, padding=2),
            nn.ELU(),
            nn.MaxPool1d(2),
            nn.Conv1d(3, 2, 2, padding="same", dilation=2),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(6, 3),
        ),
        (2, 10),
    ),
    "lenet-tanh-maxpool": lambda: _problem(
        "lenet-tanh-maxpool",
        lambda: nn.Sequential(
            nn.Conv2d(1, 2, 3),
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Conv2d(2, 3, 2),
            nn.Tanh(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Flatten(),
            nn.Linear(12, 4),
            nn.Tanh(),
            nn.Linear(4, 3),
        ),
        (1, 10, 10),
    ),
    "unflatten-lenet-tanh-flat-inputs": lambda: _problem(
        "unflatten-lenet-tanh-flat-inputs",
        lambda: nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, 2, 3),
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(18, 4),
            nn.Tanh(),
            nn.Linear(4, 3),
        ),
        (64,),
    ),
    "avgpool-gelu-dropout": lambda: _problem(
        "avgpool-gelu-dropout",
        lambda: nn.Sequential(
            nn.Conv2d(1, 2, 3, padding=1),
            nn.GELU(),
            nn.AvgPool2d(2),
            nn.Dropout(0.3),
            nn.Conv2d(2, 2, 3),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8, 3),
        ),
        (1, 8, 8),
    ),
    "batchnorm-eval-tanh": lambda: _problem(
        "batchnorm-eval-tanh",
        lambda: nn.Sequential(
            nn.Conv2d(1, 2, 3, stride=2),
            nn.BatchNorm2d(2),
            nn.Tanh(),
            nn.Flatten(),
            nn.Linear(18, 4),
            nn.BatchNorm1d(4),
            nn.Sigmoid(),
            nn.Linear(4, 3),
        ),
        (1, 8, 8),
    ),
    "residual-tanh": lambda: _problem("residual-tanh", lambda: ResNetTiny(torch.tanh, norm=False), (1, 8, 8)),
    "residual-relu-bn": lambda: _problem("residual-relu-bn", lambda: ResNetTiny(F.relu, norm=True), (1, 8, 8)),
    "gauss-residual-tanh-bn-sigma0.5": lambda: _problem(
        "gauss-residual-tanh-bn-sigma0.5",
        lambda: ResNetTiny(torch.tanh, norm=True, out=2),
        (1, 8, 8),
        family="gaussian",
        sigma=0.5,
    ),
    "gauss-conv1d-sigmoid-D2": lambda: _problem(
        "gauss-conv1d-sigmoid-D2",
        lambda: nn.Sequential(nn.Conv1d(1, 2, 3, groups=1), nn.Sigmoid(), nn.Flatten(), nn.Linear(16, 2)),
        (1, 10),
        family="gaussian",
        sigma=1.5,
    ),
    "lenet-relu-leaky": lambda: _problem(
        "lenet-relu-leaky",
        lambda: nn.Sequential(
            nn.Conv2d(1, 2, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2, 3, 2),
            nn.LeakyReLU(0.1),
            nn.Flatten(),
            nn.Linear(12, 4),
            nn.ReLU(),
            nn.Linear(4, 3),
        ),
        (1, 8, 8),
    ),
}
