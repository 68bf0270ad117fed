"""All the book's figures: the house style and the figure helpers, one module per chapter that needs its own.

* :mod:`~fishertut.lab.plotting.style`: :func:`set_style`, :data:`PALETTE`, :func:`series_style`,
  :func:`estimator_color`, :func:`errorbar_estimates` (every chapter);
* :mod:`~fishertut.lab.plotting.casestudy`: :func:`plot_case_study`, :func:`plot_bound_ratios`,
  :func:`plot_monte_carlo`, :func:`plot_calibration` (chapters :doc:`/book/mnist_case_study` and
  :doc:`/book/cnn_case_study`);
* :mod:`~fishertut.lab.plotting.tradeoff`: :func:`plot_layer_tradeoff` (chapter :doc:`/book/cnn_case_study`);
* :mod:`~fishertut.lab.plotting.natural_gradient`: :func:`plot_ngd_runs`, :func:`plot_ngd_paths`,
  :func:`loss_grid` (chapter :doc:`/book/natural_gradient`);
* :mod:`~fishertut.lab.plotting.downstream`: :func:`plot_bands`, :func:`plot_baseline`
  (chapter :doc:`/book/downstream`).

Everything is importable from here: ``ft.lab.plotting.set_style()``, ``ft.lab.plotting.plot_case_study(...)``.
"""

from .casestudy import plot_bound_ratios, plot_calibration, plot_case_study, plot_monte_carlo
from .downstream import plot_bands, plot_baseline
from .natural_gradient import loss_grid, plot_ngd_paths, plot_ngd_runs
from .style import (
    ESTIMATOR_COLORS,
    MAX_FIGURE_WIDTH,
    PALETTE,
    SERIES_COLORS,
    SERIES_MARKERS,
    errorbar_estimates,
    estimator_color,
    series_style,
    set_style,
)
from .tradeoff import plot_layer_tradeoff

__all__ = [
    "PALETTE",
    "ESTIMATOR_COLORS",
    "SERIES_COLORS",
    "SERIES_MARKERS",
    "MAX_FIGURE_WIDTH",
    "set_style",
    "series_style",
    "estimator_color",
    "errorbar_estimates",
    "plot_case_study",
    "plot_bound_ratios",
    "plot_monte_carlo",
    "plot_calibration",
    "plot_layer_tradeoff",
    "plot_ngd_runs",
    "plot_ngd_paths",
    "loss_grid",
    "plot_bands",
    "plot_baseline",
]
