r"""MyST markdown -> the plain (CommonMark + maths) markdown that Jupyter renders: the text of a download.

A chapter's markdown cells are written in MyST: roles (``{doc}`x```, ``{glue:text}`key:.2f```), labels
(``(sec-x)=``), labelled display maths (``$$ ... $$ (eq-x)``), directives (``:::{admonition}``) and ``%``
comments. Plain Jupyter shows all of those as raw text. :func:`to_jupyter_markdown` rewrites them, with the
values a :class:`Resolver` supplies (the Sphinx side builds one from the build environment and the glued
values of the build's own run; the tests use a small fake):

* glue roles -> the glued value, formatted as in the book;
* ``{doc}``, ``{ref}``, ``{numref}`` -> a link with the title or number the book shows; ``{eq}`` -> "(3.2)";
* ``{cite}`` -> "Author (year)"; Python roles (``{func}``...) -> inline code; other roles -> their text;
* ``(label)=`` -> an HTML anchor; ``$$ ... $$ (label)`` -> the same maths with ``\tag{number}``;
* admonitions -> a block quote with a bold title (dropdowns -> ``<details>``), ``{math}`` -> ``$$``,
  ``{literalinclude}`` -> the included code, ``{bibliography}`` -> the list of references.

:data:`LEFTOVER` finds what a converted text must no longer contain.
"""

from __future__ import annotations

import re
from typing import Protocol

__all__ = ["Resolver", "to_jupyter_markdown", "LEFTOVER", "ADMONITIONS"]

#: ``{name}`text``` (a role), with the name's characters as MyST allows them.
ROLE = re.compile(r"\{(?P<name>[A-Za-z][\w:.+-]*)\}(?P<ticks>`+)(?P<body>.+?)(?P=ticks)", re.DOTALL)

#: A directive's opening fence: ```` ```{name} args ```` or ``:::{name} args``.
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:.-]+)\}[ \t]*(?P<args>.*)$")

#: A target line ``(label)=``.
LABEL = re.compile(r"^\((?P<label>[^()\s]+)\)=\s*$")

#: The closing line of labelled display maths, ``$$ (eq-label)``.
MATH_LABEL = re.compile(r"^(?P<body>.*)\$\$\s*\((?P<label>[^()\s]+)\)\s*$")

#: What must not be left in the markdown of a download: roles, directive fences, target lines and maths labels.
LEFTOVER = re.compile(
    r"\{[A-Za-z][\w:.+-]*\}`"  # a role
    r"|^ {0,3}(?:`{3,}|:{3,})\{[\w:.-]+\}"  # a directive
    r"|^\([^()\s]+\)=\s*$"  # a target
    r"|\$\$\s*\([^()\s]+\)\s*$",  # a labelled equation
    re.MULTILINE,
)

#: Directives shown as a block quote under a bold title (a ``dropdown`` class makes them ``<details>``).
ADMONITIONS = frozenset(
    "admonition note tip hint important warning caution attention danger error seealso dropdown".split()
)

#: Python-domain roles: shown as inline code.
CODE_ROLES = frozenset("func class meth data mod attr obj exc const code py:func py:class py:meth".split())


class Resolver(Protocol):
    """What the conversion needs from the build: each method gets the role's target as written."""

    def glue(self, key: str, fmt: str | None) -> str:
        """The glued value of ``key``; ``fmt``: the format spec of ``{glue:text}`` (maybe empty), else None."""

    def doc(self, target: str) -> tuple[str, str | None]:
        """The title of a document and a link to it (None: no link)."""

    def ref(self, label: str) -> tuple[str, str | None]:
        """The title of the section or object a label names, and a link to it."""

    def numref(self, label: str, template: str | None) -> tuple[str, str | None]:
        """The number text ("Fig. 3.1"; ``template`` with ``{number}``/``{name}`` if given) and a link."""

    def eq(self, label: str) -> str:
        """The number of a labelled equation as the book shows it, e.g. ``(3.2)``."""

    def cite(self, keys: list[str], textual: bool) -> str:
        """Author-year citation(s): "Amari (1998)" if ``textual`` else "(Amari, 1998)"."""

    def include(self, path: str, options: dict[str, str]) -> str:
        """The text a ``literalinclude`` of ``path`` with ``options`` shows."""

    def bibliography(self) -> str:
        """The reference list, as markdown."""


def _split_text(body: str) -> tuple[str | None, str]:
    """``"text <target>"`` -> (text, target); ``"target"`` -> (None, target)."""
    m = re.fullmatch(r"(?P<text>.*?)\s*<(?P<target>[^<>]+)>", body.strip(), re.DOTALL)
    if m and m["text"]:
        return m["text"], m["target"].strip()
    return None, body.strip()


def _link(text: str, href: str | None) -> str:
    return f"[{text}]({href})" if href else text


