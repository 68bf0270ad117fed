"""Sphinx extension of the book: offer every chapter as a Jupyter notebook next to its ``.md`` source.

A chapter is a MyST markdown notebook (jupytext header). For each one, the ``.ipynb`` is written with
jupytext into the built site's ``_sources/`` (never into the repository), without outputs, and the
theme's download menu gets an ``.ipynb`` entry (sphinx-book-theme reads ``ipynb_source`` from the page
context). Open it in Jupyter with ``fishertut`` installed to run the chapter yourself.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
from sphinx.application import Sphinx
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)


def _is_myst_notebook(path: Path) -> bool:
    head = path.read_text(encoding="utf-8")[:1000]
    return head.startswith("---") and "format_name: myst" in head


def add_notebook(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Write ``_sources/<page>.ipynb`` for a chapter and point the download menu at it."""
    if doctree is None or app.builder.format != "html":
        return
    source = Path(app.env.doc2path(pagename))
    if source.suffix != ".md" or not _is_myst_notebook(source):
        return
    notebook = jupytext.read(source)
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(notebook, target, fmt="ipynb")
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app: Sphinx) -> dict:
    """Register the handler before the theme builds its header buttons (priority 501)."""
    app.connect("html-page-context", add_notebook, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
