r""":func:`estimate`: the diagonal Fisher over the given inputs to a requested relative precision.

The target is :math:`\mathcal I(\theta_i) = \frac1N\sum_n I(\theta_i\mid x_n)` over the ``N`` given inputs.
Three steps:

1. **Pilot.** Exact per-input :math:`I_n`, :math:`V_1` and the Hutchinson variance on ``pilot`` inputs
   (:func:`~fishertut.per_input_statistics`, any model the engines run, the generic one included).
2. **Plan.** Per parameter tensor, each candidate (estimator ``k``, minibatch ``B``) has, per draw, the relative
   variance (:mod:`fishertut.variances`, inputs given, randomly partitioned)

   .. math:: \rho_i(k, B) = \frac{N v_{k,i} + 2\pi_B(\mathcal I_i^2 - \mathrm{var}_{x,i}/(N-1))}{N^2\mathcal I_i^2},

   with the pilot's means in place of the full data's. Chebyshev's inequality,
   :math:`P(|\hat I_i - \mathcal I_i| \ge r\mathcal I_i) \le \rho_i/(S r^2)`, gives the draws
   :math:`S = \lceil\max_i \rho_i/(\delta r^2)\rceil` that put every parameter of the tensor within relative error
   ``rtol`` with probability at least ``1 - delta``; the plan keeps the candidate of lowest cost. Parameters
   with :math:`\mathcal I_i = 0` on the pilot are left out of the maximum (for ``"i1"`` and ``"hutchinson"``
   their terms vanish wherever their information does), and ``S`` is capped at ``max_samples``: the plan
   then reports the relative error it reaches instead.
3. **Run.** Each distinct plan through :func:`~fishertut.fisher_diagonal`, streaming over the inputs (a tensor is
   first shuffled with ``generator``, so that minibatches are the random partition the variances assume).

Cost model, in backward passes over the ``N`` inputs: ``minibatch=B > 1`` costs
:math:`S(1 + c_0/B)` (one backward per minibatch and draw, :math:`c_0` = ``CALL_OVERHEAD`` inputs' worth of
fixed cost per call); per-input estimators (``B = 1``, only where the layer-wise engine covers the model) cost
``PER_INPUT_COST`` per draw (the channel backward plus the per-input squares), and ``"exact"`` that per class.
Î2 is not a candidate: in these engines it needs the class channels of ``"exact"`` and a curvature pass more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .api import fisher_diagonal, per_input_statistics
from .arguments import check_count
from .engines.layerwise import LayerwiseEngine
from .families import ExponentialFamily
from .validation import check_generator, check_model
from .variances import same_minibatch_pairs

__all__ = ["estimate", "Estimate", "PlanEntry", "CALL_OVERHEAD", "PER_INPUT_COST"]

CALL_OVERHEAD = 32.0
PER_INPUT_COST = 2.0
CANDIDATES = ("exact", "i1", "hutchinson")


@dataclass(frozen=True)
class PlanEntry:
    """The plan for one parameter tensor.

    Attributes:
        estimator: ``"exact"``, ``"i1"`` (GNB when ``minibatch > 1``) or ``"hutchinson"``.
        minibatch: inputs summed before squaring.
        samples_per_input: draws of labels (or signs) per input or minibatch.
        cost: backward passes over the inputs (module docstring).
        predicted_rtol: the largest relative error over the tensor's parameters reached with probability
            ``1 - delta`` (Chebyshev, pilot values); 0 for ``"exact"``.
        zero_information: parameters with zero Fisher information on the pilot (left out of the plan).
    """

    estimator: str
    minibatch: int
    samples_per_input: int
    cost: float
    predicted_rtol: float
    zero_information: int


class Estimate(dict):
    r"""``{parameter name: estimate}`` with ``stderr``, ``input_stderr`` and ``plan`` (dicts by parameter name).

    ``stderr`` is the predicted standard error over labels for the given inputs; ``input_stderr`` is
    :math:`\sqrt{\mathrm{var}_x/N}`, the extra term for a reader who treats the inputs as a sample of a larger set.
    """

    def __init__(
        self,
        values: dict[str, Tensor],
        stderr: dict[str, Tensor],
        input_stderr: dict[str, Tensor],
        plan: dict[str, PlanEntry],
        num_inputs: int,
    ) -> None:
        super().__init__(values)
        self.stderr, self.input_stderr, self.plan, self.num_inputs = stderr, input_stderr, plan, num_inputs


def _check_fraction(value: float, argument: str, upper: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < upper):
        bound = "(0, 1)" if upper == 1 else "a positive finite number"
        raise ValueError(f"{argument} must be {bound}, got {value!r}")
    return float(value)


def _relative_variance(fisher: Tensor, var_x: Tensor, cond: Tensor, n: int, minibatch: int) -> Tensor:
    pair_mean = fisher.square() - (var_x / (n - 1) if n > 1 else 0)
    var = (n * cond + 2 * same_minibatch_pairs(n, minibatch) * pair_mean) / (n * n)
    return var.clamp_min(0) / fisher.square()


def _plan_tensor(
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
) -> PlanEntry:
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
            s = min(max(1, math.ceil(rho / (delta * rtol**2))), max_samples)
            cost = s * (PER_INPUT_COST if b == 1 else 1 + CALL_OVERHEAD / b)
            options.append(PlanEntry(est, b, s, cost, math.sqrt(rho / (s * delta)), zero))
    if not options:
        raise ValueError(
            f"no estimator in {candidates} can run on this model: the per-input ones need the "
            "layer-wise engine; allow 'i1' or 'hutchinson'"
        )
    return min(options, key=lambda e: (e.predicted_rtol > rtol * (1 + 1e-12), e.cost, e.predicted_rtol))


def estimate(
    model: nn.Module,
    inputs: Tensor,
    family: ExponentialFamily,
    rtol: float = 0.1,
    delta: float = 0.05,
    generator: torch.Generator | None = None,
    pilot: int = 64,
    estimators: tuple[str, ...] = CANDIDATES,
    max_samples: int = 1000,
    batch_size: int | None = None,
    mask: Tensor | None = None,
    normalize: str = "sequence",
) -> Estimate:
    r"""The diagonal Fisher over ``inputs`` with relative error at most ``rtol`` with probability ``1 - delta``.

    Per parameter tensor, the cheapest of ``estimators`` (with its minibatch size and number of label draws)
    whose Chebyshev bound meets the target on the pilot: see the module docstring for the rule and the cost
    model. Models outside the layer-wise engine are planned with the one-backward estimators only.

    Args:
        model: maps ``(N, ...)`` to ``(N, C)``.
        inputs: a tensor ``(N, ...)``.
        family: the output family.
        rtol: relative error, > 0.
        delta: failure probability per parameter, in (0, 1).
        generator: random source for the pilot subset, the shuffle and the draws.
        pilot: inputs in the pilot (all of them if fewer).
        estimators: candidates among ``"exact"``, ``"i1"`` and ``"hutchinson"``.
        max_samples: cap on the draws per input or minibatch.
        batch_size: rows per engine call (memory only), at most ``N``.
        mask: boolean ``(N, *positions)`` for outputs with positions (e.g. language-model logits ``(N, T, V)``),
            as in :func:`~fishertut.fisher_diagonal`; shuffled with the inputs.
        normalize: ``"sequence"`` (default) or ``"token"``, as in :func:`~fishertut.fisher_diagonal`.

    Returns:
        :class:`Estimate`.
    """
    rtol = _check_fraction(rtol, "rtol", math.inf)
    delta = _check_fraction(delta, "delta", 1)
    if not isinstance(inputs, Tensor) or inputs.ndim == 0:
        raise TypeError(f"inputs must be a tensor (N, ...), got {type(inputs).__name__}")
    n = inputs.shape[0]
    if n == 0:
        raise ValueError("inputs is empty: it has no rows")
    if batch_size is not None and check_count(batch_size, "batch_size") > n:
        raise ValueError(f"batch_size={batch_size} is larger than the data ({n} inputs)")
    check_count(pilot, "pilot")
    check_count(max_samples, "max_samples")
    unknown = [e for e in estimators if e not in CANDIDATES]
    if unknown or not estimators:
        raise ValueError(f"estimators must be a non-empty tuple of {CANDIDATES}, got {estimators!r}")
    device, _ = check_model(model)
    check_generator(generator, device)
    order = torch.randperm(n, generator=generator, device=device).to(inputs.device)
    if mask is not None and (not isinstance(mask, Tensor) or mask.shape[:1] != inputs.shape[:1]):
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a boolean tensor with one row per input ({n}), got {got}")
    mask = None if mask is None else mask.to(device)
    part = None if mask is None else mask[order[:pilot]]
    per = per_input_statistics(
        model, inputs[order[:pilot]], family, batch_size=batch_size, mask=part, normalize=normalize
    )
    per_input = LayerwiseEngine.unsupported_reason(model) is None
    with torch.no_grad():
        classes = model(inputs[:1]).shape[-1]
    plan, stderr, input_se = {}, {}, {}
    for k, f_n in per.fisher.items():
        f_n = f_n.to(torch.float64)
        fisher, var_x = f_n.mean(0), f_n.var(0, unbiased=False)
        # B > 1 squares whole sequences: GNB over sequences has the per-sequence variance (equal without positions)
        cond = {
            "i1": per.var_i1[k].to(torch.float64).mean(0),
            "i1_sequence": per.var_i1_sequence[k].to(torch.float64).mean(0),
            "hutchinson": per.var_hutchinson[k].to(torch.float64).mean(0),
        }
        entry = _plan_tensor(
            fisher.flatten(),
            var_x.flatten(),
            {e: c.flatten() for e, c in cond.items()},
            n,
            classes,
            rtol,
            delta,
            tuple(estimators),
            per_input,
            max_samples,
        )
        plan[k] = entry
        input_se[k] = (var_x / n).sqrt()
        if entry.estimator == "exact":
            stderr[k] = torch.zeros_like(fisher)
        else:
            pairs = same_minibatch_pairs(n, entry.minibatch)
            pair_mean = fisher.square() - (var_x / (n - 1) if n > 1 else 0)
            name = "i1_sequence" if entry.estimator == "i1" and entry.minibatch > 1 else entry.estimator
            var = (n * cond[name] + 2 * pairs * pair_mean) / (n * n * entry.samples_per_input)
            stderr[k] = var.clamp_min(0).sqrt()
    shuffled, mask = inputs[order], None if mask is None else mask[order]
    runs, values = {}, {}
    for k, e in plan.items():
        key = (e.estimator, e.minibatch, e.samples_per_input)
        if key not in runs:
            runs[key] = fisher_diagonal(
                model,
                shuffled,
                family,
                "i1_sequence" if e.estimator == "i1" and e.minibatch > 1 else e.estimator,
                generator=generator,
                samples_per_input=1 if e.estimator == "exact" else e.samples_per_input,
                minibatch=e.minibatch,
                batch_size=batch_size,
                mask=mask,
                normalize=normalize,
            )
        values[k] = runs[key][k]
    dtype = next(iter(values.values())).dtype
    return Estimate(
        values, {k: v.to(dtype) for k, v in stderr.items()}, {k: v.to(dtype) for k, v in input_se.items()}, plan, n
    )
