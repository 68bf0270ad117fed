"""Guards against silent misuse, run on the first batch.

They catch inputs the model cannot take, outputs of the wrong kind, probabilities where logits are
expected, and models whose output for one input depends on the other inputs of the batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .errors import UnsupportedModelError
from .families import Categorical, ExponentialFamily
from .inspection import ends_in_softmax, first_layer
from .validation import Checks

__all__ = ["PROBE_ROWS", "run_forward", "check_output_kind", "check_independent_rows", "warn_if_probabilities"]

PROBE_ROWS = 4


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
    forward: Callable[[Tensor], tuple[Tensor, object]],
    x: Tensor,
    model: nn.Module,
    dtype: torch.dtype,
    batch_shape: torch.Size | None = None,
) -> tuple[Tensor, object]:
    """``forward(x)`` under ``no_grad``; an error from inside the model becomes a ``ValueError`` naming ``inputs``.

    The message gives the shape of the user's batch (``batch_shape`` when ``x`` is a chunk of it, else ``x``'s
    own), the dtype, and what the model's first layer expects; the original error is chained.
    """
    shape = tuple(x.shape if batch_shape is None else batch_shape)
    first = first_layer(model)
    if first is not None and isinstance(first[1], nn.Linear) and x.ndim < 2:
        raise ValueError(
            f"inputs must be shaped (N, features) with N the batch axis, got a {x.ndim}-D tensor of "
            f"shape {shape}; the model expects {_expected_inputs(model, dtype)}. "
            "For a single input use x.unsqueeze(0)"
        )
    try:
        with torch.no_grad():
            return forward(x)
    except UnsupportedModelError:
        raise
    except (RuntimeError, TypeError, ValueError, IndexError) as err:
        raise ValueError(
            f"inputs of shape {shape} and dtype {x.dtype} could not go through the model, "
            f"which expects {_expected_inputs(model, dtype)}: {err}"
        ) from err


def check_output_kind(h: object, rows: int, dtype: torch.dtype, family: ExponentialFamily, checks: Checks) -> None:
    """The output must be a single finite ``(N, C)`` tensor in the parameters' dtype (not a tuple, dict or upcast).

    The finiteness check goes through ``checks`` (see :class:`fishertut.validation.Checks`).
    """
    if not isinstance(h, Tensor):
        raise ValueError(
            f"{family!r}: the model must return one tensor of shape (N, C), got a {type(h).__name__}; "
            "wrap it so that forward returns the output fishertut should use"
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


def check_independent_rows(model: nn.Module, x: Tensor, h: Tensor) -> None:
    """Refuse a model whose output for one input depends on the other inputs of the batch.

    Compares the outputs ``h`` of the rows ``x`` computed together with each row computed alone, to a
    tolerance of the square root of the working precision (different batch sizes may round differently).

    Raises:
        UnsupportedModelError: a row differs.
    """
    if x.shape[0] < 2:
        return
    with torch.no_grad():
        parts = [model(x[i : i + 1]) for i in range(x.shape[0])]
    same_shape = all(p.shape == (1, *h.shape[1:]) for p in parts)
    alone = torch.cat(parts) if same_shape else h
    tol = torch.finfo(h.dtype).eps ** 0.5 * (1 + h.abs().max())
    if not same_shape or not bool(((alone - h).abs() <= tol).all()):
        raise UnsupportedModelError(
            f"the model's output for an input depends on the other inputs of its batch (the first {x.shape[0]} "
            "rows give different outputs computed together and one by one); the Fisher information is defined "
            "per input: use eval mode and no batch statistics"
        )


def warn_if_probabilities(model: nn.Module, h: Tensor, family: ExponentialFamily) -> None:
    """Warn if a categorical model seems to output probabilities (it ends in ``Softmax``, or rows sum to 1)."""
    if not isinstance(family, Categorical):
        return
    tol = torch.finfo(h.dtype).eps ** 0.5
    looks = bool((h >= 0).all()) and bool(((h.sum(1) - 1).abs() <= tol).all())
    if ends_in_softmax(model) or looks:
        warnings.warn(
            "the model's outputs look like probabilities (it ends in Softmax, or its rows are non-negative "
            "and sum to 1); Categorical expects logits (unnormalised log-probabilities): remove the final "
            "Softmax",
            UserWarning,
            stacklevel=4,
        )
