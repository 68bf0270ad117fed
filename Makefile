# fishertut: the book and the library.
#
#   make book    build the book, every chapter executed  -> _build/html/index.html
#   make test    lint (ruff) + unit tests + every chapter executed (into the book's execution cache)
#   make chapters  only the chapters, each executed into that cache (CHAPTERS=book/x.md: one)
#   make check   make test, make book, make pdf, then every built page checked in headless Chromium, offline
#   make pdf     the whole book as one PDF (single-page build printed by Chromium) -> _build/html/fishertut.pdf
#   make browser-check   only the last step, on the book already built
#   make lab     JupyterLab on book/ (.md chapters open as notebooks)
#   make bench   run the benchmarks
#   make clean   remove build outputs and caches (keeps .venv); distclean also .venv
#
# Every target creates .venv on first use and re-installs when requirements.txt or
# pyproject.toml change (stamp .venv/.installed).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
JB := $(VENV)/bin/jupyter-book
STAMP := $(VENV)/.installed

BUILD := _build
# Extra arguments, e.g. `make test PYTEST_ARGS="-n 2"`; CHAPTER_JOBS: chapters executed at once.
PYTEST_ARGS ?=
CHAPTER_JOBS ?= 1

# Chapters executed by the book: MyST markdown files with a jupytext header. `make chapters
# CHAPTERS=book/regression.md` executes one.
CHAPTERS = $(shell grep -l '^ *format_name: *myst' book/*.md 2>/dev/null)

# The execution cache (jupyter-cache) hashes only a chapter's code cells, so a change
# in the library would otherwise be served stale outputs. LIBHASH covers the library
# and the pinned requirements; when it changes, `make chapters` or `make book`, whichever
# comes first, wipes the cache and the doctrees (so Sphinx re-reads every chapter).
LIBHASH = $(shell cat pyproject.toml requirements.txt $$(find fishertut -name '*.py' | LC_ALL=C sort) 2>/dev/null | sha256sum | cut -c1-16)
LIBSTAMP := $(BUILD)/.libhash

.PHONY: help venv fresh-cache book chapters pdf test lint unit check browser-check lab bench clean distclean

help:
	@sed -n '3,12p' Makefile | sed 's/^# \{0,1\}//'

# --- environment -------------------------------------------------------------------

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt pyproject.toml | $(PY)
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -e .
	touch $@

venv: $(STAMP)

# --- book --------------------------------------------------------------------------

# Run first by every target that reads or fills the execution cache (chapters, book, pdf).
fresh-cache:
	@mkdir -p $(BUILD)
	@if [ "$$(cat $(LIBSTAMP) 2>/dev/null)" != "$(LIBHASH)" ]; then \
	  echo "fishertut or requirements changed: clearing the execution cache"; \
	  rm -rf $(BUILD)/.jupyter_cache $(BUILD)/.doctrees $(BUILD)/jupyter_execute; \
	  echo "$(LIBHASH)" > $(LIBSTAMP); \
	fi

# Chapters executed by `make chapters` (part of `make test`) are served from the cache here.
book: $(STAMP) fresh-cache
	$(JB) build . -W --keep-going
	@echo "Book: $(BUILD)/html/index.html"

# The PDF: the single-page build (same execution cache, so no chapter runs again after `make book`),
# printed by the Chromium of the browser check once MathJax is done, offline (tools/book_pdf.py). It lands
# in the HTML build, where the landing page links to it. Needs `make book` first (the cache and the site).
SINGLE := $(BUILD)/singlehtml
PDF := $(BUILD)/html/fishertut.pdf

pdf: $(STAMP) fresh-cache
	@test -f $(BUILD)/html/index.html || { echo "build the book first: make book"; exit 1; }
	$(JB) build . --builder singlehtml -W --keep-going
	$(PY) tools/book_pdf.py --page $(SINGLE)/index.html --out $(PDF)

# --- tests -------------------------------------------------------------------------

# Lint and both suites always run; the target fails if any fails.
test: $(STAMP)
	@status=0; \
	$(MAKE) --no-print-directory lint || status=1; \
	$(MAKE) --no-print-directory unit || status=1; \
	$(MAKE) --no-print-directory chapters || status=1; \
	if [ $$status -ne 0 ]; then echo "make test: FAILED"; fi; \
	exit $$status

# ruff (configured in pyproject.toml): lint rules, then the formatter in check mode. The chapters (book/*.md)
# are not Python files and are not checked here.
RUFF := $(VENV)/bin/ruff

lint: $(STAMP)
	$(RUFF) check .
	$(RUFF) format --check .

unit: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

# Every chapter executed once, into the execution cache of the book (tools/execute_chapters.py reads and
# runs it as MyST-NB does, so `make book` then executes nothing): a failing cell (the hidden asserts
# included) fails with the chapter, the cell's line and its traceback; a warning in an output fails too.
chapters: $(STAMP) fresh-cache
	@test -n "$(CHAPTERS)" || { echo "no chapters found in book/"; exit 1; }
	$(PY) tools/execute_chapters.py --jobs $(CHAPTER_JOBS) $(CHAPTERS)

# --- the book as readers see it ----------------------------------------------------

# Every page of _build/html in Debian's chromium (apt-get install chromium), network cut off, 1280 px:
# maths typeset, nothing wider than its column, no warning in an output, images loaded, no internal
# references, an .ipynb download per chapter that reads in plain Jupyter; and what the pages say: no typed
# chapter/figure/equation numbers, no raw labels or exponents, every figure numbered, every theory chapter
# with exercises, the PDF there (tools/check_book.py, tools/book_content.py). Not part of `make test`,
# which needs no system package. Every chapter runs once, in `make test`; book and pdf take it from the cache.
check:
	$(MAKE) --no-print-directory test
	$(MAKE) --no-print-directory book
	$(MAKE) --no-print-directory pdf
	$(MAKE) --no-print-directory browser-check

browser-check: $(STAMP)
	$(PY) tools/check_book.py --html $(BUILD)/html --toc _toc.yml

# --- interactive, benchmarks -------------------------------------------------------

# Open .md chapters with the Jupytext notebook view by default (JupyterLab settings
# override file inside the venv, so the user's own settings are untouched).
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json

$(LAB_OVERRIDES): | $(STAMP)
	@mkdir -p $(dir $@)
	@printf '%s\n' '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}}}' > $@

lab: $(STAMP) $(LAB_OVERRIDES)
	$(VENV)/bin/jupyter-lab --ServerApp.root_dir=book

bench: $(STAMP)
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.cnn
	$(PY) -m benchmarks.estimator_rows
	$(PY) -m benchmarks.lm

# --- cleaning ----------------------------------------------------------------------

clean:
	rm -rf $(BUILD) .pytest_cache *.egg-info build dist
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print0 \
	  | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)
