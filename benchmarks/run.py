"""Time fishertut against BackPACK and a torch.func brute force: the command line (``make bench``).

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

Modules: ``registry`` (methods, rows, targets, the agreement check), ``harness`` (timing, memory, profiles,
the machine), ``render`` (tables and ``RESULTS.md`` from ``RESULTS.template.md``), ``references`` (the
problem and the peers); this module runs them.

Usage, from the repository root::

    .venv/bin/python -m benchmarks.run                      # the full benchmark (make bench)
    .venv/bin/python -m benchmarks.run --write-results      # ... and rewrite benchmarks/RESULTS.md + results.json
    .venv/bin/python -m benchmarks.run --quick --output /tmp/b --write-results   # smoke run
    .venv/bin/python -m benchmarks.run --n 1000 --activations tanh --repeats 5 --profile
    .venv/bin/python -m benchmarks.run --from-json benchmarks/results.json   # re-render RESULTS.md only
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks import workload
from benchmarks.harness import Timing, machine, peak_memory, profile_call, profile_summary, time_methods
from benchmarks.registry import (
    FISHERTUT,
    METHODS,
    PEERS,
    ROWS,
    Options,
    assert_within,
    build,
    check_agreement,
    compare,
    plan,
)
from benchmarks.render import memory_table, row_records, target_summary, timing_table, write_results

__all__ = ["main", "parse_args", "profile_row"]

HERE = Path(__file__).resolve().parent


def profile_row(
    row: str, records: list[dict[str, object]], args: argparse.Namespace, opt: Options, sizes: tuple[int, ...]
) -> dict[str, object]:
    """Profile fishertut's call of ``row`` and its peer.

    Where the row's ratio is worst if it misses its target, otherwise at the smallest N.
    """
    rs = [r for r in records if r["row"] == row and r["peer_key"] != "tf_report"]
    missed = [r for r in rs if r["met"] is False]
    if missed:
        worst = max(missed, key=lambda r: r["ratio"])
        act, n = worst["activation"], worst["n"]
    else:
        n = min(args.n)
        act = max((r for r in rs if r["n"] == n), key=lambda r: r["ratio"])["activation"] if rs else args.activations[0]
    problem = workload.make_problem(n, act, sizes, device=args.device)
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
    out = {
        "where": where,
        "text": ft_prof["text"],
        "summary": profile_summary(ft_prof, peer_prof, peer_label),
        "fishertut": {k: v for k, v in ft_prof.items() if k != "text"},
        "peer": {k: v for k, v in peer_prof.items() if k != "text"},
        "peer_text": peer_prof["text"],
    }
    if args.profile:
        print(
            f"\n=== profile: {where} ===\n{ft_prof['text']}\n{out['summary']}\n"
            f"--- peer: {peer_label} ---\n{peer_prof['text']}",
            flush=True,
        )
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see ``--help``); ``--quick`` fills in the smoke-run defaults."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    ap.add_argument("--sizes", type=int, nargs="+", default=list(workload.SIZES), help=argparse.SUPPRESS)
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
    opt = Options(
        backpack_batch=args.backpack_batch,
        tf_chunk=args.tf_chunk,
        tf_subset=args.tf_subset,
        full_peers=args.full_peers,
        device=args.device,
    )
    sizes = tuple(args.sizes)
    info = machine()
    start = time.perf_counter()
    print(
        f"fishertut benchmark: {info['cpu']}, torch {info['torch']}, {args.threads} threads, "
        f"load {info['load_average'][0]:.2f}",
        flush=True,
    )
    timings: dict[tuple[str, int], dict[str, Timing]] = {}
    checks: dict[str, dict[str, dict[str, float]]] = {}
    cache: dict[tuple[str, str, int], Timing] = {}
    keys = ["ft_exact", "ft_i1", "ft_i2", "ft_report", "bp_ggn", "bp_sgs", "bp_dh", "bp_bdh", "tf_report"]
    for n in sorted(args.n):
        repeats = args.repeats if n <= 1000 else args.repeats_large
        for act in args.activations:
            print(f"\n[{act}, N = {n:,}] agreement check on the first {min(args.check_n, n)} inputs", flush=True)
            problem = workload.make_problem(n, act, sizes, device=args.device)
            checks[f"{act}, N = {n:,}, check"] = check_agreement(problem, opt, args.check_n)
            print(f"[{act}, N = {n:,}] timing, {repeats} repeats", flush=True)
            tm, outs = time_methods(problem, keys, repeats, opt, cache, log=lambda s: print(s, flush=True))
            timed = {}
            for row, ft_key, peer_key in ROWS:
                if ft_key in outs and peer_key in outs and tm[peer_key].timed_n == n:
                    ft_src = outs["ft_i2"] if peer_key == "bp_bdh" else outs[ft_key]
                    timed[f"{row} vs {PEERS[peer_key].label}"] = compare(row, peer_key, ft_src, outs[peer_key])
            assert_within(timed, f"{act}, N = {n:,}, timed outputs")
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
                print(
                    f"  {act} {METHODS[key].library} {METHODS[key].label}: +{m['extra_mb']:,.0f} MB "
                    f"(peak {m['peak_mb']:,.0f} MB)",
                    flush=True,
                )
        print("\n" + memory_table(memory), flush=True)

    targets = target_summary(records, memory)
    want = {t["row"] for t in targets if not t["met"] and t["row"] in FISHERTUT} if args.write_results else set()
    profiles = {
        row: profile_row(row, records, args, opt, sizes) for row in sorted(set(FISHERTUT) if args.profile else want)
    }

    print("\nTargets:")
    for t in targets:
        status = "met" if t["met"] else f"MISSED ({t['factor_over']:.2f}x over)"
        print(f"  {t['target']}: worst {t['worst_ratio']:.3g} ({t['where']}) -> {status}")
    max_error = max((e for c in checks.values() for d in c.values() for e in d.values()), default=0.0)
    result = {
        "machine": info,
        "load_average_end": list(os.getloadavg()),
        "wall_s": time.perf_counter() - start,
        "config": {
            "sizes": list(sizes),
            "activations": args.activations,
            "n": sorted(args.n),
            "repeats": args.repeats,
            "repeats_large": args.repeats_large,
            "threads": args.threads,
            "check_n": args.check_n,
            "quick": args.quick,
            **asdict(opt),
        },
        "records": records,
        "memory": memory,
        "targets": targets,
        "checks": checks,
        "max_error": max_error,
        "profiles": profiles,
    }
    if args.write_results:
        path = write_results(result, args.output)
        print(f"\nwrote {path} and {path.with_name('results.json')}")
    print(f"\ntotal wall time {result['wall_s'] / 60:.1f} min")
    return result


if __name__ == "__main__":
    main()
