"""Time the graph engine on convolutional and residual networks against BackPACK; ``make bench`` runs this file.

Rows (same labels, inputs, dtype and threads for both libraries; BackPACK on its own ``extend``-ed copy):

==========  ========================================  ==================================  ======
network     fishertut                                 peer                                target
==========  ========================================  ==================================  ======
LeNet tanh  ``fisher_diagonal(..., "exact")``         BackPACK ``DiagGGNExact``           ≤ 1×
LeNet tanh  ``fisher_diagonal(..., "i2")``            BackPACK ``DiagHessian``            ≤ 0.1×
LeNet tanh  ``variance_report(...)``                  BackPACK ``BatchDiagHessian``       ≤ 0.1×
LeNet ReLU  ``variance_report(...)``                  BackPACK ``DiagGGNExact``           ≤ 3×
ResNet-8    ``variance_report(...)`` on 256 inputs    (BackPACK's DiagHessian cannot run  < 60 s
                                                      branching graphs)
pre-LN      exact FIM and ``variance_report(...)``    (none: BackPACK has no LayerNorm    (none)
block       on the generic engine                     or attention)
==========  ========================================  ==================================  ======

LeNet: Conv 1→8 k5, act, MaxPool 2, Conv 8→16 k5, act, MaxPool 2, Linear 256→64, act, Linear 64→10 (20k
parameters) on the real digits of ``ft.lab.data.load_mnist()`` (28×28). ResNet-8: the CIFAR layout (a 3×3 stem
with 16 channels, three stages of one basic block with 16, 32, 64 channels, strides 1, 2, 2, 1×1 projection
shortcuts, eval-mode batch norm, ReLU, global average pooling, Linear 64→10; 78k parameters) on 3×32×32
inputs drawn from a standard normal (no image data set is available offline; the timings do not depend on
the values). Labels: one per input, sampled from the model.

Procedure: every pair first agrees on the first 16 inputs (relative error to each tensor's largest entry
below ``TOLERANCE``, float32); then each method is timed ``--repeats`` times round-robin and the medians are
compared. BackPACK's ``DiagHessian``/``BatchDiagHessian`` are timed on the first ``--peer-n`` inputs and
scaled linearly to ``N`` (they process fixed batches, so their time is linear in ``N``); the table marks them.
The ResNet's peak memory is the peak resident set size of a fresh process running the report, minus its
size after setup. The pre-LN transformer block (LayerNorm, ``nn.MultiheadAttention`` with 4 heads, GELU MLP
of width 64, residual additions; width 32, 16 tokens, a Linear head on the flattened tokens; 13.9k
parameters) runs on the generic engine: its first-order quantities are one batched backward over the ``C``
outputs per input, its second derivatives one forward-over-forward pass per parameter and input, with
LayerNorm and attention run as composites (:mod:`fishertut.engines.composites`).

Usage::

    .venv/bin/python -m benchmarks.cnn                              # N = 1,000, writes nothing
    .venv/bin/python -m benchmarks.cnn --n 256 --write-results      # ... writes RESULTS-cnn.md, results.json["cnn"]
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if "torch" not in sys.modules:  # sleeping OpenMP waits keep timings meaningful on a shared machine
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from torch import Tensor, nn

import fishertut as ft
from benchmarks.cnn_models import PreLNBlock, digits, lenet, resnet8
from benchmarks.render import update_section

HERE = Path(__file__).resolve().parent
TOLERANCE = 1e-4
Params = dict[str, Tensor]


def transformer_rows(n: int, n_exact: int = 64) -> list[dict[str, object]]:
    """Exact FIM on ``n_exact`` and full report on ``n`` random token sequences of :class:`PreLNBlock`."""
    torch.manual_seed(0)
    model = PreLNBlock().eval()
    x = torch.randn(max(n, n_exact), 16, 32, generator=torch.Generator().manual_seed(1))
    ft.variance_report(model, x[:1], ft.Categorical())  # warm-up: first and second derivatives
    rows = []
    for what, m in (("exact", n_exact), ("report", n)):
        t = time.perf_counter()
        out = (
            ft.variance_report(model, x[:m], ft.Categorical())
            if what == "report"
            else ft.fisher_diagonal(model, x[:m], ft.Categorical())
        )
        rows.append(
            {
                "quantity": what,
                "seconds": time.perf_counter() - t,
                "path": out.path,
                "n": m,
                "params": sum(p.numel() for p in model.parameters()),
            }
        )
        print(rows[-1], flush=True)
    return rows


def sample_labels(model: nn.Module, x: Tensor, seed: int = 0) -> Tensor:
    """One label per input from the model's softmax."""
    with torch.no_grad():
        p = torch.softmax(model(x).double(), 1)
    return torch.multinomial(p, 1, generator=torch.Generator().manual_seed(seed))[:, 0]


