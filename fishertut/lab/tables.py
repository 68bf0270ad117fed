r"""Tables for people: readable headers, thousands separators, three significant figures, no ``NaN``.

Every chapter that shows a table passes its ``pandas.DataFrame`` through :func:`format_table` instead of
printing it raw. Numbers are formatted by :func:`format_number`: integers (and integral counts) with
thousands separators, other values with ``digits`` significant figures, in plain notation between
:math:`10^{-3}` and :math:`10^{6}` and as :math:`m \times 10^{e}` outside that range; missing values are
shown as an em dash. In a table, a column uses one notation: :math:`m \times 10^{e}` for all its values
if any needs it, and a number, or a short text such as a number with its star, never wraps; longer texts do.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["format_number", "format_table", "readable_header"]

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_MISSING = "—"

#: Cell padding and alignment, so adjacent numbers never run into each other and long headers wrap.
_STYLES = [
    {"selector": "th", "props": "padding: 0.25em 0.7em; text-align: right; white-space: normal;"},
    {
        "selector": "td",
        "props": "padding: 0.25em 0.7em; text-align: right; font-variant-numeric: tabular-nums;",
    },
    {"selector": "th.row_heading", "props": "text-align: left;"},
]


def format_number(value: Any, digits: int = 3, *, percent: bool = False, scientific: bool | None = None) -> str:
    r"""One number as a person reads it.

    Args:
        value: an int, float, numpy scalar, ``None`` or ``NaN``; anything else is returned as ``str(value)``.
        digits: significant figures for non-integral values (at least 1).
        percent: show ``value`` (a fraction) as a percentage with ``digits`` significant figures.
        scientific: ``True``: always :math:`m \times 10^{e}` (integers included); ``False``: never;
            ``None``: only outside :math:`[10^{-3}, 10^{6})`.

    Returns:
        ``"241,006"`` for an integral value, ``"0.0123"``, ``"12.3"``, ``"1.23 × 10⁻⁶"`` for others,
        ``"—"`` for a missing value.
    """
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
    if value is None:
        return _MISSING
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    x = float(value)
    if math.isnan(x):
        return _MISSING
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if percent:
        return f"{format_number(100.0 * x, digits)}%"
    integral = isinstance(value, numbers.Integral) or (x.is_integer() and abs(x) >= 10 ** (digits - 1))
    if integral and not scientific:
        return f"{round(x):,}".replace("-", "−")
    if x == 0.0:
        return "0"
    exponent = math.floor(math.log10(abs(x)))
    if scientific is False or (scientific is None and -3 <= exponent < 6):
        decimals = max(digits - 1 - exponent, 0)
        text = f"{round(x, decimals):,.{decimals}f}"
    else:
        mantissa = f"{x / 10.0**exponent:.{digits - 1}f}"
        if mantissa.lstrip("-").startswith("10"):  # rounding carried into the next power of ten
            exponent += 1
            mantissa = f"{x / 10.0**exponent:.{digits - 1}f}"
        text = f"{mantissa} × 10{str(exponent).translate(_SUPERSCRIPT)}"
    return text.replace("-", "−")


#: Texts up to this long never wrap in a table cell (a formatted number with an interval and a star fits).
_SHORT = 32


def _no_wrap(value: Any) -> str:
    """The CSS of a cell: a number or a short text stays on one line."""
    short = isinstance(value, numbers.Real) or len(str(value)) <= _SHORT
    return "white-space: nowrap;" if short else ""


def _column_notation(column: Any, *, percent: bool) -> bool | None:
    r"""``True`` if any number of the column needs :math:`m \times 10^{e}` (then all its numbers get it)."""
    if percent:
        return None
    for v in column:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or isinstance(v, numbers.Integral):
            continue
        x = float(v)
        if math.isfinite(x) and x != 0.0 and not -3 <= math.floor(math.log10(abs(x))) < 6:
            return True
    return None


def readable_header(name: Any) -> str:
    """``"rel_sd_i1"`` -> ``"Rel sd i1"``: underscores become spaces and the first letter is capitalised.

    Names that already contain a space or a capital letter are returned unchanged.
    """
    text = str(name)
    if " " in text or any(c.isupper() for c in text):
        return text
    text = text.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _row_label(value: Any) -> str:
    """A row label for people: a number formatted, the levels of a multi-level label joined by commas."""
    if isinstance(value, tuple):
        return ", ".join(_row_label(v) for v in value)
    return format_number(value) if isinstance(value, numbers.Real) else str(value)


def format_table(
    frame: Any,
    *,
    digits: int = 3,
    headers: Mapping[str, str] | None = None,
    percent: Iterable[str] = (),
    index: bool = True,
) -> Any:
    """A ``pandas`` Styler that shows ``frame`` formatted for people.

    Args:
        frame: a ``pandas.DataFrame`` (or a Series, shown as one column).
        digits: significant figures of non-integral numbers (see :func:`format_number`).
        headers: ``{column: header}`` for columns whose header should differ from :func:`readable_header`.
        percent: columns holding fractions, shown as percentages.
        index: show the row labels (``False`` hides them).

    Returns:
        ``pandas.io.formats.style.Styler``; Jupyter renders it as an HTML table.
    """
    import pandas as pd

    if isinstance(frame, pd.Series):
        frame = frame.to_frame()
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame or Series, got {type(frame).__name__}")
    headers = dict(headers or {})
    unknown = (set(headers) | set(percent)) - set(frame.columns)
    if unknown:
        raise ValueError(f"headers/percent name columns that frame does not have: {sorted(map(str, unknown))}")
    percent = set(percent)
    shown = frame.rename(columns={c: headers.get(c, readable_header(c)) for c in frame.columns})
    names = [n for n in shown.index.names if n is not None]
    shown.index = shown.index.map(_row_label)
    shown.index.name = readable_header(names[0]) if len(names) == 1 else None
    if len(names) > 1:  # levels joined as the labels are, the first letter capitalised
        label = ", ".join(str(n).replace("_", " ") for n in names)
        shown.index.name = label if any(c.isupper() for c in label) else label[:1].upper() + label[1:]
    formatters = {
        shown.columns[i]: (
            lambda v, p=(c in percent), sci=_column_notation(frame[c], percent=c in percent): format_number(
                v, digits, percent=p, scientific=sci
            )
        )
        for i, c in enumerate(frame.columns)
    }
    styler = shown.style.format(formatters).set_table_styles(_STYLES)
    if shown.index.is_unique and shown.columns.is_unique:  # pandas styles cells only where labels are unique
        styler = styler.map(_no_wrap)
    return styler if index else styler.hide(axis="index")
