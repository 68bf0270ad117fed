r"""The plan of :func:`~fishertut.estimate`: per parameter tensor, the estimator, minibatch and draws of least cost.

The cost model is stated in :mod:`fishertut.precision`, which runs the plan. Per parameter and candidate
(estimator ``k``, minibatch ``B``) over ``N`` given inputs, one draw's estimate has relative variance

.. math:: \rho_i = \frac{\bar V_{k,i}}{N\bar I_i^2} + \kappa\Big(1 - \frac{\bar Q_i/\bar I_i^2 - 1}{N-1}\Big),
   \qquad \kappa = \frac{2\pi_B}{N^2},

with :math:`\bar I, \bar Q, \bar V_k` the pilot means of the per-input Fisher, its square and the
estimator's conditional variance (:mod:`fishertut.pilots`; :math:`\bar Q - \bar I^2 = \mathrm{var}_x`) and
:math:`\pi_B` the ordered pairs sharing a minibatch (:mod:`fishertut.variances`). ``S`` draws divide it by
``S``. Three rules turn it into ``S`` for a relative error ``r`` with probability ``1 - δ`` per parameter:

``"chebyshev"``
    :math:`S = \lceil\max_i\hat\rho_i/(\delta r^2)\rceil`, from
    :math:`P(|\hat I_i - \mathcal I_i|\ge r\mathcal I_i)\le\rho_i/(Sr^2)`: any distribution, but the
    pilot's :math:`\hat\rho_i` taken for the truth.
``"normal"``
    :math:`S = \lceil z^2\max_i\hat\rho_i/r^2\rceil`, :math:`z = \Phi^{-1}(1-\delta/2)`, at least
    :data:`MIN_TERMS` terms, never above Chebyshev's count. The estimate is a mean of :math:`S\lceil
    N/B\rceil` independent terms, so nearly normal; but the pilot's :math:`\hat\rho_i` is taken for the
    truth, and with a pilot smaller than the data it is too low often enough to break the promise.
``"normal_ucb"`` (the default)
    the normal rule with the failure probability split between the pilot and the draws, by the union bound
    :math:`P(\text{miss})\le P(\rho_i > \rho_i^+) + P(\text{miss}\mid\rho_i\le\rho_i^+)\le\delta/2+\delta/2`:

    .. math::

       S = \Big\lceil \frac{z_2^2\max_i\rho_i^+}{r^2}\Big\rceil,\quad z_2 = \Phi^{-1}(1-\delta/4),

       \rho_i^+ = \hat\rho_i + z_1\,\widehat{\mathrm{se}}(\hat\rho_i),\quad z_1 = \Phi^{-1}(1-\delta/2),

    at least :data:`MIN_TERMS` terms. :math:`\rho_i^+` is a one-sided upper confidence bound at level
    :math:`1-\delta/2` for :math:`\rho_i` (Wald's): :math:`\hat\rho_i` is a smooth function
    :math:`f(\bar V, \bar I, \bar Q)` of three pilot means of i.i.d. per-input values, so by the delta
    method :math:`\widehat{\mathrm{se}}^2 = \nabla f^\top\hat\Sigma\nabla f/P`, with :math:`\hat\Sigma`
    the sample covariance of :math:`(\hat V_n, \hat I_n, \hat Q_n)` over the ``P`` pilot inputs and

    .. math:: \partial_{\bar V} f = \frac{1}{N\bar I^2},\quad
       \partial_{\bar I} f = -\frac{2\bar V}{N\bar I^3} + \frac{2\kappa\bar Q}{(N-1)\bar I^3},\quad
       \partial_{\bar Q} f = -\frac{\kappa}{(N-1)\bar I^2}.

    The pilot's error is thereby paid for by the pilot's own spread, parameter by parameter: the sampled
    pilot's draw noise is part of the spread of its per-input values. The rule needs at least
    :data:`MIN_PILOT` pilot inputs; with fewer, the plan falls back to ``"chebyshev"``. With
    :math:`\delta = 0.1`, :math:`z_2^2 = 3.84` against Chebyshev's :math:`1/\delta = 10`.

Parameters with :math:`\bar I_i = 0` on the pilot are left out of the maximum, and ``S`` is capped at
``max_samples``: the plan then reports the relative error it reaches instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from torch import Tensor

from .pilots import TensorMoments
from .variances import same_minibatch_pairs

__all__ = [
    "PlanEntry",
    "RULES",
    "CALL_OVERHEAD",
    "PER_INPUT_COST",
    "MIN_TERMS",
    "MIN_PILOT",
    "planned_draws",
    "plan_tensor",
    "upper_relative_variance",
]

RULES = ("normal_ucb", "chebyshev", "normal")
MIN_TERMS = 30
MIN_PILOT = 16
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
        rule: the rule that set the draws (``"chebyshev"`` where ``"normal_ucb"`` had too small a pilot).
    """

    estimator: str
    minibatch: int
    samples_per_input: int
    cost: float
    predicted_rtol: float
    zero_information: int
    chebyshev_samples: int = 1
    rule: str = "chebyshev"


def _relative_variance(fisher: Tensor, var_x: Tensor, cond: Tensor, n: int, minibatch: int) -> Tensor:
    pair_mean = fisher.square() - (var_x / (n - 1) if n > 1 else 0)
    var = (n * cond + 2 * same_minibatch_pairs(n, minibatch) * pair_mean) / (n * n)
    return var.clamp_min(0) / fisher.square()


