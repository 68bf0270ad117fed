"""The browser check's pure-Python parts (tools/check_book.py); the browser itself runs in `make check`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_book", ROOT / "tools" / "check_book.py")
check_book = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_book)


@pytest.mark.parametrize(
    "text",
    ["see spec 4.2", "(spec 10.9)", "an open point", "the open points of", "The specification says", "spec. 3"],
)
def test_internal_references_are_found(text: str) -> None:
    """References to the team's working documents are caught."""
    assert check_book.INTERNAL_REFERENCES.search(text)


@pytest.mark.parametrize(
    "text",
    ["model misspecification", "the misspecification of", "a specific point", "spectrum 4", "open pointer"],
)
def test_ordinary_words_are_not_internal_references(text: str) -> None:
    """Words that merely contain the phrases are not."""
    assert not check_book.INTERNAL_REFERENCES.search(text)


def _site(tmp_path: Path, notebook: nbformat.NotebookNode | str | None) -> Path:
    page = tmp_path / "book" / "ch.html"
    page.parent.mkdir(parents=True)
    page.write_text("<html></html>")
    sources = tmp_path / "_sources" / "book"
    sources.mkdir(parents=True)
    (sources / "ch.md").write_text("---\njupytext:\n  text_representation:\n    format_name: myst\n---\n# Ch\n")
    if isinstance(notebook, str):
        (sources / "ch.ipynb").write_text(notebook)
    elif notebook is not None:
        nbformat.write(notebook, sources / "ch.ipynb")
    return page


def test_a_chapter_page_is_recognised(tmp_path: Path) -> None:
    """A page whose source has the jupytext MyST header is a chapter and must offer a notebook."""
    page = _site(tmp_path, None)
    assert check_book._is_chapter(tmp_path, page)
    (tmp_path / "_sources" / "book" / "ch.md").write_text("# an appendix without code\n")
    assert not check_book._is_chapter(tmp_path, page)


def test_valid_notebook_download_passes(tmp_path: Path) -> None:
    """A valid notebook without outputs, linked next to the .md, raises no finding."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    page = _site(tmp_path, nb)
    links = ["../_sources/book/ch.ipynb", "../_sources/book/ch.md"]
    assert check_book._check_notebook(page, links) == []


@pytest.mark.parametrize(
    ("notebook", "links", "problem"),
    [
        (None, ["../_sources/book/ch.md"], "no .ipynb download link"),
        (None, ["../_sources/book/ch.ipynb", "../_sources/book/ch.md"], "missing file"),
        ("{not json", ["../_sources/book/ch.ipynb", "../_sources/book/ch.md"], "not a valid notebook"),
        (nbformat.v4.new_notebook(), ["../_sources/book/ch.ipynb", "../_sources/book/ch.md"], "no code cell"),
        (
            nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]),
            ["../_sources/book/ch.ipynb"],
            "no .md download link",
        ),
    ],
)
def test_broken_notebook_download_is_reported(tmp_path: Path, notebook, links: list[str], problem: str) -> None:
    """Each way the download can be broken is reported."""
    page = _site(tmp_path, notebook)
    problems = check_book._check_notebook(page, links)
    assert any(problem in p for p in problems), problems


def test_a_notebook_with_myst_left_is_reported(tmp_path: Path) -> None:
    """A download whose markdown still holds a glue placeholder or a role fails, naming the cell."""
    text = "N = {glue:text}`n:.0f`, see {doc}`bounds`"
    cells = [nbformat.v4.new_markdown_cell(text), nbformat.v4.new_code_cell("1")]
    page = _site(tmp_path, nbformat.v4.new_notebook(cells=cells))
    problems = check_book._check_notebook(page, ["../_sources/book/ch.ipynb", "../_sources/book/ch.md"])
    assert len(problems) == 2 and all("cell 0" in p for p in problems), problems  # one per role
    assert "{glue:text}" in problems[0]


# --- what the pages say (tools/book_content.py) -------------------------------------------------------------

_spec2 = importlib.util.spec_from_file_location("book_content", ROOT / "tools" / "book_content.py")
book_content = importlib.util.module_from_spec(_spec2)
_spec2.loader.exec_module(book_content)

FIGURE = (
    '<figure class="align-default" id="fig-x"><img alt="a" src="../_images/a.png" />'
    '<figcaption><p><span class="caption-number">Fig. 2.1 </span><span class="caption-text">Left: '
    "the estimates.</span></p></figcaption></figure>"
)
NUMREF = '<a class="reference internal" href="#fig-x"><span class="std std-numref">Fig. 2.1</span></a>'
EQREF = '<a class="reference internal" href="#equation-eq-v1">(3.2)</a>'


def _page(body: str) -> str:
    return f'<html><body><nav>Chapter 1 menu</nav><article class="bd-article">{body}</article></body></html>'


@pytest.mark.parametrize(
    "body",
    [
        f"<p>As {NUMREF} shows, and by {EQREF}, the estimates agree.</p>{FIGURE}",
        '<p>See <a class="reference internal" href="bounds.html">Bounds on the variances</a>.</p>',
        "<p>The paper's Section 4 and its Figure 2 (Soen and Sun, Table 1) are the paper's own.</p>",
        '<p>Costs <span class="pasted-text">4.2 × 10<sup>11</sup></span> flops; the ratio is 1.2e.</p>',
        "<pre>x = 1e-3  # chapter 3</pre><p><code>eq-in-code</code></p>",
        '<p>Inline maths <span class="math notranslate nohighlight">\\(\\text{eq-x}\\)</span> is TeX.</p>',
        '<div class="cell_output docutils container"><div class="output text_plain"><pre>4.18e+11</pre></div></div>',
        '<div class="cell_output"><div class="output text_html"><p>see chapter 3 of the log</p></div></div>',
        "<dl><dt>axes (Any) – default: a new figure 7 in wide, or 6.5 inches</dt></dl>",
        '<dl class="py function"><dt class="sig">is_close(a, rtol=1e-09)</dt></dl>',
        '<table class="indextable"><tr><td><img src="../_static/minus.png" /></td></tr></table>',
    ],
)
def test_clean_pages_raise_no_finding(body: str) -> None:
    """Cross-references, numbered captions, the paper's own numbering, code, maths and printed output pass."""
    assert book_content.page_findings(_page(body)) == []


