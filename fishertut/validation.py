"""Checks on the model and its inputs, each raising an error that names the argument or module at fault.

See chapter "The two estimators" (section "What each costs") for the models each engine accepts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import _SpectralNorm

__all__ = ["check_model", "check_batch", "check_generator", "Checks"]


class Checks:
    """Value checks on tensors that may live on an accelerator.

    Eager checks read the flag at once (one device-to-host copy each). Once :meth:`defer` has been called,
    later flags are only collected on the device and read together by :meth:`flush`, so the streaming loops
    make no host-device round trip per batch; a failure is still raised, at the end of the pass.
    """

    def __init__(self) -> None:
        self.eager = True
        self.pending: list[tuple[Tensor, Callable[[], str]]] = []

    def require(self, ok: Tensor, message: Callable[[], str]) -> None:
        """Raise ``ValueError(message())`` unless the 0-d boolean tensor ``ok`` is true (now or at :meth:`flush`)."""
        if self.eager:
            if not bool(ok):
                raise ValueError(message())
        else:
            self.pending.append((ok, message))

    def defer(self) -> None:
        """Collect the flags of later checks instead of reading them one by one."""
        self.eager = False

    def flush(self) -> None:
        """Read the collected flags (one transfer) and raise for the first failed check."""
        if not self.pending:
            return
        flags = torch.stack([ok for ok, _ in self.pending]).cpu()
        failed = [msg for (_, msg), ok in zip(self.pending, flags.tolist()) if not ok]
        self.pending.clear()
        if failed:
            raise ValueError(failed[0]())


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


def check_batch(
    x: object, device: torch.device, dtype: torch.dtype, checks: Checks, argument: str = "inputs"
) -> Tensor:
    """Validate one batch of inputs against the model's device and dtype (values through ``checks``)."""
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{argument} must be a tensor or an iterable of tensors or (x, y) pairs, "
            f"got a batch of type {type(x).__name__}"
        )
    if x.ndim == 0:
        raise ValueError(f"{argument} must have a batch dimension, got a 0-d tensor")
    if x.device != device:
        raise ValueError(f"{argument} are on {x.device} but the model parameters are on {device}")
    if x.is_floating_point():
        if x.dtype != dtype:
            raise ValueError(f"{argument} have dtype {x.dtype} but the model parameters have dtype {dtype}")
        checks.require(torch.isfinite(x).all(), lambda: f"{argument} contain NaN or Inf")
    return x


def check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    """The generator must be a ``torch.Generator`` on the model's device."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but the model is on {device}")
