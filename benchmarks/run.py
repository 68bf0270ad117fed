"""Time fishertut against BackPACK and a torch.func brute force; ``make bench`` runs this file.

Rows (each a fishertut call and the peer computing the same numbers, with the same labels, N, dtype and
threads; the peer definitions are in ``benchmarks/references.py``):

=========  =====================================  =============================  ======
row        fishertut                              peer                           target
=========  =====================================  =============================  ======
exact      ``fisher_diagonal(..., "exact")``      BackPACK ``DiagGGNExact``       ≤ 1.0×
i1         ``fisher_diagonal(..., "i1")``         BackPACK ``SumGradSquared``     ≤ 1.5×
i2         ``fisher_diagonal(..., "i2")``         BackPACK ``DiagHessian``        ≤ 0.1×
report     ``variance_report(...)``               BackPACK ``BatchDiagHessian``   ≤ 0.5×
report     ``variance_report(...)``               torch.func brute force          (none)
=========  =====================================  =============================  ======

Procedure: before any timing, every pair is run on the first ``--check-n`` inputs and must agree (float32
tolerance ``TOLERANCE`` relative to each tensor's largest entry); then every method is warmed up on 64
inputs and timed ``--repeats`` times, round-robin (each repeat calls every method once, so that
background load hits all methods alike; calls shorter than 0.25 s are looped within a repeat), and the
medians are compared; the outputs of the first timed repeat are checked again where fishertut and the
peer ran on the same inputs. Slow peers (BackPACK's ``DiagHessian``/``BatchDiagHessian`` for ``N`` above
``--backpack-batch``, the torch.func brute force always) are timed on the first inputs only and
extrapolated linearly (they process fixed-size batches or chunks, so their time is linear in ``N``); the
tables mark these. Peak memory is measured per configuration in a fresh ``spawn`` subprocess (peak RSS
after resetting the high-water mark, minus the RSS after imports and setup). ``OMP_WAIT_POLICY`` defaults
to ``PASSIVE`` (see below). ``--profile`` adds a ``torch.profiler``/``cProfile`` profile of every row;
with ``--write-results`` the rows that miss their target are always profiled.

Usage::

    .venv/bin/python benchmarks/run.py                      # the full benchmark (make bench)
    .venv/bin/python benchmarks/run.py --write-results      # ... and rewrite benchmarks/RESULTS.md + results.json
    .venv/bin/python benchmarks/run.py --quick --output /tmp/b --write-results   # smoke run
    .venv/bin/python benchmarks/run.py --n 1000 --activations tanh --repeats 5 --profile
    .venv/bin/python benchmarks/run.py --from-json benchmarks/results.json   # re-render RESULTS.md only
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as _dt
import io
import json
import math
import multiprocessing as mp
import os
import platform
import pstats
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

# OpenMP threads that spin while waiting at a barrier burn the CPU that their partner thread needs when
# other processes share the cores: on the 2-core machine of RESULTS.md, with other jobs running, a
# 0.05 s computation took 4 s. Sleeping waits (PASSIVE) keep timings meaningful on a shared machine.
# Read by the OpenMP runtime when torch loads, so it must be set before the first ``import torch``;
# a value set by the caller wins (``OMP_WAIT_POLICY=ACTIVE make bench``).
OMP_POLICY_PRESET = "torch" in sys.modules
if not OMP_POLICY_PRESET:  # imported after torch (e.g. by the tests): leave the environment alone
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

try:  # imported as a package (tests) or run as a script (make bench)
    from benchmarks import references as refs
except ImportError:  # pragma: no cover - script mode: this file's folder is on sys.path
    import references as refs  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
TOLERANCE = 1e-4
TARGETS = {"exact": 1.0, "i1": 1.5, "i2": 0.1, "report": 0.5}
MEMORY_TARGET_MB = 2000.0
ROW_LABELS = {"exact": "exact diagonal FIM", "i1": "Î1, sampled labels", "i2": "Î2, sampled labels",
              "report": "full variance report"}


# --- methods ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A timed computation: ``library`` + ``name``, built for a problem by ``make(problem, options)``."""

    key: str
    library: str
    label: str


FISHERTUT = {
    "exact": Method("ft_exact", "fishertut", "fisher_diagonal(exact)"),
    "i1": Method("ft_i1", "fishertut", "fisher_diagonal(i1)"),
    "i2": Method("ft_i2", "fishertut", "fisher_diagonal(i2)"),
    "report": Method("ft_report", "fishertut", "variance_report"),
}
PEERS = {
    "bp_ggn": Method("bp_ggn", "BackPACK", "DiagGGNExact"),
    "bp_sgs": Method("bp_sgs", "BackPACK", "SumGradSquared"),
    "bp_dh": Method("bp_dh", "BackPACK", "DiagHessian"),
    "bp_bdh": Method("bp_bdh", "BackPACK", "BatchDiagHessian"),
    "tf_report": Method("tf_report", "torch.func", "brute-force report"),
}
# (row, fishertut method, peer method)
ROWS = [("exact", "ft_exact", "bp_ggn"), ("i1", "ft_i1", "bp_sgs"), ("i2", "ft_i2", "bp_dh"),
        ("report", "ft_report", "bp_bdh"), ("report", "ft_report", "tf_report")]
METHODS = {m.key: m for m in list(FISHERTUT.values()) + list(PEERS.values())}


