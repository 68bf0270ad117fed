"""Cross-checks against BackPACK on the same labels, minding its scale conventions.

CrossEntropyLoss(sum) gives F, Σ s², Σ a directly; MSELoss(sum) = 2σ² (−log p) + const, so its GGN is
2σ²·N·F, its squared per-sample gradients are (2σ²)² s², and its Hessian diagonal is 2σ² Σ a.
"""

import copy

import pytest
import torch
from backpack import backpack as bp_context
from backpack import extend
from backpack.extensions import BatchDiagHessian, DiagGGNExact, DiagHessian, SumGradSquared
from torch import nn

import fishertut as ft
from helpers import assert_dicts_close
from problems import PROBLEMS

SUPPORTED = [
    "cat-sigmoid-1h",
    "cat-tanh-2h",
    "cat-relu-2h",
    "binary-tanh-1h",
    "cat-sigmoid-4h-nobias",
    "gauss-tanh-1h",
    "gauss-sigmoid-2h-sigma0.5",
    "gauss-relu-2h-D3",
]


def _run_backpack(problem, labels, extensions):
    model = extend(copy.deepcopy(problem.model))
    if problem.family == "categorical":
        loss_fn, scale = extend(nn.CrossEntropyLoss(reduction="sum")), 1.0
    else:
        loss_fn, scale = extend(nn.MSELoss(reduction="sum")), 2 * problem.sigma**2
    with bp_context(*extensions):
        loss_fn(model(problem.x), labels).backward()
    return model, scale


@pytest.mark.parametrize("pid", SUPPORTED)
def test_against_backpack(pid):
    problem = PROBLEMS[pid]()
    fam = problem.fishertut_family()
    n = problem.x.shape[0]
    with torch.no_grad():
        labels = fam.sample(problem.model(problem.x), 1, torch.Generator().manual_seed(1))[:, 0]
    model, scale = _run_backpack(problem, labels, [DiagGGNExact(), SumGradSquared(), DiagHessian()])
    names = [k for k, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    exact = {k: params[k].diag_ggn_exact / (scale * n) for k in names}
    i1 = {k: params[k].sum_grad_squared / (scale**2 * n) for k in names}
    i2 = {k: params[k].diag_h / (scale * n) for k in names}
    assert_dicts_close(ft.fisher_diagonal(problem.model, problem.x, fam, "exact"), exact, what="DiagGGNExact")
    assert_dicts_close(
        ft.fisher_diagonal(problem.model, problem.x, fam, "i1", targets=labels), i1, what="SumGradSquared"
    )
    assert_dicts_close(ft.fisher_diagonal(problem.model, problem.x, fam, "i2", targets=labels), i2, what="DiagHessian")


@pytest.mark.parametrize("pid", ["cat-tanh-2h", "gauss-sigmoid-2h-sigma0.5"])
def test_per_sample_i2_against_batch_diag_hessian(pid):
    problem = PROBLEMS[pid]()
    fam = problem.fishertut_family()
    gen = torch.Generator().manual_seed(2)
    terms = ft.estimator_terms(problem.model, problem.x, fam, generator=gen)
    model, scale = _run_backpack(problem, terms.labels[:, 0], [BatchDiagHessian()])
    ref = {k: p.diag_h_batch / scale for k, p in model.named_parameters()}
    assert_dicts_close({k: v[:, 0] for k, v in terms.i2.items()}, ref, what="BatchDiagHessian")
