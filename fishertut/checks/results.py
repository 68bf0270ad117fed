"""The one check on every result: nothing non-finite is returned (each result class calls it when built)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["require_finite"]


def require_finite(fields: dict[str, dict[str, Tensor]]) -> None:
    """Refuse a result that holds NaN or infinity, naming the statistic, the parameter and the first bad entry.

    Every result class calls it on construction, so no entry point returns a non-finite number: the values are
    formed in the model's dtype (float64 for the sums of some statistics), and a product of derivatives can
    overflow it although every output is finite (logits near the float range, say).

    Args:
        fields: ``{statistic: {parameter name: tensor}}``.

    Raises:
        ValueError: some entry is not finite.
    """
    flat = [(stat, name, t) for stat, values in fields.items() for name, t in values.items() if t.is_floating_point()]
    if not flat:
        return
    ok = torch.stack([torch.isfinite(t).all() for _, _, t in flat]).cpu()
    for (stat, name, t), good in zip(flat, ok.tolist()):
        if good:
            continue
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        value = t[tuple(bad)].item() if bad else t.item()
        finite = t[torch.isfinite(t)]
        largest = f"{finite.abs().max().item():.3g}" if finite.numel() else "none"
        raise ValueError(
            f"the {stat} of parameter '{name}' overflowed {t.dtype}: entry {tuple(bad)} is {value} (largest "
            f"finite magnitude among its entries: {largest}), although the model's outputs are finite; its "
            "derivatives, squared (or raised to the fourth power for the variances), leave the float range. "
            "Rescale the model's outputs or weights, or run it in float64"
        )
