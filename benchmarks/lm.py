r"""Time the Fisher of a tiny causal GPT against one plain forward+backward; ``make bench`` runs this file.

Model: :func:`fishertut.lab.gpt.tiny_gpt` (V = 32, T = 16, d = 32, 4 heads, 2 pre-LN layers, GELU MLP, head
tied to the embedding; 27k parameters), 8 token sequences, float32, 2 threads. Per position the output is a
categorical over the V tokens, the positions independent given the sequence (teacher forcing), so the Fisher of
a sequence is the sum over its positions. Every row runs through the public API on logits ``(N, T, V)``
(``ft.fisher_diagonal``, ``ft.variance_report``):

==========================  ==============================================  ==========================
row                         call                                            target
==========================  ==============================================  ==========================
exact diagonal              ``"exact"`` (transformer path; generic forced)  ≤ 0.3× the generic engine
per-sequence Î1             ``"i1_sequence"``                               ≤ 3× forward+backward
per-token Î1                ``"i1"``                                        ≤ T/2× forward+backward
GNB, Hutchinson (B = 8)     ``"i1_sequence"``, ``"hutchinson"``, B = 8      ≤ 1.5× forward+backward
full variance report        ``variance_report``, 8 sequences                ≤ 10× exact, ≤ 2 GB
==========================  ==============================================  ==========================

A second set of rows does the same for the model of chapter :doc:`/book/language_model`:
:func:`fishertut.lab.gpt.char_gpt` with (context, width, heads, layers) = (32, 32, 4, 2) over the
chapter's character vocabulary (:mod:`fishertut.lab.text`, V = 103), **randomly initialised** (seed 0, not
trained), on the first 16 characters (the chapter's ``POSITIONS``) of the first 8 windows of the text. Its exact
diagonal takes seconds per call, so the two exact rows are timed once (the checked calls themselves); the
oracle check runs on 2 sequences (``torch.func`` holds ``T·V × P`` per sequence), the generic engine is checked
against the transformer engine on all 8; the full report is not run, and its time is estimated as the tiny
GPT's report-to-exact ratio of the same run times the char GPT's exact time.

The reference is one ``cross_entropy(logits, labels, reduction="sum").backward()`` over the 8 sequences.
Before timing, the exact diagonal (public API, and both engines along per-position channels, ``C = T·V``
outputs per sequence, :math:`S_t` the covariance factor of position ``t``) and the per-sequence and per-token
Î1 for given labels (channels :math:`(\varepsilon_1,\dots,\varepsilon_T)` and :math:`\varepsilon_t` on
position ``t``) are checked against ``torch.func`` (``jacrev`` of the per-position log-likelihoods). Peak
memory of the report: the peak resident set size of a fresh process running it, minus its size after setup.

Usage::

    .venv/bin/python -m benchmarks.lm                      # prints the table
    .venv/bin/python -m benchmarks.lm --write-results      # ... and writes RESULTS-lm.md and results.json["lm"]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import multiprocessing as mp
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

if "torch" not in sys.modules:  # sleeping OpenMP waits keep timings meaningful on a shared machine
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from torch import Tensor

import fishertut as ft
from benchmarks.estimator_rows import time_all
from benchmarks.harness import status_mb
from benchmarks.lm_oracle import channels, per_position, reference, rel_error
from benchmarks.render import update_section
from fishertut.engines.generic import GenericEngine
from fishertut.engines.transformer import TransformerEngine
from fishertut.lab import text
from fishertut.lab.gpt import char_gpt, tiny_gpt

HERE = Path(__file__).resolve().parent
V, T, N = 32, 16, 8
CHAR = {"context": 32, "d_model": 32, "heads": 4, "layers": 2, "positions": 16, "checked": 2}
TOLERANCE = 1e-4


def _labels(model: torch.nn.Module, x: Tensor, seed: int) -> Tensor:
    """One label per position sampled from the model (float64 probabilities), ``(N, T)``."""
    with torch.no_grad():
        logits = model(x).reshape(x.shape[0] * x.shape[1], -1)
    p = torch.softmax(logits.double(), 1)
    return torch.multinomial(p, 1, generator=torch.Generator().manual_seed(seed)).view(x.shape)


def setup(seed: int = 0) -> tuple[torch.nn.Module, Tensor, Tensor]:
    """The model (flat outputs ``(N, T·V)``), the token sequences and one label per position from the model."""
    model = tiny_gpt(vocab=V, context=T, flat=True, seed=seed)
    x = torch.randint(0, V, (N, T), generator=torch.Generator().manual_seed(seed + 1))
    return model, x, _labels(model, x, seed + 2)


def char_setup(seed: int = 0) -> tuple[torch.nn.Module, Tensor, Tensor]:
    """The chapter's char-level GPT (random init), the first characters of 8 text windows, labels from the model."""
    corpus = "".join(text.topics().values())
    vocab = text.CharCorpus.from_text(corpus)
    c = CHAR
    model = char_gpt(vocab.size, c["context"], c["d_model"], c["heads"], c["layers"], seed=seed)
    x = text.windows(vocab.encode(corpus), c["context"], stride=c["context"] // 2)[0][:N, : c["positions"]]
    return model, x, _labels(model, x, seed + 2)


def _report_child(queue: mp.Queue) -> None:
    torch.set_num_threads(2)
    _, x, _ = setup()
    model = tiny_gpt(vocab=V, context=T)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set size
    base = status_mb("VmHWM")
    start = time.perf_counter()
    rep = ft.variance_report(model, x, ft.Categorical())
    queue.put((time.perf_counter() - start, status_mb("VmHWM") - base, rep.path))


def report_row() -> dict[str, object]:
    """The full variance report on the 8 sequences in a fresh process: seconds, peak MB, path."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_report_child, args=(queue,))
    proc.start()
    seconds, peak, path = queue.get()
    proc.join()
    return {"seconds": seconds, "peak_mb": peak, "path": path}


def _quick_calls(model: torch.nn.Module, seq: torch.nn.Module, x: Tensor, y: Tensor) -> dict[str, Callable[[], object]]:
    """forward+backward (on ``model``) and the estimator rows through the public API (on ``seq``, ``(N, T, V)``)."""
    gen, fam, n = torch.Generator().manual_seed(0), ft.Categorical(), x.shape[0]

    def plain() -> None:
        model.zero_grad(set_to_none=True)
        logits = model(x).reshape(y.numel(), -1)
        torch.nn.functional.cross_entropy(logits, y.reshape(-1), reduction="sum").backward()

    def api(estimator: str, minibatch: int = 1) -> Callable[[], object]:
        return lambda: ft.fisher_diagonal(seq, x, fam, estimator, generator=gen, minibatch=minibatch)

    return {
        "forward+backward": plain,
        "per-sequence Î1": api("i1_sequence"),
        "per-token Î1": api("i1"),
        "GNB, B = 8": api("i1_sequence", n),
        "Hutchinson, B = 8": api("hutchinson", n),
    }


def _require(checks: dict[str, float]) -> None:
    bad = {k: e for k, e in checks.items() if not e <= TOLERANCE}
    if bad:
        raise AssertionError(f"disagreement beyond {TOLERANCE}: {bad}")


def measure(repeats: int) -> dict[str, object]:
    """Check, then time every row of the module docstring (the tiny GPT)."""
    model, x, y = setup()
    fast, generic = TransformerEngine(model), GenericEngine(model)
    rows = channels(model, x, y)
    ref = reference(model, x, y)
    checks = {
        "exact (transformer)": rel_error(per_position(fast, x, rows["exact"]), ref["exact"]),
        "exact (generic)": rel_error(per_position(generic, x, rows["exact"]), ref["exact"]),
        "per-sequence Î1": rel_error(per_position(fast, x, rows["sequence"]), ref["sequence"]),
        "per-token Î1": rel_error(per_position(fast, x, rows["token"]), ref["token"]),
    }
    seq = tiny_gpt(vocab=V, context=T)  # the same weights, logits (N, T, V)
    fam = ft.Categorical()
    api_exact = ft.fisher_diagonal(seq, x, fam)
    checks["exact, public API (N, T, V)"] = rel_error({k: v.flatten() for k, v in api_exact.items()}, ref["exact"])
    _require(checks)
    quick = _quick_calls(model, seq, x, y)
    calls = {
        "forward+backward": quick.pop("forward+backward"),
        "exact (transformer)": lambda: ft.fisher_diagonal(seq, x, fam),
        "exact (generic)": lambda: ft.fisher_diagonal(seq, x, fam, path="generic"),
        **quick,
    }
    med = time_all(calls, repeats)
    return {"checks": checks, "seconds": med, "report": report_row()}


def measure_char(repeats: int, report_per_exact: float) -> dict[str, object]:
    """The chapter's char GPT (module docstring): checks, the two exact rows timed once, the quick rows' medians."""
    model, x, y = char_setup()
    k, fam = CHAR["checked"], ft.Categorical()
    fast = TransformerEngine(model)
    rows, ref = channels(model, x[:k], y[:k]), reference(model, x[:k], y[:k])
    checks = {
        "exact (transformer)": rel_error(per_position(fast, x[:k], rows["exact"]), ref["exact"]),
        "per-sequence Î1": rel_error(per_position(fast, x[:k], rows["sequence"]), ref["sequence"]),
        "per-token Î1": rel_error(per_position(fast, x[:k], rows["token"]), ref["token"]),
    }
    _require(checks)
    once = {}
    for name, path in (("exact (transformer)", "auto"), ("exact (generic)", "generic")):
        start = time.perf_counter()
        once[name] = ft.fisher_diagonal(model, x, fam, path=path)
        once[name + " s"] = time.perf_counter() - start
    assert once["exact (transformer)"].path == "transformer", once["exact (transformer)"].path
    checks["exact (generic) vs (transformer), 8 sequences"] = rel_error(
        once["exact (generic)"], once["exact (transformer)"]
    )
    _require(checks)
    med = time_all(_quick_calls(model, model, x, y), repeats)
    med = (
        {"forward+backward": med.pop("forward+backward")}
        | {n: once[n + " s"] for n in ("exact (transformer)", "exact (generic)")}
        | med
    )
    estimate = report_per_exact * med["exact (transformer)"]
    basis = f"{report_per_exact:.0f}× its exact diagonal, the tiny GPT's report-to-exact ratio in this run"
    return {"checks": checks, "seconds": med, "report": {"estimated_seconds": estimate, "basis": basis}}


TARGETS = {
    "exact (transformer)": ("exact (generic)", 0.3),
    "per-sequence Î1": ("forward+backward", 3.0),
    "per-token Î1": ("forward+backward", T / 2),
    "GNB, B = 8": ("forward+backward", 1.5),
    "Hutchinson, B = 8": ("forward+backward", 1.5),
}


def rows_of(res: dict[str, object]) -> list[dict[str, object]]:
    """One row per quantity: seconds, ratio to forward+backward, the target's reference, ratio and whether met."""
    med, rep = res["seconds"], res["report"]
    fb = med["forward+backward"]
    out = []
    for k, s in med.items():
        row = {"quantity": k, "seconds": s, "x_forward_backward": s / fb}
        if k in TARGETS:
            ref, target = TARGETS[k]
            row.update(reference=ref, ratio=s / med[ref], target=target, met=s / med[ref] <= target)
        out.append(row)
    row = {"quantity": "full variance report", "reference": "exact (transformer)", "target": 10.0}
    if "estimated_seconds" in rep:
        est = rep["estimated_seconds"]
        row.update(seconds=None, x_forward_backward=None, estimated_seconds=est, basis=rep["basis"])
        row["not_run"] = f"estimated {est:.0f} s ({rep['basis']})"
        out.append(row)
        return out
    ratio = rep["seconds"] / med["exact (transformer)"]
    row.update(seconds=rep["seconds"], x_forward_backward=rep["seconds"] / fb, ratio=ratio)
    row.update(met=ratio <= 10 and rep["peak_mb"] <= 2048, peak_mb=rep["peak_mb"], path=rep["path"])
    out.append(row)
    return out


def _table(rows: list[dict[str, object]]) -> list[str]:
    lines = [
        "| quantity | seconds | × forward+backward | target | ratio | met |",
        "|---|---:|---:|---|---:|:---:|",
    ]
    for r in rows:
        target = f"≤ {r['target']:g}× {r['reference']}" if "target" in r else "—"
        if "peak_mb" in r:
            target += f", ≤ 2 GB (peak {r['peak_mb']:.0f} MB)"
        if "not_run" in r:
            lines.append(f"| {r['quantity']} | not run | — | {target} | — | {r['not_run']} |")
            continue
        ratio = f"{r['ratio']:.3g}×" if "ratio" in r else "—"
        met = ("yes" if r["met"] else "no") if "met" in r else "—"
        lines.append(
            f"| {r['quantity']} | {r['seconds']:.3g} | {r['x_forward_backward']:.3g}× | {target} | {ratio} | {met} |"
        )
    return lines


def render(rows: list[dict[str, object]], char: list[dict[str, object]], checks: dict[str, float], wall: float) -> str:
    """RESULTS-lm.md."""
    load = os.getloadavg()
    lines = [
        "# Benchmark results: a tiny causal GPT and the book's char-level GPT",
        "",
        f"Written by `benchmarks/lm.py --write-results` on {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        "do not edit by hand. Setup and procedure: the docstring of `benchmarks/lm.py`.",
        "",
        f"* CPU, {os.cpu_count()} cores visible, `torch.set_num_threads(2)`, `OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', '')}`; torch {torch.__version__}, Python {platform.python_version()}; "
        f"float32; load average at the end {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} (other jobs shared the "
        f"machine); wall time of the run {wall:.0f} s. No GPU was available.",
        f"* Agreement with torch.func before timing: largest relative error {max(checks.values()):.1e}.",
        "",
        f"## tiny GPT (`tiny_gpt()`, V = {V}, T = {T}, {N} sequences)",
        "",
        *_table(rows),
        "",
        f"## char GPT of the language-model chapter (random init; V = 103, T = {CHAR['positions']}, {N} sequences)",
        "",
        "The two exact rows are single calls (seconds each); the others are medians.",
        "",
        *_table(char),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the rows and print (or write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    start = time.perf_counter()
    res = measure(args.repeats)
    rows = rows_of(res)
    report_per_exact = res["report"]["seconds"] / res["seconds"]["exact (transformer)"]
    char_res = measure_char(args.repeats, report_per_exact)
    char = rows_of(char_res)
    checks = res["checks"] | {f"char GPT: {k}": e for k, e in char_res["checks"].items()}
    text_out = render(rows, char, checks, time.perf_counter() - start)
    print(text_out)
    if args.write_results:
        (HERE / "RESULTS-lm.md").write_text(text_out)
        section = {"rows": rows, "checks": res["checks"], "model": "fishertut.lab.gpt.tiny_gpt()", "n": N}
        char_model = char_setup()[0]
        section["char"] = {
            "rows": char,
            "checks": char_res["checks"],
            "model": "fishertut.lab.gpt.char_gpt(103, 32, 32, 4, 2, seed=0), random init",
            "n": N,
            "positions": CHAR["positions"],
            "vocab": char_model.token.num_embeddings,
            "params": sum(p.numel() for p in char_model.parameters()),
        }
        update_section("lm", section, HERE)


if __name__ == "__main__":
    main()
