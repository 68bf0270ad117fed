"""Sphinx extension of the book: offer every chapter as a Jupyter notebook that reads in plain Jupyter.

A chapter is a MyST markdown notebook (jupytext header). For each one, the ``.ipynb`` is written with
jupytext into the built site's ``_sources/`` (never into the repository), without outputs, and the
theme's download menu gets an ``.ipynb`` entry (sphinx-book-theme reads ``ipynb_source`` from the page
context). Open it in Jupyter with ``fishertut`` installed to run the chapter yourself.

So that the notebook reads like the page (module :mod:`myst_markdown` does the rewriting):

* the glued numbers in the prose are the values of the build's own run (myst-nb's ``<doc>.glue.json`` in
  ``_build/jupyter_execute``), formatted as on the page (exponents too: ``_ext/people_numbers.py``);
* cross-references, equation numbers and citations are the numbers and titles the page shows, as ordinary
  links or text; each figure's caption follows its cell, with its number;
* the cells that set seeds and the figure style are not tagged ``remove-cell`` (the book hides them).
"""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path

import jupytext
import nbformat
from docutils.nodes import make_id
from myst_markdown import to_jupyter_markdown
from people_numbers import exponents_for_people
from sphinx.application import Sphinx
from sphinx.directives.code import LiteralIncludeReader
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)

#: Code that sets a seed or the figure style: such a cell is shown in the download.
SETUP_CODE = re.compile(r"manual_seed|\bseed\(|default_rng|fork_rng|set_style\(|use_deterministic")

#: Tags that hide a whole cell or its code in the book.
HIDING_TAGS = frozenset({"remove-cell", "remove-input", "hide-cell"})


def _is_myst_notebook(path: Path) -> bool:
    head = path.read_text(encoding="utf-8")[:1000]
    return head.startswith("---") and "format_name: myst" in head


class BuildResolver:
    """What a chapter's references resolve to in this build (see :class:`myst_markdown.Resolver`)."""

    def __init__(self, app: Sphinx, docname: str) -> None:
        self.app, self.env, self.docname = app, app.env, docname
        glue_file = Path(self.env.mystnb_config.output_folder) / f"{docname}.glue.json"
        self.glued = json.loads(glue_file.read_text(encoding="utf-8")) if glue_file.is_file() else {}
        self.std = self.env.get_domain("std")

    def _warn(self, what: str) -> str:
        LOGGER.warning(f"notebook download of {self.docname}: {what}", location=self.docname)
        return f"[{what}]"

    def _href(self, docname: str, anchor: str = "") -> str | None:
        """A link from this notebook to a document (its notebook if it has one), or None."""
        if docname == self.docname:
            return f"#{anchor}" if anchor else None
        if not _is_myst_notebook(Path(self.env.doc2path(docname))):
            return None
        rel = posixpath.relpath(docname, posixpath.dirname(self.docname) or ".")
        return f"{rel}.ipynb" + (f"#{anchor}" if anchor else "")

    def glue(self, key: str, fmt: str | None) -> str:
        """The glued value, formatted as ``{glue:text}`` formats it."""
        from myst_nb.core.variables import format_plain_text

        if key not in self.glued or "text/plain" not in self.glued[key].get("data", {}):
            return self._warn(f"no glued text for {key!r}")
        return exponents_for_people(format_plain_text(self.glued[key]["data"]["text/plain"], fmt or ""))

    def doc(self, target: str) -> tuple[str, str | None]:
        """A document's title, and a link to its notebook."""
        target = target.removesuffix(".md")
        base = posixpath.dirname(self.docname)
        docname = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join(base, target))
        if docname not in self.env.titles:
            return self._warn(f"unknown document {target!r}"), None
        return self.env.titles[docname].astext(), self._href(docname)

    def ref(self, label: str) -> tuple[str, str | None]:
        """A label's title, and a link to it."""
        if label not in self.std.labels:
            return self._warn(f"unknown label {label!r}"), None
        docname, labelid, title = self.std.labels[label]
        return title, self._href(docname, labelid)

    def numref(self, label: str, template: str | None) -> tuple[str, str | None]:
        """The number text of a figure, table or section, and a link to it."""
        if label not in self.std.anonlabels:
            return self._warn(f"unknown label {label!r}"), None
        docname, labelid = self.std.anonlabels[label]
        for figtype, numbers in self.env.toc_fignumbers.get(docname, {}).items():
            if labelid in numbers:
                number = ".".join(map(str, numbers[labelid]))
                break
        else:
            figtype, number = (
                "section",
                ".".join(map(str, self.env.toc_secnumbers.get(docname, {}).get(f"#{labelid}", ()))),
            )
        if not number:
            return self._warn(f"no number for {label!r}"), None
        name = self.std.labels.get(label, (None, None, ""))[2]
        text = (
            template.format(number=number, name=name) if template else self.app.config.numfig_format[figtype] % number
        )
        return text, self._href(docname, labelid)

    def eq(self, label: str) -> str:
        """An equation number as the page shows it."""
        docname, number = self.env.get_domain("math").equations.get(label, (None, None))
        if docname is None:
            return self._warn(f"unknown equation {label!r}")
        if self.app.config.math_numfig and self.app.config.numfig:
            numbers = self.env.toc_fignumbers.get(docname, {}).get("displaymath", {}).get(make_id(f"equation-{label}"))
            number = ".".join(map(str, numbers)) if numbers else number
        return self.app.config.math_eqref_format.format(number=number)

    def _bib(self) -> dict:
        if not hasattr(self, "_entries"):
            from pybtex.database import parse_file

            self._entries = {}
            for name in self.app.config.bibtex_bibfiles:
                self._entries.update(parse_file(Path(self.app.srcdir) / name).entries)
        return self._entries

    def _author_year(self, key: str) -> tuple[str, str]:
        entry = self._bib().get(key)
        if entry is None:
            return self._warn(f"unknown citation {key!r}"), ""
        last = [" ".join(p.last_names).replace("{", "").replace("}", "") for p in entry.persons.get("author", [])]
        names = last[0] if len(last) == 1 else " and ".join(last) if len(last) == 2 else f"{last[0]} et al."
        return names, entry.fields.get("year", "n.d.")

    def cite(self, keys: list[str], textual: bool) -> str:
        """Author-year citation text."""
        pairs = [self._author_year(k) for k in keys]
        if textual:
            return ", ".join(f"{a} ({y})" for a, y in pairs)
        return "(" + "; ".join(f"{a}, {y}" for a, y in pairs) + ")"

    def include(self, path: str, options: dict[str, str]) -> str:
        """The lines a ``literalinclude`` shows (Sphinx reads them)."""
        source = Path(self.env.doc2path(self.docname)).parent / path
        text, _ = LiteralIncludeReader(str(source), options, self.app.config).read()
        return text

    def bibliography(self) -> str:
        """Every entry of the bibliography, as a markdown list."""
        items = []
        for key, entry in sorted(self._bib().items(), key=lambda kv: self._author_year(kv[0])):
            authors, year = self._author_year(key)
            title = entry.fields.get("title", "").replace("{", "").replace("}", "")
            items.append(f"- {authors} ({year}). *{title}*.")
        return "\n".join(items)


