r"""The affine layers of the graph engine (Linear, Conv1d/Conv2d, eval-mode BatchNorm) and their parameter units.

Each layer's output :math:`z` is affine in its parameters :math:`\theta`. For cotangents ``t`` at the output it
gives the per-input parameter derivatives :math:`t\,\partial z/\partial\theta` (``(N, m, numel)``), and for a
diagonal weighting ``w`` the sums :math:`\sum_p w_p (\partial z_p/\partial\theta_i)^2`, which square the input
(for a convolution, ``w`` correlated with the squared input patches).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ops import NodeOp, fold

__all__ = ["ParamUnits", "Affine", "Dense", "Conv", "Norm"]


@dataclass
class ParamUnits:
    r"""A group of parameter units of one affine layer :math:`z(\theta)`, as :class:`~fishertut.terms.UnitTerms` wants.

    Attributes:
        targets: ``(parameter name, activations or None)``.
        derivative: cotangents ``t`` ``(N, m, *out)`` -> :math:`t\,\partial z/\partial\theta` ``(N, m, n)``.
        square_weighted: diagonal weights ``w`` ``(N, m, *out)`` ->
            :math:`\sum_p w_p (\partial z_p/\partial\theta)^2` ``(N, m, n)``.
    """

    targets: list[tuple[str, Tensor | None]]
    derivative: Callable[[Tensor], Tensor]
    square_weighted: Callable[[Tensor], Tensor]


def _sum_positions(t: Tensor) -> Tensor:
    """``(N, m, C, *spatial) -> (N, m, C)``."""
    return t.flatten(3).sum(3) if t.ndim > 3 else t


class Affine(NodeOp):
    """A layer affine in its parameters (the engine asks it for parameter derivatives through :meth:`units`)."""

    def __init__(self, module: nn.Module, path: str) -> None:
        self.module = module
        self.params = tuple(
            (a, f"{path}.{a}")
            for a in ("weight", "bias")
            if getattr(module, a, None) is not None and getattr(module, a).requires_grad
        )

    def forward(self, x: Tensor) -> Tensor:
        """The operation on a batch."""
        return self.module(x)

    def name(self, attribute: str) -> str | None:
        """The full name of trainable parameter ``attribute``, or ``None``."""
        return next((full for a, full in self.params if a == attribute), None)

    def units(self, saved: object) -> list[ParamUnits]:
        """The parameter units (weight, bias) of this layer."""
        raise NotImplementedError


class Dense(Affine):
    r"""``nn.Linear`` on 2-D inputs :math:`a`: a weight factors as unit (output) value times :math:`a_k`."""

    def save(self, xs: tuple[Tensor, ...], out: Tensor) -> object:
        """What the backward needs."""
        return xs[0]

    def vjp(self, saved: object, t: Tensor, index: int) -> Tensor:
        """Cotangents ``(N, m, *out)`` to ``(N, m, *in)``."""
        return t @ self.module.weight

    def units(self, saved: object) -> list[ParamUnits]:
        """The parameter units (weight, bias) of this layer."""
        targets = [(n, a) for n, a in ((self.name("weight"), saved), (self.name("bias"), None)) if n is not None]
        return [ParamUnits(targets, lambda t: t, lambda w: w)]


def _pair(v: int | tuple[int, ...], dim: int, pad: int = 1) -> tuple[int, int]:
    """A 1-d setting as 2-d with a leading ``pad`` (height 1), or a 2-d setting as a pair."""
    return (pad, v[0] if isinstance(v, tuple) else v) if dim == 1 else (v if isinstance(v, tuple) else (v, v))


class Conv(Affine):
    r"""``nn.Conv1d``/``nn.Conv2d`` (stride, padding, dilation, groups, bias) with zero padding.

    Per-input weight derivatives of cotangents ``t`` ``(N, m, O, *L)``: ``unfold`` the input into patches
    ``X`` ``(N, G, C_g k, L)`` and contract,
    :math:`\partial (t^\top z)/\partial W_{g o i} = \sum_l t_{g o l} X_{g i l}`.
    """

    def __init__(self, module: nn.Conv1d | nn.Conv2d, path: str, padding: tuple[int, ...]) -> None:
        super().__init__(module, path)
        self.dim = 1 if isinstance(module, nn.Conv1d) else 2
        self.padding = padding
        m = module
        self.unfold_kw = dict(
            kernel_size=_pair(m.kernel_size, self.dim),
            dilation=_pair(m.dilation, self.dim),
            padding=_pair(padding, self.dim, 0),
            stride=_pair(m.stride, self.dim),
        )
        self.input_grad = torch.nn.grad.conv1d_input if self.dim == 1 else torch.nn.grad.conv2d_input

    def save(self, xs: tuple[Tensor, ...], out: Tensor) -> object:
        """What the backward needs."""
        return xs[0], out.shape

    def patches(self, x: Tensor) -> Tensor:
        """``(N, G, C_g * k, L)``."""
        if self.dim == 1:
            x = x.unsqueeze(2)
        cols = F.unfold(x, **self.unfold_kw)
        return cols.view(x.shape[0], self.module.groups, -1, cols.shape[-1])

    def weight_derivative(self, t: Tensor, patches: Tensor) -> Tensor:
        """``(N, m, O, *L)`` cotangents and ``(N, G, C_g k, L)`` patches -> ``(N, m, O * C_g * k)``."""
        n, m = t.shape[:2]
        g = self.module.groups
        tt = t.reshape(n, m, g, t.shape[2] // g, -1)
        return torch.einsum("nkgol,ngil->nkgoi", tt, patches).reshape(n, m, -1)

    def vjp(self, saved: object, t: Tensor, index: int) -> Tensor:
        """Cotangents ``(N, m, *out)`` to ``(N, m, *in)``."""
        m, shape = self.module, saved[0].shape
        n, k = t.shape[:2]
        g = self.input_grad(
            (n * k, *shape[1:]),
            m.weight,
            fold(t),
            stride=m.stride,
            padding=self.padding,
            dilation=m.dilation,
            groups=m.groups,
        )
        return g.view(n, k, *shape[1:])

    def units(self, saved: object) -> list[ParamUnits]:
        """The parameter units (weight, bias) of this layer."""
        out = []
        if (w := self.name("weight")) is not None:
            x = self.patches(saved[0])
            x2 = None

            def square_weighted(t: Tensor) -> Tensor:
                nonlocal x2
                x2 = x.square() if x2 is None else x2
                return self.weight_derivative(t, x2)

            out.append(ParamUnits([(w, None)], lambda t: self.weight_derivative(t, x), square_weighted))
        if (b := self.name("bias")) is not None:
            out.append(ParamUnits([(b, None)], _sum_positions, _sum_positions))
        return out


class Norm(Affine):
    r"""Eval-mode ``BatchNorm1d``/``BatchNorm2d``, elementwise in its input.

    :math:`z = \gamma\hat x + \beta` per channel (axis 1), with :math:`\hat x = (x - \mu)/\sqrt{\nu + \epsilon}`
    from the running statistics.
    """

    elementwise = True

    def _view(self, v: Tensor, ndim: int) -> Tensor:
        return v.view(1, -1, *([1] * (ndim - 2)))

    def save(self, xs: tuple[Tensor, ...], out: Tensor) -> object:
        """What the backward needs."""
        m, x = self.module, xs[0]
        inv = torch.rsqrt(m.running_var + m.eps)
        xhat = (x - self._view(m.running_mean, x.ndim)) * self._view(inv, x.ndim)
        scale = inv if m.weight is None else m.weight * inv
        return xhat, self._view(scale, x.ndim)

    def scale(self, saved: object) -> Tensor | None:
        """The elementwise derivative, broadcastable to ``(N, *shape)``."""
        return saved[1]

    def units(self, saved: object) -> list[ParamUnits]:
        """The parameter units (weight, bias) of this layer."""
        xhat = saved[0].unsqueeze(1)
        out = []
        if (w := self.name("weight")) is not None:
            out.append(
                ParamUnits([(w, None)], lambda t: _sum_positions(t * xhat), lambda t: _sum_positions(t * xhat.square()))
            )
        if (b := self.name("bias")) is not None:
            out.append(ParamUnits([(b, None)], _sum_positions, _sum_positions))
        return out
