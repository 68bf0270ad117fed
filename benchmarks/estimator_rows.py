"""Cost of the estimators that sum inputs before squaring, and of the per-input Hutchinson estimator.

Rows (same problem as ``benchmarks.run``: ``benchmarks.workload.make_problem``, float32, MNIST digits):

================================  =====================================================  =========================
row                               fishertut                                              reference
================================  =====================================================  =========================
GNB, minibatch B                  ``fisher_diagonal(..., "i1", minibatch=B)``             plain forward+backward
Hutchinson, minibatch B           ``fisher_diagonal(..., "hutchinson", minibatch=B)``     plain forward+backward
Î1 per input                      ``fisher_diagonal(..., "i1")``                          BackPACK ``SumGradSquared``
Hutchinson per input              ``fisher_diagonal(..., "hutchinson")``                  BackPACK ``SumGradSquared``
================================  =====================================================  =========================

The plain forward+backward is ``cross_entropy(model(x_b), y_b, reduction="sum").backward()`` over the same
minibatches of ``B`` inputs, with the problem's sampled labels, its gradients squared and summed: that is GNB
with those labels, and the check before timing asserts that fishertut's GNB with ``targets`` equal to them
gives the same numbers. ``SumGradSquared`` gets all ``N`` inputs in one backward pass; fishertut's Î1 with the
same labels must agree with it. Each method is timed ``--repeats`` times round-robin; medians are reported.

Usage::

    .venv/bin/python -m benchmarks.estimator_rows --n 1000 --repeats 5                   # prints the table
    .venv/bin/python -m benchmarks.estimator_rows --write-results  # ... and writes RESULTS-estimators.md, results.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import fishertut as ft
from benchmarks import references as refs
from benchmarks import workload
from benchmarks.render import update_section

TOLERANCE = 1e-4
HERE = Path(__file__).resolve().parent


def plain_squared_minibatch_gradients(p: workload.Problem, minibatch: int) -> dict[str, torch.Tensor]:
    """Sum over minibatches of the squared gradient of the summed cross-entropy, divided by ``N``."""
    params = [(n, q) for n, q in p.model.named_parameters()]
    total = {n: torch.zeros_like(q) for n, q in params}
    for xb, yb in zip(p.x.split(minibatch), p.labels.split(minibatch)):
        p.model.zero_grad()
        nn.functional.cross_entropy(p.model(xb), yb, reduction="sum").backward()
        for n, q in params:
            total[n] += q.grad.square()
    return {n: t / p.n for n, t in total.items()}


def methods(p: workload.Problem, minibatches: list[int]) -> dict[str, Callable[[], object]]:
    """The timed calls, by label."""
    gen = torch.Generator().manual_seed(0)
    out: dict[str, Callable[[], object]] = {}
    for b in minibatches:
        out[f"plain forward+backward, B={b}"] = lambda b=b: plain_squared_minibatch_gradients(p, b)
        out[f"GNB, B={b}"] = lambda b=b: ft.fisher_diagonal(p.model, p.x, p.family, "i1", minibatch=b, generator=gen)
        out[f"Hutchinson, B={b}"] = lambda b=b: ft.fisher_diagonal(
            p.model, p.x, p.family, "hutchinson", minibatch=b, generator=gen
        )
    peer = refs.BackpackPeer(p, None)
    out["BackPACK SumGradSquared"] = peer.sum_grad_squared
    out["Î1 per input"] = lambda: ft.fisher_diagonal(p.model, p.x, p.family, "i1", targets=p.labels)
    out["Hutchinson per input"] = lambda: ft.fisher_diagonal(p.model, p.x, p.family, "hutchinson", generator=gen)
    return out


def _rel_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(
        ((a[k].double() - b[k].double()).abs().max() / b[k].abs().max().double().clamp_min(1e-30)).item() for k in b
    )


def check(p: workload.Problem, minibatch: int) -> dict[str, float]:
    """Check fishertut against the references on the same labels; raise ``AssertionError`` beyond ``TOLERANCE``."""
    gnb = ft.fisher_diagonal(p.model, p.x, p.family, "i1", minibatch=minibatch, targets=p.labels)
    errors = {
        f"GNB with given labels vs plain, B={minibatch}": _rel_error(
            gnb, plain_squared_minibatch_gradients(p, minibatch)
        ),
        "Î1 vs SumGradSquared": _rel_error(workload.fishertut_i1(p), refs.BackpackPeer(p, None).sum_grad_squared()),
    }
    bad = {k: e for k, e in errors.items() if not e <= TOLERANCE}
    if bad:
        raise AssertionError(f"fishertut and a reference disagree beyond {TOLERANCE}: {bad}")
    return errors


def time_all(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call, round-robin over ``repeats`` (after one warm-up call each)."""
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for k, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def rows_of(med: dict[str, float]) -> list[dict[str, object]]:
    """One row per fishertut method: its median seconds, its reference (same run) and the ratio."""
    out = []
    for k, t in med.items():
        if k.startswith("plain") or k.startswith("BackPACK"):
            continue
        ref = "BackPACK SumGradSquared" if "per input" in k else f"plain forward+backward, B={k.split('B=')[1]}"
        out.append({"method": k, "seconds": t, "reference": ref, "reference_s": med[ref], "ratio": t / med[ref]})
    return out


