"""Checks on the model: one device and dtype, finite parameters, eval mode, every used parameter reachable.

See chapter :doc:`/book/estimators` (section "What each costs") for the models each engine accepts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import _SpectralNorm
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..errors import UnsupportedModelError

__all__ = ["check_model", "unreached_parameters"]


_STOCHASTIC_IN_TRAINING = (
    nn.modules.dropout._DropoutNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
)
# in training mode, each call moves the power iteration of spectral_norm, and with it the function
_STATEFUL_IN_TRAINING = (_SpectralNorm,)


def check_model(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Validate ``model`` and return the device and dtype its trainable parameters share.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: no trainable parameters; parameters on several devices, on the meta device or of several
            dtypes; a non-finite parameter; a dropout, batch-norm or spectral-norm module in training mode (its
            output would be random, batch-dependent or moving, so the Fisher of the eval-mode network would be
            silently wrong).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (none with requires_grad=True)")
    devices = {p.device for _, p in params}
    dtypes = {p.dtype for _, p in params}
    if len(devices) > 1:
        raise ValueError(
            f"model parameters are on several devices {sorted(map(str, devices))}; move the model to one device"
        )
    if len(dtypes) > 1:
        raise ValueError(f"model parameters have several dtypes {sorted(map(str, dtypes))}; use one floating dtype")
    dtype = dtypes.pop()
    if next(iter(devices)).type == "meta":
        raise ValueError(
            "model parameters are on the meta device, which holds shapes but no values; materialise "
            "them first (e.g. model.to_empty(device='cpu') and load_state_dict)"
        )
    if not dtype.is_floating_point:
        raise ValueError(f"model parameters must be floating point, got {dtype}")
    for name, p in params:
        if not torch.isfinite(p).all():
            raise ValueError(f"model parameter '{name}' contains NaN or Inf")
    for name, m in model.named_modules():
        if m.training and isinstance(m, _STOCHASTIC_IN_TRAINING):
            raise ValueError(
                f"module '{name or type(model).__name__}' ({type(m).__name__}) is in training mode, "
                "so the network is random or batch-dependent; call model.eval() first"
            )
        if m.training and isinstance(m, nn.RNNBase) and m.dropout > 0 and m.num_layers > 1:
            raise ValueError(
                f"module '{name or type(model).__name__}' ({type(m).__name__}) has dropout={m.dropout} in training "
                "mode, so the network is random; call model.eval() first"
            )
        if m.training and isinstance(m, _STATEFUL_IN_TRAINING):
            raise ValueError(
                f"module '{name}' ({type(m).__name__}) is in training mode, so every call updates its "
                "state and changes the function; call model.eval() first"
            )
    return devices.pop(), dtype


class _Reads(TorchDispatchMode):
    """Records the storage of every tensor an operation reads (below autograd, so ``no_grad`` hides nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.storages: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for t in tree_leaves((args, kwargs or {})):
            if isinstance(t, Tensor):
                self.storages.add(t.untyped_storage().data_ptr())
        return func(*args, **(kwargs or {}))


def unreached_parameters(h: Tensor, params: dict[str, Tensor], rerun: Callable[[], object]) -> frozenset[str]:
    """The trainable parameters the forward does not use; refuse one it uses but autograd does not reach.

    Autograd reports a parameter as unreached (``None`` gradient of the sum of the outputs ``h``, computed with
    gradients enabled) when no path of the autograd graph leads to it. Then the forward runs once more
    (``rerun``) while every operation's operands are recorded: a parameter none of them reads is unused, its
    Fisher information is exactly 0 and it is returned; one that is read but not reached (a ``detach``,
    ``torch.no_grad`` or ``.data`` inside ``forward``) would read as a silent 0, so it is refused.

    Raises:
        UnsupportedModelError: a parameter is read by the forward but not reached by autograd.
    """
    names, tensors = list(params), list(params.values())
    grads = torch.autograd.grad(h.sum(), tensors, allow_unused=True) if h.requires_grad else [None] * len(tensors)
    missing = [(n, p) for n, p, g in zip(names, tensors, grads) if g is None]
    if not missing:
        return frozenset()
    reads = _Reads()
    with torch.no_grad(), reads:
        rerun()
    for name, p in missing:
        if p.numel() and p.untyped_storage().data_ptr() in reads.storages:
            raise UnsupportedModelError(
                f"parameter '{name}' is used by the model's forward, but autograd does not reach it from the "
                "output (a .detach(), torch.no_grad() or .data inside forward, or a custom checkpoint that "
                "hides it), so its Fisher information would read as a silent 0; differentiate through it "
                "(torch.utils.checkpoint with use_reentrant=False), or freeze it with requires_grad=False"
            )
    return frozenset(n for n, _ in missing)
