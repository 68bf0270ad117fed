"""The house plotting style: opaque white backgrounds and no text below 9 pt."""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_rgba
from matplotlib.font_manager import FontProperties

from fishertut.lab.plotting.style import COLUMN_PX, MAX_FIGURE_WIDTH, set_style

_FONT_KEYS = (
    "font.size",
    "axes.titlesize",
    "axes.labelsize",
    "legend.fontsize",
    "legend.title_fontsize",
    "xtick.labelsize",
    "ytick.labelsize",
    "figure.titlesize",
)


@pytest.fixture(autouse=True)
def _restore_rc():
    with mpl.rc_context():
        yield


def _points(key: str) -> float:
    value = mpl.rcParams[key]
    if isinstance(value, str):  # relative sizes such as "large" scale font.size
        return FontProperties(size=value).get_size_in_points()
    return float(value)


def test_backgrounds_are_opaque_white() -> None:
    mpl.rcParams["figure.facecolor"] = "none"  # whatever ran before is reset
    set_style()
    for key in ("figure.facecolor", "axes.facecolor", "savefig.facecolor"):
        assert to_rgba(mpl.rcParams[key]) == (1.0, 1.0, 1.0, 1.0), key
    assert mpl.rcParams["savefig.transparent"] is False
    fig, ax = plt.subplots()
    assert fig.get_facecolor() == (1.0, 1.0, 1.0, 1.0)
    assert ax.get_facecolor() == (1.0, 1.0, 1.0, 1.0)
    plt.close(fig)


def test_no_default_text_below_nine_points() -> None:
    mpl.rcParams["font.size"] = 6.0
    set_style()
    sizes = {key: _points(key) for key in _FONT_KEYS}
    assert min(sizes.values()) >= 9.0, sizes


def test_smallest_text_of_the_widest_figure_shows_at_nine_points() -> None:
    set_style()
    smallest = min(_points(key) for key in _FONT_KEYS)
    # The widest figure, with its saved padding, is scaled to the column; 9 pt = 12 CSS px.
    scale = COLUMN_PX / (mpl.rcParams["figure.dpi"] * (MAX_FIGURE_WIDTH + 2 * mpl.rcParams["savefig.pad_inches"]))
    shown_px = smallest * mpl.rcParams["figure.dpi"] / 72 * min(scale, 1.0)
    assert shown_px >= 12.0, shown_px
    assert mpl.rcParams["figure.figsize"][0] <= MAX_FIGURE_WIDTH
