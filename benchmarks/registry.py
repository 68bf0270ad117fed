"""What the benchmark compares: the methods, the rows and their targets, how each is fed, and the agreement check.

Each row pairs a fishertut call with the peer computing the same numbers (``benchmarks/references.py``);
:data:`TARGETS` are the time ratios fishertut aims for (the book reads them back from ``results.json``).
Before timing, :func:`check_agreement` requires every pair to agree to :data:`TOLERANCE`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from benchmarks import references as refs
from benchmarks import workload

__all__ = [
    "TOLERANCE",
    "TARGETS",
    "MEMORY_TARGET_MB",
    "ROW_LABELS",
    "Method",
    "FISHERTUT",
    "PEERS",
    "ROWS",
    "METHODS",
    "Options",
    "plan",
    "build",
    "compare",
    "check_agreement",
    "assert_within",
]

TOLERANCE = 1e-4
TARGETS = {"exact": 1.0, "i1": 1.5, "i2": 0.1, "report": 0.5}
MEMORY_TARGET_MB = 2000.0
ROW_LABELS = {
    "exact": "exact diagonal FIM",
    "i1": "Î1, sampled labels",
    "i2": "Î2, sampled labels",
    "report": "full variance report",
}


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
ROWS = [
    ("exact", "ft_exact", "bp_ggn"),
    ("i1", "ft_i1", "bp_sgs"),
    ("i2", "ft_i2", "bp_dh"),
    ("report", "ft_report", "bp_bdh"),
    ("report", "ft_report", "tf_report"),
]
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


def build(key: str, problem: workload.Problem, opt: Options) -> Callable[[], object]:
    """A zero-argument callable computing ``key`` on ``problem`` (set-up such as ``extend`` done here)."""
    if key == "ft_exact":
        return lambda: workload.fishertut_exact(problem)
    if key == "ft_i1":
        return lambda: workload.fishertut_i1(problem)
    if key == "ft_i2":
        return lambda: workload.fishertut_i2(problem)
    if key == "ft_report":
        return lambda: workload.fishertut_report(problem)
    if key.startswith("bp_"):
        batch = None if key in ("bp_ggn", "bp_sgs") else min(opt.backpack_batch, problem.n)
        peer = refs.BackpackPeer(problem, batch)
        return {
            "bp_ggn": peer.diag_ggn_exact,
            "bp_sgs": peer.sum_grad_squared,
            "bp_dh": peer.diag_hessian,
            "bp_bdh": peer.batch_diag_hessian,
        }[key]
    if key == "tf_report":
        return refs.TorchFuncReport(problem, min(opt.tf_chunk, problem.n))
    raise KeyError(key)


def _rel_error(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], scale: dict[str, torch.Tensor] | None = None
) -> float:
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
    for f in workload.REPORT_FIELDS:
        scale = None
        if f == "var_x":
            scale = {k: peer_out["var_x"][k] + peer_out["fisher"][k].square() for k in peer_out["var_x"]}
        errors[f] = _rel_error(ft_out[f], peer_out[f], scale)
    return errors


def check_agreement(problem: workload.Problem, opt: Options, check_n: int) -> dict[str, dict[str, float]]:
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
        results[f"{row} vs {PEERS[peer_key].label}"] = compare(
            row, peer_key, ft_cache[ft_src], build(peer_key, small, opt)()
        )
    terms_peer = refs.BackpackPeer(small, min(opt.backpack_batch, small.n)).batch_diag_hessian_terms()
    results["per-input Î2 terms vs BatchDiagHessian"] = {
        "i2 terms": _rel_error(workload.fishertut_i2_terms(small), terms_peer)
    }
    assert_within(results, f"{problem.activation}, first {small.n} inputs")
    return results


def assert_within(results: dict[str, dict[str, float]], where: str) -> None:
    """Raise ``AssertionError`` naming every relative error in ``results`` above :data:`TOLERANCE`."""
    bad = {f"{k}: {f}": e for k, d in results.items() for f, e in d.items() if not e <= TOLERANCE}
    if bad:
        raise AssertionError(f"fishertut and a peer disagree ({where}); relative errors above {TOLERANCE}: {bad}")
