r"""The per-layer trade-off figure of the case-study chapters: which estimator is less noisy, layer by layer.

The table is that of :func:`fishertut.lab.casestudy.run_case_study`; layers are labelled as in
:mod:`~fishertut.lab.plotting.casestudy` (with their kind where a network mixes kinds).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from .casestudy import _labels, _plain
from .style import estimator_color

__all__ = ["plot_layer_tradeoff"]


def plot_layer_tradeoff(table: Any, epoch: int | None = None, *, group: str = "layer", axes: Any = None) -> Any:
    r"""The per-layer trade-off: relative standard deviations of Î1 and Î2 side by side, one panel per activation.

    For each layer (labelled with its kind where the network mixes kinds), two points on a log scale (points,
    not bars: a bar's length on a log axis depends on where the axis starts):
    :math:`\sqrt{\overline{V_1}}/\overline{\mathcal I}` (``rel_sd_i1``, circles) and
    :math:`\sqrt{\overline{V_2}}/\overline{\mathcal I}` (``rel_sd_i2``, squares), joined by a grey line, one
    label per input with the input held fixed. The lower point is the estimator to use in that layer. Where
    :math:`V_2 = 0` there is no Î2 point; the layer is marked :math:`V_2 = 0` instead.

    Args:
        table: :attr:`~fishertut.lab.casestudy.CaseStudy.table` (or several concatenated), at most four
            activations.
        epoch: which epoch; default the last one in the table.
        group: ``"layer"``, ``"weight"`` or ``"bias"``.
        axes: one axis per activation; default: a new figure 7 in wide, sharing the y-axis.

    Returns:
        The axes array, one per activation (in the table's order); each holds one line per estimator.
    """
    import matplotlib.pyplot as plt

    sub = table[table["group"] == group]
    epoch = int(sub["epoch"].max()) if epoch is None else epoch
    sub = sub[sub["epoch"] == epoch]
    activations = list(dict.fromkeys(sub["activation"]))
    if not activations:
        raise ValueError(f"no rows for epoch={epoch}, group={group!r}")
    if len(activations) > 4:
        raise ValueError(f"at most four activations per figure, got {activations}")
    if axes is None:
        _, axes = plt.subplots(1, len(activations), figsize=(7.0, 3.2), sharey=True, squeeze=False)
    axes = np.asarray(axes).reshape(-1)
    markers = {"1": "o", "2": "s"}
    for ax, act in zip(axes, activations):
        d = sub[sub["activation"] == act].sort_values("layer")
        names = _labels(d)
        pos = np.arange(len(d))
        rel = {k: d[f"rel_sd_i{k}"].to_numpy(dtype=float) for k in markers}
        live = {k: d[f"var_i{k}"].to_numpy() > 0 for k in markers}
        both = live["1"] & live["2"]
        ax.vlines(pos[both], rel["1"][both], rel["2"][both], color="0.7", lw=1.2, zorder=1)
        for k, marker in markers.items():
            ax.plot(
                pos[live[k]],
                rel[k][live[k]],
                ls="none",
                marker=marker,
                ms=7,
                color=estimator_color(f"i{k}"),
                label=rf"$\hat{{\mathcal{{I}}}}_{k}$",
                zorder=3,
            )
            for p in pos[~live[k]]:
                ax.annotate(
                    f"$V_{k}=0$",
                    (p, 0.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(0, 3),
                    textcoords="offset points",
                    rotation=90,
                    ha="center",
                    va="bottom",
                    color=estimator_color(f"i{k}"),
                )
        ax.set_yscale("log")
        ax.set_xlim(-0.5, len(d) - 0.5)
        ax.yaxis.set_major_formatter(FuncFormatter(_plain))
        ax.yaxis.set_minor_formatter(FuncFormatter(_plain))
        ax.set_xticks(pos, [names[layer].replace(" (", "\n(") for layer in d["layer"]])
        ax.set_title(f"{act}, epoch {epoch}")
    axes[0].set_ylabel("relative sd (sd / Fisher)")
    handles = [
        Line2D(
            [],
            [],
            ls="none",
            marker=markers[k],
            ms=7,
            color=estimator_color(f"i{k}"),
            label=rf"$\hat{{\mathcal{{I}}}}_{k}$",
        )
        for k in ("1", "2")
    ]
    axes[0].figure.legend(handles=handles, loc="outside lower center", ncols=2)
    return axes