@dataclass
class Options:
    """Settings shared by all measurements (see ``--help``)."""

    backpack_batch: int = 1000
    tf_chunk: int = 16
    tf_subset: int = 32
    full_peers: bool = False
    device: str = "cpu"


def _batches_of(n: int, batch: int | None) -> int:
    return 1 if batch is None else math.ceil(n / batch)


def plan(key: str, n: int, opt: Options) -> tuple[int, str]:
    """How ``key`` is timed for ``N = n``: ``(inputs actually processed, how the peer is fed)``.

    BackPACK's batch-level ``DiagGGNExact``/``SumGradSquared`` get all ``N`` in one backward pass (peak
    memory stays below 0.5 GB at ``N = 10,000``); ``DiagHessian``/``BatchDiagHessian`` get batches of
    ``backpack_batch`` (all ``N`` at once would need about 13 GB at ``N = 10,000``), and for larger ``N``
    one such batch is timed and the time scaled by ``N / backpack_batch``. The torch.func brute force
    is timed on ``tf_subset`` inputs (chunks of ``tf_chunk``) and scaled by ``N / tf_subset``.
    """
    if key in ("bp_dh", "bp_bdh"):
        batch = min(opt.backpack_batch, n)
        timed = n if opt.full_peers else batch
        return timed, f"batches of {batch:,}"
    if key in ("bp_ggn", "bp_sgs"):
        return n, f"one batch of {n:,}"
    if key == "tf_report":
        timed = n if opt.full_peers else min(opt.tf_subset, n)
        return timed, f"chunks of {min(opt.tf_chunk, n)}"
    return n, "fishertut's own batches"


def build(key: str, problem: refs.Problem, opt: Options) -> Callable[[], object]:
    """A zero-argument callable computing ``key`` on ``problem`` (set-up such as ``extend`` done here)."""
    if key == "ft_exact":
        return lambda: refs.fishertut_exact(problem)
    if key == "ft_i1":
        return lambda: refs.fishertut_i1(problem)
    if key == "ft_i2":
        return lambda: refs.fishertut_i2(problem)
    if key == "ft_report":
        return lambda: refs.fishertut_report(problem)
    if key.startswith("bp_"):
        batch = None if key in ("bp_ggn", "bp_sgs") else min(opt.backpack_batch, problem.n)
        peer = refs.BackpackPeer(problem, batch)
        return {"bp_ggn": peer.diag_ggn_exact, "bp_sgs": peer.sum_grad_squared, "bp_dh": peer.diag_hessian,
                "bp_bdh": peer.batch_diag_hessian}[key]
    if key == "tf_report":
        return refs.TorchFuncReport(problem, min(opt.tf_chunk, problem.n))
    raise KeyError(key)


# --- agreement -------------------------------------------------------------------------------------------


def _rel_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
               scale: dict[str, torch.Tensor] | None = None) -> float:
    """Largest ``max|a - b| / max|scale|`` over the parameters (``scale`` defaults to ``b``)."""
    worst = 0.0
    for k in b:
        s = (b if scale is None else scale)[k].abs().max().double().clamp_min(1e-30)
        worst = max(worst, ((a[k].double() - b[k].double()).abs().max() / s).item())
    return worst


def compare(row: str, peer: str, ft_out: object, peer_out: object) -> dict[str, float]:
    """Relative errors between a fishertut output and the peer output it is timed against.

    * exact, i1, i2: the same per-parameter numbers.
    * report vs torch.func: every field of the report. ``var_x = E[I²] - E[I]²`` is a difference of two
      nearly equal numbers wherever the inputs carry nearly the same Fisher information, so its float32
      error is relative to ``E[I²]`` (``var_x + fisher²``), not to ``var_x``.
    * report vs BatchDiagHessian: BackPACK gives per-input Î2 terms for one label, not the report, so what
      can agree is their mean, Î2; ``ft_out`` is then fishertut's Î2 with the same labels.
    """
    if row in ("exact", "i1", "i2"):
        return {row: _rel_error(ft_out, peer_out)}
    if peer == "bp_bdh":
        return {"i2 (mean of per-input terms)": _rel_error(ft_out, peer_out["mean"])}
    errors = {}
    for f in refs.REPORT_FIELDS:
        scale = None
        if f == "var_x":
            scale = {k: peer_out["var_x"][k] + peer_out["fisher"][k].square() for k in peer_out["var_x"]}
        errors[f] = _rel_error(ft_out[f], peer_out[f], scale)
    return errors


def check_agreement(problem: refs.Problem, opt: Options, check_n: int) -> dict[str, dict[str, float]]:
    """Run every pair on the first ``check_n`` inputs; raise ``AssertionError`` if any error exceeds ``TOLERANCE``.

    Besides the rows, BackPACK's per-input ``BatchDiagHessian`` terms are compared with
    ``ft.estimator_terms`` on the same labels (the per-input values behind the report row's peer).
    """
    small = problem.head(min(check_n, problem.n))
    ft_cache: dict[str, object] = {}
    results: dict[str, dict[str, float]] = {}
    for row, ft_key, peer_key in ROWS:
        ft_src = "ft_i2" if peer_key == "bp_bdh" else ft_key
        if ft_src not in ft_cache:
            ft_cache[ft_src] = build(ft_src, small, opt)()
        results[f"{row} vs {PEERS[peer_key].label}"] = compare(row, peer_key, ft_cache[ft_src],
                                                              build(peer_key, small, opt)())
    terms_peer = refs.BackpackPeer(small, min(opt.backpack_batch, small.n)).batch_diag_hessian_terms()
    results["per-input Î2 terms vs BatchDiagHessian"] = {"i2 terms": _rel_error(refs.fishertut_i2_terms(small),
                                                                                terms_peer)}
    _assert_within(results, f"{problem.activation}, first {small.n} inputs")
    return results


