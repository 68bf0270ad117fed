r"""Open every page of the built book in headless Chromium, offline, and check it as a reader would see it.

Run by ``make check`` after ``make book``::

    .venv/bin/python tools/check_book.py [--html _build/html] [--width 1280] [PAGE ...]

PAGE is a page name such as ``intro`` or ``bounds`` (default: every page). The browser is Debian's
``chromium`` (``/usr/bin/chromium``; ``apt-get install chromium``), driven by Playwright. Every request
that is not a ``file:`` URL is aborted, so the page is seen exactly as by a reader without a network.
Per page, at the given width (1280 px by default), it asserts that:

* every formula was typeset by MathJax (no raw ``\(``, ``\[`` or ``$$`` left, no MathJax error);
* no display equation, table or code block is wider than its container (collapsed cells are opened
  first, so hidden code is checked too);
* no cell output holds a warning, an error or a traceback (stderr streams included);
* every image loaded;
* no text refers to documents the reader does not have (``spec 4``, ``open point``, ``the specification``);
* a chapter offers its ``.ipynb`` download next to the ``.md``, and the file is a valid notebook that reads
  in plain Jupyter (no MyST role, directive or glue placeholder left in its markdown);
* the page made no request to the network;
* what the page says (``tools/book_content.py``, read from the file): no chapter, figure or equation number
  typed instead of a cross-reference, no raw label, no raw exponent (``4.18e+11``), every figure numbered
  and captioned.

For the whole book, every chapter of the Theory part of ``_toc.yml`` must end with a section "Exercises".
``--no-browser`` runs only the checks on the files (those in ``book_content.py`` and the downloads).

It prints one block per page and exits non-zero if any page fails. It is not a unit test: ``pytest tests``
does not collect it, and ``make test`` needs no browser.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
import book_content  # a module of this folder

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: Phrases that point to documents readers do not have. ``misspecification`` does not match.
INTERNAL_REFERENCES = re.compile(r"\bspec\.? \d|\bopen points?\b|\bthe specification\b", re.IGNORECASE)

#: A page that only forwards to another one (the site's index.html).
REDIRECT = re.compile(r'<meta http-equiv="refresh"', re.IGNORECASE)

#: Runs in the page once it and MathJax are done; returns the raw findings.
PAGE_PROBE = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
    for (const item of MathJax.startup.document.math) {  // keep the TeX, to name formulas in the report
      if (item.typesetRoot) item.typesetRoot.dataset.tex = item.math;
    }
  }
  // Open collapsed cells and admonitions, so that what they hide is checked too.
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const imgs = [...document.images];
  await Promise.all(imgs.map(i => (i.complete ? null : i.decode().catch(() => null))));

  // Text of an element with each typeset formula written back as its TeX.
  const plain = el => {
    const clone = el.cloneNode(true);
    clone.querySelectorAll('mjx-container').forEach(c => c.replaceWith(`$${c.dataset.tex || '?'}$`));
    clone.querySelectorAll('.eqno, .headerlink').forEach(e => e.remove());
    return clone.textContent.replace(/\s+/g, ' ').trim();
  };
  const describe = el => {
    const section = el.closest('section');
    const heading = section ? section.querySelector('h1, h2, h3, h4') : null;
    const where = el.closest('[id]');
    return `[${heading ? plain(heading) : '?'}${where && where.id ? ' #' + where.id : ''}] ${plain(el).slice(0, 90)}`;
  };
  const article = document.querySelector('article.bd-article, article, main, [role="main"]') || document.body;
  const column = article.getBoundingClientRect();

  // Wider than its container: the element itself, its nearest scroll container, or the text column.
  const tooWide = el => {
    if (el.offsetParent === null && getComputedStyle(el).position !== 'fixed') return null;  // not rendered
    if (el.scrollWidth > el.clientWidth + 1) return `${el.scrollWidth} px of content in ${el.clientWidth} px`;
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      if (getComputedStyle(a).overflowX !== 'visible') {
        if (a.scrollWidth > a.clientWidth + 1) {
          return `${a.scrollWidth} px of content in a ${a.clientWidth} px container (${a.className || a.tagName})`;
        }
        break;
      }
    }
    const right = el.getBoundingClientRect().right;
    if (right > column.right + 1) {
      return `right edge at ${Math.round(right)} px, column ends at ${Math.round(column.right)} px`;
    }
    return null;
  };
  // A display equation is Sphinx's div.math (the theme clips it: overflow hidden) holding MathJax's
  // mjx-container (which scrolls: overflow auto); either one being too wide loses part of the formula.
  const wide = [];
  const kinds = [
    ['display equation', 'div.math, mjx-container[display="true"]',
     el => [el, ...el.querySelectorAll('mjx-container')]],
    ['table', 'table', el => [el]],
    ['code block', 'pre', el => [el]],
  ];
  for (const [kind, selector, parts] of kinds) {
    for (const el of article.querySelectorAll(selector)) {
      if (el.matches('mjx-container') && el.closest('div.math')) continue;  // checked with its div.math
      const eqno = el.querySelector('.eqno');
      for (const part of parts(el)) {
        const why = tooWide(part);
        if (why) {
          const cell = el.closest('.cell_output') ? ' (cell output)'
            : el.closest('.cell_input') ? ' (cell source)' : '';
          wide.push(`${kind}${eqno ? ' ' + eqno.innerText.trim() : ''}${cell} ${describe(el)}: ${why}`);
          break;
        }
      }
    }
  }

  // Maths: every Sphinx math node typeset, no MathJax error, no raw TeX delimiters in the text.
  const mathNodes = [...article.querySelectorAll('span.math, div.math')];
  const untypeset = mathNodes.filter(m => !m.querySelector('mjx-container')).map(describe);
  const mathErrors = [...article.querySelectorAll('mjx-merror, [data-mjx-error]')].map(describe);
  const clone = article.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container, mjx-assistive-mml').forEach(e => e.remove());
  const text = clone.textContent;
  const rawTex = [];
  for (const re of [/\\\(/g, /\\\[/g, /\$\$/g]) {
    for (const m of text.matchAll(re)) {
      rawTex.push(text.slice(Math.max(0, m.index - 30), m.index + 40).replace(/\s+/g, ' '));
    }
  }

  // Cell outputs: no stderr stream, no warning, no traceback.
  const badOutputs = [];
  for (const out of article.querySelectorAll('.cell_output, .output:not(.cell_output .output)')) {
    const t = out.innerText || '';
    if (out.querySelector('.stderr, .output.error, .traceback') || out.matches('.stderr, .error')) {
      badOutputs.push(`stderr/error output ${describe(out)}`);
    } else if (/Traceback \(most recent call last\)|\b[A-Z]\w*(Warning|Error)\b:/.test(t)) {
      badOutputs.push(`warning or error in output ${describe(out)}`);
    }
  }

  const brokenImages = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const downloads = [...document.querySelectorAll('a[href]')]
    .map(a => a.getAttribute('href')).filter(h => /\.(ipynb|md)$/.test(h) && h.includes('_sources'));
  return {
    title: document.title,
    numMath: mathNodes.length,
    untypeset, mathErrors, rawTex, wide, badOutputs, brokenImages, downloads,
    text: plain(article),
  };
}
"""


