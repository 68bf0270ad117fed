"""The library's layout: sources compile cleanly, the core never imports the book's support, modules stay small."""

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SOURCES = sorted((ROOT / "fishertut").rglob("*.py"))
CORE = [p for p in SOURCES if "lab" not in p.relative_to(ROOT / "fishertut").parts]
MAX_LINES = 350


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_compiles_without_warnings(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compile(path.read_text(), str(path), "exec")


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_does_not_import_lab(path):
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"^\s*(from\s+(\.|fishertut\.)lab\b|import\s+fishertut\.lab\b)", text, flags=re.M), (
        f"{path.name} imports fishertut.lab: the core must not depend on the book's support code"
    )


def test_importing_the_core_loads_no_lab_module():
    """Every core module imported in a fresh interpreter: no ``fishertut.lab`` module (nor matplotlib) loads."""
    modules = ", ".join(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in CORE)
    code = (
        f"import importlib, sys\nfor m in '{modules}'.split(', '): importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('fishertut.lab', 'matplotlib'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize(
    "path", SOURCES + sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_module_is_small(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (at most {MAX_LINES}): split it by concept"


def test_no_reference_to_documents_outside_the_repository():
    """Docstrings and chapters cite the paper's sections or the book's chapters, not a working document."""
    pattern = re.compile(r"\bspec(?:ification)?\b\s*(?:section\s*)?\d|\bthe specification\b|\bopen point", re.I)
    files = [
        *SOURCES,
        *(ROOT / "benchmarks").glob("*.py"),
        *(ROOT / "benchmarks").glob("*.md"),
        *(ROOT / "book").glob("*.md"),
    ]
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in files
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, f"references to a document the repository does not hold: {hits}"
