"""Smoke tests of ``benchmarks/lm.py``: wired into ``make bench``, and its channel layout is the per-position one."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lm():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT))
        yield importlib.import_module("benchmarks.lm")


@pytest.fixture(scope="module")
def oracle(lm):
    return importlib.import_module("benchmarks.lm_oracle")


def test_make_bench_runs_the_lm_script() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "benchmarks.lm" in makefile.split("bench:", 1)[1].split("\n\n", 1)[0]


def test_block_channels_put_each_row_on_its_own_position(oracle) -> None:
    blocks = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    rows = oracle.block_channels(blocks).view(2, 3, 4, 3, 5)
    for t in range(3):
        for s in range(3):
            expected = blocks[:, t] if s == t else torch.zeros(2, 4, 5)
            assert torch.equal(rows[:, t, :, s], expected)


def test_the_benchmark_model_is_the_issue_one(lm) -> None:
    model, x, y = lm.setup()
    assert 26_000 < sum(p.numel() for p in model.parameters()) < 29_000
    assert x.shape == y.shape == (8, 16)
    assert model(x).shape == (8, 16 * 32)


def test_the_char_rows_use_the_chapters_model(lm) -> None:
    model, x, y = lm.char_setup()
    assert type(model).__name__ == "TinyGPT" and model.context == 32 and model.norm.normalized_shape == (32,)
    assert len(model.blocks) == 2 and model.blocks[0].attn.num_heads == 4
    assert x.shape == y.shape == (8, 16)
    assert model(x).shape == (8, 16, 103)


def test_the_oracle_and_the_engines_agree_on_a_small_gpt(oracle) -> None:
    from fishertut.engines.generic import GenericEngine
    from fishertut.engines.transformer import TransformerEngine
    from fishertut.lab.gpt import tiny_gpt

    model = tiny_gpt(vocab=5, context=3, d=4, heads=1, layers=1, dtype=torch.float64)
    x = torch.randint(0, 5, (3, 3), generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 5, (3, 3), generator=torch.Generator().manual_seed(1))
    rows, ref = oracle.channels(model, x, y), oracle.reference(model, x, y)
    assert max(float(t.abs().max()) for t in ref["exact"].values()) > 1e-6
    for engine in (TransformerEngine(model), GenericEngine(model)):
        for kind in ("exact", "sequence", "token"):
            assert oracle.rel_error(oracle.per_position(engine, x, rows[kind]), ref[kind]) < 1e-10, kind
    # the three quantities differ, so a mixed-up channel layout cannot pass
    assert oracle.rel_error(ref["sequence"], ref["token"]) > 1e-3


def test_a_report_not_run_is_a_row_with_its_estimate(lm) -> None:
    res = {
        "seconds": {"forward+backward": 0.01, "exact (transformer)": 2.0, "exact (generic)": 8.0},
        "report": {"estimated_seconds": 400.0, "basis": "200× its exact diagonal"},
    }
    rows = lm.rows_of(res)
    last = rows[-1]
    assert last["quantity"] == "full variance report" and last["seconds"] is None and "met" not in last
    assert last["estimated_seconds"] == 400.0 and "estimated 400 s" in last["not_run"]
    assert rows[1]["ratio"] == pytest.approx(0.25) and rows[1]["met"]
    table = "\n".join(lm._table(rows))
    assert "| full variance report | not run |" in table
