r"""The plan of :func:`~fishertut.estimate`: per parameter tensor, the estimator, minibatch and draws of least cost.

The rule (relative variance per draw, Chebyshev's or the normal approximation's draws, the cost model) is
stated in :mod:`fishertut.precision`, which runs the plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from torch import Tensor

from .variances import same_minibatch_pairs

__all__ = ["PlanEntry", "CALL_OVERHEAD", "PER_INPUT_COST", "MIN_TERMS", "planned_draws", "plan_tensor"]

MIN_TERMS = 30
CALL_OVERHEAD = 32.0
PER_INPUT_COST = 2.0


@dataclass(frozen=True)
class PlanEntry:
    """The plan for one parameter tensor.

    Attributes:
        estimator: ``"exact"``, ``"i1"`` (GNB when ``minibatch > 1``) or ``"hutchinson"``.
        minibatch: inputs summed before squaring.
        samples_per_input: draws of labels (or signs) per input or minibatch.
        cost: backward passes over the inputs (module docstring).
        predicted_rtol: the largest relative error over the tensor's parameters reached with probability
            ``1 - delta`` (the rule of the module docstring, pilot values); 0 for ``"exact"``.
        zero_information: parameters with zero Fisher information on the pilot (left out of the plan).
        chebyshev_samples: the draws Chebyshev's rule would take for the same target (``samples_per_input``
            when it is the rule used): ``chebyshev_samples - samples_per_input`` draws are saved.
    """

    estimator: str
    minibatch: int
    samples_per_input: int
    cost: float
    predicted_rtol: float
    zero_information: int
    chebyshev_samples: int = 1


def _relative_variance(fisher: Tensor, var_x: Tensor, cond: Tensor, n: int, minibatch: int) -> Tensor:
    pair_mean = fisher.square() - (var_x / (n - 1) if n > 1 else 0)
    var = (n * cond + 2 * same_minibatch_pairs(n, minibatch) * pair_mean) / (n * n)
    return var.clamp_min(0) / fisher.square()


def planned_draws(
    rho: float, rtol: float, delta: float, groups: int, max_samples: int, rule: str = "chebyshev"
) -> tuple[int, int, float]:
    r"""Draws for relative variance per draw ``rho`` (module docstring): ``(S, S_Chebyshev, relative error reached)``.

    Args:
        rho: :math:`\max_i\rho_i`, the largest relative variance of one draw's estimate over the tensor.
        rtol: the target relative error.
        delta: the allowed probability of missing it.
        groups: terms per draw, :math:`\lceil N/B\rceil` (minibatches).
        max_samples: cap on ``S``.
        rule: ``"chebyshev"`` or ``"normal"``.
    """
    chebyshev = min(max(1, math.ceil(rho / (delta * rtol**2))), max_samples)
    if rule == "chebyshev":
        return chebyshev, chebyshev, math.sqrt(rho / (chebyshev * delta))
    z = NormalDist().inv_cdf(1 - delta / 2)
    clt = max(math.ceil(z * z * rho / rtol**2), math.ceil(MIN_TERMS / groups), 1)
    if clt <= chebyshev:
        return clt, chebyshev, z * math.sqrt(rho / clt)
    reached = math.sqrt(rho / (chebyshev * delta))
    if chebyshev * groups >= MIN_TERMS:  # capped at max_samples, with terms enough for the normal approximation
        reached = min(reached, z * math.sqrt(rho / chebyshev))
    return chebyshev, chebyshev, reached


def plan_tensor(
    fisher: Tensor,
    var_x: Tensor,
    cond: dict[str, Tensor],
    n: int,
    classes: int,
    rtol: float,
    delta: float,
    candidates: tuple[str, ...],
    per_input: bool,
    max_samples: int,
    rule: str,
) -> PlanEntry:
    """The cheapest candidate (estimator, minibatch, draws) predicted to meet ``rtol`` for one tensor.

    ``fisher``, ``var_x`` and each ``cond[estimator]`` (the per-input conditional variance of its terms) are the
    pilot's means, flattened over the tensor. Without a plan that meets ``rtol`` (``max_samples`` caps the
    draws), the one with the smallest predicted error.
    """
    live = fisher > 0
    zero = int((~live).sum())
    options = []
    if "exact" in candidates and per_input:
        options.append(PlanEntry("exact", 1, 1, PER_INPUT_COST * classes, 0.0, zero))
    sizes = sorted({1 << j for j in range(n.bit_length()) if 1 << j <= n} | {n})
    for est in (c for c in candidates if c != "exact"):
        for b in sizes if per_input else [b for b in sizes if b > 1] or [1]:
            rho = 0.0
            if live.any():
                v = cond["i1_sequence" if est == "i1" and b > 1 else est][live]
                rho = _relative_variance(fisher[live], var_x[live], v, n, b).max().item()
            s, chebyshev, reached = planned_draws(rho, rtol, delta, -(-n // b), max_samples, rule)
            cost = s * (PER_INPUT_COST if b == 1 else 1 + CALL_OVERHEAD / b)
            options.append(PlanEntry(est, b, s, cost, reached, zero, chebyshev))
    if not options:
        raise ValueError(
            f"no estimator in {candidates} can run on this model: the per-input ones need a fast path "
            "(the layer-wise or graph engine); allow 'i1' or 'hutchinson'"
        )
    return min(options, key=lambda e: (e.predicted_rtol > rtol * (1 + 1e-12), e.cost, e.predicted_rtol))
