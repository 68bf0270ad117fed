"""Tests of ``fishertut.lab.plotting``: the chapter-11 loss grid against a hand-written likelihood, and its figure.

The case study's figures are drawn in ``test_casestudy.py`` (they need a study).
"""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

from fishertut.lab import natural_gradient as ng
from fishertut.lab import plotting


def test_loss_grid_is_the_gaussian_likelihood_in_contour_layout() -> None:
    prob = ng.toy_problem("regression", n_train=8, n_test=32, seed=3)
    lim = ((-1.0, 1.5), (-2.0, 0.5))
    w1s, w2s, grid = plotting.loss_grid(prob, 0.3, lim, num=4)
    assert grid.shape == (4, 4) and w1s[0] == lim[0][0] and w2s[-1] == lim[1][1]
    sigma = prob.family.sigma
    for i, j in [(0, 0), (1, 3), (3, 2)]:
        mean = prob.test_x @ torch.tensor([w1s[i], w2s[j]], dtype=torch.float64) + 0.3
        nll = 0.5 * ((prob.test_y.reshape(-1) - mean) / sigma) ** 2 + math.log(sigma * math.sqrt(2 * math.pi))
        assert grid[j, i] == pytest.approx(float(nll.mean()), rel=1e-12)


def test_plot_ngd_runs_draws_every_run() -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = {t: ng.toy_problem(t, n_train=16, n_test=32) for t in ng.TASKS}
    runs = {
        t: {
            e: ng.natural_gradient_descent(p.model(), p.family, (p.train_x, p.train_y), estimator=e, epochs=2)
            for e in ("exact", "i1", "i2")
        }
        for t, p in problems.items()
    }
    axes = plotting.plot_ngd_runs(runs)
    assert axes.shape == (2, len(problems))
    assert all(len(axes[0, c].lines) == 3 and len(axes[1, c].lines) == 1 for c in range(len(problems)))
    assert all(float(t) == int(t) for t in axes[1, 0].get_xticks())  # whole epochs
    paths = plotting.plot_ngd_paths(runs, problems, path_epochs=1)
    assert paths.shape == (len(problems),)
    steps = runs["regression"]["exact"].settings["steps_per_epoch"]
    for ax, (task, rs) in zip(paths, runs.items()):
        exact, i1, start, star = ax.lines  # the two paths, then the start and the generating parameters
        assert len(exact.get_xdata()) == steps + 1
        assert exact.get_xdata()[0] == float(rs["exact"].params[0, 0])
        assert (start.get_xdata()[0], star.get_xdata()[0]) == (
            float(problems[task].theta_init[0]),
            float(problems[task].theta_star[0]),
        )
    plt.close("all")
