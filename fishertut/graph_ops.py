r"""The node operations of the graph engine: forward, backward and per-input parameter derivatives of each layer.

Every backward works on a batch of *channels* per input: a tensor ``(N, m, *shape)`` holds ``m`` cotangents
(rows of a Jacobian) for each of the ``N`` inputs, and an operation maps the cotangents at its output to those
at its input, :math:`t \leftarrow t\,\partial\,\mathrm{out}/\partial\,\mathrm{in}`, by folding the channels
into the batch axis. Elementwise operations (activations, eval-mode batch norm, dropout, additions) instead
give a per-element ``scale``, so that the engine can keep a diagonal Jacobian diagonal.

Affine layers (Linear, Conv1d/Conv2d, BatchNorm) also give, for cotangents ``t`` at their output, the per-input
parameter derivatives :math:`t\,\partial z/\partial\theta` (``(N, m, numel)``), and for a diagonal weighting
``w`` at their output the sums :math:`\sum_p w_p (\partial z_p/\partial\theta_i)^2` (the output being affine in
:math:`\theta`, these square the input: for a convolution ``w`` correlated with the squared input patches).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activations import ActivationDerivatives

__all__ = ["NodeOp", "Activation", "Identity", "Add", "Reshape", "MaxPool", "LinearMap", "Affine", "Dense", "Conv",
           "Norm", "ParamUnits"]


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
        return self.fn(x)

    def save(self, xs: tuple[Tensor, ...], out: Tensor) -> object:
        return xs[0]


class Identity(NodeOp):
    """Identity (eval-mode dropout, ``nn.Identity``)."""

    elementwise = True

    def forward(self, x: Tensor) -> Tensor:
        return x


class Add(NodeOp):
    """Sum of its node inputs plus a constant (residual additions)."""

    elementwise = True

    def __init__(self, combine: Callable[..., Tensor]) -> None:
        self.combine = combine

    def forward(self, *xs: Tensor) -> Tensor:
        return self.combine(*xs)


class Reshape(NodeOp):
    """Flatten: a reshape of the non-batch axes (keeps diagonal Jacobians diagonal)."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def save(self, xs: tuple[Tensor, ...], out: Tensor) -> object:
        return xs[0].shape

    def vjp(self, saved: object, t: Tensor, index: int) -> Tensor:
        return t.reshape(*t.shape[:2], *saved[1:])


class MaxPool(NodeOp):
    """Max pooling (1-d or 2-d): the backward scatters into the arg-max positions (piecewise linear)."""

    def __init__(self, module: nn.MaxPool1d | nn.MaxPool2d) -> None:
        self.fn = F.max_pool1d if isinstance(module, nn.MaxPool1d) else F.max_pool2d
        self.kw = dict(kernel_size=module.kernel_size, stride=module.stride, padding=module.padding,
                       dilation=module.dilation, ceil_mode=module.ceil_mode)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x, **self.kw)

    def save(self, xs: tuple[Tensor, ...], out: Tensor) -> object:
        _, idx = self.fn(xs[0], return_indices=True, **self.kw)
        return xs[0].shape, idx.flatten(2), out.shape

    def vjp(self, saved: object, t: Tensor, index: int) -> Tensor:
        shape, idx, _ = saved
        n, m, c = t.shape[:3]
        out = t.new_zeros(n, m, c, int(torch.Size(shape[2:]).numel()))
        out.scatter_add_(3, idx.unsqueeze(1).expand(n, m, c, idx.shape[-1]), t.flatten(3))
        return out.view(n, m, *shape[1:])


class LinearMap(NodeOp):
    """A parameter-free linear map (average pooling): its backward is autograd's, on a folded batch."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def save(self, xs: tuple[Tensor, ...], out: Tensor) -> object:
        return xs[0].shape

    def vjp(self, saved: object, t: Tensor, index: int) -> Tensor:
        n, m = t.shape[:2]
        with torch.enable_grad():
            z = t.new_zeros(n * m, *saved[1:], requires_grad=True)
            (g,) = torch.autograd.grad(self.fn(z), z, fold(t))
        return g.view(n, m, *saved[1:])


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
        self.params = tuple((a, f"{path}.{a}") for a in ("weight", "bias")
                            if getattr(module, a, None) is not None and getattr(module, a).requires_grad)

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)

    def name(self, attribute: str) -> str | None:
        """The full name of trainable parameter ``attribute``, or ``None``."""
        return next((full for a, full in self.params if a == attribute), None)

    def units(self, saved: object) -> list[ParamUnits]:
        raise NotImplementedError


class Dense(Affine):
    r"""``nn.Linear`` on 2-D inputs :math:`a`: a weight factors as unit (output) value times :math:`a_k`."""

    def save(self, xs: tuple[Tensor, ...], out: Tensor) -> object:
        return xs[0]

    def vjp(self, saved: object, t: Tensor, index: int) -> Tensor:
        return t @ self.module.weight

    def units(self, saved: object) -> list[ParamUnits]:
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
        self.unfold_kw = dict(kernel_size=_pair(m.kernel_size, self.dim), dilation=_pair(m.dilation, self.dim),
                              padding=_pair(padding, self.dim, 0), stride=_pair(m.stride, self.dim))
        self.input_grad = torch.nn.grad.conv1d_input if self.dim == 1 else torch.nn.grad.conv2d_input

    def save(self, xs: tuple[Tensor, ...], out: Tensor) -> object:
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
        m, shape = self.module, saved[0].shape
        n, k = t.shape[:2]
        g = self.input_grad((n * k, *shape[1:]), m.weight, fold(t), stride=m.stride, padding=self.padding,
                            dilation=m.dilation, groups=m.groups)
        return g.view(n, k, *shape[1:])

    def units(self, saved: object) -> list[ParamUnits]:
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
        m, x = self.module, xs[0]
        inv = torch.rsqrt(m.running_var + m.eps)
        xhat = (x - self._view(m.running_mean, x.ndim)) * self._view(inv, x.ndim)
        scale = inv if m.weight is None else m.weight * inv
        return xhat, self._view(scale, x.ndim)

    def scale(self, saved: object) -> Tensor | None:
        return saved[1]

    def units(self, saved: object) -> list[ParamUnits]:
        xhat = saved[0].unsqueeze(1)
        out = []
        if (w := self.name("weight")) is not None:
            out.append(ParamUnits([(w, None)], lambda t: _sum_positions(t * xhat),
                                  lambda t: _sum_positions(t * xhat.square())))
        if (b := self.name("bias")) is not None:
            out.append(ParamUnits([(b, None)], _sum_positions, _sum_positions))
        return out
