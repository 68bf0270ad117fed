"""The library's sources compile without warnings (e.g. invalid escape sequences in docstrings with maths)."""

import warnings
from pathlib import Path

import pytest

SOURCES = sorted((Path(__file__).parent.parent / "fishertut").glob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_module_compiles_without_warnings(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compile(path.read_text(), str(path), "exec")
