r"""The language-model chapter's study: the recipes of LM code as diagonals, their bias and variance, and budgets.

Used by chapter :doc:`/book/language_model`. Every function works on the per-sequence quantities of
:func:`fishertut.lab.tokens.sequence_stats` (a pool of ``N`` sequences), so no recipe needs another backward
pass. Sequences are normalised per sequence (each input's Fisher sums its positions); divide by ``T`` for the
per-token normalisation.

* :func:`recipe_estimates`: each recipe's diagonal from a subset of the pool and one label draw;
* :func:`bias_and_spread`: per parameter group, each recipe's exact relative bias and relative standard
  deviation at a budget of ``n`` sequences;
* :func:`merge_weight_budget`: the sequences a merge weight :math:`w = F_A/(F_A+F_B)` needs to lie within a
  relative tolerance with a given confidence (delta method, normal approximation).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fishertut.lab.tokens import SequenceStats, group_of
from fishertut.variances import minibatch_variance

__all__ = ["RECIPES", "recipe_estimates", "bias_and_spread", "merge_weight_budget", "merge_weight_variance"]

#: The recipes compared, in table order, with what each computes (one label draw per position where sampled).
RECIPES = {
    "exact": "sum over positions and classes, p-weighted squared scores",
    "Î1 per token": "sum over positions of squared sampled-label scores",
    "Î1 per sequence": "square of the summed sampled-label score of a sequence",
    "GNB, ×B": "B times the squared mean over B sequences of summed sampled-label scores",
    "GNB, no ×B": "the squared mean over B sequences, without the factor B",
    "data tokens": "sum over positions of squared data-label scores (empirical Fisher)",
    "argmax tokens": "sum over positions of squared argmax-label scores",
    "argmax, last token": "squared argmax-label score of the last position only",
    "√p sum over batch": "square of the gradient of the √p-weighted loss summed over B sequences and all classes",
}


def _mean(values: dict[str, Tensor], idx: Tensor) -> dict[str, Tensor]:
    return {k: v[idx].mean(0) for k, v in values.items()}


def _batched_square(vectors: dict[str, Tensor], idx: Tensor, b: int, scale: float) -> dict[str, Tensor]:
    """``scale / M * sum_m (sum_{n in batch m} v_n)^2`` over ``M = len(idx) // b`` batches of consecutive ``idx``."""
    m = len(idx) // b
    if m < 1:
        raise ValueError(f"need at least one minibatch of {b} sequences, got {len(idx)}")
    out = {}
    for k, v in vectors.items():
        sums = v[idx[: m * b]].reshape(m, b, *v.shape[1:]).sum(1)
        out[k] = scale * sums.square().mean(0)
    return out


def recipe_estimates(stats: SequenceStats, idx: Tensor, draw: int = 0, minibatch: int = 4) -> dict[str, dict]:
    """Each recipe of :data:`RECIPES` over the sequences ``idx`` of the pool, with label draw ``draw``.

    GNB and the √p recipe group consecutive entries of ``idx`` into minibatches of ``minibatch`` sequences.

    Returns:
        ``{recipe: {parameter name: tensor}}``, each an estimate of the mean per-sequence Fisher.
    """
    b = minibatch
    seq = {k: v[:, draw] for k, v in stats.sequence_draws.items()}
    gnb = _batched_square(seq, idx, b, 1.0 / b)  # B * (mean)^2 = (sum)^2 / B
    return {
        "exact": _mean(stats.fisher, idx),
        "Î1 per token": {k: v[idx, draw].mean(0) for k, v in stats.token_draws.items()},
        "Î1 per sequence": {k: v[idx].square().mean(0) for k, v in seq.items()},
        "GNB, ×B": gnb,
        "GNB, no ×B": {k: v / b for k, v in gnb.items()},
        "data tokens": _mean(stats.data, idx),
        "argmax tokens": _mean(stats.argmax, idx),
        "argmax, last token": _mean(stats.last_argmax, idx),
        "√p sum over batch": _batched_square(stats.sqrt_p_score, idx, b, 1.0 / b),
    }