def _assert_within(results: dict[str, dict[str, float]], where: str) -> None:
    bad = {f"{k}: {f}": e for k, d in results.items() for f, e in d.items() if not e <= TOLERANCE}
    if bad:
        raise AssertionError(f"fishertut and a peer disagree ({where}); relative errors above {TOLERANCE}: {bad}")


# --- timing ----------------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class Timing:
    """Wall times of one method on one problem."""

    key: str
    activation: str
    n: int
    timed_n: int
    feed: str
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    loops: int = 1

    @property
    def scale(self) -> float:
        return self.n / self.timed_n

    @property
    def median(self) -> float:
        """Median time for all ``n`` inputs (extrapolated by ``scale`` when ``timed_n < n``)."""
        return statistics.median(self.times) * self.scale

    @property
    def best(self) -> float:
        """Fastest repeat, scaled like :attr:`median` (other jobs on the machine can only add time)."""
        return min(self.times) * self.scale

    @property
    def cpu_median(self) -> float:
        """Median CPU time of this process (all threads), scaled like :attr:`median`; less sensitive to other
        jobs on the machine than the wall time."""
        return statistics.median(self.cpu_times) * self.scale


def time_methods(problem: refs.Problem, keys: list[str], repeats: int, opt: Options,
                 cache: dict[tuple[str, str, int], Timing] | None = None,
                 log: Callable[[str], None] = print, warmup_n: int = 64,
                 min_sample: float = 0.25) -> tuple[dict[str, Timing], dict[str, object]]:
    """Time ``keys`` on ``problem``: a warm-up call each (on ``warmup_n`` inputs), then ``repeats`` round-robin passes.

    A call shorter than ``min_sample`` seconds is run ``loops`` times per repeat (as ``timeit`` does) and
    the repeat records the mean, so that short calls are not dominated by timer and scheduling noise.

    A method whose plan processes fewer inputs than ``problem.n`` runs on ``problem.head(timed_n)``; such
    a measurement is reused from ``cache`` when the same method was already timed on the same inputs
    (e.g. BackPACK's ``DiagHessian`` on the first 1,000 of 10,000 inputs, timed in full at ``N = 1,000``).

    Returns:
        ``({key: Timing}, {key: output of the first timed call})``.
    """
    cache = {} if cache is None else cache
    timings: dict[str, Timing] = {}
    calls: dict[str, Callable[[], object]] = {}
    outputs: dict[str, object] = {}
    for key in keys:
        timed_n, feed = plan(key, problem.n, opt)
        ck = (key, problem.activation, timed_n)
        if timed_n < problem.n and ck in cache and len(cache[ck].times) >= repeats:
            timings[key] = Timing(key, problem.activation, problem.n, timed_n, feed, list(cache[ck].times),
                                  list(cache[ck].cpu_times), cache[ck].loops)
            log(f"  {METHODS[key].label}: reusing the timing on the first {timed_n:,} inputs")
            continue
        timings[key] = Timing(key, problem.activation, problem.n, timed_n, feed)
        calls[key] = build(key, problem.head(timed_n) if timed_n < problem.n else problem, opt)
        warm = problem.head(min(timed_n, warmup_n))
        t0 = time.perf_counter()
        build(key, warm, opt)()  # warm-up: first-call overheads
        if (time.perf_counter() - t0) * timed_n / warm.n < 4 * min_sample:  # probably short: calibrate
            t0 = time.perf_counter()
            calls[key]()
            single = time.perf_counter() - t0
            timings[key].loops = max(1, min(50, math.ceil(min_sample / max(single, 1e-9))))
    for r in range(repeats):
        for key, fn in calls.items():
            loops = timings[key].loops
            _sync(opt.device)
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(loops):
                out = fn()
            _sync(opt.device)
            timings[key].times.append((time.perf_counter() - t0) / loops)
            timings[key].cpu_times.append((time.process_time() - c0) / loops)
            if r == 0:
                outputs[key] = out
        log(f"  repeat {r + 1}/{repeats}: " + ", ".join(f"{METHODS[k].label} {timings[k].times[-1]:.2f}s"
                                                      for k in calls))
    for key in calls:  # problem.head(m) is the problem built with m inputs, so a later N can reuse these
        t = timings[key]
        cache[(key, problem.activation, t.timed_n)] = t
    return timings, outputs


# --- memory ----------------------------------------------------------------------------------------------


