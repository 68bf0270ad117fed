"""Measuring: wall and CPU times (round-robin repeats), peak memory in a fresh process, profiles, the machine."""

from __future__ import annotations

import cProfile
import datetime as _dt
import io
import math
import multiprocessing as mp
import os
import platform
import pstats
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks import OMP_POLICY_PRESET, workload
from benchmarks.registry import METHODS, Options, build, plan

__all__ = ["Timing", "time_methods", "peak_memory", "profile_call", "profile_summary", "machine"]

ROOT = Path(__file__).resolve().parents[1]


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
        """Factor from the inputs timed to all ``n`` inputs."""
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
        """Median CPU time of this process (all threads), scaled like :attr:`median`.

        Less sensitive to other jobs on the machine than the wall time.
        """
        return statistics.median(self.cpu_times) * self.scale


def time_methods(
    problem: workload.Problem,
    keys: list[str],
    repeats: int,
    opt: Options,
    cache: dict[tuple[str, str, int], Timing] | None = None,
    log: Callable[[str], None] = print,
    warmup_n: int = 64,
    min_sample: float = 0.25,
) -> tuple[dict[str, Timing], dict[str, object]]:
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
            timings[key] = Timing(
                key,
                problem.activation,
                problem.n,
                timed_n,
                feed,
                list(cache[ck].times),
                list(cache[ck].cpu_times),
                cache[ck].loops,
            )
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
        log(
            f"  repeat {r + 1}/{repeats}: "
            + ", ".join(f"{METHODS[k].label} {timings[k].times[-1]:.2f}s" for k in calls)
        )
    for key in calls:  # problem.head(m) is the problem built with m inputs, so a later N can reuse these
        t = timings[key]
        cache[(key, problem.activation, t.timed_n)] = t
    return timings, outputs


def status_mb(field_name: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _memory_child(
    key: str, activation: str, n: int, max_batches: int | None, threads: int, opt: Options, sizes: tuple[int, ...]
) -> dict[str, float]:
    """Runs in a fresh process: set up, reset the RSS high-water mark, run ``key`` once, read the peak."""
    import gc

    torch.set_num_threads(threads)
    problem = workload.make_problem(n, activation, sizes, device=opt.device)
    fn = build(key, problem, opt)
    if max_batches is not None:
        base_fn = fn
        fn = (
            (lambda: base_fn(max_chunks=max_batches))
            if key == "tf_report"
            else (lambda: base_fn(max_batches=max_batches))
        )
    gc.collect()
    baseline = status_mb("VmRSS")
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
    peak = status_mb("VmHWM")
    out = {
        "baseline_mb": baseline,
        "peak_mb": peak,
        "extra_mb": peak - baseline,
        "hwm_reset": reset,
        "seconds": seconds,
    }
    if opt.device.startswith("cuda"):
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def peak_memory(
    key: str, activation: str, n: int, opt: Options, threads: int = 2, sizes: tuple[int, ...] = workload.SIZES
) -> dict[str, object]:
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


_MATMUL_OPS = {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addmv", "aten::mv", "aten::dot"}
_COPY_OPS = {
    "aten::copy_",
    "aten::fill_",
    "aten::zero_",
    "aten::empty",
    "aten::empty_strided",
    "aten::clone",
    "aten::to",
    "aten::_to_copy",
    "aten::cat",
    "aten::contiguous",
}


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
    shares = {
        "matrix products": matmul / total,
        "copies, fills, allocations": copies / total,
        "elementwise and reductions": (total - matmul - copies) / total,
    }
    text = (
        "torch.profiler, top operators by self CPU time:\n"
        + averages.table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=40)
        + "\n"
    )
    if python:
        pr = cProfile.Profile()
        pr.enable()
        fn()
        pr.disable()
        buf = io.StringIO()
        pstats.Stats(pr, stream=buf).sort_stats("cumulative").print_stats(r"fishertut", top)
        lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
        start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
        text += (
            "cProfile, fishertut functions by cumulative time:\n"
            + "\n".join(ln.replace(str(ROOT) + "/", "") for ln in lines[start:])
            + "\n"
        )
    return {"text": text, "wall_s": wall, "ops_s": total, "shares": shares}


def profile_summary(ft_prof: dict[str, object], peer_prof: dict[str, object], peer_label: str) -> str:
    """One paragraph comparing the two profiles (times already scaled to the same ``N``)."""

    def part(p: dict[str, object]) -> str:
        sh = p["shares"]
        return (
            f"{p['wall_s']:.3g} s wall, {p['ops_s']:.3g} s in operators ("
            + ", ".join(f"{v:.0%} {k}" for k, v in sh.items())
            + ")"
        )

    return f"Under the profiler, fishertut: {part(ft_prof)}; {peer_label}: {part(peer_prof)}."


def machine() -> dict[str, object]:
    """CPU model, cores, versions, date and load."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        backpack_version = version("backpack-for-pytorch")
    except PackageNotFoundError:
        backpack_version = "not installed"
    try:
        with open("/proc/meminfo") as fh:
            mem_gb = int(next(ln for ln in fh if ln.startswith("MemTotal")).split()[1]) / 2**20
    except (OSError, StopIteration):
        mem_gb = float("nan")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "torch": torch.__version__,
        "backpack": backpack_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": list(os.getloadavg()),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset")
        + (" (torch was imported first)" if OMP_POLICY_PRESET else ""),
    }
