r"""Figures of the case-study chapters: per-layer curves through training, Monte Carlo, calibration.

Every figure is 7 in wide (the book's column) with at most four panels, and integer epoch ticks. The tables are
those of :func:`fishertut.lab.casestudy.run_case_study`, pooled per layer as in
:mod:`fishertut.pooling`. Where a network mixes layer kinds (a LeNet's convolutions and dense layers), the
layers are labelled with their kind, e.g. "layer 1 (conv)".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from ...groups import flatten, layer_groups
from .style import errorbar_estimates, estimator_color

if TYPE_CHECKING:
    from ..casestudy import CaseStudy

__all__ = ["plot_case_study", "plot_bound_ratios", "plot_monte_carlo", "plot_calibration"]

#: Line styles of the layers, where colour stands for the estimator.
_STYLES: list[Any] = ["-", "--", "-.", ":", (0, (5, 1, 1, 1))]


def _layers(table: Any, activation: str | None, group: str) -> tuple[Any, list[int]]:
    sub = table[table["group"] == group]
    if activation is not None:
        sub = sub[sub["activation"] == activation]
    elif sub["activation"].nunique() > 1:
        raise ValueError(f"the table holds several activations {sorted(sub['activation'].unique())}; pass activation=")
    if sub.empty:
        raise ValueError(f"no rows for activation={activation!r}, group={group!r}")
    return sub, sorted(sub["layer"].unique())


def _labels(table: Any) -> dict[int, str]:
    """``{layer: "layer 1"}``, or ``"layer 1 (conv)"`` where the table holds several layer kinds."""
    layers = sorted(table["layer"].unique())
    if "kind" not in table or table["kind"].nunique() < 2:
        return {layer: f"layer {layer}" for layer in layers}
    kinds = table.drop_duplicates("layer").set_index("layer")["kind"]
    return {layer: f"layer {layer} ({kinds[layer]})" for layer in layers}


def _grid(num: int, height: float) -> Any:
    """``num`` axes in a grid two panels wide, 7 in wide (the book's column), ``height`` in per row."""
    import matplotlib.pyplot as plt

    cols = min(num, 2)
    rows = -(-num // cols)
    _, axes = plt.subplots(rows, cols, figsize=(7.0, height * rows + 0.5), squeeze=False)
    return axes.reshape(-1)[:num]


def _integer_epochs(ax: Any) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))


def _plain(value: float, _pos: Any = None) -> str:
    """A log-axis tick label in plain numbers: 1, 2 and 5 times a power of ten, others left blank."""
    if value <= 0:
        return ""
    mantissa = round(value / 10 ** np.floor(np.log10(value)), 6)
    return f"{value:g}" if mantissa in (1.0, 2.0, 5.0) else ""


def _layer_handles(layers: list[int], labels: dict[int, str]) -> list[Line2D]:
    """Legend entries for the line style of each layer, in grey (colour stands for the estimator)."""
    return [
        Line2D([], [], color="0.35", ls=_STYLES[j % len(_STYLES)], label=labels[layer])
        for j, layer in enumerate(layers)
    ]


def plot_case_study(
    table: Any,
    activation: str | None = None,
    *,
    group: str = "layer",
    axes: Any = None,
    legend: bool = True,
) -> Any:
    r"""The top row of the paper's figure: one panel per layer, epochs on the x-axis, log scale.

    Each panel shows the Fisher information, :math:`\sqrt{V_1}` with its upper bound (dashed; its lower bound
    is 0 for ten classes) and :math:`\sqrt{V_2}` (pooled as in :mod:`fishertut.pooling`) inside the band between
    its lower and upper bounds: five series at most. Î2 is left out where its variance is 0 (the last layer,
    or every layer of a ReLU network). The bottom row of the paper's figure is :func:`plot_bound_ratios`.

    Args:
        table: :attr:`~fishertut.lab.casestudy.CaseStudy.table` (or the CSV read back with pandas).
        activation: which activation's rows (needed if the table holds several).
        group: ``"layer"`` (weights and biases together), ``"weight"`` or ``"bias"``.
        axes: ``L`` axes, one per layer; default: a new figure 7 in wide, two panels per row.
        legend: add a legend below the panels.

    Returns:
        The ``(L,)`` axes array.
    """
    sub, layers = _layers(table, activation, group)
    names = _labels(sub)
    axes = _grid(len(layers), 2.4) if axes is None else np.asarray(axes).reshape(-1)
    c1, c2 = estimator_color("i1"), estimator_color("i2")
    for ax, layer in zip(axes, layers):
        d = sub[sub["layer"] == layer].sort_values("epoch")
        ep = d["epoch"].to_numpy()
        ax.plot(ep, d["fisher"], color=estimator_color("exact"), label="Fisher information")
        ax.plot(ep, d["sd_i1"], color=c1, label=r"sd of $\hat{\mathcal{I}}_1$")
        ax.plot(ep, d["sd_i1_upper"], color=c1, ls="--", lw=1.1, label=r"upper bound, $\hat{\mathcal{I}}_1$")
        has_i2 = bool((d["var_i2"] > 0).all())
        if has_i2:
            ax.plot(ep, d["sd_i2"], color=c2, label=r"sd of $\hat{\mathcal{I}}_2$")
            ax.fill_between(
                ep,
                d["sd_i2_lower"],
                d["sd_i2_upper"],
                color=c2,
                alpha=0.2,
                lw=0,
                label=r"bounds, $\hat{\mathcal{I}}_2$",
            )
        ax.set_yscale("log")
        ax.set_title(names[layer] + (f" ({group}s)" if group != "layer" else "") + ("" if has_i2 else r", $V_2 = 0$"))
        ax.set_xlabel("epoch")
        _integer_epochs(ax)
    axes[0].set_ylabel("value (log scale)")
    if legend:
        handles, labels = max((ax.get_legend_handles_labels() for ax in axes), key=lambda hl: len(hl[0]))
        axes[0].figure.legend(handles, labels, loc="outside lower center", ncols=3)
    return axes