def _status_mb(field_name: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _memory_child(key: str, activation: str, n: int, max_batches: int | None, threads: int, opt: Options,
                  sizes: tuple[int, ...]) -> dict[str, float]:
    """Runs in a fresh process: set up, reset the RSS high-water mark, run ``key`` once, read the peak."""
    import gc

    torch.set_num_threads(threads)
    problem = refs.make_problem(n, activation, sizes, device=opt.device)
    fn = build(key, problem, opt)
    if max_batches is not None:
        base_fn = fn
        fn = (lambda: base_fn(max_chunks=max_batches)) if key == "tf_report" else (
            lambda: base_fn(max_batches=max_batches))
    gc.collect()
    baseline = _status_mb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    if opt.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    peak = _status_mb("VmHWM")
    out = {"baseline_mb": baseline, "peak_mb": peak, "extra_mb": peak - baseline, "hwm_reset": reset,
           "seconds": seconds}
    if opt.device.startswith("cuda"):
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def peak_memory(key: str, activation: str, n: int, opt: Options, threads: int = 2,
                sizes: tuple[int, ...] = refs.SIZES) -> dict[str, object]:
    """Peak memory of one configuration, measured in a fresh ``spawn`` subprocess.

    Chunked peers (BackPACK ``DiagHessian``/``BatchDiagHessian`` in batches, the torch.func brute force in
    chunks) reach their peak within one batch, so unless ``opt.full_peers`` they run a single batch/chunk
    on the ``n`` inputs (all ``n`` inputs are still built and held in memory).
    """
    max_batches = None
    if not opt.full_peers and key in ("bp_dh", "bp_bdh", "tf_report"):
        max_batches = 1
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        res = pool.apply(_memory_child, (key, activation, n, max_batches, threads, opt, tuple(sizes)))
    res.update({"key": key, "activation": activation, "n": n, "max_batches": max_batches})
    return res


# --- profiles --------------------------------------------------------------------------------------------


_MATMUL_OPS = {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addmv", "aten::mv", "aten::dot"}
_COPY_OPS = {"aten::copy_", "aten::fill_", "aten::zero_", "aten::empty", "aten::empty_strided", "aten::clone",
             "aten::to", "aten::_to_copy", "aten::cat", "aten::contiguous"}


def profile_call(fn: Callable[[], object], top: int = 10, python: bool = True) -> dict[str, object]:
    """Profile one call of ``fn``.

    Returns:
        ``text``: the top operators of ``torch.profiler`` by self CPU time and, if ``python``, the top
        fishertut functions of ``cProfile`` by cumulative time; ``wall_s``: the call's wall time under the
        profiler; ``ops_s``: the operators' total self time; ``shares``: the fraction of ``ops_s`` in matrix
        products, in copies/fills/allocations, and in the other (elementwise and reduction) operators.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
    averages = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in averages) / 1e6
    matmul = sum(e.self_cpu_time_total for e in averages if e.key in _MATMUL_OPS) / 1e6
    copies = sum(e.self_cpu_time_total for e in averages if e.key in _COPY_OPS) / 1e6
    shares = {"matrix products": matmul / total, "copies, fills, allocations": copies / total,
              "elementwise and reductions": (total - matmul - copies) / total}
    text = ("torch.profiler, top operators by self CPU time:\n"
            + averages.table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=40) + "\n")
    if python:
        pr = cProfile.Profile()
        pr.enable()
        fn()
        pr.disable()
        buf = io.StringIO()
        pstats.Stats(pr, stream=buf).sort_stats("cumulative").print_stats(r"fishertut", top)
        lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
        start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
        text += "cProfile, fishertut functions by cumulative time:\n" + "\n".join(
            ln.replace(str(HERE.parent) + "/", "") for ln in lines[start:]) + "\n"
    return {"text": text, "wall_s": wall, "ops_s": total, "shares": shares}


def profile_summary(ft_prof: dict[str, object], peer_prof: dict[str, object], peer_label: str) -> str:
    """One paragraph comparing the two profiles (times already scaled to the same ``N``)."""
    def part(p: dict[str, object]) -> str:
        sh = p["shares"]
        return (f"{p['wall_s']:.3g} s wall, {p['ops_s']:.3g} s in operators ("
                + ", ".join(f"{v:.0%} {k}" for k, v in sh.items()) + ")")
    return f"Under the profiler, fishertut: {part(ft_prof)}; {peer_label}: {part(peer_prof)}."


# --- machine and tables ----------------------------------------------------------------------------------


def machine() -> dict[str, object]:
    """CPU model, cores, versions, date and load."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        from importlib.metadata import version

        backpack_version = version("backpack-for-pytorch")
    except Exception:  # noqa: BLE001
        backpack_version = "not installed"
    try:
        with open("/proc/meminfo") as fh:
            mem_gb = int(next(ln for ln in fh if ln.startswith("MemTotal")).split()[1]) / 2**20
    except (OSError, StopIteration):
        mem_gb = float("nan")
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_gb, 1), "torch": torch.__version__,
            "backpack": backpack_version, "python": platform.python_version(), "platform": platform.platform(),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_average": list(os.getloadavg()),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset") + (
                " (torch was imported first)" if OMP_POLICY_PRESET else "")}


def _fmt_s(x: float) -> str:
    return f"{x:.3g}" if x < 100 else f"{x:,.0f}"


