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
