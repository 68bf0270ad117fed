r"""Figures of chapter :doc:`/book/downstream`: a metric against a strength, one band per Fisher diagonal.

:func:`plot_bands` draws, from a table of per-seed results (one row per seed, Fisher diagonal and strength),
the mean over seeds of a metric against the strength (the EWC :math:`\lambda` or the Laplace prior precision
:math:`\tau`) with markers and a band of the 95% t interval over seeds, and :func:`plot_baseline` a method
without Fisher diagonal as a dashed line with its band.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from matplotlib.axes import Axes

from ..statistics import t_interval

__all__ = ["plot_bands", "plot_baseline"]


def plot_bands(
    ax: Axes,
    table: pd.DataFrame,
    metric: str,
    styles: Mapping[str, tuple[str, ...]],
    *,
    x: str = "strength",
    wide: str | None = "exact",
    level: float = 0.95,
) -> None:
    r"""Mean over seeds of ``metric`` against ``x`` with a band of its t interval (:math:`\ge2` seeds), per diagonal.

    Args:
        ax: the axes to draw on; its x axis is set to a log scale.
        table: one row per seed, with columns ``"fisher"``, ``x`` and ``metric``.
        metric: the column to plot.
        styles: ``{Fisher diagonal name: (colour, line style[, marker])}``, in drawing and legend order; names
            without rows in ``table`` are skipped.
        x: the column of the strengths.
        wide: a name drawn as a wide line underneath the others (the reference), or ``None``.
        level: confidence level of the band, :func:`fishertut.lab.statistics.t_interval` over the seeds.
    """
    for name, (color, ls, *marker) in styles.items():
        rows = table[table["fisher"] == name]
        if rows.empty:
            continue
        intervals = {k: t_interval(v.to_numpy(), level) for k, v in rows.groupby(x)[metric]}
        xs = list(intervals)
        mean = [intervals[k].mean for k in xs]
        is_wide = name == wide
        ax.plot(
            xs,
            mean,
            color=color,
            ls=ls,
            marker=marker[0] if marker else None,
            ms=5,
            label=name,
            lw=3.2 if is_wide else 1.5,
            zorder=1 if is_wide else 2,
        )
        ax.fill_between(
            xs, [intervals[k].low for k in xs], [intervals[k].high for k in xs], color=color, alpha=0.15, lw=0
        )
    ax.set_xscale("log")


def plot_baseline(ax: Axes, values: pd.Series, label: str, level: float = 0.95) -> None:
    r"""A baseline's mean over seeds as a grey dashed line, with a band of its t interval at ``level``."""
    interval = t_interval(values.to_numpy(), level)
    ax.axhspan(interval.low, interval.high, color="0.6", alpha=0.35, lw=0)
    ax.axhline(interval.mean, color="0.5", ls="--", lw=1.2, label=label)