def _caption_cell(cell: nbformat.NotebookNode, resolver: BuildResolver) -> nbformat.NotebookNode | None:
    """A markdown cell with the number and caption of the figure a code cell draws, if it has one."""
    figure = cell.metadata.get("mystnb", {}).get("figure")
    if not figure or "caption" not in figure:
        return None
    caption = to_jupyter_markdown(str(figure["caption"]).strip(), resolver)
    if "name" in figure:
        number, _ = resolver.numref(figure["name"], None)
        return nbformat.v4.new_markdown_cell(f'<a id="{figure["name"]}"></a>**{number}.** {caption}')
    return nbformat.v4.new_markdown_cell(caption)


def readable_notebook(source: Path, resolver: BuildResolver) -> nbformat.NotebookNode:
    """The chapter ``source`` as a notebook for plain Jupyter (see the module docstring)."""
    notebook = jupytext.read(source)
    cells = []
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            cell.source = to_jupyter_markdown(cell.source, resolver)
        elif cell.cell_type == "code":
            tags = cell.metadata.get("tags", [])
            if SETUP_CODE.search(cell.source) and HIDING_TAGS & set(tags):
                cell.metadata["tags"] = [t for t in tags if t not in HIDING_TAGS]
                if not cell.metadata["tags"]:
                    del cell.metadata["tags"]
        cells.append(cell)
        caption = _caption_cell(cell, resolver) if cell.cell_type == "code" else None
        if caption is not None:
            cells.append(caption)
    notebook.cells = cells
    return notebook


def add_notebook(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Write ``_sources/<page>.ipynb`` for a chapter and point the download menu at it."""
    if doctree is None or app.builder.format != "html" or app.builder.name != "html":
        return
    source = Path(app.env.doc2path(pagename))
    if source.suffix != ".md" or not _is_myst_notebook(source):
        return
    notebook = readable_notebook(source, BuildResolver(app, pagename))
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(notebook, target, fmt="ipynb")
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app: Sphinx) -> dict:
    """Register the handler before the theme builds its header buttons (priority 501); numbers for people."""
    app.setup_extension("people_numbers")
    app.connect("html-page-context", add_notebook, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
