"""The quick starts of the README and of the book's landing page run, exactly as printed, in a fresh Python.

A reader copies them into a new session: every name they use must be imported or defined in the block
itself (no hidden setup cell), and the install line must be printed next to them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _section(path: Path, heading: str) -> str:
    """The text of the markdown section under ``heading``, up to the next heading of the same level."""
    text = path.read_text(encoding="utf-8")
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n")
    end = text.find(f"\n{level} ", start + len(heading) + 2)
    return text[start : end if end >= 0 else len(text)]


def _readme_quick_start() -> tuple[str, str]:
    section = _section(ROOT / "README.md", "## Library quick start")
    return section, re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def _intro_quick_start() -> tuple[str, str]:
    section = _section(ROOT / "book" / "intro.md", "## Quick start")
    cell = re.search(r"```\{code-cell\} ipython3\n(.*?)```", section, flags=re.S).group(1)
    assert not cell.startswith((":", "---")), "the quick-start cell must be a plain visible cell"
    return section, cell


@pytest.mark.parametrize("source", [_readme_quick_start, _intro_quick_start], ids=["README", "intro"])
def test_quick_start_runs_as_printed(source, tmp_path: Path) -> None:
    """Imports, seed and install line are printed, and the block runs alone without a warning."""
    section, code = source()
    assert "pip install" in section, "the quick start must print its install line"
    assert re.search(r"^import torch$", code, flags=re.M) and re.search(r"^import fishertut as ft$", code, flags=re.M)
    assert "manual_seed(" in code, "the quick start must seed its random numbers"
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"the quick start fails in a fresh Python:\n{result.stderr}"
    assert not result.stderr, result.stderr