def backpack(model: nn.Module, x: Tensor, y: Tensor, extension: str, batch: int = 256) -> Params:
    """A BackPACK extension's quantity, summed over batches of ``batch`` inputs and divided by ``N``.

    ``BatchDiagHessian`` is reduced batch by batch to the mean of its per-input terms (what the report's
    user would keep); the others are sums already.
    """
    from backpack import backpack as context
    from backpack import extend
    from backpack import extensions as ext

    bp_model = extend(copy.deepcopy(model))
    loss = extend(nn.CrossEntropyLoss(reduction="sum"))
    attr = {"DiagGGNExact": "diag_ggn_exact", "DiagHessian": "diag_h", "BatchDiagHessian": "diag_h_batch"}[extension]
    total: Params = {}
    for s in range(0, x.shape[0], batch):
        bp_model.zero_grad(set_to_none=True)
        with context(getattr(ext, extension)()):
            loss(bp_model(x[s : s + batch]), y[s : s + batch]).backward()
        for name, p in bp_model.named_parameters():
            v = getattr(p, attr)
            v = v.sum(0) if extension == "BatchDiagHessian" else v
            total[name] = total.get(name, 0) + v.detach()
            delattr(p, attr)
    return {k: v / x.shape[0] for k, v in total.items()}


def _fishertut(model: nn.Module, x: Tensor, y: Tensor, what: str) -> Params:
    fam = ft.Categorical()
    if what == "report":
        return dict(ft.variance_report(model, x, fam).fisher)
    return dict(ft.fisher_diagonal(model, x, fam, what, targets=None if what == "exact" else y))


def rel_error(a: Params, b: Params) -> float:
    """Largest error relative to each tensor's largest entry."""
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-30)).item() for k in b)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _peak_child(n: int, queue: mp.Queue) -> None:
    torch.set_num_threads(2)
    model, x = resnet8(), torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set size
    base = _status_kb("VmHWM")
    t = time.perf_counter()
    rep = ft.variance_report(model, x, ft.Categorical())
    queue.put(
        (
            time.perf_counter() - t,
            (_status_kb("VmHWM") - base) / 1024,
            rep.path,
            len(rep.piecewise_linear),
            sum(p.numel() for p in model.parameters()),
        )
    )


