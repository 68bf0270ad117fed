r"""The node operations of the graph engine: forward, backward and per-input parameter derivatives of each layer.

Every backward works on a batch of *channels* per input: a tensor ``(N, m, *shape)`` holds ``m`` cotangents
(rows of a Jacobian) for each of the ``N`` inputs, and an operation maps the cotangents at its output to those
at its input, :math:`t \leftarrow t\,\partial\,\mathrm{out}/\partial\,\mathrm{in}`, by folding the channels
into the batch axis. Elementwise operations (activations, eval-mode batch norm, dropout, additions) instead
give a per-element ``scale``, so that the engine can keep a diagonal Jacobian diagonal.

The layers with parameters are in :mod:`fishertut.engines.graph.layers`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..activations import ActivationDerivatives

__all__ = ["NodeOp", "Activation", "Identity", "Add", "ShapeOnly", "Reshape", "MaxPool", "LinearMap", "fold"]


def fold(t: Tensor) -> Tensor:
    """``(N, m, *s) -> (N * m, *s)``."""
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


class NodeOp:
    """One node of the graph: elementwise ops give :meth:`scale`, the others :meth:`vjp`."""

    elementwise = False
    curved = False
    piecewise_linear = True
    params: tuple[tuple[str, str], ...] = ()  # (attribute, full parameter name) of trainable parameters

    def forward(self, *xs: Tensor) -> Tensor:
        """The operation on a batch."""
        raise NotImplementedError

    def save(self, xs: tuple[Tensor, ...], out: Tensor) -> object:
        """What the backward needs (default: nothing)."""
        return None

    def scale(self, saved: object) -> Tensor | None:
        """Elementwise ops: the derivative, broadcastable to ``(N, *shape)``; ``None`` for the identity."""
        return None

    def vjp(self, saved: object, t: Tensor, index: int) -> Tensor:
        """Non-elementwise ops: cotangents ``(N, m, *out)`` to ``(N, m, *in)`` of input ``index``."""
        raise NotImplementedError


class Activation(NodeOp):
    r"""Elementwise activation :math:`\sigma`; saves its input :math:`z`."""

    elementwise = True

    def __init__(self, fn: Callable[[Tensor], Tensor], derivs: ActivationDerivatives) -> None:
        self.fn, self.derivs = fn, derivs
        self.curved = derivs.curved
        self.piecewise_linear = not derivs.curved

    def forward(self, x: Tensor) -> Tensor:
        """The operation on a batch."""
        return self.fn(x)

    def save(self, xs: tuple[Tensor, ...], out: Tensor) -> object:
        """What the backward needs."""
        return xs[0]


class Identity(NodeOp):
    """Identity (eval-mode dropout, ``nn.Identity``)."""

    elementwise = True

    def forward(self, x: Tensor) -> Tensor:
        """The operation on a batch."""
        return x


class Add(NodeOp):
    """Sum of its node inputs plus a constant (residual additions)."""

    elementwise = True

    def __init__(self, combine: Callable[..., Tensor]) -> None:
        self.combine = combine

    def forward(self, *xs: Tensor) -> Tensor:
        """The operation on a batch."""
        return self.combine(*xs)


class ShapeOnly(NodeOp):
    """A parameter-free operation ``fn`` whose backward needs only the input's shape."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        """The operation on a batch."""
        return self.fn(x)

    def save(self, xs: tuple[Tensor, ...], out: Tensor) -> object:
        """What the backward needs."""
        return xs[0].shape


class Reshape(ShapeOnly):
    """Flatten or Unflatten: a reshape of the non-batch axes (keeps diagonal Jacobians diagonal)."""

    def vjp(self, saved: object, t: Tensor, index: int) -> Tensor:
        """Cotangents ``(N, m, *out)`` to ``(N, m, *in)``."""
        return t.reshape(*t.shape[:2], *saved[1:])


class MaxPool(NodeOp):
    """Max pooling (1-d or 2-d): the backward scatters into the arg-max positions (piecewise linear)."""

    def __init__(self, module: nn.MaxPool1d | nn.MaxPool2d) -> None:
        self.fn = F.max_pool1d if isinstance(module, nn.MaxPool1d) else F.max_pool2d
        self.kw = dict(
            kernel_size=module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            ceil_mode=module.ceil_mode,
        )

    def forward(self, x: Tensor) -> Tensor:
        """The operation on a batch."""
        return self.fn(x, **self.kw)

    def save(self, xs: tuple[Tensor, ...], out: Tensor) -> object:
        """What the backward needs."""
        _, idx = self.fn(xs[0], return_indices=True, **self.kw)
        return xs[0].shape, idx.flatten(2), out.shape

    def vjp(self, saved: object, t: Tensor, index: int) -> Tensor:
        """Cotangents ``(N, m, *out)`` to ``(N, m, *in)``."""
        shape, idx, _ = saved
        n, m, c = t.shape[:3]
        out = t.new_zeros(n, m, c, int(torch.Size(shape[2:]).numel()))
        out.scatter_add_(3, idx.unsqueeze(1).expand(n, m, c, idx.shape[-1]), t.flatten(3))
        return out.view(n, m, *shape[1:])


class LinearMap(ShapeOnly):
    """A parameter-free linear map (average pooling): its backward is autograd's, on a folded batch."""

    def vjp(self, saved: object, t: Tensor, index: int) -> Tensor:
        """Cotangents ``(N, m, *out)`` to ``(N, m, *in)``."""
        n, m = t.shape[:2]
        with torch.enable_grad():
            z = t.new_zeros(n * m, *saved[1:], requires_grad=True)
            (g,) = torch.autograd.grad(self.fn(z), z, fold(t))
        return g.view(n, m, *saved[1:])
