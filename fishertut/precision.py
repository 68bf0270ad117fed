r""":func:`estimate`: the diagonal Fisher over the given inputs to a requested relative precision.

The target is :math:`\mathcal I(\theta_i) = \frac1N\sum_n I(\theta_i\mid x_n)` over the ``N`` given inputs.
Three steps:

1. **Pilot.** Exact per-input :math:`I_n`, :math:`V_1` and the Hutchinson variance on ``pilot`` inputs
   (:func:`~fishertut.per_input_statistics`, any model the engines run, the generic one included): a random
   subset of the inputs, or a separate tensor of inputs (then the plan never sees the inputs it estimates on).
2. **Plan.** Per parameter tensor, each candidate (estimator ``k``, minibatch ``B``) has, per draw, the relative
   variance (:mod:`fishertut.variances`, inputs given, randomly partitioned)

   .. math:: \rho_i(k, B) = \frac{N v_{k,i} + 2\pi_B(\mathcal I_i^2 - \mathrm{var}_{x,i}/(N-1))}{N^2\mathcal I_i^2},

   with the pilot's means in place of the full data's. ``rule="chebyshev"`` (the default) takes the draws
   :math:`S = \lceil\max_i \rho_i/(\delta r^2)\rceil` from Chebyshev's inequality
   :math:`P(|\hat I_i - \mathcal I_i| \ge r\mathcal I_i) \le \rho_i/(S r^2)`, which holds for any distribution.
   ``rule="normal"`` treats the estimate, a mean of :math:`S\lceil N/B\rceil` independent terms, as normal:
   :math:`S = \lceil z^2\max_i\rho_i/r^2\rceil`, :math:`z = \Phi^{-1}(1-\delta/2)`, raised to at least
   :data:`MIN_TERMS` terms and never above Chebyshev's count (about :math:`z^2\delta \approx 0.27` of it for
   :math:`\delta = 0.1`). It keeps its promise when the pilot's :math:`\rho_i` are those of the data (the
   pilot is the data), but not with a small held-out pilot, whose errors in :math:`\rho_i` it has no slack
   for (chapter :doc:`/book/choosing_an_estimator` measures both). Each plan entry reports Chebyshev's count
   too. The plan keeps the candidate of lowest cost. Parameters
   with :math:`\mathcal I_i = 0` on the pilot are left out of the maximum (for ``"i1"`` and ``"hutchinson"``
   their terms vanish wherever their information does), and ``S`` is capped at ``max_samples``: the plan
   then reports the relative error it reaches instead.
3. **Run.** Each distinct plan through :func:`~fishertut.fisher_diagonal`, streaming over the inputs (a tensor is
   first shuffled with ``generator``, so that minibatches are the random partition the variances assume).

Cost model, in backward passes over the ``N`` inputs: ``minibatch=B > 1`` costs
:math:`S(1 + c_0/B)` (one backward per minibatch and draw, :math:`c_0` = ``CALL_OVERHEAD`` inputs' worth of
fixed cost per call); per-input estimators (``B = 1``, only where the engine that runs is a fast path, the
layer-wise or the graph engine) cost ``PER_INPUT_COST`` per draw (the channel backward plus the per-input
squares), and ``"exact"`` that per class. The engine is the one the pilot ran on (the same model, inputs and
``path`` choose the same engine for every run).
Î2 is not a candidate: in these engines it needs the class channels of ``"exact"`` and a curvature pass more.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .api import fisher_diagonal, per_input_statistics
from .calls import index_rows, is_mapping, mask_entry, num_rows
from .checks.arguments import check_count, check_fraction, check_generator, check_path, check_process_group
from .checks.models import check_model
from .families import ExponentialFamily
from .planning import CALL_OVERHEAD, MIN_TERMS, PER_INPUT_COST, PlanEntry, plan_tensor, planned_draws
from .report import ConditionalStatistics
from .variances import same_minibatch_pairs

__all__ = ["estimate", "Estimate", "PlanEntry", "CALL_OVERHEAD", "PER_INPUT_COST", "MIN_TERMS", "planned_draws"]

CANDIDATES = ("exact", "i1", "hutchinson")


class Estimate(dict):
    r"""``{parameter name: estimate}`` with ``stderr``, ``input_stderr``, ``plan`` (by parameter name), ``unused``.

    ``unused`` lists the parameters the forward never reads (their entries are exactly 0).

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
        unused: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(values)
        self.stderr, self.input_stderr, self.plan, self.num_inputs = stderr, input_stderr, plan, num_inputs
        self.unused = unused