def _status_kb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def resnet_row(n: int) -> dict[str, object]:
    """ResNet-8 report on ``n`` inputs in a fresh process: wall time, peak memory (MB), path."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_child, args=(n, queue))
    proc.start()
    seconds, peak, path, proven, params = queue.get()
    proc.join()
    return {"seconds": seconds, "peak_mb": peak, "path": path, "piecewise_linear": proven, "params": params}


def lenet_rows(n: int, peer_n: int, repeats: int) -> list[dict[str, object]]:
    """The four LeNet rows (module docstring), checked for agreement first."""
    rows = []
    x_all = digits(n)
    for activation, what, peer, target in [
        ("tanh", "exact", "DiagGGNExact", 1.0),
        ("tanh", "i2", "DiagHessian", 0.1),
        ("tanh", "report", "BatchDiagHessian", 0.1),
        ("relu", "report", "DiagGGNExact", 3.0),
    ]:
        model = lenet(activation)
        y_all = sample_labels(model, x_all)
        check = rel_error(
            _fishertut(model, x_all[:16], y_all[:16], what),
            backpack(model, x_all[:16], y_all[:16], "DiagGGNExact" if what == "report" else peer),
        )
        assert check < TOLERANCE, f"{activation} {what}: fishertut and BackPACK differ by {check:.2e}"
        ours = median_time(lambda: _fishertut(model, x_all, y_all, what), repeats)
        m = n if peer == "DiagGGNExact" else min(n, peer_n)
        theirs = median_time(lambda: backpack(model, x_all[:m], y_all[:m], peer), repeats if m == n else 1) * n / m
        path = ft.fisher_diagonal(model, x_all[:2], ft.Categorical()).path
        rows.append(
            {
                "network": f"LeNet {activation}",
                "quantity": what,
                "n": n,
                "fishertut": ours,
                "path": path,
                "peer": f"BackPACK {peer}",
                "peer_s": theirs,
                "peer_n": m,
                "ratio": ours / theirs,
                "target": target,
                "agreement": check,
            }
        )
        print(rows[-1], flush=True)
    return rows


def render(
    rows: list[dict[str, object]],
    res: dict[str, object],
    tf: list[dict[str, object]],
    args: argparse.Namespace,
    wall: float,
) -> str:
    """RESULTS-cnn.md."""
    load = os.getloadavg()
    lines = [
        "# Benchmark results: convolutional and residual networks",
        "",
        f"Written by `benchmarks/cnn.py --write-results` on {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"(`--n {args.n} --peer-n {args.peer_n} --repeats {args.repeats} --resnet-n {args.resnet_n} "
        f"--transformer-n {args.transformer_n}`); do not "
        "edit by hand. Setup and procedure: the docstring of `benchmarks/cnn.py`.",
        "",
        f"* CPU, {os.cpu_count()} cores visible, `torch.set_num_threads(2)`, `OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', '')}`; torch {torch.__version__}, Python {platform.python_version()}; "
        f"float32; load average at the end {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} (other jobs shared the "
        f"machine); wall time of the run {wall / 60:.1f} min. No GPU was available.",
        "",
        "| network | N | quantity | fishertut (s) | path | peer | peer (s) | fishertut/peer | target | met |",
        "|---|---:|---|---:|---|---|---:|---:|---:|:---:|",
    ]
    for r in rows:
        dagger = f" †{r['peer_n']}" if r["peer_n"] != r["n"] else ""
        lines.append(
            f"| {r['network']} | {r['n']:,} | {r['quantity']} | {r['fishertut']:.3g} | {r['path']} | "
            f"{r['peer']} | {r['peer_s']:.3g}{dagger} | {r['ratio']:.3g}× | ≤ {r['target']:g}× | "
            f"{'yes' if r['ratio'] <= r['target'] else 'no'} |"
        )
    lines += [
        f"| ResNet-8 ({res['params']:,} parameters) | {args.resnet_n:,} | full variance report | "
        f"{res['seconds']:.3g} | {res['path']} | BackPACK DiagHessian/BatchDiagHessian: cannot run branching graphs "
        f"| — | — | < 60 s | {'yes' if res['seconds'] < 60 else 'no'} |",
        *[
            f"| pre-LN transformer block ({r['params']:,} parameters) | {r['n']:,} | "
            f"{'exact diagonal FIM' if r['quantity'] == 'exact' else 'full variance report'} | {r['seconds']:.3g} | "
            f"{r['path']} | none (BackPACK has no LayerNorm or attention) | — | — | — | — |"
            for r in tf
        ],
        "",
        f"† BackPACK timed on the first n inputs shown and scaled linearly to N. ResNet-8 peak memory: "
        f"{res['peak_mb']:.0f} MB above the process after setup; {res['piecewise_linear']} of its parameter tensors "
        "are proven piecewise linear from the graph (no second derivatives computed). Agreement with BackPACK "
        f"on 16 inputs before timing: largest relative error {max(r['agreement'] for r in rows):.1e}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the rows of the module docstring and print (or write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="LeNet inputs")
    parser.add_argument("--peer-n", type=int, default=64, help="inputs BackPACK's Hessians are timed on")
    parser.add_argument("--resnet-n", type=int, default=256)
    parser.add_argument("--transformer-n", type=int, default=16, help="inputs of the pre-LN block's report")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    start = time.perf_counter()
    rows = lenet_rows(args.n, args.peer_n, args.repeats)
    res = resnet_row(args.resnet_n)
    print(res, flush=True)
    tf = transformer_rows(args.transformer_n)
    wall = time.perf_counter() - start
    text = render(rows, res, tf, args, wall)
    print(text)
    if args.write_results:
        (HERE / "RESULTS-cnn.md").write_text(text)
        write_json(rows, res, tf, args, wall)


def write_json(
    rows: list[dict[str, object]],
    res: dict[str, object],
    tf: list[dict[str, object]],
    args: argparse.Namespace,
    wall: float,
) -> None:
    """``results.json["cnn"]``: the rows of RESULTS-cnn.md, for the book's benchmark appendix."""
    section = {
        "date": f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "config": vars(args),
        "wall_s": wall,
        "load_average_end": list(os.getloadavg()),
        "lenet": [{**r, "met": r["ratio"] <= r["target"]} for r in rows],
        "resnet": {**res, "n": args.resnet_n, "target_s": 60.0, "met": res["seconds"] < 60},
        "transformer_block": tf,
    }
    update_section("cnn", section, HERE)


if __name__ == "__main__":
    main()
