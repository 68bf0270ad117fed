r"""Calling the model: a tensor or a mapping of tensors as inputs, and the logits read from what it returns.

Hugging Face-style models take a dict of batched tensors (``input_ids``, ``attention_mask``, ...) as
keyword arguments and return an output object with a ``logits`` field. Every entry point accepts both:

* inputs: a tensor ``(N, ...)``, or a mapping of tensors sharing the batch axis (passed to ``forward`` by
  keyword); a tensor goes by keyword too where ``forward`` takes a single keyword-only argument;
* outputs: a tensor, or anything with a ``logits`` key or attribute, whose ``logits`` are read.

With a mapping, ``mask="attention_mask"`` (on every entry point that takes ``mask``) reads the mask of positions
from that entry (:func:`mask_entry`); the entry still goes to ``forward``.

The helpers here treat the two kinds of inputs alike (rows, slices, concatenation), so the passes, the
checks and the generic engine never branch on them; :func:`fishertut.checks.batches.check_inputs` validates
a mapping.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = [
    "Batch",
    "is_mapping",
    "num_rows",
    "take_rows",
    "index_rows",
    "cat_rows",
    "split_rows",
    "map_tensors",
    "call",
    "call_args",
    "logits",
    "describe",
    "mask_entry",
]

Batch = Tensor | Mapping


def is_mapping(x: object) -> bool:
    """Whether ``x`` is a mapping (of tensors, once :func:`check_inputs` has passed)."""
    return isinstance(x, Mapping)


def num_rows(x: Batch) -> int:
    """The batch size ``N``: the first axis of the tensor, or of every tensor of the mapping."""
    return next(iter(x.values())).shape[0] if is_mapping(x) else x.shape[0]


def map_tensors(x: Batch, f) -> Batch:
    """``f`` applied to the tensor, or to every tensor of the mapping (a plain ``dict`` out)."""
    return {k: f(v) for k, v in x.items()} if is_mapping(x) else f(x)


def take_rows(x: Batch, start: int, stop: int) -> Batch:
    """Rows ``start:stop``."""
    return map_tensors(x, lambda t: t[start:stop])


def index_rows(x: Batch, index: Tensor) -> Batch:
    """Rows ``index`` (an integer tensor on the inputs' device)."""
    return map_tensors(x, lambda t: t[index.to(t.device)])


def cat_rows(parts: list[Batch]) -> Batch:
    """The rows of ``parts`` one after the other."""
    if is_mapping(parts[0]):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


def split_rows(x: Batch, size: int) -> list[Batch]:
    """Consecutive chunks of at most ``size`` rows."""
    n = num_rows(x)
    return [take_rows(x, s, s + size) for s in range(0, n, size)]


def _keyword_only(model: nn.Module) -> str | None:
    """The name of ``forward``'s one required keyword-only argument, if it takes no positional one."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = inspect.Parameter
    positional = [
        p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD, kinds.VAR_POSITIONAL)
    ]
    required = [p.name for p in params if p.kind == kinds.KEYWORD_ONLY and p.default is kinds.empty]
    return required[0] if not positional and len(required) == 1 else None


def call_args(model: nn.Module, x: Batch) -> tuple[tuple, dict]:
    """``(args, kwargs)`` that pass ``x`` to ``model``: a mapping by keyword, a tensor positionally if it can."""
    if is_mapping(x):
        return (), dict(x)
    name = _keyword_only(model)
    return ((), {name: x}) if name is not None else ((x,), {})


def logits(out: object) -> object:
    """The tensor to use of a model's output: ``out`` itself, or its ``logits`` key or attribute."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping) and "logits" in out:
        return out["logits"]
    value = getattr(out, "logits", None)
    return value if isinstance(value, Tensor) else out


def call(model: nn.Module, x: Batch) -> object:
    """``model`` on ``x`` (a tensor or a mapping), its logits read from the output (module docstring)."""
    args, kwargs = call_args(model, x)
    return logits(model(*args, **kwargs))


def describe(x: Batch) -> str:
    """``shape (N, ...) and dtype ...`` of a tensor, or the shapes and dtypes of a mapping's entries."""
    if is_mapping(x):
        return "{" + ", ".join(f"{k!r}: {tuple(v.shape)} {v.dtype}" for k, v in x.items()) + "}"
    return f"of shape {tuple(x.shape)} and dtype {x.dtype}"


def mask_entry(x: Batch, key: str) -> Tensor:
    """The boolean mask ``(N, ...)`` held in the entry ``key`` of a mapping of inputs (``mask="attention_mask"``).

    The entry is a boolean tensor or an integer one of 0s and 1s (a Hugging Face ``attention_mask``); ``True``
    (1) marks a position that counts.

    Raises:
        ValueError: ``x`` is not a mapping, ``key`` is not one of its keys, or the entry is neither boolean nor
            integers 0 and 1.
    """
    if not is_mapping(x):
        raise ValueError(
            f"mask={key!r} names an entry of a mapping of inputs, but the inputs are a {type(x).__name__}; pass "
            f"mask as a boolean tensor (N, T), or the inputs as a mapping that holds {key!r}"
        )
    if key not in x:
        raise ValueError(
            f"mask={key!r} is not a key of the inputs (keys: {', '.join(map(repr, x))}); name the entry that "
            "holds the mask, e.g. mask='attention_mask', or pass mask as a boolean tensor (N, T)"
        )
    m = x[key]
    if m.dtype == torch.bool:
        return m
    if m.is_floating_point() or m.is_complex() or not bool(((m == 0) | (m == 1)).all()):
        raise ValueError(
            f"mask={key!r}: inputs[{key!r}] must be boolean or integers 0 and 1 (1 where a position counts), "
            f"got dtype {m.dtype}" + ("" if m.is_floating_point() or m.is_complex() else " with other values")
        )
    return m.bool()
