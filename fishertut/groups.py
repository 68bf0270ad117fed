"""Parameter groups: the one rule that groups a network's parameters by layer, and flattening a group.

Per-parameter results (:class:`~fishertut.FisherDiagonal`, :class:`~fishertut.VarianceReport`, ...) are dicts
``{parameter name: tensor}``. Tables and recommendations look at them one group of parameters at a time:

* :func:`layer_groups`: the parameters of each module, in order, as ``{"layer 1": ["0.weight", "0.bias"], ...}``;
* :func:`flatten`: the values of a group as one tensor ``(*leading, P_group)``.

See chapter :doc:`/book/practical_guide` (per-layer tables) and :mod:`fishertut.pooling`, which pools a report
per group.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["Groups", "layer_groups", "flatten"]

#: ``{group name: [parameter names]}``.
Groups = Mapping[str, Sequence[str]]


def layer_groups(source: nn.Module | Iterable[str]) -> dict[str, list[str]]:
    """Parameter names grouped by the module that owns them, numbered in order.

    ``"0.weight"`` and ``"0.bias"`` belong to module ``"0"``; a name without a dot is its own module. Groups are
    named ``"layer 1"``, ``"layer 2"``, ... in the order their first parameter appears.

    Args:
        source: a model (its trainable parameters) or parameter names (e.g. the keys of a report's ``fisher``).

    Returns:
        ``{"layer 1": ["0.weight", "0.bias"], ...}``.
    """
    if isinstance(source, nn.Module):
        names: Iterable[str] = [n for n, p in source.named_parameters() if p.requires_grad]
    elif isinstance(source, str):
        raise TypeError(f"source must be a model or an iterable of parameter names, got the string {source!r}")
    else:
        names = source
    modules: dict[str, list[str]] = {}
    for name in names:
        modules.setdefault(name.rsplit(".", 1)[0] if "." in name else name, []).append(name)
    return {f"layer {i + 1}": group for i, group in enumerate(modules.values())}


def flatten(values: Mapping[str, Tensor], names: Sequence[str] | None = None, leading: int = 0) -> Tensor:
    """Concatenate the parameters ``names`` of a per-parameter dict into one detached float64 CPU tensor.

    Args:
        values: ``{name: tensor}`` with ``leading`` batch dimensions before the parameter's shape, e.g.
            ``leading=0`` for a report (``(*shape)``), ``1`` for per-input statistics (``(N, *shape)``),
            ``2`` for estimator terms (``(N, S, *shape)``).
        names: the parameters of the group, in order; default all of ``values``.
        leading: number of leading dimensions kept.

    Returns:
        ``(*leading dims, P_group)``.
    """
    names = list(values) if names is None else names
    if not names:
        raise ValueError("names must list at least one parameter")
    missing = [n for n in names if n not in values]
    if missing:
        raise KeyError(f"parameters {missing} are not among {sorted(values)}")
    parts = [values[n].detach().to(device="cpu", dtype=torch.float64) for n in names]
    return torch.cat([p.reshape(*p.shape[:leading], -1) for p in parts], dim=leading)
