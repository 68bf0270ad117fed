"""Sphinx extension of the book: glued numbers in exponent notation are shown as people write them.

A chapter quotes a computed number with ``{glue:text}`key:.1e``` or ``:.2g``; Python writes ``4.18e+11`` or
``1.2e-05``. In the built pages, every glued text (myst-nb's ``pasted-text`` spans) shows such a number as
``4.18 × 10¹¹`` and ``1.2 × 10⁻⁵`` instead; the chapter's downloadable notebook does the same
(``_ext/notebook_download.py``). Other text is left alone.
"""

from __future__ import annotations

import re

from docutils import nodes
from sphinx.application import Sphinx

__all__ = ["exponents_for_people"]

#: A number in Python's exponent notation (``format(x, ".2e")`` or ``".3g"``), not part of a word.
EXPONENT = re.compile(r"(?<![\w.-])(?P<mantissa>[-+]?\d+(?:\.\d+)?)e(?P<exponent>[-+]?\d+)\b")

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _for_people(m: re.Match) -> str:
    mantissa = m["mantissa"].lstrip("+").replace("-", "−")
    exponent = str(int(m["exponent"])).translate(_SUPERSCRIPT)
    return f"{mantissa} × 10{exponent}"


def exponents_for_people(text: str) -> str:
    """``"4.18e+11"`` -> ``"4.18 × 10¹¹"``, ``"-1.2e-05"`` -> ``"−1.2 × 10⁻⁵"``, in any text."""
    return EXPONENT.sub(_for_people, text)


def _rewrite_glued_numbers(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    for span in doctree.findall(nodes.inline):
        if "pasted-text" not in span["classes"]:
            continue
        for text in list(span.findall(nodes.Text)):
            shown = exponents_for_people(str(text))
            if shown != str(text):
                text.parent.replace(text, nodes.Text(shown))


def setup(app: Sphinx) -> dict:
    """Rewrite the glued texts of every page once its references are resolved."""
    app.connect("doctree-resolved", _rewrite_glued_numbers)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