def row_records(timings: dict[tuple[str, int], dict[str, Timing]]) -> list[dict[str, object]]:
    """One record per (activation, N, row, peer) with medians, ratio and target."""
    records = []
    for (activation, n), tm in timings.items():
        for row, ft_key, peer_key in ROWS:
            if ft_key not in tm or peer_key not in tm:
                continue
            f, p = tm[ft_key], tm[peer_key]
            ratio = f.median / p.median
            target = TARGETS[row] if peer_key != "tf_report" else None
            records.append({
                "activation": activation, "n": n, "row": row, "fishertut": METHODS[ft_key].label,
                "peer": f"{PEERS[peer_key].library} {PEERS[peer_key].label}", "peer_key": peer_key,
                "ft_median_s": f.median, "peer_median_s": p.median, "ratio": ratio, "target": target,
                "best_ratio": f.best / p.best, "cpu_ratio": f.cpu_median / p.cpu_median,
                "ft_cpu_times_s": f.cpu_times, "peer_cpu_times_s": p.cpu_times, "ft_loops": f.loops,
                "peer_loops": p.loops,
                "met": None if target is None else ratio <= target,
                "ft_times_s": f.times, "peer_times_s": p.times, "peer_timed_n": p.timed_n, "peer_feed": p.feed,
                "repeats": len(f.times)})
    return records


def timing_table(records: list[dict[str, object]]) -> str:
    """Markdown table of the timing records."""
    lines = ["| activation | N | quantity | fishertut (s) | peer | peer (s) | fishertut/peer | target | met "
             "| CPU-time ratio |",
             "|---|---:|---|---:|---|---:|---:|---:|:---:|---:|"]
    for r in records:
        peer_s = _fmt_s(r["peer_median_s"])
        if r["peer_timed_n"] < r["n"]:
            peer_s += f" †{r['peer_timed_n']:,}"
        target = "—" if r["target"] is None else f"≤ {r['target']:g}×"
        met = "—" if r["met"] is None else ("yes" if r["met"] else f"**no** ({r['ratio'] / r['target']:.1f}× over)")
        lines.append(f"| {r['activation']} | {r['n']:,} | {ROW_LABELS[r['row']]} | {_fmt_s(r['ft_median_s'])} | "
                     f"{r['peer']} ({r['peer_feed']}) | {peer_s} | {r['ratio']:.3g}× | {target} | {met} "
                     f"| {r['cpu_ratio']:.3g}× |")
    return "\n".join(lines)


def memory_table(mem: list[dict[str, object]]) -> str:
    """Markdown table of the memory records."""
    lines = ["| activation | N | method | peak − baseline (MB) | peak RSS (MB) | notes |",
             "|---|---:|---|---:|---:|---|"]
    for m in mem:
        meth = METHODS[m["key"]]
        note = "" if m["max_batches"] is None else "first batch/chunk only (peak is per batch)"
        if meth.library == "fishertut":
            ok = m["extra_mb"] < MEMORY_TARGET_MB
            note = f"target < {MEMORY_TARGET_MB:,.0f} MB: " + ("met" if ok else "**missed**")
        lines.append(f"| {m['activation']} | {m['n']:,} | {meth.library} {meth.label} | {m['extra_mb']:,.0f} | "
                     f"{m['peak_mb']:,.0f} | {note} |")
    return "\n".join(lines)


def target_summary(records: list[dict[str, object]], mem: list[dict[str, object]]) -> list[dict[str, object]]:
    """Per target: the worst ratio over activations and N, and whether every configuration meets it."""
    out = []
    for row, target in TARGETS.items():
        rs = [r for r in records if r["row"] == row and r["target"] is not None]
        if not rs:
            continue
        worst = max(rs, key=lambda r: r["ratio"])
        out.append({"target": f"{ROW_LABELS[row]} ≤ {target:g}× {worst['peer']}", "row": row,
                    "worst_ratio": worst["ratio"], "where": f"{worst['activation']}, N = {worst['n']:,}",
                    "met": all(r["met"] for r in rs), "factor_over": worst["ratio"] / target,
                    "ratios": {f"{r['activation']}, N = {r['n']:,}": r["ratio"] for r in rs}})
    ft_mem = [m for m in mem if METHODS[m["key"]].library == "fishertut"]
    if ft_mem:
        worst = max(ft_mem, key=lambda m: m["extra_mb"])
        out.append({"target": f"fishertut peak memory < {MEMORY_TARGET_MB:,.0f} MB at N = {worst['n']:,}",
                    "row": "memory", "worst_ratio": worst["extra_mb"] / MEMORY_TARGET_MB,
                    "where": f"{worst['activation']}, {METHODS[worst['key']].label}: {worst['extra_mb']:,.0f} MB",
                    "met": all(m["extra_mb"] < MEMORY_TARGET_MB for m in ft_mem),
                    "factor_over": worst["extra_mb"] / MEMORY_TARGET_MB, "ratios": {}})
    return out


# --- RESULTS.md --------------------------------------------------------------------------------------------

