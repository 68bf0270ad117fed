r""":func:`estimate`: the diagonal Fisher over the given inputs to a requested relative precision.

The target is :math:`\mathcal I(\theta_i) = \frac1N\sum_n I(\theta_i\mid x_n)` over the ``N`` given inputs.
Three steps:

1. **Pilot.** Per-input moments of the Fisher, its square and each estimator's conditional variance on
   ``pilot`` inputs (:mod:`fishertut.pilots`, any model the engines run, the generic one included): a random
   subset of the inputs, or a separate tensor of inputs (then the plan never sees the inputs it estimates on).
   ``pilot_statistics="exact"`` computes them exactly (:func:`~fishertut.per_input_statistics`, one channel
   per model output); ``"sampled"`` estimates them from ``pilot_draws`` draws of the estimators per input, at
   gradient cost, where the outputs are too many (a language model's ``T·V``); ``"auto"`` chooses.
2. **Plan.** Per parameter tensor, each candidate (estimator ``k``, minibatch ``B``) has, per draw, the relative
   variance (:mod:`fishertut.variances`, inputs given, randomly partitioned)

   .. math:: \rho_i(k, B) = \frac{N v_{k,i} + 2\pi_B(\mathcal I_i^2 - \mathrm{var}_{x,i}/(N-1))}{N^2\mathcal I_i^2},

   with the pilot's means in place of the full data's. The rule (:mod:`fishertut.planning`) turns it into
   draws: by default ``"normal_ucb"``, a normal approximation for the estimate (a mean of
   :math:`S\lceil N/B\rceil` independent terms, at least :data:`MIN_TERMS`) at the upper confidence bound
   :math:`\rho_i^+` of each parameter's :math:`\rho_i` from the pilot's own spread, :math:`\delta` split
   between the two; ``"chebyshev"`` and ``"normal"`` take the pilot's :math:`\hat\rho_i` for the truth.
   Each plan entry reports Chebyshev's count too. The plan keeps the candidate of lowest cost. Parameters
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

from .api import fisher_diagonal
from .calls import index_rows, is_mapping, mask_entry, num_rows
from .checks.arguments import check_count, check_fraction, check_generator, check_path, check_process_group
from .checks.models import check_model
from .families import ExponentialFamily
from .pilots import PILOT_STATISTICS, pilot_moments
from .planning import CALL_OVERHEAD, MIN_PILOT, MIN_TERMS, PER_INPUT_COST, RULES, PlanEntry, plan_tensor, planned_draws
from .variances import same_minibatch_pairs

__all__ = [
    "estimate",
    "Estimate",
    "PlanEntry",
    "CALL_OVERHEAD",
    "PER_INPUT_COST",
    "MIN_TERMS",
    "MIN_PILOT",
    "planned_draws",
]

CANDIDATES = ("exact", "i1", "hutchinson")


class Estimate(dict):
    r"""``{parameter name: estimate}`` with ``stderr``, ``input_stderr``, ``plan`` (by parameter name), ``unused``.

    ``unused`` lists the parameters the forward never reads (their entries are exactly 0);
    ``pilot_statistics`` says how the pilot got its statistics, ``"exact"`` or ``"sampled"``.

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
        pilot_statistics: str = "exact",
    ) -> None:
        super().__init__(values)
        self.stderr, self.input_stderr, self.plan, self.num_inputs = stderr, input_stderr, plan, num_inputs
        self.unused, self.pilot_statistics = unused, pilot_statistics


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
    rule: str = "normal_ucb",
    pilot_statistics: str = "auto",
    pilot_draws: int = 4,
) -> Estimate:
    r"""The diagonal Fisher over ``inputs`` with relative error at most ``rtol`` with probability ``1 - delta``.

    Per parameter tensor, the cheapest of ``estimators`` (with its minibatch size and number of label draws)
    whose planned draws meet the target on the pilot (by default a normal approximation with a minimum number
    of terms, at an upper confidence bound of each parameter's variance from the pilot): see the module
    docstring and :mod:`fishertut.planning` for the rule, and the module docstring for the cost model. Models
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
        rule: how the draws are planned (:mod:`fishertut.planning`): ``"normal_ucb"`` (default: a normal
            approximation with an upper confidence bound on each parameter's relative variance from the
            pilot's own spread, at least ``MIN_PILOT`` pilot inputs), ``"chebyshev"`` (for any distribution,
            taking the pilot's values for the truth) or ``"normal"`` (the pilot's values taken for the truth).
        pilot_statistics: how the pilot gets its per-input statistics (:mod:`fishertut.pilots`): ``"exact"``
            (:func:`~fishertut.per_input_statistics`, one channel per model output), ``"sampled"``
            (``pilot_draws`` terms per input of each estimator, at gradient cost: for language models and
            other outputs too many to enumerate) or ``"auto"`` (default: exact when it costs no more
            channels than sampling and its per-input values fit, else sampled).
        pilot_draws: terms per pilot input and estimator when the pilot is sampled, at least 2.

    Returns:
        :class:`Estimate`; its ``unused`` lists the parameters the forward never reads (exactly 0).
    """
    rtol = check_fraction(rtol, "rtol", math.inf)
    delta = check_fraction(delta, "delta", 1)
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if pilot_statistics not in PILOT_STATISTICS:
        raise ValueError(f"pilot_statistics must be one of {PILOT_STATISTICS}, got {pilot_statistics!r}")
    if check_count(pilot_draws, "pilot_draws") < 2:
        raise ValueError(f"pilot_draws must be at least 2 (a sample variance per input), got {pilot_draws}")
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
    kinds = tuple(e for e in estimators if e != "exact")
    moments, n = pilot_moments(
        model, pilot_inputs, family, pilot_statistics, kinds, pilot_draws, generator, pilot_batch, path, part,
        normalize, process_group, n,
    )  # fmt: skip
    per_input = moments.path in ("layerwise", "graph")  # the engine every run of the plan takes
    plan, stderr, input_se = {}, {}, {}
    for k, m in moments.items():
        shape = next(p.shape for name, p in model.named_parameters() if name == k)
        entry = plan_tensor(m, n, moments.num_outputs, rtol, delta, tuple(estimators), per_input, max_samples, rule)
        plan[k] = entry
        fisher, var_x = m.fisher.reshape(shape), m.var_x.reshape(shape)
        input_se[k] = (var_x / n).sqrt()
        if entry.estimator == "exact":
            stderr[k] = torch.zeros_like(fisher)
        else:
            pairs = same_minibatch_pairs(n, entry.minibatch)
            pair_mean = fisher.square() - (var_x / (n - 1) if n > 1 else 0)
            name = "i1_sequence" if entry.estimator == "i1" and entry.minibatch > 1 else entry.estimator
            var = (n * m.cond(name).reshape(shape) + 2 * pairs * pair_mean) / (n * n * entry.samples_per_input)
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
        moments.unused,
        moments.statistics,
    )
