"""Rendering: the Markdown tables and ``RESULTS.md`` (from the template ``RESULTS.template.md``) of a result dict."""

from __future__ import annotations

import json
from pathlib import Path
from string import Template

from benchmarks.harness import Timing
from benchmarks.registry import MEMORY_TARGET_MB, METHODS, PEERS, ROW_LABELS, ROWS, TARGETS, TOLERANCE

__all__ = ["row_records", "timing_table", "memory_table", "target_summary", "write_results"]

TEMPLATE = Path(__file__).with_name("RESULTS.template.md")


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
            records.append(
                {
                    "activation": activation,
                    "n": n,
                    "row": row,
                    "fishertut": METHODS[ft_key].label,
                    "peer": f"{PEERS[peer_key].library} {PEERS[peer_key].label}",
                    "peer_key": peer_key,
                    "ft_median_s": f.median,
                    "peer_median_s": p.median,
                    "ratio": ratio,
                    "target": target,
                    "best_ratio": f.best / p.best,
                    "cpu_ratio": f.cpu_median / p.cpu_median,
                    "ft_cpu_times_s": f.cpu_times,
                    "peer_cpu_times_s": p.cpu_times,
                    "ft_loops": f.loops,
                    "peer_loops": p.loops,
                    "met": None if target is None else ratio <= target,
                    "ft_times_s": f.times,
                    "peer_times_s": p.times,
                    "peer_timed_n": p.timed_n,
                    "peer_feed": p.feed,
                    "repeats": len(f.times),
                }
            )
    return records


def timing_table(records: list[dict[str, object]]) -> str:
    """Markdown table of the timing records."""
    lines = [
        "| activation | N | quantity | fishertut (s) | peer | peer (s) | fishertut/peer | target | met "
        "| CPU-time ratio |",
        "|---|---:|---|---:|---|---:|---:|---:|:---:|---:|",
    ]
    for r in records:
        peer_s = _fmt_s(r["peer_median_s"])
        if r["peer_timed_n"] < r["n"]:
            peer_s += f" †{r['peer_timed_n']:,}"
        target = "—" if r["target"] is None else f"≤ {r['target']:g}×"
        met = "—" if r["met"] is None else ("yes" if r["met"] else f"**no** ({r['ratio'] / r['target']:.1f}× over)")
        lines.append(
            f"| {r['activation']} | {r['n']:,} | {ROW_LABELS[r['row']]} | {_fmt_s(r['ft_median_s'])} | "
            f"{r['peer']} ({r['peer_feed']}) | {peer_s} | {r['ratio']:.3g}× | {target} | {met} "
            f"| {r['cpu_ratio']:.3g}× |"
        )
    return "\n".join(lines)


def memory_table(mem: list[dict[str, object]]) -> str:
    """Markdown table of the memory records."""
    lines = [
        "| activation | N | method | peak − baseline (MB) | peak RSS (MB) | notes |",
        "|---|---:|---|---:|---:|---|",
    ]
    for m in mem:
        meth = METHODS[m["key"]]
        note = "" if m["max_batches"] is None else "first batch/chunk only (peak is per batch)"
        if meth.library == "fishertut":
            ok = m["extra_mb"] < MEMORY_TARGET_MB
            note = f"target < {MEMORY_TARGET_MB:,.0f} MB: " + ("met" if ok else "**missed**")
        lines.append(
            f"| {m['activation']} | {m['n']:,} | {meth.library} {meth.label} | {m['extra_mb']:,.0f} | "
            f"{m['peak_mb']:,.0f} | {note} |"
        )
    return "\n".join(lines)


def target_summary(records: list[dict[str, object]], mem: list[dict[str, object]]) -> list[dict[str, object]]:
    """Per target: the worst ratio over activations and N, and whether every configuration meets it."""
    out = []
    for row, target in TARGETS.items():
        rs = [r for r in records if r["row"] == row and r["target"] is not None]
        if not rs:
            continue
        worst = max(rs, key=lambda r: r["ratio"])
        out.append(
            {
                "target": f"{ROW_LABELS[row]} ≤ {target:g}× {worst['peer']}",
                "row": row,
                "worst_ratio": worst["ratio"],
                "where": f"{worst['activation']}, N = {worst['n']:,}",
                "met": all(r["met"] for r in rs),
                "factor_over": worst["ratio"] / target,
                "ratios": {f"{r['activation']}, N = {r['n']:,}": r["ratio"] for r in rs},
            }
        )
    ft_mem = [m for m in mem if METHODS[m["key"]].library == "fishertut"]
    if ft_mem:
        worst = max(ft_mem, key=lambda m: m["extra_mb"])
        out.append(
            {
                "target": f"fishertut peak memory < {MEMORY_TARGET_MB:,.0f} MB at N = {worst['n']:,}",
                "row": "memory",
                "worst_ratio": worst["extra_mb"] / MEMORY_TARGET_MB,
                "where": f"{worst['activation']}, {METHODS[worst['key']].label}: {worst['extra_mb']:,.0f} MB",
                "met": all(m["extra_mb"] < MEMORY_TARGET_MB for m in ft_mem),
                "factor_over": worst["extra_mb"] / MEMORY_TARGET_MB,
                "ratios": {},
            }
        )
    return out


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