# Why each row costs what it costs: the algorithms, not the numbers (those come from the run and its profile).
COST_NOTES = {
    "exact": "Both libraries do the same work: they backpropagate C = 10 channels per input, the columns of a "
             "factor of the softmax covariance Λ, through the layers, and form each weight's diagonal as one "
             "matrix product of the squared backpropagated terms with the squared layer inputs. What differs is "
             "fixed cost per call (fishertut validates the model and the inputs on every call: the aten::eq/ne/"
             "abs/all entries of the profile), batching (fishertut streams in batches, BackPACK got all N in one "
             "pass), and, for calls of a few hundredths of a second, scheduling noise from other jobs.",
    "i1": "Both libraries backpropagate one channel per input (the score residual ε of the sampled label) and "
          "square per-input gradients with the outer-product trick, about one plain backward pass; fishertut "
          "also checks the labels and the inputs. With so little work per call the ratio is sensitive to fixed "
          "costs and to other jobs on the machine (compare the CPU-time ratio).",
    "i2": "BackPACK's DiagHessian propagates, besides the C columns of the loss Hessian factor, extra columns "
          "for the residual second-order terms of every curved activation unit (sigmoid/tanh), which is why it "
          "costs tens of backward passes on these networks; fishertut's recursion carries one curvature channel "
          "per input and the propagated squared Jacobians of the curvature sources.",
    "report": "BatchDiagHessian is DiagHessian kept per input; the report needs first derivatives for all C "
              "classes and the diagonal second derivatives of all C outputs, with eight reductions per unit.",
}


