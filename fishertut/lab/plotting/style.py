"""House plotting style: fonts, colours and sizes shared by every figure, and estimates drawn with error bars.

Every chapter calls :func:`set_style` once, in a hidden cell. :func:`errorbar_estimates` is used by chapter
"Trusting the diagonal Fisher" (the introduction) and by the MNIST case study's figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes

__all__ = [
    "PALETTE",
    "SERIES_COLORS",
    "SERIES_MARKERS",
    "ESTIMATOR_COLORS",
    "COLUMN_PX",
    "MAX_FIGURE_WIDTH",
    "set_style",
    "series_style",
    "estimator_color",
    "errorbar_estimates",
]

#: Width in CSS pixels at which the book shows a figure at 1280 px window width (measured in Chromium).
#: A wider image is scaled down to it, and its text with it.
COLUMN_PX: int = 672

#: Dots per inch of a figure on the page: a figure is shown at ``width x DISPLAY_DPI`` CSS pixels (its PNG
#: has twice as many, for sharp text on high-density screens), so 1 pt of figure text is 1 pt on the page.
DISPLAY_DPI: int = 96

#: Widest figure, in inches, that the column shows at full size: 7 in x 96 dpi = :data:`COLUMN_PX`. A wider
#: one would be scaled down, and its 10 pt text with it.
MAX_FIGURE_WIDTH: float = COLUMN_PX / DISPLAY_DPI

#: Okabe–Ito colour-blind-safe palette (black first), used as the default colour cycle.
PALETTE: tuple[str, ...] = (
    "#000000",  # black
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#0072B2",  # blue
    "#CC79A7",  # reddish purple
    "#F0E442",  # yellow
)

#: The colour cycle: five Okabe–Ito colours that stay apart (no orange next to vermillion, no two blues).
#: A panel holds at most five series; a sixth would repeat the first colour.
SERIES_COLORS: tuple[str, ...] = (PALETTE[0], PALETTE[1], PALETTE[5], PALETTE[3], PALETTE[6])

#: Markers to tell series apart without colour, in the order of :data:`SERIES_COLORS`.
SERIES_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v")

#: Fixed colours for the quantities that appear in many chapters, so that a reader can rely on them.
ESTIMATOR_COLORS: dict[str, str] = {
    "exact": PALETTE[0],
    "i1": PALETTE[1],
    "i2": PALETTE[5],
    "empirical": PALETTE[6],
    "bound": PALETTE[3],
}

#: Sizes: no text below 10 pt, shown at its size on the page (:data:`DISPLAY_DPI`) when the figure is at most
#: :data:`MAX_FIGURE_WIDTH` wide; maths in legends and labels is 10 pt too (its sub- and superscripts are
#: smaller, as in the text's maths). Backgrounds are opaque white (figure, axes and saved files).
_RC: dict[str, Any] = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": DISPLAY_DPI,
    "figure.constrained_layout.use": True,
    "figure.facecolor": "white",
    "figure.edgecolor": "white",
    "axes.facecolor": "white",
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.05,
    "savefig.facecolor": "white",
    "savefig.edgecolor": "white",
    "savefig.transparent": False,
    "font.size": 10.5,
    "axes.titlesize": 11.0,
    "axes.labelsize": 10.5,
    "legend.fontsize": 10.5,
    "legend.title_fontsize": 10.5,
    "xtick.labelsize": 10.0,
    "ytick.labelsize": 10.0,
    "figure.titlesize": 11.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.6,
    "lines.markersize": 4.5,
    "errorbar.capsize": 2.0,
    "legend.frameon": False,
    "image.cmap": "viridis",
    "mathtext.fontset": "dejavusans",  # maths as tall and as heavy as the text around it (cm is smaller)
    # Deterministic vector output: no random ids or dates in SVG/PDF files.
    "svg.hashsalt": "fishertut",
    "pdf.fonttype": 42,
}


def set_style() -> None:
    """Apply the book's matplotlib style (the same rcParams every time).

    Resets matplotlib to its defaults first, so a chapter's figures do not depend on what ran before,
    then sets fonts (no text below 10 pt), sizes, opaque white backgrounds, a light grid and the
    five-colour cycle :data:`SERIES_COLORS`. The backend is not changed. In a notebook, figures are shown at
    :data:`DISPLAY_DPI` with twice the pixels (``retina``), so the page shows their text at its size.
    """
    mpl.rcdefaults()  # leaves the backend alone
    mpl.rcParams.update(_RC)
    mpl.rcParams["axes.prop_cycle"] = mpl.cycler(color=list(SERIES_COLORS))
    _show_sharp()


def _show_sharp() -> None:
    """In an IPython kernel, show inline figures as 2x PNGs at their size in CSS pixels (``retina``)."""
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # no IPython: nothing is shown inline
        return
    if get_ipython() is not None:
        set_matplotlib_formats("retina")


def series_style(index: int) -> dict[str, str]:
    """Colour and marker of the ``index``-th series of a panel (at most five), for plots drawn as points.

    Raises:
        ValueError: If ``index`` is not in 0..4: a panel holds at most five series.
    """
    if not 0 <= index < len(SERIES_COLORS):
        raise ValueError(f"series index {index}: a panel holds at most {len(SERIES_COLORS)} series, split it")
    return {"color": SERIES_COLORS[index], "marker": SERIES_MARKERS[index]}


def estimator_color(name: str) -> str:
    """Colour of a named quantity (``"exact"``, ``"i1"``, ``"i2"``, ...) in every figure of the book.

    Args:
        name: Key of :data:`ESTIMATOR_COLORS`, matched case-insensitively; the symbols ``"Î1"`` and
            ``"Î2"`` are accepted too.

    Returns:
        A hex colour; unknown names get the next palette colour deterministically from a hash of ``name``.
    """
    key = name.lower().replace("î", "i").replace("\u0302", "")
    if key in ESTIMATOR_COLORS:
        return ESTIMATOR_COLORS[key]
    return PALETTE[1 + sum(map(ord, key)) % (len(PALETTE) - 1)]


def errorbar_estimates(
    ax: Axes,
    exact: Sequence[float] | np.ndarray,
    estimates: Mapping[str, Sequence[float] | np.ndarray],
    stderr: Mapping[str, Sequence[float] | np.ndarray],
    *,
    labels: Mapping[str, str] | None = None,
    num_sd: float = 2.0,
    log: bool = True,
    sort: bool = True,
    exact_label: str = "exact",
) -> np.ndarray:
    """Plot per-entry estimates with ``±num_sd`` standard-error bars against the exact values.

    The entries (e.g. the parameters of one layer, flattened) run along the x-axis, ordered by their exact
    value when ``sort`` is true. The exact values are a line, each estimator a set of points with error
    bars, shifted sideways a little so that the bars do not overlap.

    On a log axis a bar that would reach zero or below is cut at the bottom of the axis, and an estimate
    that is not positive (Î2 can be negative) is drawn as an open marker at the bottom edge.

    Args:
        ax: Axes to draw on.
        exact: ``(P,)`` exact values, one per entry.
        estimates: Estimator name -> ``(P,)`` estimates, in the order of ``exact``.
        stderr: Estimator name -> ``(P,)`` standard errors (square roots of the estimator variances).
        labels: Optional legend label per estimator name (defaults to the name).
        num_sd: Half-width of the bars in standard errors.
        log: Use a logarithmic y-axis.
        sort: Order the entries by their exact value.
        exact_label: Legend label of the exact values.

    Returns:
        ``(P,)`` the order of the entries along the x-axis (indices into ``exact``).

    Raises:
        ValueError: If shapes differ or a name in ``estimates`` has no ``stderr``.
    """
    exact_arr = np.asarray(exact, dtype=float).reshape(-1)
    order = np.argsort(exact_arr, kind="stable") if sort else np.arange(exact_arr.size)
    x = np.arange(exact_arr.size)
    labels = dict(labels or {})
    names = list(estimates)
    for name in names:
        if name not in stderr:
            raise ValueError(f"no standard errors given for estimator {name!r}")
        for what, arr in (("estimates", estimates[name]), ("stderr", stderr[name])):
            if np.asarray(arr).size != exact_arr.size:
                raise ValueError(f"{what}[{name!r}] has {np.asarray(arr).size} entries, exact has {exact_arr.size}")

    ax.plot(x, exact_arr[order], color=estimator_color("exact"), lw=1.4, label=exact_label, zorder=3)
    width = 0.5
    offsets = np.linspace(-width / 2, width / 2, len(names)) if len(names) > 1 else np.zeros(1)

    if log:
        values = [exact_arr] + [np.asarray(estimates[n], dtype=float).reshape(-1) for n in names]
        positive = np.concatenate([v[v > 0] for v in values])
        floor = positive.min() / 10.0 if positive.size else 1e-12
    for off, name in zip(offsets, names):
        est = np.asarray(estimates[name], dtype=float).reshape(-1)[order]
        se = num_sd * np.asarray(stderr[name], dtype=float).reshape(-1)[order]
        color = estimator_color(name)
        lower, upper = se.copy(), se.copy()
        shown = est.copy()
        if log:
            bad = est <= 0
            shown[bad] = floor
            lower = np.where(est - se > floor, se, np.maximum(shown - floor, 0.0))
            upper = np.where(bad, 0.0, se)
            if bad.any():
                ax.plot(x[bad] + off, shown[bad], ls="none", marker="v", mfc="none", color=color, zorder=4)
        ax.errorbar(
            x + off,
            np.where(shown > 0, shown, np.nan) if log else shown,
            yerr=np.vstack([lower, upper]),
            ls="none",
            marker="o",
            ms=3.5,
            color=color,
            elinewidth=0.9,
            label=labels.get(name, name),
            zorder=4,
        )
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
    ax.set_xlim(-1, exact_arr.size)
    ax.legend()
    return order