def _role(name: str, body: str, resolver: Resolver) -> str:
    """The markdown that replaces one role."""
    text, target = _split_text(body)
    if name == "glue:text":
        key, _, fmt = body.strip().partition(":")
        return resolver.glue(key, fmt)
    if name in ("glue", "glue:", "glue:any", "glue:md"):
        return resolver.glue(body.strip(), None)
    if name == "doc":
        title, href = resolver.doc(target)
        return _link(text or title, href)
    if name == "ref":
        title, href = resolver.ref(target)
        return _link(text or title, href)
    if name == "numref":
        number, href = resolver.numref(target, text)
        return _link(number, href)
    if name == "eq":
        return resolver.eq(target)
    if name.startswith("cite"):
        keys = [k.strip() for k in target.split(",") if k.strip()]
        return resolver.cite(keys, textual=name in ("cite:t", "cite:ts", "cite:author"))
    if name in CODE_ROLES:
        shown = text or (target.lstrip("~").rsplit(".", 1)[-1] if target.startswith("~") else target)
        return f"`{shown}`"
    if name == "math":
        return f"${body}$"
    if name == "abbr":
        return re.sub(r"\s*\(.*\)\s*$", "", body)
    return text or target


def _convert_roles(text: str, resolver: Resolver) -> str:
    return ROLE.sub(lambda m: _role(m["name"], m["body"], resolver), text)


def _options(lines: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split a directive's body into its ``:key: value`` options (or a ``---`` YAML block) and the rest."""
    options: dict[str, str] = {}
    rest = list(lines)
    if rest and rest[0].strip() == "---" and "---" in (line.strip() for line in rest[1:]):
        end = next(i for i, line in enumerate(rest[1:], 1) if line.strip() == "---")
        for line in rest[1:end]:
            key, _, value = line.partition(":")
            options[key.strip()] = value.strip()
        rest = rest[end + 1 :]
    while rest and (m := re.match(r"^:(?P<key>[\w-]+):\s*(?P<value>.*)$", rest[0])):
        value = m["value"].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        options[m["key"]] = value
        rest = rest[1:]
    return options, rest


def _directive(name: str, args: str, body: list[str], resolver: Resolver) -> str:
    """The markdown that replaces one directive (its body already converted where it is markdown)."""
    options, rest = _options(body)
    content = "\n".join(rest).strip("\n")
    if name in ADMONITIONS:
        title = args.strip() or name.capitalize()
        inner = to_jupyter_markdown(content, resolver)
        if name == "dropdown" or "dropdown" in options.get("class", ""):
            return f"<details>\n<summary>{_convert_roles(title, resolver)}</summary>\n\n{inner}\n\n</details>"
        quoted = "\n".join(f"> {line}".rstrip() for line in inner.splitlines())
        return f"> **{_convert_roles(title, resolver)}**\n>\n{quoted}"
    if name == "math":
        tag = f" \\tag{{{resolver.eq(options['label']).strip('()')}}}" if "label" in options else ""
        return f"$$\n{content}{tag}\n$$"
    if name == "literalinclude":
        return f"```python\n{resolver.include(args.strip(), options).rstrip()}\n```"
    if name == "bibliography":
        return resolver.bibliography()
    if name in ("code-block", "code", "sourcecode"):
        return f"```{args.strip()}\n{content}\n```"
    if name in ("figure", "image"):
        caption = to_jupyter_markdown(content, resolver)
        anchor = f'<a id="{options["name"]}"></a>' if "name" in options else ""
        return f"{anchor}![{caption.splitlines()[0] if caption else ''}]({args.strip()})\n\n{caption}".strip()
    if name == "eval-rst":
        return ""
    return to_jupyter_markdown(content, resolver)


def to_jupyter_markdown(text: str, resolver: Resolver) -> str:
    """Rewrite MyST markdown ``text`` as markdown that plain Jupyter renders (see the module docstring)."""
    lines = text.split("\n")
    out: list[str] = []
    prose: list[str] = []  # plain lines since the last block; their roles may run over a line break

    def flush() -> None:
        if prose:
            out.append(_convert_roles("\n".join(prose), resolver))
            prose.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence:
            marker = fence["fence"]
            closing = re.compile(rf"^ {{0,3}}{re.escape(marker[0])}{{{len(marker)},}}\s*$")
            end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), len(lines))
            flush()
            out.append(_directive(fence["name"], fence["args"], lines[i + 1 : end], resolver))
            i = end + 1
            continue
        if line.startswith(("```", "~~~")):  # an ordinary code block: copied as it is
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(line[:3])), len(lines))
            flush()
            out.append("\n".join(lines[i : end + 1]))
            i = end + 1
            continue
        if (target := LABEL.match(line)) is not None:
            prose.append(f'<a id="{target["label"]}"></a>')
        elif (labelled := MATH_LABEL.match(line)) is not None:
            number = resolver.eq(labelled["label"]).strip("()")
            prose.append(f"{labelled['body']}\\tag{{{number}}}\n$$")
        elif not line.startswith("%"):  # a line starting with % is a MyST comment
            prose.append(line)
        i += 1
    flush()
    return "\n".join(out)
