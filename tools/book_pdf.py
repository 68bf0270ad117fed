"""Print the single-page build of the book to PDF in headless Chromium, offline.

Run by ``make pdf`` after ``jupyter-book build . --builder singlehtml``::

    .venv/bin/python tools/book_pdf.py [--page _build/singlehtml/index.html] [--out _build/html/fishertut.pdf]

The browser is the one the browser check uses (Debian's ``chromium``, driven by Playwright), with every
request that is not a ``file:`` URL aborted. The page is printed once MathJax has typeset every formula,
with the theme's navigation hidden and collapsed cells left as the page shows them. The PDF lands in the
HTML build, where the landing page links to it. Exits non-zero if the page cannot be loaded, a formula
is not typeset, or a request to the network was made.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

#: Runs in the page before printing: waits for MathJax, hides the navigation; returns untypeset formulas.
PREPARE = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const style = document.createElement('style');
  style.textContent = `
    .bd-header, .bd-sidebar-primary, .bd-sidebar-secondary, .header-article, .bd-footer,
    .prev-next-area, .bd-header-announcement, #pst-back-to-top, .headerlink { display: none !important; }
    .bd-main .bd-content .bd-article-container { max-width: 100% !important; }
    .bd-page-width { max-width: 100% !important; }
    figure, img, table, div.math { break-inside: avoid; }`;
  document.head.appendChild(style);
  await Promise.all([...document.images].map(i => (i.complete ? null : i.decode().catch(() => null))));
  return [...document.querySelectorAll('span.math, div.math')].filter(m => !m.querySelector('mjx-container')).length;
}
"""


#: The build's folders of files that pages link to.
SHARED = ("_static", "_images", "_downloads")


def _from_build_root(missing: Path, page: Path) -> Path | None:
    """A file of a shared folder asked for next to the page, served from that folder of the build, if any.

    Jupyter Book writes the single page as ``book/intro.html`` but links MathJax (``_static/mathjax/...``)
    and the figures (``_images/...``) as from the build's root, one folder too shallow.
    """
    shared = [i for i, part in enumerate(missing.parts) if part in SHARED]
    if not shared:
        return None
    inside = missing.parts[shared[-1] :]
    for folder in page.resolve().parents:
        candidate = folder.joinpath(*inside)
        if candidate.is_file():
            return candidate
    return None


def print_pdf(page: Path, out: Path, browser: str) -> int:
    """Print ``page`` to ``out``; return the number of problems found (printed)."""
    from playwright.sync_api import sync_playwright

    problems = 0
    with tempfile.TemporaryDirectory(prefix="book-pdf-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=browser, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        blocked: list[str] = []

        def route(r):
            url = urlparse(r.request.url)
            if url.scheme == "file":
                local = Path(unquote(url.path))
                served = None if local.exists() else _from_build_root(local, page)
                if served is not None:
                    r.fulfill(path=str(served))
                else:
                    r.continue_()
            else:
                blocked.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        tab = context.new_page()
        tab.set_default_timeout(300_000)  # MathJax on the whole book takes a while
        tab.goto(page.resolve().as_uri(), wait_until="load")
        untypeset = tab.evaluate(PREPARE)
        if untypeset:
            print(f"FAIL {untypeset} formulas not typeset")
            problems += 1
        out.parent.mkdir(parents=True, exist_ok=True)
        tab.emulate_media(media="print")
        tab.pdf(path=str(out), format="A4", print_background=True, margin={"top": "15mm", "bottom": "15mm"})
        for url in blocked:
            print(f"FAIL network request (blocked): {url}")
        problems += len(blocked)
        context.close()
    return problems


def _follow_redirect(page: Path) -> Path:
    """The page an ``index.html`` forwards to (Jupyter Book's singlehtml index is only a redirect)."""
    m = re.search(r'http-equiv="refresh"\s+content="\d+;\s*url=([^"]+)"', page.read_text(encoding="utf-8")[:2000], re.I)
    return page.parent / m.group(1) if m else page


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; the exit status is 1 on any problem."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--page", type=Path, default=Path("_build/singlehtml/index.html"))
    parser.add_argument("--out", type=Path, default=Path("_build/html/fishertut.pdf"))
    parser.add_argument("--browser", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)
    if not args.page.is_file():
        raise SystemExit(f"{args.page} not found: jupyter-book build . --builder singlehtml")
    if not Path(args.browser).is_file():
        raise SystemExit(f"no Chromium at {args.browser}: apt-get install chromium (Debian), or pass --browser")
    start = time.perf_counter()
    problems = print_pdf(_follow_redirect(args.page), args.out, args.browser)
    size = args.out.stat().st_size / 1e6 if args.out.is_file() else 0.0
    print(f"{args.out}: {size:.1f} MB in {time.perf_counter() - start:.0f} s")
    return 1 if problems or not size else 0


if __name__ == "__main__":
    sys.exit(main())
