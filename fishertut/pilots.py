r"""The pilot of :func:`~fishertut.estimate`: per-input moments of the Fisher and of the estimators' variances.

Per parameter :math:`\theta_i` and pilot input :math:`x_n` (:math:`n = 1..P`), three per-input quantities,
each unbiased for its value at :math:`x_n`:

* :math:`\hat I_n` for the Fisher :math:`I(\theta_i\mid x_n)`;
* :math:`\hat Q_n` for its square :math:`I(\theta_i\mid x_n)^2` (so that
  :math:`\mathrm{var}_x = \overline{Q} - \overline{I}^2` over the pilot);
* :math:`\hat V_{k,n}` for the conditional variance over labels (or signs) of one term of estimator ``k``:
  ``"i1"`` (per token), ``"i1_sequence"`` (per sequence, what GNB's minibatches square; the same as
  ``"i1"`` without positions) and ``"hutchinson"``. The plan needs ``"i1"`` only for ``B = 1``, which it
  considers on the layer-wise and graph engines only, and these take no outputs with positions.

The pilot keeps their sums over the pilot inputs and the sums of their pairwise products (for the
sampling error of the plan, :mod:`fishertut.planning`), all in float64. Two ways to get them:

``"exact"``
    :func:`~fishertut.per_input_statistics`: :math:`\hat I_n = I_n`, :math:`\hat Q_n = I_n^2`,
    :math:`\hat V_{k,n} = V_{k,n}` exactly. It backpropagates one channel per model output (``C``, which is
    ``T·V`` for a language model) and materialises ``P × parameters`` values per statistic.
``"sampled"``
    ``draws`` terms :math:`t_{n1}, \dots, t_{nS}` per input of ``"i1_sequence"`` (``"i1"`` without
    positions) and ``"hutchinson"``, at gradient cost (one channel per draw and estimator): with
    :math:`\bar t_n` their mean and :math:`s_n^2` their unbiased sample variance,
    :math:`\hat V_{k,n} = s_{k,n}^2`, and from the first of ``"i1"``, ``"hutchinson"``, ``"i1_sequence"``
    drawn, :math:`\hat I_n = \bar t_n`,
    :math:`\hat Q_n = \bar t_n^2 - s_n^2/S` (since :math:`\mathbb E\,\bar t_n^2 = I_n^2 + V_n/S`). Each is a
    unit statistic of the engines (:mod:`fishertut.terms`), so only sums are kept: memory of a few
    gradients, any model the engines run.

``"auto"`` takes ``"exact"`` when the model has at most :data:`EXACT_PILOT_OUTPUTS` outputs per input
(``C``; a language model's ``T·V`` is far more) and the per-input values fit :data:`EXACT_PILOT_VALUES`
(``P × parameters``); else ``"sampled"``, whose cost per pilot input is ``2·draws`` gradients.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .api import per_input_statistics
from .calls import call, num_rows, take_rows
from .families import ExponentialFamily
from .passes import Run
from .terms import SumCollector

__all__ = [
    "PILOT_STATISTICS",
    "EXACT_PILOT_OUTPUTS",
    "EXACT_PILOT_VALUES",
    "PilotMoments",
    "TensorMoments",
    "choose_statistics",
    "pilot_moments",
]

PILOT_STATISTICS = ("auto", "exact", "sampled")
EXACT_PILOT_OUTPUTS = 256
EXACT_PILOT_VALUES = 1 << 24
KINDS = ("i1", "i1_sequence", "hutchinson")


class TensorMoments:
    r"""Sums over the pilot of :math:`\hat I, \hat Q, \hat V_k` and their products, for one parameter tensor.

    ``sums`` maps a statistic's name (``"I"``, ``"Q"``, ``"V:i1"``, ``"I*Q"``, ``"V:i1*I"``, ...) to a flat
    float64 tensor over the tensor's parameters; ``count`` is the number ``P`` of pilot inputs.
    """

    def __init__(self, sums: dict[str, Tensor], count: int) -> None:
        self.sums, self.count = sums, count

    def mean(self, name: str) -> Tensor:
        """The pilot mean of one statistic."""
        return self.sums[name] / self.count

    @property
    def fisher(self) -> Tensor:
        r""":math:`\bar I`, the pilot's mean Fisher."""
        return self.mean("I")

    @property
    def var_x(self) -> Tensor:
        r""":math:`\bar Q - \bar I^2` (clamped at 0): the pilot's input variance of the Fisher."""
        return (self.mean("Q") - self.fisher.square()).clamp_min(0)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The estimators whose conditional variances the pilot holds."""
        return tuple(k for k in KINDS if f"V:{k}" in self.sums)

    def cond(self, kind: str) -> Tensor:
        r""":math:`\bar V_k`, the pilot's mean conditional variance of one term of estimator ``kind``."""
        return self.mean(f"V:{kind}")

    def covariance(self, a: str, b: str) -> Tensor:
        """The sample covariance (divisor ``P - 1``) over the pilot of per-input statistics ``a`` and ``b``."""
        key = f"{a}*{b}" if f"{a}*{b}" in self.sums else f"{b}*{a}"
        p = self.count
        return (self.sums[key] - p * self.mean(a) * self.mean(b)) / max(p - 1, 1)


