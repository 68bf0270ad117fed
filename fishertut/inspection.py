"""What a model does beyond its modules' plain forward: reuse, hooks, in-place operations, parametrizations.

The layer-wise engine derives a network's derivatives from its list of modules, so anything that changes
the computed function without showing in that list (a hook, a parametrization) or that makes two
parameters one (a shared ``Parameter``, a ``Linear`` used twice) sends the model to the generic engine.
The generic engine differentiates the model's actual forward and honours all of these, except backward
hooks, which change gradients but not the function (refused on every path), and in-place activations,
which ``torch.func`` cannot batch (switched off while it runs: an in-place activation computes the same
values as its out-of-place twin). A module that overrides the ``forward`` of the PyTorch layer it derives
from (:func:`overridden_base`) is not that layer for the fast paths, and reentrant checkpoints run their
function plainly while the engines work (:func:`plain_checkpoints`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch.utils.checkpoint as _checkpoint
from torch import nn
from torch.nn.modules import module as _module_globals
from torch.nn.utils import parametrize

__all__ = [
    "occurrences",
    "overridden_base",
    "override_reason",
    "hook_reason",
    "backward_hook_reason",
    "parametrization_reason",
    "shared_parameter_reason",
    "inplace_disabled",
    "plain_checkpoints",
    "first_layer",
    "ends_in_softmax",
]

_FORWARD_HOOKS = ("_forward_pre_hooks", "_forward_hooks")
_BACKWARD_HOOKS = ("_backward_pre_hooks", "_backward_hooks")
_GLOBAL_FORWARD = ("_global_forward_pre_hooks", "_global_forward_hooks")
_GLOBAL_BACKWARD = ("_global_backward_pre_hooks", "_global_backward_hooks")


def occurrences(model: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """Every ``(path, module)`` below ``model`` (itself first), a module used ``k`` times appearing ``k`` times.

    ``named_modules()`` lists a reused module once; ``nn.Sequential.forward`` runs every entry.
    """
    yield prefix.rstrip(".") or "", model
    for name, child in model._modules.items():
        if child is not None:
            yield from occurrences(child, f"{prefix}{name}.")


_CONTAINERS = (nn.Module, nn.Sequential, nn.ModuleList, nn.ModuleDict)
# what a layer computes: a subclass overriding one of these computes something else than its base
_COMPUTING = ("forward", "_conv_forward")


def overridden_base(module: nn.Module) -> type[nn.Module] | None:
    """The PyTorch layer class whose computation ``module`` changes, or ``None`` for a stock module.

    The base is the nearest class of ``torch.nn`` in the module's ancestry; ``module`` changes it when its own
    class (a user's subclass, or one of PyTorch's elsewhere, such as ``torch.ao.nn.qat.Linear`` with its
    fake-quantised weight) or the instance itself replaces ``forward`` or ``_conv_forward``. Containers
    (``nn.Module``, ``nn.Sequential``, ...) are never bases: their forward is the model's own code.
    """
    base = next((c for c in type(module).__mro__ if c.__module__.startswith("torch.nn.")), nn.Module)
    if base in _CONTAINERS:
        return None
    if "forward" in vars(module) or any(
        getattr(type(module), a, None) is not getattr(base, a, None) for a in _COMPUTING
    ):
        return base
    return None


def override_reason(path: str | None, module: nn.Module, engine: str) -> str | None:
    """A message if ``module`` (at ``path``, if given) overrides the computation of its PyTorch base.

    See :func:`overridden_base`; ``engine`` names the path that refuses it.
    """
    base = overridden_base(module)
    if base is None:
        return None
    cls = type(module)
    name = cls.__name__ if cls.__name__ != base.__name__ else f"{cls.__module__}.{cls.__qualname__}"
    where = f"module '{path}' ({name})" if path is not None else name
    return (
        f"{where} overrides the forward of torch.nn.{base.__name__}, which the {engine} path does not model "
        "(it takes only the stock layer)"
    )


def _label(path: str, module: nn.Module) -> str:
    return f"module '{path}' ({type(module).__name__})" if path else f"the model ({type(module).__name__})"


def _hooked(model: nn.Module, local: tuple[str, ...], global_: tuple[str, ...], kind: str) -> str | None:
    if any(getattr(_module_globals, g, None) for g in global_):
        return f"global module {kind} hooks are registered (torch.nn.modules.module.register_module_{kind}_hook)"
    for path, m in occurrences(model):
        if any(getattr(m, h, None) for h in local):
            return f"{_label(path, m)} has {kind} hooks"
    return None


def hook_reason(model: nn.Module) -> str | None:
    """A message if any forward or pre-forward hook (on a module of ``model``, or global) would run."""
    return _hooked(model, _FORWARD_HOOKS, _GLOBAL_FORWARD, "forward")


def backward_hook_reason(model: nn.Module) -> str | None:
    """A message if a backward hook would run: it alters gradients, not the function whose Fisher is asked."""
    reason = _hooked(model, _BACKWARD_HOOKS, _GLOBAL_BACKWARD, "backward")
    if reason is None:
        return None
    return (
        f"{reason}: a backward hook changes gradients but not the model's function, so the Fisher "
        "information it implies is undefined; remove it (e.g. handle.remove()) before calling fishertut"
    )


def parametrization_reason(model: nn.Module) -> str | None:
    """A message if a module of ``model`` has a ``torch.nn.utils.parametrize`` parametrization."""
    for path, m in occurrences(model):
        if parametrize.is_parametrized(m):
            names = ", ".join(m.parametrizations.keys())
            return f"{_label(path, m)} has a parametrization of its tensors ({names})"
    return None


def shared_parameter_reason(model: nn.Module) -> str | None:
    """A message if one ``Parameter`` appears under two names (tied weights or a module used twice)."""
    seen: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            return (
                f"parameter '{seen[id(p)]}' is also used as '{name}' (shared by several modules: a shared "
                "Parameter or a module used twice)"
            )
        seen[id(p)] = name
    return None


@contextmanager
def inplace_disabled(model: nn.Module) -> Iterator[None]:
    """Within the block, every module with ``inplace=True`` computes out of place (the same values)."""
    switched = [m for _, m in occurrences(model) if getattr(m, "inplace", False) is True]
    for m in switched:
        m.inplace = False
    try:
        yield
    finally:
        for m in switched:
            m.inplace = True


class _PlainCheckpoint:
    """Stands in for ``torch.utils.checkpoint.CheckpointFunction``: runs the function plainly (same values)."""

    @staticmethod
    def apply(function: Callable[..., object], preserve_rng_state: bool, *args: object) -> object:
        return function(*args)


@contextmanager
def plain_checkpoints() -> Iterator[None]:
    """Within the block, reentrant checkpoints (``checkpoint(fn, x, use_reentrant=True)``) run ``fn(x)`` plainly.

    A reentrant checkpoint runs ``fn`` under ``no_grad`` and hides it from autograd when no input of ``fn``
    needs a gradient (its parameters would get ``None``), and ``torch.func`` cannot transform it. Run plainly,
    ``fn`` computes the same values, and every engine differentiates it exactly; only the memory it was meant
    to save is spent.
    """
    original = _checkpoint.CheckpointFunction
    _checkpoint.CheckpointFunction = _PlainCheckpoint
    try:
        yield
    finally:
        _checkpoint.CheckpointFunction = original


def _leaf_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for path, m in occurrences(model):
        if not m._modules:
            yield path, m


def first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The first leaf of an ``nn.Sequential`` other than ``Flatten``, ``Identity`` or ``Dropout``, else ``None``."""
    if type(model) is not nn.Sequential:
        return None
    for path, m in _leaf_modules(model):
        if not isinstance(m, (nn.Flatten, nn.Identity, nn.modules.dropout._DropoutNd)):
            return path, m
    return None


def ends_in_softmax(model: nn.Module) -> bool:
    """Whether the last leaf module of an ``nn.Sequential`` is ``nn.Softmax`` (its outputs are probabilities)."""
    if type(model) is not nn.Sequential:
        return False
    leaves = list(_leaf_modules(model))
    return bool(leaves) and isinstance(leaves[-1][1], (nn.Softmax, nn.Softmax2d))