def plot_bound_ratios(table: Any, activation: str | None = None, *, group: str = "layer", axes: Any = None) -> Any:
    r"""The bottom row of the paper's figure: :math:`\log_{10}(\text{upper bound}/V_k)` through training.

    One panel per estimator (Î1, then Î2), one line style per layer (legend below the panels); 0 (grey) means
    the bound is tight. Layers where :math:`V_2 = 0` have no Î2 line.

    Args:
        table: :attr:`~fishertut.lab.casestudy.CaseStudy.table` (or the CSV read back with pandas).
        activation: which activation's rows (needed if the table holds several).
        group: ``"layer"``, ``"weight"`` or ``"bias"``.
        axes: two axes; default: a new figure 7 in wide.

    Returns:
        The ``(2,)`` axes array.
    """
    import matplotlib.pyplot as plt

    sub, layers = _layers(table, activation, group)
    names = _labels(sub)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(7.0, 2.9), sharey=True)
    axes = np.asarray(axes).reshape(-1)
    bottom = min(-0.05, float(np.nanmin(sub[["log10_v1_upper", "log10_v2_upper"]].to_numpy())))
    for ax, k in zip(axes, ("1", "2")):
        for j, layer in enumerate(layers):
            d = sub[sub["layer"] == layer].sort_values("epoch")
            if k == "2" and not bool((d["var_i2"] > 0).all()):
                continue
            ax.plot(
                d["epoch"],
                d[f"log10_v{k}_upper"],
                color=estimator_color(f"i{k}"),
                ls=_STYLES[j % len(_STYLES)],
                label=names[layer],
            )
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.set(title=rf"$\hat{{\mathcal{{I}}}}_{k}$", xlabel="epoch", ylim=(bottom, None))
        _integer_epochs(ax)
    axes[0].set_ylabel(r"$\log_{10}$(upper bound / variance)")
    axes[0].figure.legend(handles=_layer_handles(layers, names), loc="outside lower center", ncols=len(layers))
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
    rep, mc, st = study.report, study.monte_carlo, study.settings
    var = {
        k: rep.estimator_variance(k, num_inputs=st["mc_inputs"], samples_per_input=st["mc_samples"])
        for k in ("i1", "i2")
    }
    groups = layer_groups(study.model)
    names = _labels(study.table)
    axes = _grid(len(groups), 2.4) if axes is None else np.asarray(axes).reshape(-1)

    def flat(d: dict[str, Tensor], names: list[str]) -> np.ndarray:
        return flatten(d, names).numpy()

    for li, (ax, params) in enumerate(zip(axes, groups.values()), start=1):
        exact = flat(rep.fisher, params)
        order = np.argsort(exact, kind="stable")
        # Leave out negligible values (weights of pixels that are blank, or nearly, in every evaluation digit).
        order = order[exact[order] > 1e-8 * exact.max()]
        pick = order[np.unique(np.linspace(0, order.size - 1, min(num_params, order.size)).round().astype(int))]
        errorbar_estimates(
            ax,
            exact[pick],
            {k: flat(mc[k], params)[pick] for k in ("i1", "i2")},
            {k: np.sqrt(flat(var[k], params)[pick]) for k in ("i1", "i2")},
            labels={"i1": r"MC $\hat{\mathcal{I}}_1$", "i2": r"MC $\hat{\mathcal{I}}_2$"},
            num_sd=num_sd,
            log=log,
            sort=True,
            exact_label="Fisher information",
        )
        ax.set_title(names[li])
        ax.set_xlabel("parameter (sorted)")
        ax.set_xticks([])
        handles, labels = ax.get_legend_handles_labels()
        ax.get_legend().remove()
    axes[0].set_ylabel("diagonal Fisher")
    axes[0].figure.legend(handles, labels, loc="outside lower center", ncols=3)
    return axes


def plot_calibration(table: Any, activation: str | None = None, *, group: str = "layer", ax: Any = None) -> Any:
    r"""Root mean square of the standardised Monte-Carlo errors per layer and epoch (``mc_*_rms_z``).

    Each parameter's :math:`z_i^2` has expectation exactly 1 when the standard errors are right, so the
    curves should scatter around 1 (the grey line). Colour stands for the estimator, line style for the layer;
    the legend is to the right of the panel.

    Returns:
        The axes.
    """
    import matplotlib.pyplot as plt

    sub, layers = _layers(table, activation, group)
    names = _labels(sub)
    if ax is None:
        _, ax = plt.subplots(figsize=(7.0, 2.9))
    for j, layer in enumerate(layers):
        d = sub[sub["layer"] == layer].sort_values("epoch")
        for k in ("i1", "i2"):
            ax.plot(
                d["epoch"],
                d[f"mc_{k}_rms_z"],
                color=estimator_color(k),
                ls=_STYLES[j % len(_STYLES)],
                lw=1.2,
            )
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set(xlabel="epoch", ylabel=r"RMS of $z_i$ over the layer", ylim=(0, None))
    _integer_epochs(ax)
    estimators = [
        Line2D([], [], color=estimator_color(k), label=rf"$\hat{{\mathcal{{I}}}}_{k[1]}$") for k in ("i1", "i2")
    ]
    ax.legend(handles=estimators + _layer_handles(layers, names), loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return ax
