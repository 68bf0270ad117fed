"""Iterating over ``inputs`` (a tensor or an iterable of batches) with optional labels.

See chapter :doc:`/book/practical_guide` (section "What it costs") for batching in use.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from torch import Tensor

__all__ = ["iterate_batches"]

_RANDOM_SAMPLERS = ("RandomSampler", "SubsetRandomSampler", "WeightedRandomSampler")


def _shuffles(inputs: object) -> str | None:
    """The name of a random sampler behind a ``DataLoader``-like ``inputs``, else ``None``."""
    for sampler in (getattr(inputs, "sampler", None), getattr(getattr(inputs, "batch_sampler", None), "sampler", None)):
        name = type(sampler).__name__
        if name in _RANDOM_SAMPLERS or (name == "DistributedSampler" and getattr(sampler, "shuffle", False)):
            return name
    return None


def iterate_batches(inputs: Tensor | Iterable, targets: Tensor | str | None) -> Iterator[tuple[object, object | None]]:
    """Yield the ``(x, y)`` batches of ``inputs``; ``y`` is ``None`` unless labels are asked for.

    Args:
        inputs: a tensor ``(N, ...)`` or a mapping of such tensors (keyword arguments of ``forward``), or an
            iterable of them or of ``(x, y)`` pairs (e.g. a ``DataLoader``).
        targets: ``None``; a tensor of labels aligned with the rows of ``inputs`` (in iteration order);
            ``"data"`` to take ``y`` from the ``(x, y)`` pairs; or, for mapping batches, the key of the labels
            (e.g. ``"labels"``), which is then not passed to ``forward`` (as
            :func:`~fishertut.checks.arguments.coerce_targets` leaves them).
    """
    key = targets if isinstance(targets, str) and targets != "data" else None
    if key is not None and isinstance(inputs, Tensor):
        raise ValueError(
            f"targets must be None, a tensor of labels, 'data', or for mapping inputs the key of the labels; "
            f"got {targets!r} with a tensor of inputs"
        )
    if isinstance(inputs, Mapping):
        source: Iterable = [inputs]
    elif isinstance(inputs, Tensor):
        if targets == "data":
            raise ValueError("targets='data' needs inputs that yield (x, y) pairs, but inputs is a tensor")
        source = [inputs]
    elif isinstance(inputs, tuple) and len(inputs) == 2 and all(isinstance(t, Tensor) for t in inputs):
        raise TypeError(
            "inputs is a bare tuple of two tensors, which reads as two batches; for one batch "
            "with labels pass [(x, y)] (and targets='data' to use y), for two batches a list [x1, x2]"
        )
    elif isinstance(inputs, Iterable) and not isinstance(inputs, (str, bytes)):
        source = inputs
        sampler = _shuffles(inputs)
        if isinstance(targets, Tensor) and sampler is not None:
            raise ValueError(
                f"targets is a tensor aligned with the rows of inputs in iteration order, but inputs "
                f"draws them with a {sampler} (shuffle=True): the labels would be paired with the "
                f"wrong rows; pass targets='data' with (x, y) batches, or shuffle=False"
            )
    else:
        raise TypeError(f"inputs must be a tensor or an iterable of batches, got {type(inputs).__name__}")
    offset = 0
    for batch in source:
        if isinstance(batch, Mapping):
            batch = _split_mapping(batch, key, targets)
        elif key is not None:
            raise ValueError(f"targets={key!r} names the labels' key in mapping batches, got a {type(batch).__name__}")
        if isinstance(batch, (tuple, list)):
            if len(batch) == 0:
                raise ValueError("inputs yielded an empty batch tuple")
            x, data_y = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            x, data_y = batch, None
        if targets == "data" and data_y is None:
            raise ValueError("targets='data' needs inputs that yield (x, y) pairs, got a batch without labels")
        n = _rows(x)
        if n is None:
            yield x, None
            continue
        if isinstance(targets, Tensor):
            y_all = targets[offset : offset + n]
            if y_all.shape[0] != n:
                raise ValueError(f"targets has {targets.shape[0]} rows but inputs has more than that")
        elif targets == "data" or key is not None:
            y_all = data_y
        else:
            y_all = None
        offset += n
        yield x, y_all
    if isinstance(targets, Tensor) and offset != targets.shape[0]:
        raise ValueError(f"targets has {targets.shape[0]} rows but inputs has {offset}")


def _split_mapping(batch: Mapping, key: str | None, targets: object) -> tuple[dict, object]:
    """A mapping batch as ``(x, y)``: ``y`` is the entry ``key`` (removed from ``x``), else ``None``."""
    if targets == "data":
        raise ValueError(
            "targets='data' needs (x, y) pairs, but inputs yields mappings: name the key of the labels "
            "instead, e.g. targets='labels'"
        )
    if key is None:
        return dict(batch), None
    if key not in batch:
        raise ValueError(f"targets={key!r} names no entry of the input batch, whose keys are {sorted(batch)}")
    return {k: v for k, v in batch.items() if k != key}, batch[key]


def _rows(x: object) -> int | None:
    """Rows of a tensor or of a mapping's first tensor, else ``None`` (left for the checks to report)."""
    if isinstance(x, Mapping):
        x = next(iter(x.values()), None)
    return x.shape[0] if isinstance(x, Tensor) and x.ndim > 0 else None