def _pages(html: Path, names: list[str]) -> list[Path]:
    if names:
        found = [p for n in names for p in html.rglob(f"{n}.html") if "_static" not in p.parts]
        missing = set(names) - {p.stem for p in found}
        if missing:
            raise SystemExit(f"no built page named {sorted(missing)} under {html}")
        return sorted(found)
    skip = {"_static", "_sources", "_images", "_downloads"}
    return sorted(p for p in html.rglob("*.html") if not skip & set(p.relative_to(html).parts))


def _is_chapter(html: Path, page: Path) -> bool:
    """A page built from an executable chapter (a MyST notebook: jupytext header)."""
    source = html / "_sources" / page.relative_to(html).with_suffix(".md")
    return source.is_file() and "format_name: myst" in source.read_text(encoding="utf-8")[:500]


def _check_notebook(page: Path, downloads: list[str]) -> list[str]:
    import nbformat

    notebooks = [d for d in downloads if d.endswith(".ipynb")]
    if not notebooks:
        return ["no .ipynb download link"]
    problems = []
    if not any(d.endswith(".md") for d in downloads):
        problems.append("no .md download link next to the .ipynb")
    path = (page.parent / unquote(notebooks[0])).resolve()
    if not path.is_file():
        return problems + [f".ipynb link points to a missing file: {notebooks[0]}"]
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # any reading or validation problem is a finding, reported as such
        return problems + [f"{path.name} is not a valid notebook: {err}"]
    if not any(cell.cell_type == "code" for cell in nb.cells):
        problems.append(f"{path.name} has no code cell")
    if any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"):
        problems.append(f"{path.name} carries stored outputs")
    problems += [f"{path.name}: {p}" for p in book_content.notebook_leftovers(nb.cells)]
    return problems