def _product_names(kinds: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """``(product, left, right)`` for every pair the plan's delta method needs."""
    pairs = [("I", "I"), ("Q", "Q"), ("I", "Q")]
    for k in kinds:
        v = f"V:{k}"
        pairs += [(v, v), (v, "I"), (v, "Q")]
    return [(f"{a}*{b}", a, b) for a, b in pairs]


_DEGREE = {"I": 2, "Q": 4, "V": 4}


def _with_products(values: dict[str, Tensor], kinds: tuple[str, ...]) -> list[tuple[str, Tensor, int]]:
    """Per-input statistics and their products, with their degrees (:mod:`fishertut.terms`)."""
    out = [(name, v, _DEGREE[name[0]]) for name, v in values.items()]
    for product, a, b in _product_names(kinds):
        out.append((product, values[a] * values[b], _DEGREE[a[0]] + _DEGREE[b[0]]))
    return out


class PilotMoments(dict):
    """``{parameter name: TensorMoments}`` with the pilot's ``path``, ``num_outputs``, ``unused`` and ``statistics``."""

    def __init__(
        self, moments: dict[str, TensorMoments], path: str, num_outputs: int, unused: frozenset[str], statistics: str
    ) -> None:
        super().__init__(moments)
        self.path, self.num_outputs, self.unused, self.statistics = path, num_outputs, unused, statistics


def _exact(model, inputs, family, batch_size, path, mask, normalize) -> tuple[dict, int, object]:
    per = per_input_statistics(model, inputs, family, batch_size=batch_size, path=path, mask=mask, normalize=normalize)
    sums = {}
    for k, f in per.fisher.items():
        f = f.to(torch.float64).reshape(f.shape[0], -1)
        values = {"I": f, "Q": f.square()}
        for kind, var in zip(KINDS, (per.var_i1, per.var_i1_sequence, per.var_hutchinson)):
            values[f"V:{kind}"] = var[k].to(torch.float64).reshape(f.shape)
        sums[k] = {name: v.sum(0) for name, v, _ in _with_products(values, KINDS)}
    return sums, num_rows(inputs), (per.path, per.num_outputs, per.unused)


def _sampled(model, inputs, family, kinds, draws, generator, batch_size, path, mask, normalize):
    run = Run(model, family, path, batch_size, generator, False, None, mask, normalize)
    drawn: tuple[str, ...] = ()
    col = None
    for _, h, tape, _, layout in run.batches(inputs, None):
        t = layout.num_positions
        parts = []
        if "i1" in kinds:
            eps = layout.sample(h, draws, generator)[1]
            parts.append(("i1_sequence", layout.score_channels(eps, per_token=False)))
        if "hutchinson" in kinds:
            parts.append(("hutchinson", layout.hutchinson_channels(h, draws, generator)))
        if col is None:
            drawn = tuple(name for name, _ in parts) + (("i1",) if "i1" in kinds and t == 1 else ())
            col = SumCollector(float64_stats=frozenset(_stat_names(drawn)))
        channels = torch.cat([c for _, c in parts], 1)
        for unit in run.units(tape, channels, None):
            squares = unit.jac.to(torch.float64).square().split([c.shape[1] for _, c in parts], 1)
            terms = {name: sq for (name, _), sq in zip(parts, squares)}  # (N, S, units)
            if "i1" in drawn:  # no positions: per token is per sequence
                terms["i1"] = terms["i1_sequence"]
            col.add(_with_products(_draw_moments(terms, draws), drawn), unit)
    sums = {k: {stat: s.reshape(-1) for (stat, name), s in col.sums.items() if name == k} for k in run.shapes}
    fisher = {k: sums[k]["I"].reshape(run.shapes[k]) for k in run.shapes}
    return sums, run.num_inputs, (run.engine.name, run.num_outputs, run.unused_in(fisher))


def _names(kinds: tuple[str, ...]) -> list[str]:
    return ["I", "Q", *(f"V:{k}" for k in kinds)]


def _stat_names(kinds: tuple[str, ...]) -> list[str]:
    return _names(kinds) + [product for product, _, _ in _product_names(kinds)]


def _draw_moments(terms: dict[str, Tensor], draws: int) -> dict[str, Tensor]:
    """Per-input unit statistics ``(N, units)`` from ``draws`` terms ``(N, S, units)`` per estimator."""
    out = {}
    for kind in ("i1", "hutchinson", "i1_sequence"):
        if kind in terms:
            mean, var = terms[kind].mean(1), terms[kind].var(1)
            if "I" not in out:
                out["I"], out["Q"] = mean, mean.square() - var / draws
            out[f"V:{kind}"] = var
    return {name: out[name] for name in _names(tuple(k for k in KINDS if k in terms))}


def _all_reduce(sums: dict[str, dict[str, Tensor]], counts: list[int], group: object) -> list[int]:
    """Sum every rank's ``sums`` (in place) and ``counts``; return the summed counts."""
    import torch.distributed as dist

    keys = [(k, s) for k in sorted(sums) for s in sorted(sums[k])]
    flat = torch.cat([sums[k][s].reshape(-1) for k, s in keys])
    flat = torch.cat([flat, flat.new_tensor([float(c) for c in counts])])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    offset = 0
    for k, s in keys:
        size = sums[k][s].numel()
        sums[k][s] = flat[offset : offset + size]
        offset += size
    return [int(round(c)) for c in flat[offset:].tolist()]


def choose_statistics(model: nn.Module, inputs: Tensor | Mapping[str, Tensor]) -> str:
    """``"exact"`` or ``"sampled"`` for ``statistics="auto"`` (module docstring), from one input's outputs."""
    try:
        with torch.no_grad():
            h = call(model, take_rows(inputs, 0, 1))
    except Exception:  # the pilot's own checks name what is wrong with these inputs
        return "exact"
    if not isinstance(h, Tensor):
        return "exact"  # ... or with these outputs
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    affordable = h[0].numel() <= EXACT_PILOT_OUTPUTS and num_rows(inputs) * params <= EXACT_PILOT_VALUES
    return "exact" if affordable else "sampled"


def pilot_moments(
    model: nn.Module,
    inputs: Tensor | Mapping[str, Tensor],
    family: ExponentialFamily,
    statistics: str,
    kinds: tuple[str, ...],
    draws: int,
    generator: torch.Generator | None,
    batch_size: int | None,
    path: str,
    mask: Tensor | None,
    normalize: str,
    process_group: object | None,
    num_inputs: int,
) -> tuple[PilotMoments, int]:
    """The pilot's :class:`TensorMoments` per parameter tensor, and the number of inputs over all ranks.

    Args:
        model: as :func:`~fishertut.estimate` takes it.
        inputs: the pilot's inputs.
        family: the output family.
        statistics: ``"auto"``, ``"exact"`` or ``"sampled"`` (module docstring).
        kinds: the estimators to draw when sampled (among ``"i1"``, ``"hutchinson"``); ``"hutchinson"`` alone
            when none (its draws still give the Fisher and the input variance).
        draws: terms per pilot input and estimator when sampled, at least 2.
        num_inputs: this rank's number of inputs (summed over ``process_group``).
        generator: random source of the draws.
        batch_size: rows per engine call.
        path: as in :func:`~fishertut.fisher_diagonal`.
        mask: the pilot's rows of the mask, or ``None``.
        normalize: ``"sequence"`` or ``"token"``.
        process_group: a ``torch.distributed`` group whose ranks each hold a pilot, or ``None``.
    """
    if statistics == "auto":
        statistics = choose_statistics(model, inputs)
    if statistics == "exact":
        sums, count, info = _exact(model, inputs, family, batch_size, path, mask, normalize)
    else:
        kinds = tuple(k for k in ("i1", "hutchinson") if k in kinds) or ("hutchinson",)
        sums, count, info = _sampled(model, inputs, family, kinds, draws, generator, batch_size, path, mask, normalize)
    if process_group is not None:
        count, num_inputs = _all_reduce(sums, [count, num_inputs], process_group)
    moments = {k: TensorMoments(s, count) for k, s in sums.items()}
    return PilotMoments(moments, *info, statistics), num_inputs
