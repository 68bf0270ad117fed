"""The house plotting style: opaque white backgrounds and no text below 9 pt."""

from __future__ import annotations

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.font_manager import FontProperties

from fishertut.lab.plotting.style import COLUMN_PX, MAX_FIGURE_WIDTH, PALETTE, series_style, set_style

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


def _lab(color: str) -> np.ndarray:
    """CIE L*a*b* (D65) of an sRGB colour, for colour differences as people see them."""
    rgb = np.asarray(to_rgba(color)[:3])
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_the_colour_cycle_has_five_colours_people_tell_apart() -> None:
    """The cycle holds five colours, each pair at least 45 CIE76 units apart.

    The palette's two blues (26 apart) and its orange and vermillion (33) are never in the cycle together.
    """
    set_style()
    colors = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    assert len(colors) == 5
    gaps = [np.linalg.norm(_lab(a) - _lab(b)) for i, a in enumerate(colors) for b in colors[i + 1 :]]
    assert min(gaps) >= 45, gaps
    for a, b in ((2, 5), (1, 4)):  # the pairs the threshold keeps out
        assert np.linalg.norm(_lab(PALETTE[a]) - _lab(PALETTE[b])) < 45
        assert not {PALETTE[a], PALETTE[b]} <= set(colors)


def test_series_styles_differ_and_stop_at_five() -> None:
    """Five series get five colours and five markers; a sixth is refused with a message."""
    styles = [series_style(i) for i in range(5)]
    assert len({s["color"] for s in styles}) == 5 and len({s["marker"] for s in styles}) == 5
    with pytest.raises(ValueError, match="at most 5 series"):
        series_style(5)


def test_figures_are_shown_at_their_size_in_the_column() -> None:
    """At the display resolution, the widest figure fits the column, so its text is not scaled down."""
    set_style()
    assert mpl.rcParams["figure.dpi"] * MAX_FIGURE_WIDTH <= COLUMN_PX
    assert min(_points(key) for key in _FONT_KEYS) >= 10.0
