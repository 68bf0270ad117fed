"""Repository hygiene for the book: chapters are MyST markdown, carry no outputs, and are all in the TOC.

Cheap, no torch: it guards the conventions that keep the book reproducible (no stored outputs, no
notebook next to a same-named chapter, no chapter silently left out of the build).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted(BOOK.glob("*.md"))


def _front_matter(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n", text, flags=re.S)
    return match.group(1) if match else ""


def _toc_files() -> list[str]:
    """Every `file:` entry of _toc.yml (plus the root), without extension."""
    text = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    files = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        m = re.match(r"^\s*(?:-\s*)?(?:file|root):\s*(\S+)\s*$", line)
        if m:
            files.append(m.group(1))
    return files


def test_there_are_chapters() -> None:
    assert CHAPTERS, "book/ has no .md chapters"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_is_in_toc(path: Path) -> None:
    stem = f"book/{path.stem}"
    assert stem in _toc_files(), f"{stem} is not listed in _toc.yml (only_build_toc_files would skip it)"


def test_toc_entries_exist() -> None:
    for entry in _toc_files():
        candidates = [ROOT / f"{entry}{ext}" for ext in ("", ".md", ".ipynb")]
        assert any(c.is_file() for c in candidates), f"_toc.yml names {entry}, which does not exist"


def test_toc_has_no_duplicates() -> None:
    files = _toc_files()
    assert len(files) == len(set(files)), f"duplicate entries in _toc.yml: {files}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_executable_chapter_is_myst_notebook(path: Path) -> None:
    """A chapter with code cells must carry the jupytext MyST header and the python3 kernel."""
    text = path.read_text(encoding="utf-8")
    if "{code-cell}" not in text:
        return
    front = _front_matter(path)
    assert re.search(r"format_name:\s*myst", front), f"{path.name}: code cells but no jupytext myst header"
    assert "kernelspec:" in front and re.search(r"^\s+name:\s*python3\s*$", front, flags=re.M), (
        f"{path.name}: kernelspec must be python3"
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_pip_install_or_syspath_hacks(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"^\s*[!%]\s*pip\s+install", text, flags=re.M), f"{path.name}: `!pip install` cell"
    assert "sys.path.insert" not in text and "sys.path.append" not in text, f"{path.name}: sys.path hack"


def _part_files(caption: str) -> list[str]:
    """The `file:` entries of the _toc.yml part with this caption, in order."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    parts = [part for part in toc["parts"] if part["caption"] == caption]
    assert len(parts) == 1, f"_toc.yml has {len(parts)} parts captioned {caption!r}"
    return [chapter["file"] for chapter in parts[0]["chapters"]]


EXERCISE = re.compile(r"^\*\*Exercise (\d+)\*\* \((derive|compute|predict, then check|derive, then check)\)\.", re.M)


@pytest.mark.parametrize("entry", _part_files("Theory"))
def test_theory_chapter_ends_with_exercises(entry: str) -> None:
    """A labelled last section "Exercises": 2-4 numbered exercises, each followed by a collapsed solution.

    Solutions are MyST dropdowns (collapsed in the HTML); code that checks an answer sits in a collapsed code
    cell (``hide-cell``) that asserts it, so the build fails if the answer is wrong.
    """
    text = (ROOT / f"{entry}.md").read_text(encoding="utf-8")
    match = re.search(r"^\((ex-[\w-]+)\)=\n## Exercises\n(.*)\Z", text, flags=re.M | re.S)
    assert match, f"{entry}: no labelled `## Exercises` section (a `(ex-...)=` line before the heading)"
    body = match.group(2)
    prose = re.sub(r"```\{code-cell\}.*?```", "", body, flags=re.S)
    assert not re.search(r"^#{1,2} ", prose, flags=re.M), f"{entry}: the Exercises section must be the last one"
    numbers = [int(m.group(1)) for m in EXERCISE.finditer(body)]
    assert 2 <= len(numbers) <= 4, f"{entry}: {len(numbers)} exercises, expected 2 to 4"
    assert numbers == list(range(1, len(numbers) + 1)), f"{entry}: exercises numbered {numbers}"
    pieces = EXERCISE.split(body)[3::3]  # the text of each exercise, up to the next one
    for number, piece in zip(numbers, pieces):
        solutions = re.findall(r"^:::\{dropdown\} Solution\n.+?^:::$", piece, flags=re.M | re.S)
        assert len(solutions) == 1, f"{entry}: exercise {number} needs exactly one `:::{{dropdown}} Solution` block"
    for cell in re.findall(r"```\{code-cell\} ipython3\n(.*?)```", body, flags=re.S):
        assert cell.startswith(":tags: [hide-cell]\n"), f"{entry}: a solution's code cell must be collapsed"
        assert "assert" in cell, f"{entry}: a solution's code cell must assert its answer:\n{cell[:200]}"