def table(rows: list[dict[str, object]]) -> str:
    """Markdown rows: each method, its median time and its ratio to its reference."""
    lines = ["| method | median (ms) | reference | ratio |", "|:--|--:|:--|--:|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['seconds'] * 1e3:.3g} | {r['reference']} ({r['reference_s'] * 1e3:.3g} ms) | "
            f"{r['ratio']:.2f} |"
        )
    return "\n".join(lines)


def render(rows: list[dict[str, object]], errors: dict[str, float], args: argparse.Namespace, wall: float) -> str:
    """RESULTS-estimators.md."""
    load = os.getloadavg()
    return "\n".join(
        [
            "# Benchmark results: the estimator menu",
            "",
            f"Written by `benchmarks/estimator_rows.py --write-results` on "
            f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC (`--n {args.n} --activation {args.activation} "
            f"--repeats {args.repeats}`); do not edit by hand. Setup and procedure: the docstring of "
            "`benchmarks/estimator_rows.py`.",
            "",
            f"* CPU, {os.cpu_count()} cores visible, `torch.set_num_threads({args.threads})`; torch "
            f"{torch.__version__}, Python {platform.python_version()}; float32; N = {args.n:,} MNIST digits, "
            f"{args.activation} MLP 784-256-128-64-10; medians of {args.repeats} repeats; load average at the end "
            f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} (other jobs shared the machine); wall time {wall:.0f} s. "
            "No GPU was available.",
            f"* Agreement before timing: {', '.join(f'{k}: {e:.1e}' for k, e in errors.items())}.",
            "",
            table(rows),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> str:
    """Check, time and print the rows (and write them with ``--write-results``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--activation", default="sigmoid", choices=["sigmoid", "tanh"])
    ap.add_argument("--minibatch", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    problem = workload.make_problem(args.n, args.activation)
    errors = check(problem.head(min(64, args.n)), min(args.minibatch))
    print("agreement:", {k: f"{e:.1e}" for k, e in errors.items()})
    minibatches = sorted(set(args.minibatch) | {args.n})
    rows = rows_of(time_all(methods(problem, minibatches), args.repeats))
    out = table(rows)
    print(out)
    if args.write_results:
        wall = time.perf_counter() - start
        (HERE / "RESULTS-estimators.md").write_text(render(rows, errors, args, wall))
        section = {
            "date": f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
            "config": {k: v for k, v in vars(args).items() if k != "write_results"},
            "wall_s": wall,
            "load_average_end": list(os.getloadavg()),
            "agreement": errors,
            "rows": rows,
        }
        update_section("estimators", section, HERE)
    return out


if __name__ == "__main__":
    main()
