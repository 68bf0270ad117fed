r"""Pooling a variance report per parameter group: per-layer tables and which estimator to use where.

* :func:`layer_summary`: the Fisher information, the variances and the bounds, pooled per group;
* :func:`recommend_estimator`: per group, the estimator with the smaller variance and the inputs it needs;
* :func:`combine_by_group`: one estimate with each group taken from its chosen estimator.

Pooling within a group (the paper does not say how it pools; our choice): a group's Fisher information and
variances are the means of its parameters' values, its standard deviation the square root of the mean variance,
and a bound's log-ratio :math:`\log_{10}(\overline{\text{bound}}/\overline{V_k})` compares pooled means. The
MNIST case study (:mod:`fishertut.lab.casestudy`) uses the same columns.

See chapters :doc:`/book/bounds`, :doc:`/book/input_and_label_variance` and :doc:`/book/practical_guide`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import Tensor

from .groups import Groups, flatten, layer_groups
from .report import VarianceReport

__all__ = ["layer_summary", "recommend_estimator", "combine_by_group"]


def _log10_ratio(num: float, den: float) -> float:
    if num == 0 and den == 0:
        return math.nan
    if den == 0:
        return math.inf
    if num == 0:
        return -math.inf
    return math.log10(num / den)


def layer_summary(report: VarianceReport, groups: Groups | None = None) -> Any:
    r"""Per-group means of a :class:`~fishertut.VarianceReport`: Fisher, variances, standard deviations, bounds.

    Columns (one row per group; means over the group's parameters, see the module docstring):

    * ``num_params``; ``fisher`` (:math:`\overline{\mathcal I}`); ``var_x``; ``var_i1``, ``var_i2``
      (:math:`\overline{V_k}`, one label per input);
    * ``sd_i1``, ``sd_i2`` (:math:`\sqrt{\overline{V_k}}`) and ``rel_sd_i1``, ``rel_sd_i2``
      (:math:`\sqrt{\overline{V_k}}/\overline{\mathcal I}`);
    * ``v1_lower``, ``v1_upper``, ``v2_lower``, ``v2_upper``: the means of the bounds (:class:`~fishertut.Bounds`);
    * ``log10_v1_upper``, ``log10_v2_upper``: :math:`\log_{10}(\overline{\text{upper}}/\overline{V_k})`, and
      ``log10_v1_lower``, ``log10_v2_lower``: :math:`\log_{10}(\overline{V_k}/\overline{\text{lower}})`; 0 when
      the bound is tight, ``inf`` for a zero lower bound, ``nan`` where bound and variance are both 0.

    Args:
        report: from :func:`~fishertut.variance_report`.
        groups: ``{group: [parameter names]}``; default :func:`~fishertut.groups.layer_groups` of the report's
            parameters.

    Returns:
        ``pandas.DataFrame`` indexed by group name.
    """
    import pandas as pd

    groups = layer_groups(list(report.fisher)) if groups is None else groups
    stats = report.statistics()
    rows = {}
    for group, names in groups.items():
        row: dict[str, float] = {k: float(flatten(v, names).mean()) for k, v in stats.items()}
        row = {"num_params": int(flatten(report.fisher, names).numel()), **row}
        for k in ("1", "2"):
            var = row[f"var_i{k}"]
            row[f"sd_i{k}"] = math.sqrt(var)
            row[f"rel_sd_i{k}"] = math.sqrt(var) / row["fisher"] if row["fisher"] > 0 else math.nan
            row[f"log10_v{k}_upper"] = _log10_ratio(row[f"v{k}_upper"], var)
            row[f"log10_v{k}_lower"] = _log10_ratio(var, row[f"v{k}_lower"])
        rows[group] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def recommend_estimator(
    report: VarianceReport,
    groups: Groups | None = None,
    *,
    epsilon: float = 0.1,
    delta: float = 0.05,
    samples_per_input: int = 1,
) -> Any:
    r"""Which estimator to use for each parameter group, and how many inputs it needs.

    Chapter :doc:`/book/practical_guide`.

    Both estimators are unbiased and share the input term, so for ``N`` inputs and ``S`` labels each the
    group's total mean squared error is :math:`\sum_i(\mathrm{var\_x}_i + \mathrm{var\_ik}_i/S)/N`. The
    recommendation is the estimator with the smaller :math:`\sum_i \mathrm{var\_ik}_i` over the group
    (``"i2"`` on ties). A last layer, where :math:`V_2 \equiv 0` (the paper's Remark 4.4), always gets ``"i2"``.

    Columns (one row per group):

    * ``num_params``, ``fisher`` (mean), ``rel_sd_i1``, ``rel_sd_i2``: as in :func:`layer_summary`;
    * ``x_share_i1``, ``x_share_i2``:
      :math:`\overline{\mathrm{var\_x}}/(\overline{\mathrm{var\_x}} + \overline{V_k}/S)`, the share of one estimator
      term's variance that comes from the inputs;
    * ``frac_i2_better``: fraction of the group's parameters (with non-zero variance) where
      :math:`V_2 < V_1`;
    * ``recommended``: ``"i1"`` or ``"i2"``; ``n_i1``, ``n_i2``, ``n``: the median over the group's
      parameters with non-zero Fisher information of the Chebyshev sample size
      :meth:`~fishertut.VarianceReport.sample_size` for a relative error ``epsilon`` with probability
      ``1 - delta`` (``n`` for the recommended estimator); ``n_q90``: its 90% quantile.

    Args:
        report: from :func:`~fishertut.variance_report`.
        groups: as in :func:`layer_summary`.
        epsilon: relative error of the sample size.
        delta: failure probability of the sample size.
        samples_per_input: labels per input :math:`S`.

    Returns:
        ``pandas.DataFrame`` indexed by group name.
    """
    import pandas as pd

    groups = layer_groups(list(report.fisher)) if groups is None else groups
    sizes = {
        k: report.sample_size(epsilon, delta, estimator=k, samples_per_input=samples_per_input) for k in ("i1", "i2")
    }
    summary = layer_summary(report, groups)
    rows = {}
    for group, names in groups.items():
        fisher = flatten(report.fisher, names)
        var = {k: flatten(report.conditional_variance(k), names) for k in ("i1", "i2")}
        var_x = float(flatten(report.var_x, names).mean())
        live = (var["i1"] + var["i2"]) > 0
        rec = "i2" if float(var["i2"].sum()) <= float(var["i1"].sum()) else "i1"
        informative = fisher > 0
        n = {k: flatten(sizes[k], names)[informative].numpy() for k in ("i1", "i2")}
        median = {k: float(np.median(v)) if v.size else 1.0 for k, v in n.items()}
        row = {
            "num_params": int(fisher.numel()),
            "fisher": float(fisher.mean()),
            "rel_sd_i1": float(summary.loc[group, "rel_sd_i1"]),
            "rel_sd_i2": float(summary.loc[group, "rel_sd_i2"]),
        }
        for k in ("i1", "i2"):
            cond = float(var[k].mean()) / samples_per_input
            row[f"x_share_{k}"] = var_x / (var_x + cond) if var_x + cond > 0 else math.nan
        row["frac_i2_better"] = (
            float((var["i2"][live] < var["i1"][live]).double().mean()) if bool(live.any()) else math.nan
        )
        row["recommended"] = rec
        row["n_i1"], row["n_i2"] = median["i1"], median["i2"]
        row["n"] = median[rec]
        row["n_q90"] = float(np.quantile(n[rec], 0.9)) if n[rec].size else 1.0
        rows[group] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def combine_by_group(
    estimates: Mapping[str, Mapping[str, Tensor]], choice: Mapping[str, str], groups: Groups
) -> dict[str, Tensor]:
    """One diagonal-FIM estimate with each group taken from its chosen estimator.

    Args:
        estimates: ``{estimator: {parameter name: tensor}}``, e.g. ``{"i1": fisher_diagonal(..., "i1"), ...}``.
        choice: ``{group: estimator}``, e.g. ``recommend_estimator(report, groups)["recommended"]``.
        groups: ``{group: [parameter names]}``.

    Returns:
        ``{parameter name: tensor}`` over all the groups' parameters.
    """
    out = {}
    for group, names in groups.items():
        est = choice[group]
        if est not in estimates:
            raise KeyError(f"group {group!r} wants estimator {est!r}, which is not among {sorted(estimates)}")
        for n in names:
            out[n] = estimates[est][n]
    return out