def test_book_holds_no_notebooks() -> None:
    """Chapters are MyST markdown; notebooks (with their outputs) belong to the build, never to book/."""
    notebooks = [p.relative_to(ROOT) for p in BOOK.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts]
    assert not notebooks, f"notebooks in book/: {notebooks} (convert them to MyST markdown with jupytext)"


def test_readme_quick_start_runs() -> None:
    """The README's library quick start (its first ```python block) runs as written."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no ```python quick start"
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "readme_quick_start"})


# --- cross-references ----------------------------------------------------------------
# A number typed into the prose ("chapter 10", "Chapter 3", "Fig. 2.1", "eq. (3)", "section 4") goes
# stale when chapters move; {numref}/{ref}/{doc}/{eq} roles do not. The paper's own numbering
# ("the paper's Theorem 4.1", "its Figure 1") is not the book's, and is allowed.
SOURCES = CHAPTERS + sorted((BOOK / "snippets").glob("*.md"))
TYPED_NUMBER = re.compile(
    r"(?<![\w'-])(?:chapters?|ch\.|fig(?:ure)?s?\.?|sec(?:tion)?s?\.?|§|eq(?:uation)?s?\.?)\s*\(?\d+(?:\.\d+)*",
    flags=re.IGNORECASE,
)
PAPER_NUMBERING = re.compile(r"(?:paper's|its)\s+$", flags=re.IGNORECASE)


def typed_numbers(text: str) -> list[str]:
    """Each typed chapter/figure/section/equation number in `text`, as 'line N: match'."""
    hits = []
    for match in TYPED_NUMBER.finditer(text):
        if PAPER_NUMBERING.search(text[max(0, match.start() - 12) : match.start()]):
            continue
        line = text.count("\n", 0, match.start()) + 1
        hits.append(f"line {line}: {match.group(0)!r}")
    return hits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the tanh MLP of chapter 10", 1),
        ("Chapter 3 derives it", 1),
        ("as in Fig. 2.1 and figure 4", 2),
        ("see eq. (3) and equation 12", 2),
        ("section 4; sections 2 to 5; Sec. 1", 3),
        ("chapters 3, 7 and 9", 1),
        ("the tanh MLP of {ref}`ch-mnist-case-study`", 0),
        ("{numref}`fig-intro-estimates` and {eq}`eq-intro-fim`", 0),
        ("the paper's Theorem 4.1 and its Figure 1; the paper's Section 5", 0),
        ("10 chapters, 3 figures, a 784-32-16-10 network, eq-cs-pooled", 0),
    ],
)
def test_typed_number_pattern(text: str, expected: int) -> None:
    assert len(typed_numbers(text)) == expected, typed_numbers(text)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_typed_chapter_figure_or_equation_numbers(path: Path) -> None:
    hits = typed_numbers(path.read_text(encoding="utf-8"))
    assert not hits, f"{path.name}: typed numbers {hits}; use {{numref}}/{{ref}}/{{doc}}/{{eq}} roles instead"


def _section(path: Path, heading: str) -> str:
    text = path.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"{path.name} has no section '## {heading}'"
    return match.group(1)


def test_reading_guide_names_every_chapter() -> None:
    """The landing page's reading guide links every page of the table of contents."""
    guide = _section(BOOK / "intro.md", "Reading guide")
    linked = set(re.findall(r"\{doc\}`(?:[^`<]*<)?([\w/]+)>?`", guide))
    pages = {entry.removeprefix("book/") for entry in _toc_files()} - {"intro"}
    assert pages - linked == set(), f"reading guide misses {sorted(pages - linked)}"


def test_recipe_has_one_source() -> None:
    """The decision table lives in one file, included by the landing page and the practical guide."""
    recipe = BOOK / "snippets" / "recipe.md"
    assert recipe.is_file()
    include = "```{include} snippets/recipe.md\n```"
    for page in ("intro.md", "practical_guide.md"):
        assert include in (BOOK / page).read_text(encoding="utf-8"), f"{page} does not include the recipe"
    # a list-table: each row is "* - situation" followed by "  - use", "  - why", "  - evidence"
    rows = re.split(r"^\* - ", recipe.read_text(encoding="utf-8"), flags=re.M)[2:]  # [0]: options, [1]: header
    assert len(rows) >= 5, rows
    for row in rows:  # every row links the chapter(s) with its evidence
        cells = re.split(r"^  - ", row, flags=re.M)
        assert len(cells) == 4, f"recipe row without four cells: {row}"
        assert re.search(r"\{(?:doc|ref|numref)\}`", cells[-1]), f"recipe row without a linked chapter: {row}"
