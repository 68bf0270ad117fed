r"""Figures of chapter "Natural gradient with estimated Fisher information": loss curves, paths and label noise.

:func:`plot_ngd_runs` draws the runs of :func:`fishertut.lab.natural_gradient.natural_gradient_descent` with the
exact diagonal Fisher, Î1 and Î2 on the toy problems of :func:`fishertut.lab.natural_gradient.toy_problem`, in the
layout of the paper's Figure 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.ticker
import numpy as np
import torch

from ..natural_gradient import NGDRun, ToyProblem, negative_log_likelihood
from .style import estimator_color

__all__ = ["loss_grid", "plot_ngd_runs"]


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


def plot_ngd_runs(
    runs: Mapping[str, Mapping[str, NGDRun]],
    problems: Mapping[str, ToyProblem],
    *,
    axes: Any = None,
    lim: tuple[tuple[float, float], tuple[float, float]] = ((-2.6, 1.8), (-2.8, 2.6)),
    path_epochs: int = 2,
) -> Any:
    r"""The paper's Figure 1 for our problems: test loss, parameter paths, and the label variance per step.

    One column per task. Top: test loss against epochs for the exact, Î1 and Î2 runs; inset: the path of
    :math:`(w_1, w_2)` during the first ``path_epochs`` epochs over contour lines of the test loss (at the exact
    run's final bias), from the start (square) towards the generating parameters (star). Bottom: the variance
    over the sampled labels of Î1 on each step's batch (Î2's is zero at every step).

    Args:
        runs: ``{task: {"exact": run, "i1": run, "i2": run}}``.
        problems: ``{task: problem}``, the same tasks.
        axes: a ``(2, len(runs))`` array of axes; default: a new figure.
        lim: ``((w1_min, w1_max), (w2_min, w2_max))`` of the insets.
        path_epochs: epochs of the paths drawn in the insets.

    Returns:
        The axes array.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(2, len(runs), figsize=(10.4, 6.2), height_ratios=[2, 1], sharex="col", squeeze=False)
    axes = np.asarray(axes).reshape(2, len(runs))
    for col, (task, rs) in enumerate(runs.items()):
        prob, ax = problems[task], axes[0, col]
        ax.plot(rs["exact"].epoch, rs["exact"].test_loss, color=estimator_color("exact"), lw=2.6, label="exact")
        ax.plot(rs["i1"].epoch, rs["i1"].test_loss, color=estimator_color("i1"), lw=1.1, label=r"$\hat{\mathcal{I}}_1$")
        ax.plot(
            rs["i2"].epoch,
            rs["i2"].test_loss,
            color=estimator_color("i2"),
            lw=1.3,
            ls="--",
            label=r"$\hat{\mathcal{I}}_2$",
        )
        ax.set(yscale="log", title=task, ylabel="test loss" if col == 0 else None)
        ax.legend(loc="upper left")
        inset = ax.inset_axes([0.42, 0.36, 0.55, 0.6])
        g1, g2, grid = loss_grid(prob, float(rs["exact"].params[-1, 2]), lim)
        inset.contour(
            g1,
            g2,
            grid,
            levels=np.geomspace(grid.min() * 1.01, grid.max(), 12),
            colors="0.75",
            linewidths=0.6,
            linestyles="solid",
        )
        first = path_epochs * rs["exact"].settings["steps_per_epoch"] + 1
        for est, lw in (("exact", 2.0), ("i1", 0.9)):
            path = rs[est].params[:first]
            inset.plot(path[:, 0], path[:, 1], color=estimator_color(est), lw=lw)
        inset.plot(*prob.theta_init[:2], "s", color="0.3", ms=5)
        inset.plot(*prob.theta_star[:2], "*", color="0.1", ms=9)
        inset.set(xlabel="$w_1$", ylabel="$w_2$", xlim=lim[0], ylim=lim[1])
        inset.grid(False)
        for lab in (inset.xaxis.label, inset.yaxis.label):
            lab.set_fontsize(8)
        inset.tick_params(labelsize=7)
        ax = axes[1, col]
        step_epochs = rs["i1"].epoch[1:]
        ax.plot(
            step_epochs,
            rs["i1"].label_variance["i1"],
            color=estimator_color("i1"),
            lw=0.8,
            label=r"$\hat{\mathcal{I}}_1$",
        )
        ax.set(yscale="log", xlabel="epoch", ylabel="label variance" if col == 0 else None)
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.text(
            0.98,
            0.06,
            r"$\hat{\mathcal{I}}_2$: 0 at every step",
            transform=ax.transAxes,
            ha="right",
            color=estimator_color("i2"),
            fontsize=9,
        )
    return axes