def write_results(result: dict[str, object], out_dir: Path) -> Path:
    """Write ``results.json`` and ``RESULTS.md`` (everything in it comes from ``result``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    m = result["machine"]
    cfg = result["config"]
    lines = [
        "# Benchmark results",
        "",
        f"Written by `benchmarks/run.py --write-results` on {m['date']}; do not edit by hand "
        f"(re-run `make bench` with `--write-results`, or `.venv/bin/python benchmarks/run.py --write-results`).",
        "",
        "## Machine",
        "",
        f"* CPU: {m['cpu']}, {m['cores']} cores visible, {m['memory_gb']} GB RAM; {m['platform']}",
        f"* torch {m['torch']}, BackPACK {m['backpack']}, Python {m['python']}; "
        f"`torch.set_num_threads({cfg['threads']})`, `OMP_WAIT_POLICY={m.get('omp_wait_policy', '')}` "
        f"(see `benchmarks/run.py`), device `{cfg['device']}`",
        f"* load average (1, 5, 15 min) at the start: {', '.join(f'{x:.2f}' for x in m['load_average'])}; "
        f"at the end: {', '.join(f'{x:.2f}' for x in result['load_average_end'])} "
        "(other jobs shared the machine when the load exceeds the thread count; round-robin repeats spread "
        "that load over all methods alike)",
        f"* wall time of the run: {result['wall_s'] / 60:.1f} min",
        "",
        "## Setup",
        "",
        f"* Network: MLP {'-'.join(map(str, cfg['sizes']))}, activations {', '.join(cfg['activations'])}, "
        f"float32, untrained (`ft.models.mlp(..., seed=0)`; timings do not depend on the weights).",
        "* Inputs: the 5,000 real MNIST digits of `ft.data.load_mnist()` (train and test), cycled to reach "
        "N = 10,000.",
        "* Labels: one per input, sampled once from the model's softmax (inverse CDF of seeded uniforms, so the "
        "first 1,000 of the 10,000 inputs carry the labels of the N = 1,000 problem) and given to both "
        "libraries: fishertut as `targets=`, BackPACK through `CrossEntropyLoss(reduction=\"sum\")`; "
        "BackPACK's sums are divided by N.",
        f"* fishertut runs with its default batching. BackPACK: `DiagGGNExact` and `SumGradSquared` get all N in "
        f"one backward pass; `DiagHessian` and `BatchDiagHessian` get batches of {cfg['backpack_batch']:,} "
        f"(all 10,000 at once would need about 13 GB); BackPACK works on its own `extend`-ed deep copy of the "
        f"model. `BatchDiagHessian` per-input terms are reduced batch by batch to their mean and mean square.",
        f"* torch.func brute force (`benchmarks/references.py`, `TorchFuncReport`): per-sample Jacobians "
        f"`vmap(jacrev)` for all parameters and per-class Hessians w.r.t. each layer's pre-activations "
        f"`vmap(jacfwd(jacrev))`, in chunks of {cfg['tf_chunk']} inputs, then the report's formulas.",
        f"* Timing: medians of {cfg['repeats']} repeats for N ≤ 1,000 and {cfg['repeats_large']} for larger N, "
        "after a warm-up call on 64 inputs, round-robin over the methods in one process; a call shorter "
        "than 0.25 s is run several times per repeat and the repeat records the mean. The targets are "
        "judged on the ratio of the medians of the wall times; the last column is the ratio of the medians "
        "of the process CPU times (both threads), which other jobs on the machine move much less. "
        f"† = timed on the first n inputs shown and scaled linearly to N (peers that process fixed-size "
        f"batches or chunks, so their time is linear in N).",
        f"* Agreement, checked before timing on the first {cfg['check_n']} inputs of every configuration and "
        f"again on the outputs of the first timed repeat: every pair agrees to a relative error (to each "
        f"tensor's largest entry) below {TOLERANCE:g}; largest error seen: {result['max_error']:.1e}.",
        "",
        "## Timings",
        "",
        timing_table(result["records"]),
        "",
    ]
    if result["memory"]:
        lines += [
            "## Peak memory",
            "",
            "Each configuration in a fresh `spawn` subprocess: the RSS high-water mark is reset (`/proc/self/"
            "clear_refs`) after imports, data and model set-up, the computation runs once, and the table gives "
            "the peak RSS minus the RSS before it.",
            "",
            memory_table(result["memory"]),
            "",
        ]
    lines += ["## Targets", "", "| target | worst case | value | met |", "|---|---|---:|:---:|"]
    for t in result["targets"]:
        value = (f"{t['worst_ratio']:.3g}×" if t["row"] != "memory"
                 else f"{t['worst_ratio'] * MEMORY_TARGET_MB:,.0f} MB")
        met = "yes" if t["met"] else f"**no**, {t['factor_over']:.1f}× over"
        lines.append(f"| {t['target']} | {t['where']} | {value} | {met} |")
    summaries = [(row, p) for row, p in result.get("profiles", {}).items() if p.get("summary")]
    if summaries:
        lines += ["", "## Where the time goes", "",
                  "One profiled call of each fishertut computation and of its BackPACK peer (`--profile`; "
                  "operator times from `torch.profiler`, scaled to the same N where the peer was timed on a "
                  "subset; the time outside operators, wall minus operator time, is Python, dispatch and "
                  "waiting for the CPU):", ""]
        lines += [f"* {ROW_LABELS[row]} ({p['where']}): {p['summary'].split(' Time outside operators')[0]}"
                  for row, p in summaries]
    missed = [t for t in result["targets"] if not t["met"] and t["row"] in COST_NOTES]
    if missed:
        lines += ["", "## Missed targets: where the time goes", ""]
        for t in missed:
            lines += [f"### {t['target']}", "",
                      f"Missed by {t['factor_over']:.1f}× (worst case {t['where']}: ratio {t['worst_ratio']:.3g}×; "
                      + "; ".join(f"{k}: {v:.3g}×" for k, v in t["ratios"].items()) + ").", "",
                      COST_NOTES[t["row"]], ""]
            prof = result["profiles"].get(t["row"])
            if prof:
                lines += [f"Profile of one fishertut call ({prof['where']}):", "", "```text",
                          prof["text"].rstrip(), "```", ""]
    (out_dir / "RESULTS.md").write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return out_dir / "RESULTS.md"


# --- main ------------------------------------------------------------------------------------------------


def profile_row(row: str, records: list[dict[str, object]], args: argparse.Namespace, opt: Options,
                sizes: tuple[int, ...]) -> dict[str, object]:
    """Profile fishertut's call of ``row`` and its peer, where the row's ratio is worst (if it misses its
    target) or at the smallest N (otherwise)."""
    rs = [r for r in records if r["row"] == row and r["peer_key"] != "tf_report"]
    missed = [r for r in rs if r["met"] is False]
    if missed:
        worst = max(missed, key=lambda r: r["ratio"])
        act, n = worst["activation"], worst["n"]
    else:
        n = min(args.n)
        act = max((r for r in rs if r["n"] == n), key=lambda r: r["ratio"])["activation"] if rs else args.activations[0]
    problem = refs.make_problem(n, act, sizes, device=args.device)
    fn = build(FISHERTUT[row].key, problem, opt)
    fn()
    ft_prof = profile_call(fn)
    peer_key = next(p for r, _, p in ROWS if r == row)
    timed_n = plan(peer_key, n, opt)[0]
    peer_fn = build(peer_key, problem.head(timed_n), opt)
    peer_fn()
    peer_prof = profile_call(peer_fn, python=False)
    scale = n / timed_n
    peer_prof.update(wall_s=peer_prof["wall_s"] * scale, ops_s=peer_prof["ops_s"] * scale)
    where = f"{FISHERTUT[row].label}, {act}, N = {n:,}"
    peer_label = f"{METHODS[peer_key].library} {METHODS[peer_key].label}"
    if scale != 1:
        peer_label += f" (times scaled from {timed_n:,} inputs)"
    out = {"where": where, "text": ft_prof["text"], "summary": profile_summary(ft_prof, peer_prof, peer_label),
           "fishertut": {k: v for k, v in ft_prof.items() if k != "text"},
           "peer": {k: v for k, v in peer_prof.items() if k != "text"}, "peer_text": peer_prof["text"]}
    if args.profile:
        print(f"\n=== profile: {where} ===\n{ft_prof['text']}\n{out['summary']}\n"
              f"--- peer: {peer_label} ---\n{peer_prof['text']}", flush=True)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", help="numbers of inputs (default 1000 10000; --quick: 32)")
    ap.add_argument("--activations", nargs="+", default=["sigmoid", "tanh"], choices=["sigmoid", "tanh"])
    ap.add_argument("--repeats", type=int, help="timed repeats for N <= 1000 (default 5; --quick: 1)")
    ap.add_argument("--repeats-large", type=int, help="timed repeats for N > 1000 (default 5)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: N=32, 1 repeat, memory of fishertut's report only")
    ap.add_argument("--memory-n", type=int, help="N for the peak-memory table (default: the largest --n)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    ap.add_argument("--check-n", type=int, default=64, help="inputs for the agreement check before timing")
    ap.add_argument("--backpack-batch", type=int, default=1000, help="batch for DiagHessian/BatchDiagHessian")
    ap.add_argument("--tf-subset", type=int, default=32, help="inputs timed for the torch.func brute force")
    ap.add_argument("--tf-chunk", type=int, default=16, help="chunk of the torch.func brute force")
    ap.add_argument("--full-peers", action="store_true", help="time and measure slow peers on all N (slow)")
    ap.add_argument("--profile", action="store_true", help="print a profile of every fishertut call (smallest N)")
    ap.add_argument("--device", default="cpu", help="cpu (the benchmark's setting) or cuda")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(refs.SIZES), help=argparse.SUPPRESS)
    ap.add_argument("--write-results", action="store_true", help="write RESULTS.md and results.json")
    ap.add_argument("--output", type=Path, default=HERE, help="folder for --write-results (default benchmarks/)")
    ap.add_argument("--from-json", type=Path, help="measure nothing: rewrite RESULTS.md from this results.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.n = args.n or [32]
        args.check_n = min(args.check_n, 32)
        args.tf_subset = min(args.tf_subset, 16)
        args.repeats = args.repeats or 1
        args.repeats_large = args.repeats_large or 1
        if args.write_results and args.output.resolve() == HERE:
            ap.error("--quick --write-results would overwrite the committed results; pass --output DIR")
    args.n = args.n or [1000, 10000]
    args.repeats = args.repeats or 5
    args.repeats_large = args.repeats_large or 5
    return args


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Run the benchmark; print the tables; return the result dict (also written with ``--write-results``)."""
    args = parse_args(argv)
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text(encoding="utf-8"))
        print(f"wrote {write_results(result, args.output)} from {args.from_json}")
        return result
    torch.set_num_threads(args.threads)
    opt = Options(backpack_batch=args.backpack_batch, tf_chunk=args.tf_chunk, tf_subset=args.tf_subset,
                  full_peers=args.full_peers, device=args.device)
    sizes = tuple(args.sizes)
    info = machine()
    start = time.perf_counter()
    print(f"fishertut benchmark: {info['cpu']}, torch {info['torch']}, {args.threads} threads, "
          f"load {info['load_average'][0]:.2f}", flush=True)
    timings: dict[tuple[str, int], dict[str, Timing]] = {}
    checks: dict[str, dict[str, dict[str, float]]] = {}
    cache: dict[tuple[str, str, int], Timing] = {}
    keys = ["ft_exact", "ft_i1", "ft_i2", "ft_report", "bp_ggn", "bp_sgs", "bp_dh", "bp_bdh", "tf_report"]
    for n in sorted(args.n):
        repeats = args.repeats if n <= 1000 else args.repeats_large
        for act in args.activations:
            print(f"\n[{act}, N = {n:,}] agreement check on the first {min(args.check_n, n)} inputs", flush=True)
            problem = refs.make_problem(n, act, sizes, device=args.device)
            checks[f"{act}, N = {n:,}, check"] = check_agreement(problem, opt, args.check_n)
            print(f"[{act}, N = {n:,}] timing, {repeats} repeats", flush=True)
            tm, outs = time_methods(problem, keys, repeats, opt, cache, log=lambda s: print(s, flush=True))
            timed = {}
            for row, ft_key, peer_key in ROWS:
                if ft_key in outs and peer_key in outs and tm[peer_key].timed_n == n:
                    ft_src = outs["ft_i2"] if peer_key == "bp_bdh" else outs[ft_key]
                    timed[f"{row} vs {PEERS[peer_key].label}"] = compare(row, peer_key, ft_src, outs[peer_key])
            _assert_within(timed, f"{act}, N = {n:,}, timed outputs")
            checks[f"{act}, N = {n:,}, timed outputs"] = timed
            timings[(act, n)] = tm
    records = row_records(timings)
    print("\n" + timing_table(records), flush=True)

    memory: list[dict[str, object]] = []
    if not args.no_memory:
        mem_n = args.memory_n or max(args.n)
        mem_keys = ["ft_report"] if args.quick else keys
        print(f"\npeak memory, N = {mem_n:,} (fresh subprocess per configuration)", flush=True)
        for act in args.activations:
            for key in mem_keys:
                m = peak_memory(key, act, mem_n, opt, args.threads, sizes)
                memory.append(m)
                print(f"  {act} {METHODS[key].library} {METHODS[key].label}: +{m['extra_mb']:,.0f} MB "
                      f"(peak {m['peak_mb']:,.0f} MB)", flush=True)
        print("\n" + memory_table(memory), flush=True)

    targets = target_summary(records, memory)
    want = {t["row"] for t in targets if not t["met"] and t["row"] in FISHERTUT} if args.write_results else set()
    profiles = {row: profile_row(row, records, args, opt, sizes) for row in sorted(set(FISHERTUT) if args.profile
                                                                                 else want)}

    print("\nTargets:")
    for t in targets:
        status = "met" if t["met"] else f"MISSED ({t['factor_over']:.2f}x over)"
        print(f"  {t['target']}: worst {t['worst_ratio']:.3g} ({t['where']}) -> {status}")
    max_error = max((e for c in checks.values() for d in c.values() for e in d.values()), default=0.0)
    result = {"machine": info, "load_average_end": list(os.getloadavg()), "wall_s": time.perf_counter() - start,
              "config": {"sizes": list(sizes), "activations": args.activations, "n": sorted(args.n),
                         "repeats": args.repeats, "repeats_large": args.repeats_large, "threads": args.threads,
                         "check_n": args.check_n, "quick": args.quick, **asdict(opt)},
              "records": records, "memory": memory, "targets": targets, "checks": checks,
              "max_error": max_error, "profiles": profiles}
    if args.write_results:
        path = write_results(result, args.output)
        print(f"\nwrote {path} and {path.with_name('results.json')}")
    print(f"\ntotal wall time {result['wall_s'] / 60:.1f} min")
    return result


if __name__ == "__main__":
    main()