def _expectation_and_variance(stats: SequenceStats, recipe: str, n: int, b: int) -> tuple[dict, dict]:
    """Exact mean and variance of one recipe at ``n`` sequences drawn i.i.d. from the pool (per parameter)."""
    fisher = {k: v.mean(0) for k, v in stats.fisher.items()}
    var_x = {k: v.var(0, unbiased=False) for k, v in stats.fisher.items()}
    if recipe in ("exact", "data tokens", "argmax tokens", "argmax, last token"):
        field = {
            "exact": stats.fisher,
            "data tokens": stats.data,
            "argmax tokens": stats.argmax,
            "argmax, last token": stats.last_argmax,
        }[recipe]
        return {k: v.mean(0) for k, v in field.items()}, {k: v.var(0, unbiased=False) / n for k, v in field.items()}
    if recipe in ("Î1 per token", "Î1 per sequence"):
        cond = stats.var_tok if recipe == "Î1 per token" else stats.var_seq
        return fisher, {k: var_x[k] / n + cond[k].mean(0) / n for k in fisher}
    if recipe in ("GNB, ×B", "GNB, no ×B"):
        scale = 1.0 if recipe == "GNB, ×B" else 1.0 / b
        var = {
            k: minibatch_variance(fisher[k], var_x[k], stats.var_seq[k].mean(0), n, 1, b, "drawn", n) * scale**2
            for k in fisher
        }
        return {k: scale * v for k, v in fisher.items()}, var
    if recipe == "√p sum over batch":
        a = stats.sqrt_p_score
        mean = {k: v.square().mean(0) + (b - 1) * v.mean(0).square() for k, v in a.items()}
        return mean, {k: torch.full_like(v, float("nan")) for k, v in mean.items()}
    raise ValueError(f"recipe must be one of {list(RECIPES)}, got {recipe!r}")


def bias_and_spread(stats: SequenceStats, budgets: tuple[int, ...] = (100, 256, 1000), minibatch: int = 4) -> list:
    r"""Rows ``(recipe, group, relative bias, {n: median relative std})`` per parameter group of the model.

    The relative bias is :math:`(\sum_i \mathbb E\hat F_i - \sum_i F_i)/\sum_i F_i` over the group's entries;
    the relative standard deviation of an entry is :math:`\sqrt{\mathrm{Var}\hat F_i}/F_i` at ``n`` sequences
    drawn i.i.d. from the pool (variances scale as ``1/n``), its median over the group's entries with
    :math:`F_i > 0`. The √p recipe's spread comes from its minibatch composition only and is left as NaN.
    """
    fisher = {k: v.mean(0) for k, v in stats.fisher.items()}
    rows = []
    for recipe in RECIPES:
        means = {}
        spreads: dict[int, dict] = {}
        for n in budgets:
            means, var = _expectation_and_variance(stats, recipe, n, minibatch)
            spreads[n] = var
        for group in sorted({group_of(k) for k in fisher}):
            names = [k for k in fisher if group_of(k) == group]
            total = sum(fisher[k].sum() for k in names)
            bias = float((sum(means[k].sum() for k in names) - total) / total)
            med = {}
            for n in budgets:
                ratio = torch.cat([(spreads[n][k].sqrt() / fisher[k])[fisher[k] > 0] for k in names])
                med[n] = float(ratio.median())
            rows.append((recipe, group, bias, med))
    return rows


def merge_weight_variance(fa: Tensor, fb: Tensor, var_a: Tensor, var_b: Tensor) -> Tensor:
    r"""Delta-method variance of :math:`w = F_A/(F_A+F_B)` for independent estimates ``var_a``, ``var_b``.

    :math:`\mathrm{Var}\,w \approx w^2(1-w)^2(\mathrm{Var}\hat F_A/F_A^2 + \mathrm{Var}\hat F_B/F_B^2)`.
    """
    w = fa / (fa + fb)
    return w.square() * (1 - w).square() * (var_a / fa.square() + var_b / fb.square())


def merge_weight_budget(
    fa: Tensor, fb: Tensor, var_a: Tensor, var_b: Tensor, rtol: float = 0.1, confidence: float = 0.95
) -> Tensor:
    r"""Sequences per model for :math:`|\hat w - w| \le \mathrm{rtol}\cdot w` with probability ``confidence``.

    ``var_a``, ``var_b`` are the per-sequence variances (at one sequence); with ``n`` sequences each they
    divide by ``n``. Normal approximation: :math:`n = z^2\,\mathrm{Var}_1 w/(\mathrm{rtol}\,w)^2`, rounded up,
    with :math:`z` the two-sided quantile.
    """
    z = math.sqrt(2) * torch.erfinv(torch.tensor(confidence, dtype=torch.float64)).item()
    w = fa / (fa + fb)
    var1 = merge_weight_variance(fa, fb, var_a, var_b)
    return torch.ceil(z**2 * var1 / (rtol * w).square())
