r"""Uses of a Fisher diagonal in language-model code: Fisher-weighted merging and saliency-based pruning.

Used by chapter :doc:`/book/language_model`.

* :func:`fisher_merge`: Matena & Raffel's merge, per parameter entry
  :math:`\theta = \sum_k F_k \theta_k / \sum_k F_k` (the plain average where every :math:`F_k` is equal);
* :func:`saliency`: optimal brain damage's :math:`F_i \theta_i^2`, the loss increase to second order when
  :math:`\theta_i` is set to zero;
* :func:`prune_lowest`: zero the given fraction of entries of lowest saliency;
* :func:`top_k_overlap`: the share of the ``k`` largest entries two scores have in common.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["fisher_merge", "saliency", "prune_lowest", "top_k_overlap"]

Params = Mapping[str, Tensor]


def fisher_merge(params: Sequence[Params], fishers: Sequence[Params], eps: float = 1e-12) -> dict[str, Tensor]:
    r"""Per entry :math:`\sum_k (F_k + \epsilon)\theta_k / \sum_k (F_k + \epsilon)` over the models ``k``.

    ``eps`` keeps entries where every Fisher is zero at the plain average.

    Args:
        params: one ``{name: tensor}`` per model, the same names and shapes.
        fishers: one Fisher diagonal per model, keyed and shaped like ``params``.
        eps: added to every Fisher entry.

    Returns:
        ``{name: merged tensor}``.
    """
    if len(params) != len(fishers) or not params:
        raise ValueError(f"params and fishers must be equally long and non-empty, got {len(params)} and {len(fishers)}")
    names = set(params[0])
    for k, (p, f) in enumerate(zip(params, fishers, strict=True)):
        if set(p) != names or set(f) != names:
            raise ValueError(f"model {k}'s params and fishers must have the names of model 0's params")
    merged = {}
    for name in params[0]:
        weights = [f[name] + eps for f in fishers]
        merged[name] = sum(w * p[name] for w, p in zip(weights, params, strict=True)) / sum(weights)
    return merged


def saliency(fisher: Params, params: Params) -> dict[str, Tensor]:
    r"""Optimal brain damage's saliency :math:`F_i \theta_i^2` per entry, keyed like ``params``."""
    return {name: fisher[name] * params[name].detach() ** 2 for name in params}


def prune_lowest(params: Params, scores: Params, fraction: float) -> dict[str, Tensor]:
    """``params`` with the ``fraction`` of entries of lowest score (over all tensors together) set to zero.

    Ties at the threshold are broken by position, so exactly ``round(fraction * total)`` entries are zeroed.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    flat = torch.cat([scores[name].reshape(-1) for name in params])
    drop = torch.zeros(flat.numel(), dtype=torch.bool)
    drop[torch.argsort(flat, stable=True)[: round(fraction * flat.numel())]] = True
    out, start = {}, 0
    for name, p in params.items():
        keep = ~drop[start : start + p.numel()].reshape(p.shape).to(p.device)
        out[name] = p.detach() * keep
        start += p.numel()
    return out


def top_k_overlap(a: Params, b: Params, k: int) -> float:
    """``|top_k(a) ∩ top_k(b)| / k`` over all entries of the two scores together (ties by position)."""
    fa = torch.cat([a[name].reshape(-1) for name in a])
    fb = torch.cat([b[name].reshape(-1) for name in a])
    if not 1 <= k <= fa.numel():
        raise ValueError(f"k must lie in [1, {fa.numel()}], got {k}")
    top_a = set(torch.argsort(fa, descending=True, stable=True)[:k].tolist())
    top_b = set(torch.argsort(fb, descending=True, stable=True)[:k].tolist())
    return len(top_a & top_b) / k
