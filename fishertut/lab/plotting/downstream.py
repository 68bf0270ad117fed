r"""Figures of chapter :doc:`/book/downstream`: a metric against a strength, one band per Fisher diagonal.

:func:`plot_bands` draws, from a table of per-seed results (one row per seed, Fisher diagonal and strength),
the mean over seeds of a metric against the strength (the EWC :math:`\lambda` or the Laplace prior precision
:math:`\tau`) with a band of one standard error, and :func:`plot_baseline` a method without Fisher diagonal as
a dashed line with its band.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from matplotlib.axes import Axes

__all__ = ["plot_bands", "plot_baseline"]


def plot_bands(
    ax: Axes,
    table: pd.DataFrame,
    metric: str,
    styles: Mapping[str, tuple[str, str]],
    *,
    x: str = "strength",
    wide: str | None = "exact",
) -> None:
    r"""Mean over seeds of ``metric`` against ``x`` with a band of :math:`\pm1` standard error, per diagonal.

    Args:
        ax: the axes to draw on; its x axis is set to a log scale.
        table: one row per seed, with columns ``"fisher"``, ``x`` and ``metric``.
        metric: the column to plot.
        styles: ``{Fisher diagonal name: (colour, line style)}``, in drawing and legend order; names without
            rows in ``table`` are skipped.
        x: the column of the strengths.
        wide: a name drawn as a wide line underneath the others (the reference), or ``None``.
    """
    for name, (color, ls) in styles.items():
        rows = table[table["fisher"] == name]
        if rows.empty:
            continue
        s = rows.groupby(x)[metric].agg(["mean", "sem"])
        is_wide = name == wide
        ax.plot(
            s.index, s["mean"], color=color, ls=ls, label=name, lw=3.2 if is_wide else 1.5, zorder=1 if is_wide else 2
        )
        ax.fill_between(s.index, s["mean"] - s["sem"], s["mean"] + s["sem"], color=color, alpha=0.15, lw=0)
    ax.set_xscale("log")


def plot_baseline(ax: Axes, values: pd.Series, label: str) -> None:
    r"""A baseline's mean over seeds as a grey dashed line, with a band of :math:`\pm1` standard error."""
    m, se = float(values.mean()), float(values.sem())
    ax.axhspan(m - se, m + se, color="0.6", alpha=0.35, lw=0)
    ax.axhline(m, color="0.5", ls="--", lw=1.2, label=label)