def _pilot_moments(
    per: ConditionalStatistics, n: int, process_group: object | None
) -> tuple[dict[str, tuple[Tensor, Tensor, dict[str, Tensor]]], int]:
    """Per tensor, the pilot's mean Fisher, input variance and mean conditional variances, in float64.

    The conditional variances are those of ``"i1"`` (per token), ``"i1_sequence"`` (what GNB's minibatches
    square; equal to ``"i1"`` without positions) and ``"hutchinson"``. Over the pilots of all ranks of
    ``process_group`` (summed moments), and with the inputs of all ranks.
    """
    names = ("i1", "i1_sequence", "hutchinson")
    wide = {k: (per.fisher[k], per.var_i1[k], per.var_i1_sequence[k], per.var_hutchinson[k]) for k in per.fisher}
    wide = {k: tuple(t.to(torch.float64) for t in ts) for k, ts in wide.items()}
    if process_group is None:
        return {
            k: (f.mean(0), f.var(0, unbiased=False), {e: v.mean(0) for e, v in zip(names, vs)})
            for k, (f, *vs) in wide.items()
        }, n
    import torch.distributed as dist

    sums = {k: torch.stack([f.sum(0), f.square().sum(0), *(v.sum(0) for v in vs)]) for k, (f, *vs) in wide.items()}
    keys = list(sums)
    m = next(iter(wide.values()))[0].shape[0]
    flat = torch.cat([sums[k].flatten() for k in keys] + [sums[keys[0]].new_tensor([m, n])])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=process_group)
    m, n = int(round(flat[-2].item())), int(round(flat[-1].item()))
    out = {}
    for k, part in zip(keys, flat[:-2].split([sums[k].numel() for k in keys])):
        s1, s2, *cs = part.view_as(sums[k]) / m
        out[k] = (s1, (s2 - s1.square()).clamp_min(0), dict(zip(names, cs)))
    return out, n


