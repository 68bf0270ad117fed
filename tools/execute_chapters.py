"""Execute the book's chapters into the execution cache of `make book`, each chapter once.

`make test` runs every chapter with this script (target `chapters`); `make book` and `make pdf` then find
every chapter in the same cache (jupyter-cache in ``_build/.jupyter_cache``, the one MyST-NB uses with
``execute_notebooks: cache``) and execute none again. A cache hit needs the very notebook that MyST-NB
stages, so a chapter is read here as MyST-NB reads it (its reader for MyST markdown notebooks, under the
MyST configuration jupyter-book derives from ``_config.yml``) and executed as MyST-NB's cache client
executes it: the chapter's folder as working directory, ``execute.timeout`` seconds per cell,
``execute.allow_errors``, the kernel named in the chapter, the library's edits invisible to the cache key
(run it through `make`, which clears the cache when ``fishertut/`` or the requirements change).

Checks, per chapter, both when it runs and when its outputs come from the cache:

* every cell runs without an exception (the hidden ``assert`` cells included); a failure names the
  chapter, the line of the failing cell in the ``.md`` and the exception, then prints the cell and its
  traceback, and the chapter is not cached;
* no output is a stderr stream or holds a warning, an error or a traceback (the rule of the browser
  check, ``tools/check_book.py``); such a chapter is cached, as the book would cache it, and reported.

Usage::

    python tools/execute_chapters.py [--jobs N] book/regression.md book/bounds.md ...

With ``--jobs N`` up to N chapters run at once, each in its own kernel, longest source first. The exit
status is 1 when any chapter fails, after all chapters ran.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import NamedTuple

from jupyter_book.config import get_final_config
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn, JupyterCacheAbstract
from jupyter_cache.cache.db import NbProjectRecord
from jupyter_cache.executors.utils import single_nb_execution
from myst_nb.core.config import NbParserConfig
from myst_nb.core.read import create_nb_reader
from myst_parser.config.main import MdParserConfig
from nbformat import NotebookNode

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# The browser check's rule for a cell output (tools/check_book.py).
WARNING = re.compile(r"Traceback \(most recent call last\)|\b[A-Z]\w*(Warning|Error)\b:")


def book_configs(config_file: Path) -> tuple[MdParserConfig, NbParserConfig]:
    """The MyST and MyST-NB configurations of the book, as jupyter-book hands them to Sphinx.

    The execution cache is the one `jupyter-book build` uses: ``execute.cache`` or else
    ``_build/.jupyter_cache`` (MyST-NB's default, next to the HTML output folder ``_build/html``).
    """
    sphinx, _ = get_final_config(
        user_yaml=config_file, cli_config={"latex_individualpages": False}, sourcedir=config_file.parent
    )
    md_names = {name for name, _, _ in MdParserConfig().as_triple()}
    nb_names = {name for name, _, _ in NbParserConfig().as_triple()}
    md = MdParserConfig(**{k[5:]: v for k, v in sphinx.items() if k.startswith("myst_") and k[5:] in md_names})
    nb = NbParserConfig(**{k[3:]: v for k, v in sphinx.items() if k.startswith("nb_") and k[3:] in nb_names})
    if not nb.execution_cache_path:
        nb = nb.copy(execution_cache_path=str(config_file.parent / "_build" / ".jupyter_cache"))
    return md, nb


def read_chapter(path: Path, md: MdParserConfig, nb: NbParserConfig) -> tuple[NotebookNode, dict, NbParserConfig]:
    """The chapter as MyST-NB reads it (myst_nb.sphinx_.Parser.parse).

    Returns:
        The notebook (kernel name aliased as configured), its read format for jupyter-cache, and the
        configuration updated with the chapter's own ``mystnb`` metadata.
    """
    text = path.read_text(encoding="utf-8")
    reader = create_nb_reader(str(path), md, nb, text)
    if reader is None:
        raise ValueError(f"{path}: not a MyST markdown notebook (no jupytext header with format_name: myst)")
    notebook = reader.read(text)
    kernel = notebook.metadata.get("kernelspec", {}).get("name")
    for pattern, alias in nb.kernel_rgx_aliases.items():
        if kernel is not None and re.fullmatch(pattern, kernel):
            notebook.metadata["kernelspec"]["name"] = alias
            break
    if nb.metadata_key in notebook.metadata:
        overrides = dict(notebook.metadata[nb.metadata_key])
        overrides.pop("output_folder", None)
        nb = nb.copy(**overrides)
    return notebook, reader.read_fmt, nb


def execute(notebook: NotebookNode, cwd: str, timeout: int, allow_errors: bool) -> tuple[NotebookNode, float, str]:
    """Run every cell in place, as MyST-NB's cache client does; the notebook, seconds, and the error text."""
    result = single_nb_execution(notebook, cwd=cwd, timeout=timeout, allow_errors=allow_errors, meta_override=True)
    # nbclient's message holds the cell's source and its traceback; the executor's own frames would be noise
    error = "" if result.err is None else f"{type(result.err).__name__}: {result.err}"
    return notebook, result.time, error


def cell_line(notebook: NotebookNode, index: int) -> int:
    """The 1-based line in the .md where cell `index` starts (its ```{code-cell} fence: MyST-NB's source map)."""
    source_map = notebook.metadata.get("source_map")
    return source_map[index] if source_map else 0


def failed_cell(notebook: NotebookNode) -> int | None:
    """Index of the cell whose output is an exception, else of the last code cell that started (a timeout)."""
    code = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    for i in code:
        if any(out.output_type == "error" for out in notebook.cells[i].get("outputs", [])):
            return i
    started = [i for i in code if notebook.cells[i].get("execution_count") is not None]
    return started[-1] if started else None


def shown_outputs(cell: NotebookNode, stderr_shown: bool = True) -> list[NotebookNode]:
    """The outputs of a code cell that its page shows.

    MyST-NB drops those of a ``remove-output`` or ``remove-cell`` cell, the stderr (stdout) streams of a
    ``remove-stderr`` (``remove-stdout``) cell, and every stderr stream when ``execute.stderr_output`` is
    ``remove``.
    """
    tags = cell.metadata.get("tags", [])
    if cell.cell_type != "code" or {"remove-output", "remove-cell"} & set(tags):
        return []
    stderr_shown = stderr_shown and "remove-stderr" not in tags
    stdout_shown = "remove-stdout" not in tags
    streams = {"stderr": stderr_shown, "stdout": stdout_shown}
    return [out for out in cell.get("outputs", []) if out.output_type != "stream" or streams.get(out.name, True)]


def bad_outputs(notebook: NotebookNode, stderr_shown: bool = True) -> list[str]:
    """Cells with a shown output that is a stderr stream or holds a warning, an error or a traceback.

    Returns:
        'line N: ...' per such cell: the line of its fence, the first offending output, how many more.
    """
    found = []
    for i, cell in enumerate(notebook.cells):
        bad = []
        for out in shown_outputs(cell, stderr_shown):
            if out.output_type == "stream":
                texts = [out.text]
            elif out.output_type == "error":
                texts = [f"{out.ename}: {out.evalue}"]
            else:
                texts = [v for k, v in out.get("data", {}).items() if k in ("text/plain", "text/html")]
            text = ANSI.sub("", "".join("".join(t) if isinstance(t, list) else t for t in texts))
            if out.get("name") == "stderr" or WARNING.search(text):
                first = next((ln for ln in text.splitlines() if ln.strip()), "")[:160]
                bad.append(f"{out.get('name', out.output_type)} output: {first}")
        if bad:
            more = f" (and {len(bad) - 1} more such outputs)" if len(bad) > 1 else ""
            found.append(f"line {cell_line(notebook, i)}: {bad[0]}{more}")
    return found


def report_failure(path: Path, notebook: NotebookNode, error: str) -> None:
    """Name the chapter, the cell's line and the exception, then print nbclient's cell + traceback."""
    index = failed_cell(notebook)
    if index is None:
        print(f"FAILED {path}: {error.splitlines()[0]}", flush=True)
    else:
        errors = [out for out in notebook.cells[index].get("outputs", []) if out.output_type == "error"]
        summary = error.splitlines()[0]  # a timeout or a dead kernel: nbclient's words
        if errors and error.startswith("CellExecutionError"):  # the cell's own exception
            summary = ": ".join(filter(None, (errors[0].ename, errors[0].evalue)))
        line = cell_line(notebook, index)
        print(f"FAILED {path}:{line}: the code cell at line {line} raised {summary}", flush=True)
    print(ANSI.sub("", error).rstrip() + "\n", flush=True)


class Job(NamedTuple):
    """A chapter to execute.

    Its name as printed, its jupyter-cache project record, the arguments of execute(), and whether its
    page shows stderr streams (``execute.stderr_output``).
    """

    shown: Path
    stage: NbProjectRecord
    task: tuple
    stderr_shown: bool


def finish(cache: JupyterCacheAbstract, job: Job, executed: NotebookNode, seconds: float, error: str) -> bool:
    """Cache a chapter that ran through, as MyST-NB's cache client would, and check its outputs; True if fine."""
    if error:
        NbProjectRecord.set_traceback(job.stage.uri, error, cache.db)
        report_failure(job.shown, executed, error)
        return False
    bundle = CacheBundleIn(executed, job.stage.uri, data={"execution_seconds": seconds})
    cache.cache_notebook_bundle(bundle, check_validity=False, overwrite=True)
    print(f"executed {job.shown} in {seconds:.0f} s", flush=True)
    return outputs_clean(job.shown, executed, job.stderr_shown)


def outputs_clean(shown: Path, notebook: NotebookNode, stderr_shown: bool) -> bool:
    """Print the outputs that hold a warning (see bad_outputs); True if there is none."""
    if bad := bad_outputs(notebook, stderr_shown):
        print(f"FAILED {shown}: warnings in outputs\n  " + "\n  ".join(bad), flush=True)
    return not bad


def main(argv: list[str] | None = None) -> int:
    """Execute (or take from the cache) and check each chapter named in `argv`; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="+", type=Path, help="MyST markdown chapters (book/*.md)")
    parser.add_argument("--jobs", type=int, default=1, help="chapters run at once (default 1)")
    parser.add_argument("--config", type=Path, default=ROOT / "_config.yml", help="the book's _config.yml")
    args = parser.parse_args(argv)
    # The cached outputs are the book's: a non-interactive MPLBACKEND (Agg) would drop its figures.
    os.environ.pop("MPLBACKEND", None)
    md, nb = book_configs(args.config.resolve())
    cache = get_cache(nb.execution_cache_path)
    start, failures, jobs = time.perf_counter(), [], []
    for path in [p.resolve() for p in args.chapters]:
        notebook, read_fmt, config = read_chapter(path, md, nb)
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        stderr_shown = config.output_stderr != "remove"
        record = None
        with suppress(KeyError):
            record = cache.match_cache_notebook(notebook)
        if record is not None:
            _, merged = cache.merge_match_into_notebook(notebook)
            print(f"cached   {shown} (ran in {record.data.get('execution_seconds', 0):.0f} s)", flush=True)
            if not outputs_clean(shown, merged, stderr_shown):
                failures.append(shown)
            continue
        if config.execution_in_temp:
            raise ValueError("execute.run_in_temp: true is not supported (MyST-NB would run in a temporary folder)")
        stage = cache.add_nb_to_project(str(path), read_data=read_fmt)
        NbProjectRecord.remove_tracebacks([stage.pk], cache.db)
        task = (notebook, str(path.parent), config.execution_timeout, config.execution_allow_errors)
        jobs.append(Job(shown, stage, task, stderr_shown))
    if args.jobs > 1 and len(jobs) > 1:
        jobs.sort(key=lambda job: -len(job.shown.read_text(encoding="utf-8")))  # longest first: none starts last
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [(job, pool.submit(execute, *job.task)) for job in jobs]
            failures += [job.shown for job, future in futures if not finish(cache, job, *future.result())]
    else:
        failures += [job.shown for job in jobs if not finish(cache, job, *execute(*job.task))]
    total = time.perf_counter() - start
    print(f"{len(args.chapters)} chapters, {len(jobs)} executed, {len(failures)} failed, {total:.0f} s")
    if failures:
        print("failed: " + ", ".join(map(str, failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
