r"""House plotting style and the book's figures.

Every chapter calls :func:`set_style` once, in a hidden cell, so that all figures share fonts, colours and
sizes. The helpers keep chapter cells short; they only draw what they are given and compute nothing that
the library computes elsewhere.

* :func:`set_style`, :data:`PALETTE`, :func:`estimator_color`: every chapter;
* :func:`errorbar_estimates`: chapter "Trusting the diagonal Fisher" (the introduction) and the MNIST case study;
* :func:`plot_case_study`, :func:`plot_monte_carlo`, :func:`plot_calibration`: chapter "Case study: an MNIST classifier"
  (pooled per layer as in :mod:`fishertut.pooling`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from torch import Tensor

from ..groups import flatten, layer_groups

if TYPE_CHECKING:
    from .casestudy import CaseStudy

__all__ = [
    "PALETTE", "ESTIMATOR_COLORS", "set_style", "estimator_color", "errorbar_estimates", "plot_case_study",
    "plot_monte_carlo", "plot_calibration",
]

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

#: Fixed colours for the quantities that appear in many chapters, so that a reader can rely on them.
ESTIMATOR_COLORS: dict[str, str] = {
    "exact": PALETTE[0],
    "i1": PALETTE[1],
    "i2": PALETTE[5],
    "empirical": PALETTE[6],
    "bound": PALETTE[3],
}

_RC: dict[str, Any] = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 110,
    "figure.constrained_layout.use": True,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 10.0,
    "axes.titlesize": 10.5,
    "axes.labelsize": 10.0,
    "legend.fontsize": 9.0,
    "xtick.labelsize": 9.0,
    "ytick.labelsize": 9.0,
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
    "mathtext.fontset": "cm",
    # Deterministic vector output: no random ids or dates in SVG/PDF files.
    "svg.hashsalt": "fishertut",
    "pdf.fonttype": 42,
}


def set_style() -> None:
    """Apply the book's matplotlib style (the same rcParams every time).

    Resets matplotlib to its defaults first, so a chapter's figures do not depend on what ran before,
    then sets fonts, sizes, a light grid and the Okabe–Ito colour cycle :data:`PALETTE`. The backend is
    not changed.
    """
    mpl.rcdefaults()  # leaves the backend alone
    mpl.rcParams.update(_RC)
    mpl.rcParams["axes.prop_cycle"] = mpl.cycler(color=list(PALETTE))


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
            x + off, np.where(shown > 0, shown, np.nan) if log else shown, yerr=np.vstack([lower, upper]),
            ls="none", marker="o", ms=3.5, color=color, elinewidth=0.9, label=labels.get(name, name), zorder=4,
        )
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
    ax.set_xlim(-1, exact_arr.size)
    ax.legend()
    return order


def _layers(table: Any, activation: str | None, group: str) -> tuple[Any, list[int]]:
    sub = table[table["group"] == group]
    if activation is not None:
        sub = sub[sub["activation"] == activation]
    elif sub["activation"].nunique() > 1:
        raise ValueError(f"the table holds several activations {sorted(sub['activation'].unique())}; pass activation=")
    if sub.empty:
        raise ValueError(f"no rows for activation={activation!r}, group={group!r}")
    return sub, sorted(sub["layer"].unique())


def plot_case_study(table: Any, activation: str | None = None, *, group: str = "layer", axes: Any = None,
                    ratio_row: bool = True, legend: bool = True) -> Any:
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
        _, axes = plt.subplots(rows, len(layers), figsize=(2.6 * len(layers), 2.5 * rows + 0.4), sharex=True,
                               squeeze=False)
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
        ax.set_title(f"layer {layer}" + (f" ({group}s)" if group != "layer" else "")
                     + ("" if has_i2 else r", $V_2 = 0$"))
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


def plot_monte_carlo(study: CaseStudy, *, num_params: int = 25, axes: Any = None, num_sd: float = 2.0,
                     log: bool = True) -> Any:
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
    var = {k: rep.estimator_variance(k, num_inputs=st["mc_inputs"], samples_per_input=st["mc_samples"])
           for k in ("i1", "i2")}
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
        errorbar_estimates(ax, exact[pick], {k: flat(mc[k], names)[pick] for k in ("i1", "i2")},
                           {k: np.sqrt(flat(var[k], names)[pick]) for k in ("i1", "i2")},
                           labels={"i1": r"MC $\hat{\mathcal{I}}_1$", "i2": r"MC $\hat{\mathcal{I}}_2$"},
                           num_sd=num_sd, log=log, sort=True, exact_label="Fisher information")
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
            ax.plot(d["epoch"], d[f"mc_{k}_rms_z"], color=estimator_color(k), ls=styles[j % len(styles)], lw=1.2,
                    label=f"layer {layer}" if k == "i1" else None)
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set(xlabel="epoch", ylabel=r"RMS of $z_i$ over the layer", ylim=(0, None))
    ax.legend(ncols=2, fontsize=8, title=r"orange $\hat{\mathcal{I}}_1$, blue $\hat{\mathcal{I}}_2$",
              title_fontsize=8)
    return ax
