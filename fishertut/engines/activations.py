r"""First and second derivatives :math:`\sigma'(z)`, :math:`\sigma''(z)` of the supported elementwise activations.

These are the activations the layer-wise engine supports (chapter :doc:`/book/estimators`, section "What each
costs"). Closed forms, checked against autograd in the tests.

Piecewise-linear activations (ReLU, leaky ReLU) have :math:`\sigma'' = 0` almost everywhere; they are
flagged ``curved=False`` so the engine skips their (zero) curvature sources.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["ActivationDerivatives", "derivatives_for", "SUPPORTED_ACTIVATIONS"]


@dataclass(frozen=True)
class ActivationDerivatives:
    """``first(z)``, ``second(z)`` of one activation module; ``curved`` is False where ``second`` is 0.

    ``both(z)``, where given, returns the two at once, sharing intermediate values.
    """

    first: Callable[[Tensor], Tensor]
    second: Callable[[Tensor], Tensor]
    curved: bool = True
    both: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None

    def pair(self, z: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`(\sigma'(z), \sigma''(z))`."""
        return self.both(z) if self.both is not None else (self.first(z), self.second(z))


def _sigmoid(_: nn.Module) -> ActivationDerivatives:
    def first(z: Tensor) -> Tensor:
        s = torch.sigmoid(z)
        return s * (1 - s)

    def second(z: Tensor) -> Tensor:
        s = torch.sigmoid(z)
        return s * (1 - s) * (1 - 2 * s)

    def both(z: Tensor) -> tuple[Tensor, Tensor]:
        s = torch.sigmoid(z)
        d1 = s * (1 - s)
        return d1, d1 * (1 - 2 * s)

    return ActivationDerivatives(first, second, both=both)


def _tanh(_: nn.Module) -> ActivationDerivatives:
    def first(z: Tensor) -> Tensor:
        return 1 - torch.tanh(z).square()

    def second(z: Tensor) -> Tensor:
        t = torch.tanh(z)
        return -2 * t * (1 - t.square())

    def both(z: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.tanh(z)
        d1 = 1 - t.square()
        return d1, -2 * t * d1

    return ActivationDerivatives(first, second, both=both)


def _softplus(m: nn.Softplus) -> ActivationDerivatives:
    beta, threshold = float(m.beta), float(m.threshold)

    def first(z: Tensor) -> Tensor:
        return torch.where(beta * z > threshold, torch.ones_like(z), torch.sigmoid(beta * z))

    def second(z: Tensor) -> Tensor:
        s = torch.sigmoid(beta * z)
        return torch.where(beta * z > threshold, torch.zeros_like(z), beta * s * (1 - s))

    return ActivationDerivatives(first, second)


def _elu(m: nn.ELU) -> ActivationDerivatives:
    alpha = float(m.alpha)

    def first(z: Tensor) -> Tensor:
        return torch.where(z > 0, torch.ones_like(z), alpha * torch.exp(z))

    def second(z: Tensor) -> Tensor:
        return torch.where(z > 0, torch.zeros_like(z), alpha * torch.exp(z))

    return ActivationDerivatives(first, second)


def _gelu(m: nn.GELU) -> ActivationDerivatives:
    if m.approximate == "tanh":
        k, c = math.sqrt(2 / math.pi), 0.044715

        def parts(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            t = torch.tanh(k * (z + c * z**3))
            return t, k * (1 + 3 * c * z.square()), 6 * k * c * z

        def first(z: Tensor) -> Tensor:
            t, g1, _ = parts(z)
            return 0.5 * (1 + t) + 0.5 * z * (1 - t.square()) * g1

        def second(z: Tensor) -> Tensor:
            t, g1, g2 = parts(z)
            return (1 - t.square()) * (g1 + 0.5 * z * (g2 - 2 * t * g1.square()))

        return ActivationDerivatives(first, second)

    def pdf(z: Tensor) -> Tensor:
        return torch.exp(-0.5 * z.square()) / math.sqrt(2 * math.pi)

    def first_exact(z: Tensor) -> Tensor:
        return 0.5 * (1 + torch.erf(z / math.sqrt(2))) + z * pdf(z)

    def second_exact(z: Tensor) -> Tensor:
        return pdf(z) * (2 - z.square())

    return ActivationDerivatives(first_exact, second_exact)


def _silu(_: nn.Module) -> ActivationDerivatives:
    def first(z: Tensor) -> Tensor:
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s))

    def second(z: Tensor) -> Tensor:
        s = torch.sigmoid(z)
        return s * (1 - s) * (2 + z * (1 - 2 * s))

    return ActivationDerivatives(first, second)


def _relu(_: nn.Module) -> ActivationDerivatives:
    return ActivationDerivatives(lambda z: (z > 0).to(z.dtype), torch.zeros_like, curved=False)


def _leaky_relu(m: nn.LeakyReLU) -> ActivationDerivatives:
    slope = float(m.negative_slope)
    return ActivationDerivatives(
        lambda z: torch.where(z > 0, torch.ones_like(z), torch.full_like(z, slope)), torch.zeros_like, curved=False
    )


_TABLE: dict[type[nn.Module], Callable[[nn.Module], ActivationDerivatives]] = {
    nn.Sigmoid: _sigmoid,
    nn.Tanh: _tanh,
    nn.Softplus: _softplus,
    nn.ELU: _elu,
    nn.GELU: _gelu,
    nn.SiLU: _silu,
    nn.ReLU: _relu,
    nn.LeakyReLU: _leaky_relu,
}

SUPPORTED_ACTIVATIONS: tuple[type[nn.Module], ...] = tuple(_TABLE)


def derivatives_for(module: nn.Module) -> ActivationDerivatives | None:
    """Derivatives of ``module`` if it is a supported elementwise activation (exact type match), else ``None``."""
    make = _TABLE.get(type(module))
    return None if make is None else make(module)
