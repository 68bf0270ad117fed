r"""The per-unit terms both engines produce, and the collectors that reduce them to per-parameter sums.

For a Linear layer :math:`z = W a + b` (chapter :doc:`/book/estimators`) every weight factors into a *unit* quantity
times a
power of its input activation: :math:`v_{W[j,k]} = J[:,j]\,a_k` and :math:`u_{W[j,k]} = G[:,j]\,a_k^2`, and
for the bias :math:`v_{b[j]} = J[:,j]`, :math:`u_{b[j]} = G[:,j]`. Here :math:`J = \partial (R h)/\partial z` for a
set of output-space *channels* :math:`R` and :math:`G` the diagonal of :math:`\partial^2 (R_2 h)/\partial z^2`.
Any statistic that is homogeneous of degree ``p`` in the derivative vector (degree 2: the FIM, Î1, Î2; degree
4: the variances and bounds) is therefore a unit statistic :math:`s_{n j}` times :math:`a_{n k}^p`, and its
sum over inputs is one matrix product :math:`s^\top a^{\odot p}`. The generic engine treats each parameter
entry as its own unit with :math:`a \equiv 1`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["UnitTerms", "SumCollector", "PerInputCollector"]


@dataclass
class UnitTerms:
    r"""Derivative terms of one group of units for a batch of ``N`` inputs.

    Attributes:
        jac: ``(N, K, n)`` first derivatives of the ``K`` channels :math:`r_k^\top h` w.r.t. the units.
        curv: ``(N, K2, n)`` diagonal second derivatives of the curvature channels, or ``None``.
        targets: ``(parameter name, activations a (N, m) or None)``: a weight gets ``a``, a bias or a
            generic parameter ``None`` (its statistic is the unit statistic itself).
        curv_zero: ``curv`` is known to be exactly zero (piecewise-linear parameters), so statistics of it
            need not be computed.
    """

    jac: Tensor
    curv: Tensor | None
    targets: list[tuple[str, Tensor | None]]
    curv_zero: bool = False
    _powers: dict[tuple[int, int], Tensor] = field(default_factory=dict, repr=False)

    def activation_power(self, index: int, power: int) -> Tensor | None:
        r""":math:`a^{\odot p}` of target ``index`` (cached), or ``None`` for a target without activations."""
        a = self.targets[index][1]
        if a is None:
            return None
        key = (index, power)
        if key not in self._powers:
            self._powers[key] = a.pow(power)
        return self._powers[key]


class SumCollector:
    r"""Accumulates :math:`\sum_n s_{nj} a_{nk}^p` per (statistic, parameter) in float64.

    Args:
        float64_stats: statistics whose products are formed in float64 even for a float32 model, because a
            later difference cancels their leading digits (``var_x = E[I^2] - E[I]^2``).
    """

    def __init__(self, float64_stats: frozenset[str] = frozenset()) -> None:
        self.sums: dict[tuple[str, str], Tensor] = {}
        self.float64_stats = float64_stats

    def add(self, stats: list[tuple[str, Tensor, int]], terms: UnitTerms) -> None:
        r"""Add unit statistics ``(name, values (N, n), degree p)`` for every target of ``terms``.

        Statistics of the same degree (and precision) share one matrix product :math:`[s_1 \dots s_k]^\top a^{\odot p}`.
        """
        groups: dict[tuple[int, bool], list[tuple[str, Tensor]]] = {}
        for stat, values, power in stats:
            groups.setdefault((power, stat in self.float64_stats), []).append((stat, values))
        for (power, wide), group in groups.items():
            stacked = group[0][1] if len(group) == 1 else torch.cat([v for _, v in group], 1)
            if wide:
                stacked = stacked.to(torch.float64)
            for index, (name, _) in enumerate(terms.targets):
                ap = terms.activation_power(index, power)
                if ap is not None and wide:
                    ap = ap.to(torch.float64)
                part = (stacked.sum(0) if ap is None else stacked.transpose(0, 1) @ ap).to(torch.float64)
                pieces = (part,) if len(group) == 1 else part.split(part.shape[0] // len(group))
                for (stat, _), piece in zip(group, pieces):
                    key = (stat, name)
                    self.sums[key] = self.sums[key] + piece if key in self.sums else piece

    def flat(self) -> tuple[list[tuple[str, str]], Tensor]:
        """Keys in a deterministic order and the sums concatenated (for an all-reduce)."""
        keys = sorted(self.sums)
        return keys, torch.cat([self.sums[k].reshape(-1) for k in keys])

    def load_flat(self, keys: list[tuple[str, str]], flat: Tensor) -> None:
        """Inverse of :meth:`flat`."""
        offset = 0
        for k in keys:
            n = self.sums[k].numel()
            self.sums[k] = flat[offset : offset + n].view_as(self.sums[k])
            offset += n


class PerInputCollector:
    r"""Keeps every input's statistic: :math:`s_{n\cdot j} a_{nk}^p`, shaped ``(N, ..., n, m)`` per parameter."""

    def __init__(self) -> None:
        self.parts: dict[tuple[str, str], list[Tensor]] = {}

    def add(self, stats: list[tuple[str, Tensor, int]], terms: UnitTerms) -> None:
        """Store unit statistics ``(name, values (N, ..., n), degree p)`` expanded over each target's activations."""
        for stat, values, power in stats:
            for index, (name, _) in enumerate(terms.targets):
                ap = terms.activation_power(index, power)
                if ap is None:
                    part = values
                else:
                    extra = values.ndim - 2
                    part = values.unsqueeze(-1) * ap.reshape(ap.shape[0], *([1] * (extra + 1)), ap.shape[1])
                self.parts.setdefault((stat, name), []).append(part)

    def result(self) -> dict[tuple[str, str], Tensor]:
        """Concatenate the batches along the input axis."""
        return {k: torch.cat(v, 0) for k, v in self.parts.items()}
