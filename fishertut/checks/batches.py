"""Checks on each batch and on what the model makes of it.

They catch batches of the wrong type, device or dtype, non-finite inputs, inputs the model cannot take,
outputs of the wrong kind, probabilities where logits are expected, and models whose output for one input
depends on the other inputs of the batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..calls import Batch, describe, is_mapping, num_rows, take_rows
from ..errors import UnsupportedModelError
from ..families import Categorical, ExponentialFamily
from ..inspection import ends_in_softmax, first_layer
from .values import Checks

__all__ = [
    "PROBE_ROWS",
    "check_batch",
    "check_inputs",
    "run_forward",
    "check_output_kind",
    "check_independent_rows",
    "warn_if_probabilities",
]

PROBE_ROWS = 4


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


def check_inputs(
    x: object, device: torch.device, dtype: torch.dtype, checks: Checks, argument: str = "inputs"
) -> Batch:
    """Validate one batch: a tensor (:func:`check_batch`), or a mapping of such tensors.

    Raises:
        TypeError: an entry of a mapping is not a tensor, or a key is not a string.
        ValueError: the mapping is empty, or its tensors disagree on the batch size; an entry fails
            :func:`check_batch`.
    """
    if not is_mapping(x):
        return check_batch(x, device, dtype, checks, argument)
    if not x:
        raise ValueError(f"{argument} is an empty mapping; give the model's keyword arguments as tensors")
    for key, value in x.items():
        if not isinstance(key, str):
            raise TypeError(f"{argument} is a mapping whose keys must be forward's argument names, got {key!r}")
        if not isinstance(value, Tensor):
            raise TypeError(
                f"{argument}[{key!r}] must be a tensor with the batch axis first, got {type(value).__name__}; "
                "pass constant arguments through a wrapper module instead"
            )
        check_batch(value, device, dtype, checks, f"{argument}[{key!r}]")
    sizes = {k: v.shape[0] for k, v in x.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the tensors of {argument} must share the batch axis (dim 0), got batch sizes {sizes}")
    return x


def _expected_inputs(model: nn.Module, dtype: torch.dtype) -> str:
    found = first_layer(model)
    if found is None:
        return f"inputs that {type(model).__name__}.forward accepts"
    path, m = found
    if isinstance(m, nn.Linear):
        return f"floating inputs of dtype {dtype} whose rows have {m.in_features} features (first layer '{path}': {m})"
    if isinstance(m, nn.modules.conv._ConvNd):
        return f"inputs of dtype {dtype} shaped (N, {m.in_channels}, ...) (first layer '{path}': {m})"
    if isinstance(m, nn.Embedding):
        return f"integer indices below {m.num_embeddings} (first layer '{path}': {m})"
    return f"inputs that its first layer '{path}' ({type(m).__name__}) accepts"


def run_forward(
    forward: Callable[[Batch], tuple[Tensor, object]],
    x: Batch,
    model: nn.Module,
    dtype: torch.dtype,
    batch_shape: torch.Size | None = None,
    grad: bool = False,
) -> tuple[Tensor, object]:
    """``forward(x)`` (under ``no_grad`` unless ``grad``); an error from inside the model becomes a ``ValueError``.

    The message gives the shape of the user's batch (``batch_shape`` when ``x`` is a chunk of it, else ``x``'s
    own), the dtype, and what the model's first layer expects; the original error is chained.
    """
    if is_mapping(x):
        shape = None
    else:
        shape = tuple(x.shape if batch_shape is None else batch_shape)
    first = first_layer(model)
    if first is not None and isinstance(first[1], nn.Linear) and shape is not None and x.ndim < 2:
        raise ValueError(
            f"inputs must be shaped (N, features) with N the batch axis, got a {x.ndim}-D tensor of "
            f"shape {shape}; the model expects {_expected_inputs(model, dtype)}. "
            "For a single input use x.unsqueeze(0)"
        )
    try:
        with torch.set_grad_enabled(grad):
            return forward(x)
    except UnsupportedModelError:
        raise
    except (RuntimeError, TypeError, ValueError, IndexError) as err:
        what = f"of shape {shape} and dtype {x.dtype}" if shape is not None else describe(x)
        raise ValueError(
            f"inputs {what} could not go through the model, which expects {_expected_inputs(model, dtype)}: {err}"
        ) from err


def check_output_kind(h: object, rows: int, dtype: torch.dtype, family: ExponentialFamily, checks: Checks) -> None:
    """The output must be a single finite ``(N, C)`` tensor in the parameters' dtype (not a tuple, dict or upcast).

    The finiteness check goes through ``checks`` (see :class:`fishertut.checks.values.Checks`).
    """
    if not isinstance(h, Tensor):
        raise ValueError(
            f"{family!r}: the model must return one tensor of shape (N, C), got a {type(h).__name__} (an output "
            "with a 'logits' key or attribute is read as that tensor); wrap it so that forward returns the "
            "output fishertut should use"
        )
    family.check_output(h, checks)
    if h.shape[0] != rows:
        raise ValueError(
            f"the model output has {h.shape[0]} rows for a batch of {rows} inputs; it must map (N, ...) to (N, C)"
        )
    if h.dtype != dtype:
        raise ValueError(
            f"the model output has dtype {h.dtype} but its parameters have dtype {dtype}; "
            "the output must be computed in the parameters' dtype"
        )


def check_independent_rows(forward: Callable[[Batch], Tensor], x: Batch, h: Tensor) -> None:
    """Refuse a model whose output for one input depends on the other inputs of the batch.

    Compares the outputs ``h`` of the rows ``x`` computed together with each row computed alone by ``forward``,
    to a tolerance of the square root of the working precision (different batch sizes may round differently).

    Raises:
        UnsupportedModelError: a row differs, or a row cannot be computed alone (the model needs the batch).
    """
    rows = num_rows(x)
    if rows < 2:
        return
    reason = (
        "the model's output for an input depends on the other inputs of its batch (the first {rows} rows {what}); "
        "the Fisher information is defined per input: use eval mode and no batch statistics"
    )
    try:
        with torch.no_grad():
            alone = torch.cat([forward(take_rows(x, i, i + 1)) for i in range(rows)])
    except (RuntimeError, TypeError, ValueError, IndexError) as err:
        what = f"go through the model together, but one row alone fails: {type(err).__name__}: {err}"
        raise UnsupportedModelError(reason.format(rows=rows, what=what)) from err
    tol = torch.finfo(h.dtype).eps ** 0.5 * (1 + h.abs().max())
    if alone.shape != h.shape or not bool(((alone - h).abs() <= tol).all()):
        what = "give different outputs computed together and one by one"
        raise UnsupportedModelError(reason.format(rows=rows, what=what))


def warn_if_probabilities(
    model: nn.Module, h: Tensor | None, family: ExponentialFamily, looked: bool | None = None
) -> bool:
    """Warn if a categorical model seems to output probabilities (it ends in ``Softmax``, or rows sum to 1).

    ``looked``, if given, is what an earlier call found for the same model state (:mod:`fishertut.memo`), and
    ``h`` is not read. Returns whether the outputs looked like probabilities.
    """
    if not isinstance(family, Categorical):
        return False
    if looked is None:
        tol = torch.finfo(h.dtype).eps ** 0.5
        looks = bool((h >= 0).all()) and bool(((h.sum(1) - 1).abs() <= tol).all())
        looked = ends_in_softmax(model) or looks
    if looked:
        warnings.warn(
            "the model's outputs look like probabilities (it ends in Softmax, or its rows are non-negative "
            "and sum to 1); Categorical expects logits (unnormalised log-probabilities): remove the final "
            "Softmax",
            UserWarning,
            stacklevel=4,
        )
    return looked