def estimate(
    model: nn.Module,
    inputs: Tensor | Mapping[str, Tensor],
    family: ExponentialFamily,
    rtol: float = 0.1,
    delta: float = 0.05,
    generator: torch.Generator | None = None,
    pilot: int | Tensor = 64,
    estimators: tuple[str, ...] = CANDIDATES,
    max_samples: int = 1000,
    batch_size: int | None = None,
    path: str = "auto",
    process_group: object | None = None,
    mask: Tensor | str | None = None,
    normalize: str = "sequence",
    rule: str = "chebyshev",
) -> Estimate:
    r"""The diagonal Fisher over ``inputs`` with relative error at most ``rtol`` with probability ``1 - delta``.

    Per parameter tensor, the cheapest of ``estimators`` (with its minibatch size and number of label draws)
    whose planned draws meet the target on the pilot (a normal approximation with a minimum number of terms,
    never more draws than Chebyshev's bound): see the module docstring for the rule and the cost model. Models
    that only the generic engine takes are planned with the one-backward estimators only.

    Args:
        model: maps ``(N, ...)`` to ``(N, C)``, or to ``(N, T, C)`` with positions (then GNB is ``"i1_sequence"``).
        inputs: a tensor ``(N, ...)``, or a mapping of them (keyword arguments of ``forward``).
        family: the output family.
        rtol: relative error, > 0.
        delta: failure probability per parameter, in (0, 1).
        generator: random source for the pilot subset, the shuffle and the draws.
        pilot: the number of inputs in the pilot, drawn from ``inputs`` (all of them if fewer), or a tensor
            ``(P, ...)`` of pilot inputs of their own, e.g. held out from ``inputs``.
        estimators: candidates among ``"exact"``, ``"i1"`` and ``"hutchinson"``.
        max_samples: cap on the draws per input or minibatch.
        batch_size: rows per engine call (memory only), at most ``N``.
        path: as in :func:`~fishertut.fisher_diagonal`; the pilot and every run take it.
        process_group: a ``torch.distributed`` group whose ranks each hold part of the inputs: the pilot's
            moments and every run's sums are all-reduced, so every rank plans alike and returns the estimate
            over all inputs (each rank's pilot is drawn from its own inputs).
        mask: boolean ``(N, *positions)`` for outputs with positions (e.g. language-model logits ``(N, T, V)``),
            as in :func:`~fishertut.fisher_diagonal`; shuffled with the inputs. With a mapping of inputs, the key
            of its entry that holds the mask (``"attention_mask"``), as in :func:`~fishertut.fisher_diagonal`.
        normalize: ``"sequence"`` (default) or ``"token"``, as in :func:`~fishertut.fisher_diagonal`.
        rule: how the draws are planned: ``"chebyshev"`` (default, for any distribution) or ``"normal"``
            (fewer draws, a normal approximation: module docstring).

    Returns:
        :class:`Estimate`; its ``unused`` lists the parameters the forward never reads (exactly 0).
    """
    rtol = check_fraction(rtol, "rtol", math.inf)
    delta = check_fraction(delta, "delta", 1)
    if rule not in ("chebyshev", "normal"):
        raise ValueError(f"rule must be 'chebyshev' or 'normal', got {rule!r}")
    tensors = list(inputs.values()) if is_mapping(inputs) else [inputs]
    if not tensors or not all(isinstance(t, Tensor) and t.ndim > 0 for t in tensors):
        raise TypeError(f"inputs must be a tensor (N, ...) or a mapping of them, got {type(inputs).__name__}")
    n = num_rows(inputs)
    if n == 0:
        raise ValueError("inputs is empty: it has no rows")
    if batch_size is not None and check_count(batch_size, "batch_size") > n:
        raise ValueError(f"batch_size={batch_size} is larger than the data ({n} inputs)")
    if isinstance(pilot, Tensor):
        if is_mapping(inputs):
            raise TypeError("pilot must be a number of inputs when inputs is a mapping of tensors")
        if pilot.ndim != inputs.ndim or pilot.shape[1:] != inputs.shape[1:] or pilot.shape[0] == 0:
            raise ValueError(
                f"pilot must be a number of inputs or a non-empty tensor shaped like the inputs' rows "
                f"(P, {', '.join(map(str, inputs.shape[1:]))}), got {tuple(pilot.shape)}"
            )
    else:
        check_count(pilot, "pilot")
    check_count(max_samples, "max_samples")
    unknown = [e for e in estimators if e not in CANDIDATES]
    if unknown or not estimators:
        raise ValueError(f"estimators must be a non-empty tuple of {CANDIDATES}, got {estimators!r}")
    check_path(path)
    check_process_group(process_group)
    device, _ = check_model(model)
    check_generator(generator, device)
    order = torch.randperm(n, generator=generator, device=device)
    if isinstance(mask, str):
        mask_entry(inputs, mask)  # a key of the mapping of inputs: shuffled and drawn with them
    elif mask is not None and (not isinstance(mask, Tensor) or mask.shape[:1] != (n,)):
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a boolean tensor with one row per input ({n}), got {got}")
    if mask is not None and isinstance(pilot, Tensor):
        raise ValueError("a pilot tensor has no mask: pass pilot as a number of inputs when inputs are masked")
    keyed = isinstance(mask, str)
    mask = None if mask is None else mask if keyed else mask.to(device)
    part = None if mask is None or isinstance(pilot, Tensor) else mask if keyed else mask[order[:pilot]]
    pilot_inputs = pilot if isinstance(pilot, Tensor) else index_rows(inputs, order[:pilot])
    pilot_batch = None if batch_size is None else min(batch_size, num_rows(pilot_inputs))
    per = per_input_statistics(
        model, pilot_inputs, family, batch_size=pilot_batch, path=path, mask=part, normalize=normalize
    )
    per_input = per.path in ("layerwise", "graph")  # the engine every run of the plan takes
    classes = per.num_outputs
    moments, n = _pilot_moments(per, n, process_group)
    plan, stderr, input_se = {}, {}, {}
    for k, (fisher, var_x, cond) in moments.items():
        entry = plan_tensor(
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
            rule,
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
    shuffled, mask = index_rows(inputs, order), mask if mask is None or keyed else mask[order]
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
                path=path,
                process_group=process_group,
                mask=mask,
                normalize=normalize,
            )
        values[k] = runs[key][k]
    dtype = next(iter(values.values())).dtype
    return Estimate(
        values,
        {k: v.to(dtype) for k, v in stderr.items()},
        {k: v.to(dtype) for k, v in input_se.items()},
        plan,
        n,
        per.unused,
    )