def upper_relative_variance(m: TensorMoments, kind: str, n: int, minibatch: int, z: float) -> Tensor:
    r""":math:`\rho_i^+ = \hat\rho_i + z\,\widehat{\mathrm{se}}(\hat\rho_i)` per parameter (module docstring).

    Args:
        m: the pilot's moments for the tensor.
        kind: the estimator whose terms are drawn (``"i1"``, ``"i1_sequence"`` or ``"hutchinson"``).
        n: the number ``N`` of inputs estimated on.
        minibatch: ``B``.
        z: :math:`z_1`; ``0`` gives :math:`\hat\rho_i` itself.
    """
    v, i, q = m.cond(kind), m.fisher, m.mean("Q")
    kappa = 2 * same_minibatch_pairs(n, minibatch) / (n * n)
    shrink = 1 / (n - 1) if n > 1 else 0.0
    rho = _relative_variance(i, m.var_x, v, n, minibatch)
    grads = {
        f"V:{kind}": 1 / (n * i.square()),
        "I": (-2 * v / n + 2 * kappa * shrink * q) / i.pow(3),
        "Q": -kappa * shrink / i.square(),
    }
    names = list(grads)
    var = sum(grads[a] * grads[b] * m.covariance(a, b) for a in names for b in names) / m.count
    se = var.clamp_min(0).sqrt()
    return rho + z * se


def planned_draws(
    rho: float,
    rtol: float,
    delta: float,
    groups: int,
    max_samples: int,
    rule: str = "normal_ucb",
    rho_upper: float | None = None,
) -> tuple[int, int, float]:
    r"""Draws for relative variance per draw ``rho`` (module docstring): ``(S, S_Chebyshev, relative error reached)``.

    Args:
        rho: :math:`\max_i\hat\rho_i`, the largest relative variance of one draw's estimate over the tensor.
        rtol: the target relative error.
        delta: the allowed probability of missing it.
        groups: terms per draw, :math:`\lceil N/B\rceil` (minibatches).
        max_samples: cap on ``S``.
        rule: ``"normal_ucb"``, ``"chebyshev"`` or ``"normal"``.
        rho_upper: :math:`\max_i\rho_i^+` for ``"normal_ucb"`` (default ``rho``).
    """
    chebyshev = min(max(1, math.ceil(rho / (delta * rtol**2))), max_samples)
    if rule == "chebyshev":
        return chebyshev, chebyshev, math.sqrt(rho / (chebyshev * delta))
    if rule == "normal_ucb":
        rho = rho if rho_upper is None else rho_upper
        z = NormalDist().inv_cdf(1 - delta / 4)
        s = min(max(math.ceil(z * z * rho / rtol**2), math.ceil(MIN_TERMS / groups), 1), max_samples)
        if s * groups >= MIN_TERMS:
            return s, chebyshev, z * math.sqrt(rho / s)
        return s, chebyshev, math.sqrt(2 * rho / (s * delta))  # capped below the minimum: Chebyshev at delta/2
    z = NormalDist().inv_cdf(1 - delta / 2)
    clt = max(math.ceil(z * z * rho / rtol**2), math.ceil(MIN_TERMS / groups), 1)
    if clt <= chebyshev:
        return clt, chebyshev, z * math.sqrt(rho / clt)
    reached = math.sqrt(rho / (chebyshev * delta))
    if chebyshev * groups >= MIN_TERMS:  # capped at max_samples, with terms enough for the normal approximation
        reached = min(reached, z * math.sqrt(rho / chebyshev))
    return chebyshev, chebyshev, reached


def plan_tensor(
    m: TensorMoments,
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

    ``m`` holds the pilot's moments (:mod:`fishertut.pilots`); with fewer than :data:`MIN_PILOT` pilot inputs
    ``"normal_ucb"`` gives way to ``"chebyshev"``. Without a plan that meets ``rtol`` (``max_samples`` caps the
    draws), the one with the smallest predicted error.
    """
    if rule == "normal_ucb" and m.count < MIN_PILOT:
        rule = "chebyshev"
    z = NormalDist().inv_cdf(1 - delta / 2)
    fisher, var_x = m.fisher, m.var_x
    live = fisher > 0
    zero = int((~live).sum())
    options = []
    if "exact" in candidates and per_input:
        options.append(PlanEntry("exact", 1, 1, PER_INPUT_COST * classes, 0.0, zero, 1, rule))
    sizes = sorted({1 << j for j in range(n.bit_length()) if 1 << j <= n} | {n})
    for est in (c for c in candidates if c != "exact"):
        for b in sizes if per_input else [b for b in sizes if b > 1] or [1]:
            rho = upper = 0.0
            kind = "i1_sequence" if est == "i1" and b > 1 else est
            if live.any():
                rho = _relative_variance(fisher[live], var_x[live], m.cond(kind)[live], n, b).max().item()
                if rule == "normal_ucb":
                    upper = upper_relative_variance(m, kind, n, b, z)[live].max().item()
            s, chebyshev, reached = planned_draws(rho, rtol, delta, -(-n // b), max_samples, rule, upper)
            cost = s * (PER_INPUT_COST if b == 1 else 1 + CALL_OVERHEAD / b)
            options.append(PlanEntry(est, b, s, cost, reached, zero, chebyshev, rule))
    if not options:
        raise ValueError(
            f"no estimator in {candidates} can run on this model: the per-input ones need a fast path "
            "(the layer-wise or graph engine); allow 'i1' or 'hutchinson'"
        )
    return min(options, key=lambda e: (e.predicted_rtol > rtol * (1 + 1e-12), e.cost, e.predicted_rtol))
