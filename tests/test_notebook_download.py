"""The download's MyST -> plain-Jupyter markdown rewriting (_ext/myst_markdown.py), on small synthetic texts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "_ext"))
import myst_markdown  # noqa: E402

sys.path.remove(str(ROOT / "_ext"))


class FakeResolver:
    """A build with two chapters, one figure, one equation and one reference."""

    glued = {"n": "500", "ratio": "4.18"}

    def glue(self, key, fmt):
        value = self.glued[key]
        return format(float(value), fmt) if fmt else value

    def doc(self, target):
        return {"bounds": ("Bounds on the variances", "bounds.ipynb")}[target]

    def ref(self, label):
        return {"sec-recipe": ("The recipe", "intro.ipynb#sec-recipe")}[label]

    def numref(self, label, template):
        number = {"fig-x": "3.1"}[label]
        return (template.format(number=number, name="") if template else f"Fig. {number}"), f"#{label}"

    def eq(self, label):
        return {"eq-v1": "(3.2)"}[label]

    def cite(self, keys, textual):
        return "Amari (1998)" if textual else "(Amari, 1998)"

    def include(self, path, options):
        return f"def {options['pyobject']}(): ..."

    def bibliography(self):
        return "- Amari (1998). *Natural gradient*."


def convert(text: str) -> str:
    return myst_markdown.to_jupyter_markdown(text, FakeResolver())


@pytest.mark.parametrize(
    ("myst", "plain"),
    [
        ("N = {glue:text}`n` inputs", "N = 500 inputs"),
        ("ratio {glue:text}`ratio:.1f`", "ratio 4.2"),
        ("ratio {glue}`ratio`", "ratio 4.18"),
        ("see {doc}`bounds`", "see [Bounds on the variances](bounds.ipynb)"),
        ("see {doc}`the bounds <bounds>`", "see [the bounds](bounds.ipynb)"),
        ("{ref}`sec-recipe`", "[The recipe](intro.ipynb#sec-recipe)"),
        ("{numref}`fig-x` shows", "[Fig. 3.1](#fig-x) shows"),
        ("{numref}`Figure {number} <fig-x>`", "[Figure 3.1](#fig-x)"),
        ("by {eq}`eq-v1`", "by (3.2)"),
        ("as in {cite}`amari1998natural`", "as in (Amari, 1998)"),
        ("{cite:t}`amari1998natural` shows", "Amari (1998) shows"),
        ("{func}`~fishertut.api.diagonal_fisher`", "`diagonal_fisher`"),
        ("{class}`fishertut.Bounds`", "`fishertut.Bounds`"),
        ("{meth}`report <fishertut.Report.sample_size>`", "`report`"),
        ("{term}`Fisher`", "Fisher"),
        ("a {doc}`long\ntitle <bounds>` here", "a [long\ntitle](bounds.ipynb) here"),
        ("(sec-recipe)=\n## The recipe", '<a id="sec-recipe"></a>\n## The recipe'),
        ("% a comment\ntext", "text"),
    ],
)
def test_roles_labels_and_comments(myst: str, plain: str) -> None:
    """Each MyST construct becomes what the page shows, as plain markdown."""
    assert convert(myst) == plain


def test_labelled_display_maths_gets_its_number_as_a_tag() -> None:
    """``$$ ... $$ (label)`` keeps the maths and shows the book's equation number."""
    out = convert("$$\nV_1 = x\n$$ (eq-v1)")
    assert out == "$$\nV_1 = x\n\\tag{3.2}\n$$"
    assert not myst_markdown.LEFTOVER.search(out)


def test_admonitions_become_quotes_and_dropdowns_details() -> None:
    """An admonition is a titled block quote, with its roles converted; a dropdown is a <details> block."""
    out = convert(":::{admonition} Our choice\n:class: note\n\nSee {doc}`bounds`.\n:::\nafter")
    assert out == "> **Our choice**\n>\n> See [Bounds on the variances](bounds.ipynb).\nafter"
    out = convert("````{admonition} Solution\n:class: dropdown\n\nIt is {glue:text}`n`.\n````")
    assert out.startswith("<details>\n<summary>Solution</summary>") and "It is 500." in out
    assert out.endswith("</details>")


def test_literalinclude_bibliography_and_code_blocks() -> None:
    """Included code is copied in; the bibliography is listed; an ordinary code block is left as it is."""
    out = convert("```{literalinclude} ../fishertut/report.py\n:pyobject: Bounds\n:lines: 1-2\n```")
    assert out == "```python\ndef Bounds(): ...\n```"
    assert convert("```{bibliography}\n```") == "- Amari (1998). *Natural gradient*."
    code = "```python\nx = '{doc}`not a role here`'\n```"
    assert convert(code) == code


@pytest.mark.parametrize(
    "text",
    ["left {doc}`bounds`", "{glue:text}`n:.2f`", ":::{note}\nx\n:::", "(sec-x)=", "$$ (eq-x)", "```{figure} a.png"],
)
def test_leftover_finds_myst(text: str) -> None:
    """What plain Jupyter would show raw is found in a text."""
    assert myst_markdown.LEFTOVER.search(text)


@pytest.mark.parametrize("text", ["a {set} of `code`", "$$x$$", "(a, b) = (1, 2)", "```python\nx\n```"])
def test_leftover_ignores_ordinary_markdown(text: str) -> None:
    """Ordinary markdown is not mistaken for MyST."""
    assert not myst_markdown.LEFTOVER.search(text)


sys.path.insert(0, str(ROOT / "_ext"))
import people_numbers  # noqa: E402

sys.path.remove(str(ROOT / "_ext"))


@pytest.mark.parametrize(
    ("python", "people"),
    [
        ("4.18e+11", "4.18 × 10¹¹"),
        ("1.2e-05", "1.2 × 10⁻⁵"),
        ("-3e-12", "−3 × 10⁻¹²"),
        ("from 126 to 4.18e+11;", "from 126 to 4.18 × 10¹¹;"),
        ("8.8e+03", "8.8 × 10³"),
    ],
)
def test_exponents_are_written_for_people(python: str, people: str) -> None:
    """Python's exponent notation becomes a power of ten with a superscript exponent."""
    assert people_numbers.exponents_for_people(python) == people


@pytest.mark.parametrize("text", ["126", "0.51", "layer 1e", "see fig-3e-2", "x1e5", "e-05"])
def test_other_text_is_left_alone(text: str) -> None:
    """Words, labels and plain numbers are not numbers in exponent notation."""
    assert people_numbers.exponents_for_people(text) == text
