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
import json
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
from torch.func import functional_call, jacrev, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

import fishertut as ft
from benchmarks.estimator_rows import time_all
from benchmarks.harness import status_mb
from fishertut.engines.generic import GenericEngine
from fishertut.engines.transformer import TransformerEngine
from fishertut.lab.gpt import tiny_gpt

HERE = Path(__file__).resolve().parent
V, T, N = 32, 16, 8
TOLERANCE = 1e-4
Params = dict[str, Tensor]


def setup(seed: int = 0) -> tuple[torch.nn.Module, Tensor, Tensor]:
    """The model (flat outputs ``(N, T·V)``), the token sequences and one label per position from the model."""
    model = tiny_gpt(vocab=V, context=T, flat=True, seed=seed)
    x = torch.randint(0, V, (N, T), generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        p = torch.softmax(model(x).view(N * T, V).double(), 1)
    y = torch.multinomial(p, 1, generator=torch.Generator().manual_seed(seed + 2)).view(N, T)
    return model, x, y


def block_channels(blocks: Tensor) -> Tensor:
    """``(N, T, k, V)`` per-position channel rows to ``(N, T·k, T·V)`` rows that each live on one position."""
    n, t, k, v = blocks.shape
    out = blocks.new_zeros(n, t, k, t, v)
    idx = torch.arange(t)
    out[:, idx, :, idx, :] = blocks.transpose(0, 1)
    return out.reshape(n, t * k, t * v)


def per_position(engine: object, x: Tensor, rows: Tensor) -> Params:
    r""":math:`\frac1N\sum_n\sum_k (r_{nk}^\top \partial h_n/\partial\theta)^2` through ``engine``, per parameter."""
    _, tape = engine.forward(x)
    with torch.no_grad():
        return {t.targets[0][0]: t.jac.square().sum(1).mean(0) for t in engine.backward(tape, rows, None)}


def channels(model: torch.nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Channel rows of the exact diagonal, the per-sequence and the per-token Î1 (module docstring)."""
    with torch.no_grad():
        h = model(x).view(N, T, V)
    fam = ft.Categorical()
    factors = fam.covariance_factor(h.reshape(N * T, V)).view(N, T, V, V)
    eps = fam.residual(h.reshape(N * T, V), y.reshape(N * T, 1)).view(N, T, 1, V)
    return {
        "exact": block_channels(factors),
        "sequence": eps.reshape(N, 1, T * V),
        "token": block_channels(eps),
    }


def reference(model: torch.nn.Module, x: Tensor, y: Tensor) -> dict[str, Params]:
    """The three quantities by ``torch.func``: per-position log-likelihood gradients, enumerated or sampled."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def logp(ps: Params, xi: Tensor) -> Tensor:
        return torch.log_softmax(functional_call(model, ps, (xi.unsqueeze(0),)).view(T, V), -1)

    with sdpa_kernel([SDPBackend.MATH]):  # the fused CPU kernel has no batching rule
        grads = vmap(jacrev(logp), in_dims=(None, 0))(params, x)  # (N, T, V, *shape)
    with torch.no_grad():
        p = torch.softmax(model(x).view(N, T, V), -1)
    out: dict[str, Params] = {"exact": {}, "sequence": {}, "token": {}}
    for k, g in grads.items():
        g = g.flatten(3)
        picked = g.gather(2, y[:, :, None, None].expand(N, T, 1, g.shape[-1]))[:, :, 0]
        out["exact"][k] = (p.unsqueeze(-1) * g.square()).sum((1, 2)).mean(0)
        out["sequence"][k] = picked.sum(1).square().mean(0)
        out["token"][k] = picked.square().sum(1).mean(0)
    return out


def rel_error(a: Params, b: Params) -> float:
    """Largest error relative to each tensor's largest entry."""
    return max(((a[k].flatten() - b[k].flatten()).abs().max() / b[k].abs().max().clamp_min(1e-30)).item() for k in b)


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


def measure(repeats: int) -> dict[str, object]:
    """Check, then time every row of the module docstring."""
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
    gen = torch.Generator().manual_seed(0)

    def plain() -> None:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x).view(N * T, V), y.view(-1), reduction="sum").backward()

    seq = tiny_gpt(vocab=V, context=T)  # the same weights, logits (N, T, V)
    fam = ft.Categorical()

    def api(estimator: str, minibatch: int = 1, path: str = "auto") -> Callable[[], object]:
        def call() -> object:
            out = ft.fisher_diagonal(seq, x, fam, estimator, generator=gen, minibatch=minibatch, path=path)
            assert out.path in (path, "autograd") or path == "auto", out.path
            return out

        return call

    api_exact = ft.fisher_diagonal(seq, x, fam)
    checks["exact, public API (N, T, V)"] = rel_error({k: v.flatten() for k, v in api_exact.items()}, ref["exact"])
    calls = {
        "forward+backward": plain,
        "exact (transformer)": api("exact"),
        "exact (generic)": api("exact", path="generic"),
        "per-sequence Î1": api("i1_sequence"),
        "per-token Î1": api("i1"),
        "GNB, B = 8": api("i1_sequence", N),
        "Hutchinson, B = 8": api("hutchinson", N),
    }
    bad = {k: e for k, e in checks.items() if not e <= TOLERANCE}
    if bad:
        raise AssertionError(f"disagreement with torch.func beyond {TOLERANCE}: {bad}")
    med = time_all(calls, repeats)
    report = report_row()
    return {"checks": checks, "seconds": med, "report": report}


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
    ratio = rep["seconds"] / med["exact (transformer)"]
    out.append(
        {
            "quantity": "full variance report",
            "seconds": rep["seconds"],
            "x_forward_backward": rep["seconds"] / fb,
            "reference": "exact (transformer)",
            "ratio": ratio,
            "target": 10.0,
            "met": ratio <= 10 and rep["peak_mb"] <= 2048,
            "peak_mb": rep["peak_mb"],
            "path": rep["path"],
        }
    )
    return out


def render(rows: list[dict[str, object]], checks: dict[str, float], wall: float) -> str:
    """RESULTS-lm.md."""
    load = os.getloadavg()
    lines = [
        "# Benchmark results: a tiny causal GPT",
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
        "| quantity | seconds | × forward+backward | target | ratio | met |",
        "|---|---:|---:|---|---:|:---:|",
    ]
    for r in rows:
        target = f"≤ {r['target']:g}× {r['reference']}" if "target" in r else "—"
        if "peak_mb" in r:
            target += f", ≤ 2 GB (peak {r['peak_mb']:.0f} MB)"
        ratio = f"{r['ratio']:.3g}×" if "ratio" in r else "—"
        met = ("yes" if r["met"] else "no") if "met" in r else "—"
        lines.append(
            f"| {r['quantity']} | {r['seconds']:.3g} | {r['x_forward_backward']:.3g}× | {target} | {ratio} | {met} |"
        )
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
    text = render(rows, res["checks"], time.perf_counter() - start)
    print(text)
    if args.write_results:
        (HERE / "RESULTS-lm.md").write_text(text)
        path = HERE / "results.json"
        data = json.loads(path.read_text())
        data["lm"] = {"rows": rows, "checks": res["checks"], "model": "fishertut.lab.gpt.tiny_gpt()", "n": N}
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
