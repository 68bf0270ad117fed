"""Smoke tests of ``benchmarks/cnn.py``: its networks, and the numbers it times agree with BackPACK's."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

import fishertut as ft

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cnn():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT))
        yield importlib.import_module("benchmarks.cnn")


def test_make_bench_runs_the_cnn_script() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "benchmarks.cnn" in makefile.split("bench:", 1)[1].split("\n\n", 1)[0]


@pytest.mark.parametrize("what,peer", [("exact", "DiagGGNExact"), ("i2", "DiagHessian")])
def test_lenet_quantities_agree_with_backpack(cnn, what, peer) -> None:
    model = cnn.lenet("tanh")
    x = cnn.digits(2)
    y = cnn.sample_labels(model, x)
    assert cnn.rel_error(cnn._fishertut(model, x, y, what), cnn.backpack(model, x, y, peer)) < cnn.TOLERANCE


def test_resnet8_takes_the_graph_path_with_all_parameters_piecewise_linear(cnn) -> None:
    model = cnn.resnet8()
    assert 70_000 < sum(p.numel() for p in model.parameters()) < 90_000
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rep = ft.variance_report(model, x, ft.Categorical())
    assert rep.path == "graph"
    assert rep.piecewise_linear == {n for n, _ in model.named_parameters()}
    assert all(torch.all(v == 0) for v in rep.var_i2.values())


def test_the_benchmark_lenet_is_the_library_one(cnn) -> None:
    model = cnn.lenet("tanh", seed=2)
    ref = ft.lab.models.lenet("tanh", seed=2, flat_inputs=False)
    assert not model.training and [type(m) for m in model] == [type(m) for m in ref]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters()))
