"""tools/execute_chapters.py: chapters executed into the book's execution cache, so the book runs none again.

Each test runs a two-cell chapter in a fresh kernel (a few seconds); the last one builds a one-page book
with jupyter-book and reads MyST-NB's log to see it took the chapter from the cache.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("execute_chapters", ROOT / "tools" / "execute_chapters.py")
execute_chapters = importlib.util.module_from_spec(_spec)
sys.modules["execute_chapters"] = execute_chapters  # importable by name: --jobs pickles its functions
_spec.loader.exec_module(execute_chapters)

HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  name: python3
  display_name: Python 3
---

# A chapter

Some text.

```{code-cell} ipython3
x = 6 * 7
x
```

:::{note}
A colon fence, as the book's MyST configuration allows.
:::

```{code-cell} ipython3
"""


def _book(tmp_path: Path, last_cell: str, tags: str = "remove-cell") -> Path:
    """A one-chapter book under tmp_path with the project's MyST and execution settings; the chapter.

    Its last cell holds `last_cell`, with these tags (a hidden assert cell by default).
    """
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    small = {"title": "t", "only_build_toc_files": True, "execute": config["execute"], "parse": config["parse"]}
    small["exclude_patterns"] = ["_build"]
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(small), encoding="utf-8")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: ch\n", encoding="utf-8")
    chapter = tmp_path / "ch.md"
    chapter.write_text(HEADER + f":tags: [{tags}]\n" + last_cell + "\n```\n", encoding="utf-8")
    return chapter


def _run(tmp_path: Path, chapter: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = execute_chapters.main(["--config", str(tmp_path / "_config.yml"), str(chapter)])
    return status, capsys.readouterr().out


def test_passing_chapter_is_cached_then_served(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chapter = _book(tmp_path, "assert x == 42")
    status, out = _run(tmp_path, chapter, capsys)
    assert status == 0, out
    assert f"executed {chapter}" in out and "1 executed, 0 failed" in out
    assert (tmp_path / "_build" / ".jupyter_cache" / "global.db").is_file()
    status, out = _run(tmp_path, chapter, capsys)
    assert status == 0, out
    assert f"cached   {chapter}" in out and "0 executed, 0 failed" in out


def test_failing_assert_names_chapter_line_and_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chapter = _book(tmp_path, "assert x == 41, f'x is {x}'")
    status, out = _run(tmp_path, chapter, capsys)
    assert status == 1
    lines = chapter.read_text(encoding="utf-8").splitlines()
    line = max(i for i, text in enumerate(lines) if text.startswith("```{code-cell}")) + 1  # 1-based
    assert f"FAILED {chapter}:{line}: the code cell at line {line} raised AssertionError: x is 42" in out, out
    assert "assert x == 41, f'x is {x}'" in out  # the cell's source, then its traceback
    # not cached: a second run executes (and fails) again
    status, out = _run(tmp_path, chapter, capsys)
    assert status == 1 and "1 executed, 1 failed" in out, out


def test_warning_in_an_output_fails_even_from_the_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chapter = _book(tmp_path, "import warnings\nwarnings.warn('too few samples')", tags="hide-output")
    for _ in range(2):
        status, out = _run(tmp_path, chapter, capsys)
        assert status == 1, out
        assert f"FAILED {chapter}: warnings in outputs" in out and "stderr output" in out, out
    assert "cached" in out


def test_output_rules_match_the_browser_check() -> None:
    """Shown stderr streams, tracebacks and 'SomethingWarning:' / 'SomethingError:' texts are flagged."""
    outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="fine\n"),
        nbformat.v4.new_output("stream", name="stderr", text="progress 10%\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "RuntimeWarning: overflow"}),
        nbformat.v4.new_output("display_data", data={"text/plain": "no warning here"}),
    ]
    cells = [nbformat.v4.new_code_cell("1", outputs=outputs) for _ in range(4)]
    cells[1].metadata.tags = ["remove-stderr"]  # MyST-NB drops its stderr streams, not the rest
    cells[2].metadata.tags = ["remove-output"]  # and every output of these two
    cells[3].metadata.tags = ["remove-cell"]
    notebook = nbformat.v4.new_notebook(cells=cells, metadata={"source_map": [9, 20, 30, 40]})
    assert execute_chapters.bad_outputs(notebook) == [
        "line 9: stderr output: progress 10% (and 1 more such outputs)",
        "line 20: execute_result output: RuntimeWarning: overflow",
    ]
    assert execute_chapters.bad_outputs(notebook, stderr_shown=False) == [
        "line 9: execute_result output: RuntimeWarning: overflow",
        "line 20: execute_result output: RuntimeWarning: overflow",
    ]


def test_book_build_takes_the_chapter_from_the_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The notebook hashed here is the one MyST-NB stages: jupyter-book executes nothing afterwards."""
    chapter = _book(tmp_path, "assert x == 42")
    status, out = _run(tmp_path, chapter, capsys)
    assert status == 0, out
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    build = subprocess.run(
        [str(jupyter_book), "build", str(tmp_path), "-W", "-v"], capture_output=True, text=True, env=env, check=False
    )
    log = build.stdout + build.stderr
    assert build.returncode == 0, log[-3000:]
    assert "Using cached notebook" in log, log[-3000:]
    assert "Executing notebook" not in log, log[-3000:]


def test_two_jobs_run_and_report_each_chapter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _book(tmp_path, "assert x == 42")
    bad = good.with_name("bad.md")
    bad.write_text(good.read_text(encoding="utf-8").replace("x == 42", "x == 0"), encoding="utf-8")
    status = execute_chapters.main(["--config", str(tmp_path / "_config.yml"), "--jobs", "2", str(good), str(bad)])
    out = capsys.readouterr().out
    assert status == 1, out
    assert f"executed {good}" in out and f"FAILED {bad}:" in out and "2 executed, 1 failed" in out, out


def test_cell_timeout_names_the_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """execute.timeout of _config.yml applies per cell, as in the book build."""
    chapter = _book(tmp_path, "import time\ntime.sleep(60)")
    config = yaml.safe_load((tmp_path / "_config.yml").read_text(encoding="utf-8"))
    config["execute"]["timeout"] = 2
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    status, out = _run(tmp_path, chapter, capsys)
    assert status == 1, out
    lines = chapter.read_text(encoding="utf-8").splitlines()
    line = max(i for i, text in enumerate(lines) if text.startswith("```{code-cell}")) + 1
    assert f"FAILED {chapter}:{line}: the code cell at line {line} raised CellTimeoutError" in out, out
    assert "time.sleep(60)" in out, out
