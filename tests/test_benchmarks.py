"""Smoke tests of ``benchmarks/``: the benchmark runs on a tiny configuration, and its numbers agree.

Every fishertut number it times agrees with the peer number it is compared to (BackPACK, torch.func brute force).

The timings themselves are not tested (they depend on the machine); ``make bench`` produces them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks import harness, registry, render, run, workload

ROOT = Path(__file__).resolve().parents[1]
TINY = ("784", "24", "12", "10")


def test_quick_run_checks_times_and_writes(tmp_path: Path) -> None:
    result = run.main(
        ["--quick", "--activations", "tanh", "--sizes", *TINY, "--output", str(tmp_path), "--write-results"]
    )
    assert result["max_error"] <= registry.TOLERANCE
    assert [(r["row"], r["peer_key"]) for r in result["records"]] == [(row, p) for row, _, p in registry.ROWS]
    for r in result["records"]:
        assert r["n"] == 32 and len(r["ft_times_s"]) == 1
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0
    assert {m["key"] for m in result["memory"]} == {"ft_report"}
    assert all(m["extra_mb"] >= 0 and m["peak_mb"] > 0 for m in result["memory"])
    md = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    for needle in ("## Machine", "## Timings", "## Peak memory", "## Targets", "DiagGGNExact", "torch.func"):
        assert needle in md
    assert json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["config"]["quick"] is True


def test_quick_refuses_to_overwrite_committed_results() -> None:
    with pytest.raises(SystemExit):
        run.parse_args(["--quick", "--write-results"])


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_agreement_on_the_benchmark_network(activation: str) -> None:
    """The real 784-256-128-64-10 network, with BackPACK in two batches and the brute force in two chunks."""
    problem = workload.make_problem(8, activation)
    opt = registry.Options(backpack_batch=4, tf_chunk=4)
    errors = registry.check_agreement(problem, opt, check_n=8)
    assert set(errors) == {f"{row} vs {registry.PEERS[p].label}" for row, _, p in registry.ROWS} | {
        "per-input Î2 terms vs BatchDiagHessian"
    }
    assert set(errors["report vs brute-force report"]) == set(workload.REPORT_FIELDS)
    assert max(e for d in errors.values() for e in d.values()) <= registry.TOLERANCE


def test_the_check_detects_a_wrong_number() -> None:
    problem = workload.make_problem(8, "tanh", tuple(int(s) for s in TINY))
    good = workload.fishertut_exact(problem)
    peer = registry.build("bp_ggn", problem, registry.Options())()
    assert registry.compare("exact", "bp_ggn", good, peer)["exact"] <= registry.TOLERANCE
    bad = {k: v.clone() for k, v in good.items()}
    bad["0.weight"].view(-1)[0] += 1e-3 * bad["0.weight"].abs().max()
    errors = {"exact vs DiagGGNExact": registry.compare("exact", "bp_ggn", bad, peer)}
    with pytest.raises(AssertionError, match="disagree"):
        registry.assert_within(errors, "test")


def test_labels_are_shared_and_sampled_from_the_model() -> None:
    p = workload.make_problem(16, "sigmoid", tuple(int(s) for s in TINY))
    again = workload.make_problem(16, "sigmoid", tuple(int(s) for s in TINY))
    assert torch.equal(p.labels, again.labels) and p.labels.shape == (16,)
    assert torch.equal(p.head(4).labels, p.labels[:4])
    small = workload.make_problem(4, "sigmoid", tuple(int(s) for s in TINY))
    assert torch.equal(small.labels, p.labels[:4]) and torch.equal(small.x, p.x[:4])  # prefix-stable
    prob = p.family.probabilities(p.model(p.x)).detach()
    assert torch.all(prob[torch.arange(16), p.labels] > 0) and p.labels.max() < 10
    big = workload.make_problem(5001, "sigmoid", tuple(int(s) for s in TINY))
    assert torch.equal(big.x[5000], big.x[0])  # the 5,000 digits are cycled beyond 5,000


def test_sampled_labels_follow_the_model() -> None:
    """Class counts of the inverse-CDF labels match sum_n p(c|x_n) within 5 standard deviations."""
    p = workload.make_problem(4000, "tanh", tuple(int(s) for s in TINY))
    prob = p.family.probabilities(p.model(p.x)).detach().double()
    counts = torch.bincount(p.labels, minlength=10).double()
    expected, sd = prob.sum(0), (prob * (1 - prob)).sum(0).sqrt()
    assert torch.all((counts - expected).abs() <= 5 * sd), (counts, expected)


def test_extrapolation_plan() -> None:
    opt = registry.Options()
    assert registry.plan("bp_dh", 1000, opt) == (1000, "batches of 1,000")
    assert registry.plan("bp_bdh", 10000, opt) == (1000, "batches of 1,000")
    assert registry.plan("bp_ggn", 10000, opt) == (10000, "one batch of 10,000")
    assert registry.plan("ft_i2", 10000, opt)[0] == 10000
    assert registry.plan("tf_report", 10000, opt)[0] == opt.tf_subset
    assert registry.plan("bp_dh", 10000, registry.Options(full_peers=True))[0] == 10000
    t = harness.Timing("bp_dh", "tanh", 10000, 1000, "batches of 1,000", [2.0, 1.0, 3.0], [4.0, 2.0, 6.0])
    assert t.median == pytest.approx(20.0) and t.cpu_median == pytest.approx(40.0)


def test_committed_results_come_from_a_checked_run() -> None:
    md, js = ROOT / "benchmarks" / "RESULTS.md", ROOT / "benchmarks" / "results.json"
    assert md.exists() and js.exists(), (
        "run python -m benchmarks.run --write-results and commit RESULTS.md and results.json"
    )
    result = json.loads(js.read_text(encoding="utf-8"))
    text = md.read_text(encoding="utf-8")
    assert "Written by `python -m benchmarks.run --write-results`" in text
    assert result["machine"]["date"] in text  # the Markdown and the JSON are one run
    assert not result["config"]["quick"]
    assert result["max_error"] <= 1e-4


def test_committed_results_md_is_the_template_filled_from_the_json(tmp_path: Path) -> None:
    """RESULTS.md is rendered from results.json alone: re-rendering reproduces it byte for byte."""
    result = json.loads((ROOT / "benchmarks" / "results.json").read_text(encoding="utf-8"))
    rendered = render.write_results(result, tmp_path).read_text(encoding="utf-8")
    assert rendered == (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    assert "$" not in rendered.replace("$$", "")  # every placeholder filled


def test_the_main_run_keeps_the_sections_other_scripts_wrote(tmp_path: Path) -> None:
    """``benchmarks.run --write-results`` replaces its own keys only; each script's section replaces only itself."""
    committed = json.loads((ROOT / "benchmarks" / "results.json").read_text(encoding="utf-8"))
    main = {k: v for k, v in committed.items() if k not in ("lm", "cnn", "estimators")}
    (tmp_path / "results.json").write_text(json.dumps({"config": "stale", "lm": {"rows": [1]}}), encoding="utf-8")
    render.write_results(main, tmp_path)
    render.update_section("cnn", {"rows": [2]}, tmp_path)
    written = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert written["config"] == main["config"]
    assert written["lm"] == {"rows": [1]} and written["cnn"] == {"rows": [2]}
    assert set(written) == set(main) | {"lm", "cnn"}
