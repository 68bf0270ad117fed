r"""Figures of chapter "Case study: an MNIST classifier": per-layer curves through training, Monte Carlo, calibration.

The tables are those of :func:`fishertut.lab.casestudy.run_case_study`, pooled per layer as in
:mod:`fishertut.pooling`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from ...groups import flatten, layer_groups
from .style import errorbar_estimates, estimator_color

if TYPE_CHECKING:
    from ..casestudy import CaseStudy

__all__ = ["plot_case_study", "plot_monte_carlo", "plot_calibration"]


def _layers(table: Any, activation: str | None, group: str) -> tuple[Any, list[int]]:
    sub = table[table["group"] == group]
    if activation is not None:
        sub = sub[sub["activation"] == activation]
    elif sub["activation"].nunique() > 1:
        raise ValueError(f"the table holds several activations {sorted(sub['activation'].unique())}; pass activation=")
    if sub.empty:
        raise ValueError(f"no rows for activation={activation!r}, group={group!r}")
    return sub, sorted(sub["layer"].unique())


def plot_case_study(
    table: Any,
    activation: str | None = None,
    *,
    group: str = "layer",
    axes: Any = None,
    ratio_row: bool = True,
    legend: bool = True,
) -> Any:
    r"""The paper's figure layout: one column per layer, epochs on the x-axis.

    Top row (log scale): the Fisher information, :math:`\sqrt{V_1}` and :math:`\sqrt{V_2}` (pooled as in
    :mod:`fishertut.pooling`) with their upper bounds (dashed) and the lower bound of :math:`\sqrt{V_2}` (dotted; the
    lower bound of :math:`V_1` is 0 for ten classes). Bottom row: :math:`\log_{10}(\text{upper bound}/V_k)`.
    Î2 is left out where its variance is 0 (the last layer, or every layer of a ReLU network).

    Args:
        table: :attr:`~fishertut.lab.casestudy.CaseStudy.table` (or the CSV read back with pandas).
        activation: which activation's rows (needed if the table holds several).
        group: ``"layer"`` (weights and biases together), ``"weight"`` or ``"bias"``.
        axes: a ``(2, L)`` (or ``(L,)`` with ``ratio_row=False``) array of axes; default: a new figure.
        ratio_row: draw the bottom row.
        legend: add a legend to the first column.

    Returns:
        The axes array.
    """
    import matplotlib.pyplot as plt

    sub, layers = _layers(table, activation, group)
    rows = 2 if ratio_row else 1
    if axes is None:
        _, axes = plt.subplots(
            rows, len(layers), figsize=(2.6 * len(layers), 2.5 * rows + 0.4), sharex=True, squeeze=False
        )
    axes = np.asarray(axes).reshape(rows, len(layers))
    c1, c2 = estimator_color("i1"), estimator_color("i2")
    for j, layer in enumerate(layers):
        d = sub[sub["layer"] == layer].sort_values("epoch")
        ep = d["epoch"].to_numpy()
        ax = axes[0, j]
        ax.plot(ep, d["fisher"], color=estimator_color("exact"), label="Fisher information")
        ax.plot(ep, d["sd_i1"], color=c1, label=r"sd of $\hat{\mathcal{I}}_1$")
        ax.plot(ep, d["sd_i1_upper"], color=c1, ls="--", lw=1.1, label=r"upper bound, $\hat{\mathcal{I}}_1$")
        has_i2 = bool((d["var_i2"] > 0).all())
        if has_i2:
            ax.plot(ep, d["sd_i2"], color=c2, label=r"sd of $\hat{\mathcal{I}}_2$")
            ax.plot(ep, d["sd_i2_upper"], color=c2, ls="--", lw=1.1, label=r"upper bound, $\hat{\mathcal{I}}_2$")
            ax.plot(ep, d["sd_i2_lower"], color=c2, ls=":", lw=1.1, label=r"lower bound, $\hat{\mathcal{I}}_2$")
        ax.set_yscale("log")
        ax.set_title(
            f"layer {layer}" + (f" ({group}s)" if group != "layer" else "") + ("" if has_i2 else r", $V_2 = 0$")
        )
        if ratio_row:
            ax = axes[1, j]
            ax.plot(ep, d["log10_v1_upper"], color=c1, label=r"$\hat{\mathcal{I}}_1$")
            if has_i2:
                ax.plot(ep, d["log10_v2_upper"], color=c2, label=r"$\hat{\mathcal{I}}_2$")
            ax.axhline(0.0, color="0.5", lw=0.8)
            ax.set_ylim(bottom=min(-0.05, float(np.nanmin(sub[["log10_v1_upper", "log10_v2_upper"]].to_numpy()))))
        axes[-1, j].set_xlabel("epoch")
    axes[0, 0].set_ylabel("value (log scale)")
    if ratio_row:
        axes[1, 0].set_ylabel(r"$\log_{10}$(upper bound / variance)")
    if legend:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        axes[0, 0].figure.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
    return axes


def plot_monte_carlo(
    study: CaseStudy, *, num_params: int = 25, axes: Any = None, num_sd: float = 2.0, log: bool = True
) -> Any:
    r"""Per-parameter Monte-Carlo Î1 and Î2 of the last epoch with :math:`\pm` ``num_sd`` standard errors.

    For each layer, ``num_params`` parameters (weights and biases) with Fisher information above
    :math:`10^{-8}` times the layer's largest, evenly spaced in the order of their exact value, are drawn as in
    :func:`errorbar_estimates`: the exact values
    as a line, the estimates with bars from :meth:`~fishertut.VarianceReport.estimator_variance` for the
    study's ``mc_inputs`` inputs (drawn with replacement from the evaluation set) and ``mc_samples`` labels.

    Args:
        study: the result of :func:`~fishertut.lab.casestudy.run_case_study`.
        num_params: parameters shown per layer.
        axes: ``(L,)`` axes; default: a new figure.
        num_sd: half-width of the bars in standard errors.
        log: logarithmic y-axis.

    Returns:
        The axes array ``(L,)``.
    """
    import matplotlib.pyplot as plt

    rep, mc, st = study.report, study.monte_carlo, study.settings
    var = {
        k: rep.estimator_variance(k, num_inputs=st["mc_inputs"], samples_per_input=st["mc_samples"])
        for k in ("i1", "i2")
    }
    groups = layer_groups(study.model)
    if axes is None:
        _, axes = plt.subplots(1, len(groups), figsize=(2.6 * len(groups), 3.0), squeeze=False)
    axes = np.asarray(axes).reshape(-1)

    def flat(d: dict[str, Tensor], names: list[str]) -> np.ndarray:
        return flatten(d, names).numpy()

    for ax, (layer, names) in zip(axes, groups.items()):
        exact = flat(rep.fisher, names)
        order = np.argsort(exact, kind="stable")
        # Leave out negligible values (weights of pixels that are blank, or nearly, in every evaluation digit).
        order = order[exact[order] > 1e-8 * exact.max()]
        pick = order[np.unique(np.linspace(0, order.size - 1, min(num_params, order.size)).round().astype(int))]
        errorbar_estimates(
            ax,
            exact[pick],
            {k: flat(mc[k], names)[pick] for k in ("i1", "i2")},
            {k: np.sqrt(flat(var[k], names)[pick]) for k in ("i1", "i2")},
            labels={"i1": r"MC $\hat{\mathcal{I}}_1$", "i2": r"MC $\hat{\mathcal{I}}_2$"},
            num_sd=num_sd,
            log=log,
            sort=True,
            exact_label="Fisher information",
        )
        ax.set_title(layer)
        ax.set_xlabel("parameter (sorted)")
        ax.set_xticks([])
        handles, labels = ax.get_legend_handles_labels()
        ax.get_legend().remove()
    axes[0].set_ylabel("diagonal Fisher")
    axes[0].figure.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
    return axes


def plot_calibration(table: Any, activation: str | None = None, *, group: str = "layer", ax: Any = None) -> Any:
    r"""Root mean square of the standardised Monte-Carlo errors per layer and epoch (``mc_*_rms_z``).

    Each parameter's :math:`z_i^2` has expectation exactly 1 when the standard errors are right, so the
    curves should scatter around 1 (the grey line).

    Returns:
        The axes.
    """
    import matplotlib.pyplot as plt

    sub, layers = _layers(table, activation, group)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, 2.8))
    styles = ["-", "--", "-.", ":", (0, (5, 1, 1, 1))]
    for j, layer in enumerate(layers):
        d = sub[sub["layer"] == layer].sort_values("epoch")
        for k in ("i1", "i2"):
            ax.plot(
                d["epoch"],
                d[f"mc_{k}_rms_z"],
                color=estimator_color(k),
                ls=styles[j % len(styles)],
                lw=1.2,
                label=f"layer {layer}" if k == "i1" else None,
            )
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set(xlabel="epoch", ylabel=r"RMS of $z_i$ over the layer", ylim=(0, None))
    ax.legend(ncols=2, fontsize=8, title=r"orange $\hat{\mathcal{I}}_1$, blue $\hat{\mathcal{I}}_2$", title_fontsize=8)
    return ax