def check(html: Path, names: list[str], width: int, height: int, browser_path: str) -> int:
    """Check the pages; print a report; return the number of failing pages."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    pages = _pages(html, names)
    failing = 0
    with tempfile.TemporaryDirectory(prefix="check-book-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=browser_path,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": width, "height": height},
            service_workers="block",
        )
        blocked: list[str] = []

        def route(r):
            if urlparse(r.request.url).scheme == "file":
                r.continue_()
            else:
                blocked.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        tab = context.new_page()
        tab.set_default_timeout(60_000)  # MathJax on the longest page takes a few seconds
        console: list[str] = []
        tab.on("pageerror", lambda err: console.append(str(err)))
        for page in pages:
            blocked.clear()
            console.clear()
            name = page.relative_to(html).as_posix()
            if REDIRECT.search(page.read_text(encoding="utf-8")[:2000]):
                print(f"ok   {name}: a redirect (checked where it leads)")
                continue
            try:
                tab.goto(page.as_uri(), wait_until="load")
                found = tab.evaluate(PAGE_PROBE)
            except PlaywrightError as err:  # a page that cannot be loaded or probed is a failing page
                print(f"FAIL {name}: could not be checked: {err}".splitlines()[0], flush=True)
                failing += 1
                continue
            problems = []
            problems += [f"formula not typeset: {m}" for m in found["untypeset"]]
            problems += [f"MathJax error: {m}" for m in found["mathErrors"]]
            problems += [f"raw TeX in the text: ...{m}..." for m in found["rawTex"]]
            problems += [f"too wide: {w}" for w in found["wide"]]
            problems += found["badOutputs"]
            problems += [f"image not loaded: {src}" for src in found["brokenImages"]]
            for m in INTERNAL_REFERENCES.finditer(found["text"]):
                snippet = found["text"][max(0, m.start() - 40) : m.end() + 40].replace("\n", " ")
                problems.append(f"internal reference: ...{snippet}...")
            problems += book_content.page_findings(page.read_text(encoding="utf-8"))
            if _is_chapter(html, page):
                problems += _check_notebook(page, found["downloads"])
            problems += [f"network request (blocked): {u}" for u in blocked]
            status = "FAIL" if problems else "ok  "
            print(f"{status} {name}: {found['numMath']} formulas", flush=True)
            for p in problems:
                print(f"       - {p}".encode("utf-8", "replace").decode("utf-8"))
            for e in sorted(set(console)):  # the theme's own scripts; shown, not judged
                print(f"       (note: JavaScript error in the page: {e})")
            failing += bool(problems)
        context.close()
    print(f"\n{len(pages) - failing} of {len(pages)} pages clean at {width} px, offline.")
    return failing


def check_files(html: Path, names: list[str]) -> int:
    """The checks that need no browser (what the pages say, the downloads); print them; return the failures."""
    failing = 0
    for page in _pages(html, names):
        text = page.read_text(encoding="utf-8")
        if REDIRECT.search(text[:2000]):
            continue
        problems = book_content.page_findings(text)
        if _is_chapter(html, page):
            links = re.findall(r'href="([^"]*_sources[^"]*\.(?:ipynb|md))"', text)
            problems += _check_notebook(page, links)
        print(f"{'FAIL' if problems else 'ok  '} {page.relative_to(html).as_posix()}", flush=True)
        for p in problems:
            print(f"       - {p}")
        failing += bool(problems)
    return failing


def check_book_parts(html: Path, toc: Path) -> int:
    """The checks on the whole book: theory chapters have exercises, the PDF is offered. Returns the findings."""
    import yaml

    missing = book_content.missing_exercises(toc, html)
    for m in missing:
        print(f"FAIL exercises: {m}")
    if not missing:
        print("ok   every theory chapter has a section 'Exercises'")
    root = yaml.safe_load(toc.read_text(encoding="utf-8"))["root"]
    pdf = book_content.pdf_findings(html / f"{root}.html")
    for p in pdf:
        print(f"FAIL pdf: {p}")
    if not pdf:
        print("ok   the landing page offers the book as a PDF")
    return len(missing) + len(pdf)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; the exit status is 1 if any page fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", help="page names such as intro or bounds (default: all)")
    parser.add_argument("--html", type=Path, default=Path("_build/html"), help="the built book")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--browser", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--toc", type=Path, default=Path("_toc.yml"), help="the table of contents")
    parser.add_argument("--no-browser", action="store_true", help="only the checks on the files")
    args = parser.parse_args(argv)
    if not (args.html / "index.html").is_file():
        raise SystemExit(f"{args.html}/index.html not found: build the book first (make book)")
    html = args.html.resolve()
    if args.no_browser:
        failing = check_files(html, args.pages)
    else:
        if not Path(args.browser).is_file():
            raise SystemExit(f"no Chromium at {args.browser}: apt-get install chromium (Debian), or pass --browser")
        failing = check(html, args.pages, args.width, args.height, args.browser)
    if not args.pages:
        failing += check_book_parts(html, args.toc)
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
