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


def test_make_bench_runs_the_lm_script() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "benchmarks.lm" in makefile.split("bench:", 1)[1].split("\n\n", 1)[0]


def test_block_channels_put_each_row_on_its_own_position(lm) -> None:
    blocks = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    rows = lm.block_channels(blocks).view(2, 3, 4, 3, 5)
    for t in range(3):
        for s in range(3):
            expected = blocks[:, t] if s == t else torch.zeros(2, 4, 5)
            assert torch.equal(rows[:, t, :, s], expected)


def test_the_benchmark_model_is_the_issue_one(lm) -> None:
    model, x, y = lm.setup()
    assert 26_000 < sum(p.numel() for p in model.parameters()) < 29_000
    assert x.shape == y.shape == (8, 16)
    assert model(x).shape == (8, 16 * 32)
