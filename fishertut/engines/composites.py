r"""Composite stand-ins for modules whose fused kernels ``torch.func`` cannot transform correctly (generic engine).

Inside :class:`~fishertut.engines.generic.GenericEngine`, the model's own modules run, but a few of PyTorch's
fused kernels either have no ``vmap`` rule or a wrong second-order forward-mode rule. While the engine works,
:func:`composites` makes those modules compute the same function from elementary operations, whose rules
are correct:

* ``nn.LayerNorm``: :math:`y = (x-\mu)/\sqrt{\sigma^2+\epsilon}\odot w + b` over the normalised trailing axes.
  The forward-over-forward derivative of PyTorch's fused kernel with respect to its *input* is wrong (it
  differs from the reverse-mode Hessian and from finite differences by O(1)), so the second derivatives of
  every parameter below a LayerNorm would be wrong.
* ``nn.RMSNorm``: :math:`y = x/\sqrt{\overline{x^2}+\epsilon}\odot w`; the same reason as LayerNorm (a fused
  kernel on some builds).
* ``nn.PReLU``: :math:`x` where :math:`x>0`, else :math:`a_c x`; the batching rule of its backward fails for
  inputs with positions besides their channels (e.g. images).
* ``nn.RNN``, ``nn.GRU``, ``nn.LSTM``: their recurrences step by step (:mod:`fishertut.engines.recurrent`);
  the fused kernels cannot be ``vmap``-ed over the inputs of a batch.
* ``nn.MultiheadAttention``: its composite path instead of the fused inference kernel
  (``torch.backends.mha`` fast path), which has neither a forward-mode rule nor a ``vmap`` rule (``vmap``
  then loops over the batch in Python and warns).

Only modules of exactly these types are replaced (a subclass may override ``forward``), and only their
``forward``: the module is still called, so its hooks run. Other kernels with a wrong forward-over-forward
rule are caught by the engine's check of that rule against reverse mode (see
:meth:`~fishertut.engines.generic.GenericEngine.backward`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..inspection import occurrences
from .recurrent import RECURRENT, recurrent

__all__ = ["composites"]


def _layer_norm(module: nn.LayerNorm, x: Tensor) -> Tensor:
    dims = tuple(range(-len(module.normalized_shape), 0))
    centred = x - x.mean(dims, keepdim=True)
    y = centred * torch.rsqrt(centred.square().mean(dims, keepdim=True) + module.eps)
    if module.weight is not None:
        y = y * module.weight
    if module.bias is not None:
        y = y + module.bias
    return y


def _rms_norm(module: nn.RMSNorm, x: Tensor) -> Tensor:
    dims = tuple(range(-len(module.normalized_shape), 0))
    eps = torch.finfo(x.dtype).eps if module.eps is None else module.eps
    y = x * torch.rsqrt(x.square().mean(dims, keepdim=True) + eps)
    return y if module.weight is None else y * module.weight


def _prelu(module: nn.PReLU, x: Tensor) -> Tensor:
    a = module.weight
    if a.numel() > 1:
        shape = [1] * x.dim()
        shape[1 if x.dim() >= 2 else 0] = -1
        a = a.view(shape)
    return torch.where(x > 0, x, a * x)


_REPLACED: dict[type[nn.Module], Callable[..., Tensor]] = {
    nn.LayerNorm: _layer_norm,
    nn.RMSNorm: _rms_norm,
    nn.PReLU: _prelu,
    **dict.fromkeys(RECURRENT, recurrent),
}


@contextmanager
def composites(model: nn.Module) -> Iterator[None]:
    """Within the block, the modules of the module docstring compute their function from elementary operations."""
    swapped = {id(m): m for _, m in occurrences(model) if type(m) in _REPLACED and "forward" not in vars(m)}.values()
    for m in swapped:
        m.forward = lambda *args, m=m, **kwargs: _REPLACED[type(m)](m, *args, **kwargs)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for m in swapped:
            del m.forward
