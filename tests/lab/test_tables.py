"""Tables for people: number formatting and the Styler's headers (hand-written expectations)."""

import math

import numpy as np
import pandas as pd
import pytest

from fishertut.lab.tables import format_number, format_table, readable_header


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (241005.5, "241,006"),
        (241006, "241,006"),
        (np.int64(1234567), "1,234,567"),
        (0.012345, "0.0123"),
        (12.345, "12.3"),
        (1.0, "1.00"),
        (0.0, "0"),
        (1.11e-06, "1.11 × 10⁻⁶"),
        (2.42e-06, "2.42 × 10⁻⁶"),
        (9.999e-05, "1.00 × 10⁻⁴"),
        (-3.5e-7, "−3.50 × 10⁻⁷"),
        (-3.5e7, "−35,000,000"),
        (1.5e7 + 0.25, "1.50 × 10⁷"),
        (float("nan"), "—"),
        (None, "—"),
        (math.inf, "∞"),
        ("Î1", "Î1"),
    ],
    ids=lambda v: repr(v),
)
def test_format_number(value, text):
    assert format_number(value) == text


def test_percent_and_digits():
    assert format_number(0.025, percent=True) == "2.50%"
    assert format_number(0.123456, 2) == "0.12"
    with pytest.raises(ValueError, match="digits"):
        format_number(1.0, 0)


def test_readable_header():
    assert readable_header("rel_sd_i1") == "Rel sd i1"
    assert readable_header("N for 10%") == "N for 10%"


def test_format_table_renders_people_numbers():
    frame = pd.DataFrame({"num_params": [25120, 528], "rel_sd": [1.11e-06, float("nan")], "share": [0.5, 0.25]})
    html = format_table(frame, headers={"num_params": "Parameters"}, percent=["share"]).to_html()
    for text in ("Parameters", "Rel sd", "25,120", "1.11 × 10⁻⁶", "—", "50.0%", "padding"):
        assert text in html
    assert "nan" not in html.lower() and "num_params" not in html


def test_format_table_rejects_unknown_columns():
    with pytest.raises(ValueError, match="missing_column"):
        format_table(pd.DataFrame({"a": [1]}), percent=["missing_column"])
    with pytest.raises(TypeError, match="frame"):
        format_table([1, 2])


def test_forced_notation():
    assert format_number(0.5, scientific=True) == "5.00 × 10⁻¹"
    assert format_number(1234, scientific=True) == "1.23 × 10³"
    assert format_number(2.5e-7, scientific=False) == "0.000000250"


def test_a_column_uses_one_notation_and_cells_do_not_wrap():
    """A column with one tiny value shows all its numbers as m × 10^e; other columns stay plain."""
    frame = pd.DataFrame({"diff": [1.0e-3 * 1.0, 2.3e-5, -0.0123], "ratio": [0.51, 1.2, 24.0]})
    frame["note"] = ["+0.21 ± 0.03 *", "a setting described in a sentence long enough to wrap", ""]
    html = format_table(frame).to_html()
    for text in ("1.00 × 10⁻³", "2.30 × 10⁻⁵", "−1.23 × 10⁻²", "0.510", "1.20", "24.0"):
        assert text in html, text
    assert "0.0123" not in html
    assert html.count("white-space: nowrap") == 1  # one CSS rule shared by the 8 short cells; not the long one
    rule = html[: html.index("white-space: nowrap")].rsplit("}", 1)[-1]
    assert rule.count("#T_") == 8, rule


def test_format_table_with_repeated_row_labels_still_renders():
    """Rows may share a label (several comparisons of one kind): the table renders, numbers formatted."""
    frame = pd.DataFrame({"ms": [1.5, 2.5e-5]}, index=["same", "same"])
    html = format_table(frame).to_html()
    assert "1.50 × 10⁰" in html and "2.50 × 10⁻⁵" in html


def test_a_multi_level_row_label_is_joined_for_people() -> None:
    import pandas as pd

    frame = pd.DataFrame(
        {"model": ["statements", "others"], "tensor": ["attn.weight", "mlp.0.bias"], "draws": [100, 4]}
    ).set_index(["model", "tensor"])
    html = format_table(frame).to_html()
    assert "statements, attn.weight" in html and "others, mlp.0.bias" in html
    assert "(&#x27;" not in html and "('" not in html
    assert "Model, tensor" in html