def _targets_section(result: dict[str, object]) -> str:
    lines = ["| target | worst case | value | met |", "|---|---|---:|:---:|"]
    for t in result["targets"]:
        value = f"{t['worst_ratio']:.3g}×" if t["row"] != "memory" else f"{t['worst_ratio'] * MEMORY_TARGET_MB:,.0f} MB"
        met = "yes" if t["met"] else f"**no**, {t['factor_over']:.1f}× over"
        lines.append(f"| {t['target']} | {t['where']} | {value} | {met} |")
    return "\n".join(lines)


def _memory_section(result: dict[str, object]) -> str:
    if not result["memory"]:
        return ""
    return "\n".join(
        [
            "## Peak memory",
            "",
            "Each configuration in a fresh `spawn` subprocess: the RSS high-water mark is reset (`/proc/self/"
            "clear_refs`) after imports, data and model set-up, the computation runs once, and the table gives "
            "the peak RSS minus the RSS before it.",
            "",
            memory_table(result["memory"]),
            "",
            "",
        ]
    )


def _profiles_section(result: dict[str, object]) -> str:
    lines: list[str] = []
    summaries = [(row, p) for row, p in result.get("profiles", {}).items() if p.get("summary")]
    if summaries:
        lines += [
            "",
            "## Where the time goes",
            "",
            "One profiled call of each fishertut computation and of its BackPACK peer (`--profile`; "
            "operator times from `torch.profiler`, scaled to the same N where the peer was timed on a "
            "subset; the time outside operators, wall minus operator time, is Python, dispatch and "
            "waiting for the CPU):",
            "",
        ]
        lines += [
            f"* {ROW_LABELS[row]} ({p['where']}): {p['summary'].split(' Time outside operators')[0]}"
            for row, p in summaries
        ]
    missed = [t for t in result["targets"] if not t["met"] and t["row"] in COST_NOTES]
    if missed:
        lines += ["", "## Missed targets: where the time goes", ""]
        for t in missed:
            lines += [
                f"### {t['target']}",
                "",
                f"Missed by {t['factor_over']:.1f}× (worst case {t['where']}: ratio {t['worst_ratio']:.3g}×; "
                + "; ".join(f"{k}: {v:.3g}×" for k, v in t["ratios"].items())
                + ").",
                "",
                COST_NOTES[t["row"]],
                "",
            ]
            prof = result["profiles"].get(t["row"])
            if prof:
                lines += [
                    f"Profile of one fishertut call ({prof['where']}):",
                    "",
                    "```text",
                    prof["text"].rstrip(),
                    "```",
                    "",
                ]
    return "\n".join(lines)


def update_section(key: str, section: dict[str, object], out_dir: Path) -> None:
    """Set ``results.json[key]``, one benchmark script's section (``"lm"``, ``"cnn"``, ...), keeping the rest."""
    path = out_dir / "results.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data[key] = section
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write_results(result: dict[str, object], out_dir: Path) -> Path:
    """Write ``results.json`` and ``RESULTS.md`` (the template filled from ``result``, nothing else).

    The sections other benchmark scripts wrote into an existing ``results.json`` (:func:`update_section`)
    are kept.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    result = {**result, **{k: v for k, v in old.items() if k not in result}}
    path.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    m, cfg = result["machine"], result["config"]
    fields = {
        "date": m["date"],
        "cpu": m["cpu"],
        "cores": m["cores"],
        "memory_gb": m["memory_gb"],
        "platform": m["platform"],
        "torch": m["torch"],
        "backpack": m["backpack"],
        "python": m["python"],
        "threads": cfg["threads"],
        "omp_wait_policy": m.get("omp_wait_policy", ""),
        "device": cfg["device"],
        "load_start": ", ".join(f"{x:.2f}" for x in m["load_average"]),
        "load_end": ", ".join(f"{x:.2f}" for x in result["load_average_end"]),
        "minutes": f"{result['wall_s'] / 60:.1f}",
        "sizes": "-".join(map(str, cfg["sizes"])),
        "activations": ", ".join(cfg["activations"]),
        "backpack_batch": f"{cfg['backpack_batch']:,}",
        "tf_chunk": cfg["tf_chunk"],
        "repeats": cfg["repeats"],
        "repeats_large": cfg["repeats_large"],
        "check_n": cfg["check_n"],
        "tolerance": f"{TOLERANCE:g}",
        "max_error": f"{result['max_error']:.1e}",
        "timing_table": timing_table(result["records"]),
        "memory_section": _memory_section(result),
        "targets_table": _targets_section(result),
        "profiles_section": _profiles_section(result),
    }
    text = Template(TEMPLATE.read_text(encoding="utf-8")).substitute(fields)
    (out_dir / "RESULTS.md").write_text(text.rstrip() + "\n", encoding="utf-8")
    return out_dir / "RESULTS.md"