@pytest.mark.parametrize(
    ("body", "finding"),
    [
        ("<p>the tanh MLP of chapter 10 is smaller</p>", "typed number"),
        ("<p>In a hurry: chapters 3, 7 and 9.</p>", "typed number"),
        ("<p>as Fig. 2.1 shows</p>", "typed number"),
        ("<p>the MLP of chapter 10 in the same setting</p>", "typed number"),
        (f'<div class="cell_output">{FIGURE.replace("the estimates", "the MLP of chapter 10")}</div>', "typed number"),
        ("<p>by eq. (3.2), the variance</p>", "typed number"),
        ("<p>see § 4 below</p>", "typed number"),
        ("<p>by eq. eq-expfam-diag the entries are</p>", "raw label"),
        ('<p>by <a href="#x">fig-cnn-bars</a></p>', "raw label"),
        ("<table><tr><td>4.18e+11</td></tr></table>", "raw exponent"),
        ("<p>about 3e-05 of the total</p>", "raw exponent"),
        ('<div class="cell_output"><img src="../_images/b.png"/></div>', "figure without a numbered caption"),
        ('<figure><img src="c.png"/><figcaption>no number</figcaption></figure>', "figure without a numbered"),
    ],
)
def test_each_defect_is_found(body: str, finding: str) -> None:
    """Each kind of defect is reported once, by its kind."""
    findings = book_content.page_findings(_page(body))
    assert len(findings) == 1 and findings[0].startswith(finding), findings


def test_theory_chapters_without_exercises_are_listed(tmp_path: Path) -> None:
    """Only a Theory chapter whose page has no 'Exercises' heading (or no page) is listed."""
    toc = tmp_path / "_toc.yml"
    toc.write_text(
        "format: jb-book\nroot: book/intro\nparts:\n"
        "  - caption: Theory\n    chapters:\n      - file: book/a\n      - file: book/b\n      - file: book/c\n"
        "  - caption: Experiments\n    chapters:\n      - file: book/d\n"
    )
    (tmp_path / "html" / "book").mkdir(parents=True)
    heading = '<h2>Exercises<a class="headerlink" href="#exercises">#</a></h2>'
    (tmp_path / "html" / "book" / "a.html").write_text(_page(f"<section>{heading}</section>"))
    (tmp_path / "html" / "book" / "b.html").write_text(_page("<h2>Summary</h2><p>Exercises are elsewhere.</p>"))
    (tmp_path / "html" / "book" / "d.html").write_text(_page("<h2>Results</h2>"))
    missing = book_content.missing_exercises(toc, tmp_path / "html")
    assert [m.split(":")[0] for m in missing] == ["book/b", "book/c"], missing


def test_notebook_leftovers_name_each_cell() -> None:
    """Roles, glue placeholders, directives, targets and labelled maths are found; plain markdown is not."""
    cells = [
        {"cell_type": "markdown", "source": "plain $x$ and `code` and [a link](b.ipynb#sec-x)"},
        {"cell_type": "markdown", "source": ["see {numref}`fig-x`\n", "and {glue}`n`"]},
        {"cell_type": "markdown", "source": ":::{note}\nx\n:::"},
        {"cell_type": "markdown", "source": "(sec-x)=\n## X\n$$\nx\n$$ (eq-x)"},
        {"cell_type": "code", "source": "glue('n', 1)  # {glue} in code is code"},
    ]
    found = book_content.notebook_leftovers(cells)
    assert [f.split(":")[0] for f in found] == ["cell 1", "cell 1", "cell 2", "cell 3", "cell 3"], found


def test_the_landing_page_must_offer_a_pdf_that_is_there(tmp_path: Path) -> None:
    """No link, a link to nothing, a link to something else, and a real PDF."""
    (tmp_path / "book").mkdir()
    landing = tmp_path / "book" / "intro.html"
    landing.write_text(_page("<p>No PDF here.</p>"))
    assert "links to no PDF" in book_content.pdf_findings(landing)[0]
    landing.write_text(_page('<p><a href="../fishertut.pdf">fishertut.pdf</a></p>'))
    assert "not there" in book_content.pdf_findings(landing)[0]
    (tmp_path / "fishertut.pdf").write_text("<html>an error page</html>")
    assert "not a PDF" in book_content.pdf_findings(landing)[0]
    (tmp_path / "fishertut.pdf").write_bytes(b"%PDF-1.4\n%...")
    assert book_content.pdf_findings(landing) == []
