"""Coercion of the plain arguments of the public functions: counts, and labels given as lists or arrays."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

__all__ = ["check_count", "coerce_targets"]


def check_count(value: object, argument: str) -> int:
    """``value`` as a positive ``int``: Python and numpy integers and 0-d integer tensors qualify.

    Raises:
        ValueError: ``value`` is not an integer (booleans and floats included), or is below 1.
    """
    if isinstance(value, Tensor) and value.ndim == 0 and not value.dtype.is_floating_point \
            and not value.dtype.is_complex and value.dtype != torch.bool:
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{argument} must be a positive integer, got {value!r}")
    return int(value)


def coerce_targets(targets: object, device: torch.device, dtype: torch.dtype) -> Tensor | str | None:
    """``targets`` as the public functions take it: ``None``, ``"data"``, or a tensor.

    A list, tuple or numpy array becomes a tensor on the model's ``device``; floating values take the
    model's ``dtype`` (Gaussian targets), integers stay integers (class indices).

    Raises:
        TypeError: ``targets`` is of another type, or a sequence that is not numeric.
    """
    if targets is None or isinstance(targets, (str, Tensor)):
        return targets
    if isinstance(targets, (list, tuple)) or type(targets).__module__ == "numpy":
        try:
            out = torch.as_tensor(targets, device=device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"targets must be a tensor, or a list or numpy array of numbers; could not convert "
                            f"the {type(targets).__name__} given: {err}") from err
        return out.to(dtype) if out.dtype.is_floating_point else out
    raise TypeError(f"targets must be None, 'data', a tensor, or a list or numpy array of labels, "
                    f"got {type(targets).__name__}")
