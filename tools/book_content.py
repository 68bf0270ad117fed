"""What the built book says, checked from its files: the part of ``tools/check_book.py`` that needs no browser.

Per page (:func:`page_findings`, on the page's HTML):

* **typed numbers**: "chapter 10", "Fig. 2.1", "eq. (3.2)", "Table 4", "section 2" written in the prose
  instead of a cross-reference (text inside a link, a caption's number, code or maths does not count; a
  number that belongs to the paper, with "paper", "Soen" or "arXiv" just before or after it, is allowed);
* **raw labels**: a label such as ``eq-expfam-diag`` or ``fig-cnn-bars`` shown as text;
* **raw exponents**: a number such as ``4.18e+11`` in the prose or in a table (code and printed output
  excepted): write it for people (4.2 × 10¹¹);
* **unnumbered figures**: an image in the text that is not in a figure with a numbered caption.

For the book (:func:`missing_exercises`): every chapter of the Theory part of ``_toc.yml`` has a section
"Exercises"; and (:func:`pdf_findings`) the landing page links to a PDF of the book that is there. For a
download (:func:`notebook_leftovers`): no MyST role, directive, target or glue placeholder left in the
markdown of the ``.ipynb``, which plain Jupyter would show as raw text.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

from bs4 import BeautifulSoup

__all__ = ["page_findings", "missing_exercises", "notebook_leftovers", "pdf_findings"]

#: A chapter, section, figure, table or equation number typed in the text.
TYPED_NUMBER = re.compile(
    r"(?:\b(?:chapters?|ch\.|sections?|sec\.|figs?\.|figures?|tables?|eqs?\.|equations?)|§)"
    r"\s*\(?\d+(?:\.\d+)*\)?(?!\d|\s*(?:inch(?:es)?|cm|mm|pt|px)\b|\s*in\s+(?:wide|tall|high)\b)",  # sizes
    re.IGNORECASE,
)

#: Words near a typed number that make it the paper's, not the book's.
PAPER = re.compile(r"paper|Soen|arXiv", re.IGNORECASE)

#: A cross-reference label shown as text.
RAW_LABEL = re.compile(r"(?<![\w/#.-])(?:eq|equation|fig|tab|table|sec|ch|thm|lem)-[a-z0-9]+(?:-[a-z0-9]+)*\b")

#: A number in Python's exponent notation.
RAW_EXPONENT = re.compile(r"(?<![\w.])\d+(?:\.\d+)?e[+-]?\d+\b")

#: Not prose: code, maths (its TeX source), scripts, and what Sphinx numbers itself.
NOT_TEXT = "pre, code, script, style, span.math, div.math, .eqno, .headerlink, .caption-number, .highlight, dt.sig"

#: What plain Jupyter shows raw in a notebook's markdown.
NOTEBOOK_LEFTOVER = re.compile(
    r"\{[A-Za-z][\w:.+-]*\}`|\{glue|^ {0,3}(?:`{3,}|:{3,})\{[\w:.-]+\}|^\([^()\s]+\)=\s*$|\$\$\s*\([^()\s]+\)\s*$",
    re.MULTILINE,
)


def _article(html: str) -> BeautifulSoup:
    soup = BeautifulSoup(html, "html.parser")
    return soup.select_one("article.bd-article") or soup.select_one("article, main, [role=main]") or soup


def _text(article, drop: str) -> str:
    """The article's text without the elements matching ``drop`` (each replaced by a bullet)."""
    clone = copy.copy(article)
    for el in clone.select(drop):
        el.replace_with(" \u2022 ")
    return re.sub(r"\s+", " ", clone.get_text(" "))


def _snippet(text: str, m: re.Match) -> str:
    return text[max(0, m.start() - 40) : m.end() + 30].strip()


def page_findings(html: str) -> list[str]:
    """The findings on one page's HTML (see the module docstring), one line each."""
    article = _article(html)
    findings = []
    prose = _text(article, f"{NOT_TEXT}, a, div.cell_output div.output, nav")  # captions of outputs count
    for m in TYPED_NUMBER.finditer(prose):
        around = prose[max(0, m.start() - 40) : m.end() + 25]
        if not PAPER.search(around):
            findings.append(f"typed number (use a cross-reference): ...{_snippet(prose, m)}...")
    visible = _text(article, NOT_TEXT)
    findings += [f"raw label: ...{_snippet(visible, m)}..." for m in RAW_LABEL.finditer(visible)]
    tables = _text(article, f"{NOT_TEXT}, div.cell_output pre, .output.text_plain")
    findings += [f"raw exponent (format it): ...{_snippet(tables, m)}..." for m in RAW_EXPONENT.finditer(tables)]
    for img in article.select("img"):
        if "_static/" in img.get("src", ""):  # the theme's icons
            continue
        figure = img.find_parent(["figure"]) or img.find_parent("div", class_="figure")
        number = figure.select_one(".caption-number") if figure else None
        if number is None:
            findings.append(f"figure without a numbered caption: {img.get('src', '?')[:80]}")
    return findings


def missing_exercises(toc_file: Path, html: Path, part: str = "Theory") -> list[str]:
    """The chapters of ``part`` in ``_toc.yml`` whose built page has no "Exercises" section heading."""
    import yaml

    toc = yaml.safe_load(toc_file.read_text(encoding="utf-8"))
    chapters = [c["file"] for p in toc.get("parts", []) if p.get("caption") == part for c in p.get("chapters", [])]
    missing = []
    for name in chapters:
        page = html / f"{Path(name).with_suffix('')}.html"
        if not page.is_file():
            missing.append(f"{name}: no built page {page.name}")
            continue
        headings = _article(page.read_text(encoding="utf-8")).select("h2, h3")
        titles = (re.sub(r"^[\d.]+\s*", "", h.get_text(" ").strip().rstrip("#").strip()) for h in headings)
        if not any(t.lower().startswith("exercises") for t in titles):  # after the section number, e.g. "6.8."
            missing.append(f"{name}: no section 'Exercises'")
    return missing


def notebook_leftovers(cells: list[dict]) -> list[str]:
    """MyST left in the markdown cells of a notebook (``cells`` as in the ``.ipynb``), one line per find."""
    found = []
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "markdown":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        for m in NOTEBOOK_LEFTOVER.finditer(source):
            end = source.find("\n", m.end())
            line = source[source.rfind("\n", 0, m.start()) + 1 : end if end >= 0 else len(source)]
            found.append(f"cell {index}: MyST left for plain Jupyter: {line.strip()[:90]}")
    return found


def pdf_findings(landing: Path) -> list[str]:
    """Problems with the PDF that the landing page (its built HTML file) offers: no link, no file, not a PDF."""
    links = [a["href"] for a in _article(landing.read_text(encoding="utf-8")).select("a[href]")]
    pdfs = [h for h in links if h.split("#")[0].endswith(".pdf")]
    if not pdfs:
        return [f"{landing.name} links to no PDF of the book"]
    path = (landing.parent / pdfs[0].split("#")[0]).resolve()
    if not path.is_file():
        return [f"{landing.name} links to {pdfs[0]}, which is not there (make pdf)"]
    with path.open("rb") as f:
        if f.read(5) != b"%PDF-":
            return [f"{pdfs[0]} is not a PDF"]
    return []
