r"""Figures of chapter :doc:`/book/natural_gradient`: loss curves, paths and label noise.

:func:`plot_ngd_runs` draws the runs of :func:`fishertut.lab.natural_gradient.natural_gradient_descent` with the
exact diagonal Fisher, Î1 and Î2 on the toy problems of :func:`fishertut.lab.natural_gradient.toy_problem` (the
loss curves and the label variance of the paper's Figure 1), :func:`plot_ngd_paths` the paths of the parameters
over the loss surface (the paper's insets, here full panels so that they can be read).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.ticker
import numpy as np
import torch

from ..natural_gradient import NGDRun, ToyProblem, negative_log_likelihood
from .style import estimator_color

__all__ = ["loss_grid", "plot_ngd_paths", "plot_ngd_runs"]


def loss_grid(
    problem: ToyProblem, bias: float, lim: tuple[tuple[float, float], tuple[float, float]], num: int = 41
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test loss of ``problem`` over a ``num × num`` grid of :math:`(w_1, w_2)` at a fixed bias.

    Returns:
        ``(w1s, w2s, loss)`` with ``loss[j, i]`` at ``(w1s[i], w2s[j])`` (the layout of ``contour``).
    """
    w1s, w2s = np.linspace(*lim[0], num), np.linspace(*lim[1], num)
    out = np.empty((num, num))
    with torch.no_grad():
        for i, a in enumerate(w1s):
            for j, c in enumerate(w2s):
                net = problem.model(torch.tensor([a, c, bias], dtype=torch.float64))
                out[j, i] = float(negative_log_likelihood(net, problem.family, problem.test_x, problem.test_y))
    return w1s, w2s, out


def plot_ngd_runs(runs: Mapping[str, Mapping[str, NGDRun]], *, axes: Any = None) -> Any:
    r"""Test loss and label variance per step of the exact, Î1 and Î2 runs, one column per task.

    Top: test loss against epochs for the exact, Î1 and Î2 runs (log scale). Bottom: the variance over the
    sampled labels of Î1 on each step's batch (Î2's is zero at every step, which the panel says in words).
    Epoch ticks are integers.

    Args:
        runs: ``{task: {"exact": run, "i1": run, "i2": run}}``.
        axes: a ``(2, len(runs))`` array of axes; default: a new figure 7 in wide.

    Returns:
        The axes array.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(2, len(runs), figsize=(7.0, 4.8), height_ratios=[3, 2], sharex="col", squeeze=False)
    axes = np.asarray(axes).reshape(2, len(runs))
    styles = {
        "exact": {"lw": 2.6, "label": "exact"},
        "i1": {"lw": 1.1, "label": r"$\hat{\mathcal{I}}_1$"},
        "i2": {"lw": 1.3, "ls": "--", "label": r"$\hat{\mathcal{I}}_2$"},
    }
    for col, (task, rs) in enumerate(runs.items()):
        ax = axes[0, col]
        for est, style in styles.items():
            ax.plot(rs[est].epoch, rs[est].test_loss, color=estimator_color(est), **style)
        ax.set(yscale="log", title=task, ylabel="test loss" if col == 0 else None)
        ax.legend(loc="upper right")
        ax = axes[1, col]
        ax.plot(rs["i1"].epoch[1:], rs["i1"].label_variance["i1"], color=estimator_color("i1"), lw=0.8)
        ax.set(yscale="log", xlabel="epoch", ylabel="label variance" if col == 0 else None)
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.text(
            0.98,
            0.06,
            r"$\hat{\mathcal{I}}_2$: 0 at every step",
            transform=ax.transAxes,
            ha="right",
            color=estimator_color("i2"),
        )
    return axes


def plot_ngd_paths(
    runs: Mapping[str, Mapping[str, NGDRun]],
    problems: Mapping[str, ToyProblem],
    *,
    axes: Any = None,
    lim: tuple[tuple[float, float], tuple[float, float]] = ((-2.6, 1.8), (-2.8, 2.6)),
    path_epochs: int = 2,
) -> Any:
    r"""Paths of :math:`(w_1, w_2)` of the exact and Î1 runs over contour lines of the test loss, one panel per task.

    The paths cover the first ``path_epochs`` epochs; the contours are those of the test loss at the exact run's
    final bias (:func:`loss_grid`). A square marks the start, a star the generating parameters. The Î2 run is not
    drawn: it coincides with the exact one on these linear models.

    Args:
        runs: ``{task: {"exact": run, "i1": run, ...}}``.
        problems: ``{task: problem}``, the same tasks.
        axes: ``(len(runs),)`` axes; default: a new figure 7 in wide.
        lim: ``((w1_min, w1_max), (w2_min, w2_max))`` of the panels.
        path_epochs: epochs of the paths drawn.

    Returns:
        The axes array.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(runs), figsize=(7.0, 3.3), squeeze=False)
    axes = np.asarray(axes).reshape(-1)
    for ax, (task, rs) in zip(axes, runs.items()):
        prob = problems[task]
        g1, g2, grid = loss_grid(prob, float(rs["exact"].params[-1, 2]), lim)
        ax.contour(
            g1,
            g2,
            grid,
            levels=np.geomspace(grid.min() * 1.01, grid.max(), 12),
            colors="0.75",
            linewidths=0.6,
            linestyles="solid",
        )
        first = path_epochs * rs["exact"].settings["steps_per_epoch"] + 1
        labels = {"exact": "exact", "i1": r"$\hat{\mathcal{I}}_1$"}
        for est, lw in (("exact", 2.0), ("i1", 0.9)):
            path = rs[est].params[:first]
            ax.plot(path[:, 0], path[:, 1], color=estimator_color(est), lw=lw, label=labels[est])
        ax.plot(*prob.theta_init[:2], "s", color="0.3", ms=6, label="start")
        ax.plot(*prob.theta_star[:2], "*", color="0.1", ms=11, label="generating")
        ax.set(title=task, xlabel="$w_1$", xlim=lim[0], ylim=lim[1])
        ax.grid(False)
    axes[0].set_ylabel("$w_2$")
    handles, labels = axes[0].get_legend_handles_labels()
    axes[0].figure.legend(handles, labels, loc="outside lower center", ncols=4)
    return axes
