"""The graph engine (convolutional and residual networks) against the generic engine, the oracle and BackPACK.

All in float64; also the engine choice, its refusals, and piecewise-linear detection.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fishertut as ft
import oracle
from fishertut.engines.graph.engine import GraphEngine
from fishertut.engines.graph.trace import piecewise_linear_parameters
from graph_problems import GRAPH_PROBLEMS, ResNetTiny
from helpers import assert_dicts_close, mean0

FIELDS = ("fisher", "var_i1", "var_i2", "var_x")
BOUNDS = ("v1_lower", "v1_upper", "v2_lower", "v2_upper")


def _curved_params(model):
    return {n for n, p in model.named_parameters()} - piecewise_linear_parameters(model)


@pytest.mark.parametrize("pid", sorted(GRAPH_PROBLEMS))
def test_report_agrees_with_the_generic_engine(pid, one_thread):
    problem = GRAPH_PROBLEMS[pid]()
    fam = problem.fishertut_family()
    a = ft.variance_report(problem.model, problem.x, fam)
    b = ft.variance_report(problem.model, problem.x, fam, path="generic")
    assert a.path == "graph" and b.path == "generic"
    for field in FIELDS:
        assert_dicts_close(getattr(a, field), getattr(b, field), what=field)
    for name in BOUNDS:
        assert_dicts_close(getattr(a.bounds, name), getattr(b.bounds, name), what=name)
    assert a.piecewise_linear == b.piecewise_linear


@pytest.mark.parametrize("pid", sorted(GRAPH_PROBLEMS))
def test_sampled_estimators_agree_with_the_generic_engine(pid, one_thread):
    problem = GRAPH_PROBLEMS[pid]()
    fam = problem.fishertut_family()
    for est in ("exact", "i1", "i2"):
        got = {}
        for path in ("graph", "generic"):
            gen = None if est == "exact" else torch.Generator().manual_seed(7)
            got[path] = ft.fisher_diagonal(
                problem.model,
                problem.x,
                fam,
                est,
                samples_per_input=1 if est == "exact" else 2,
                generator=gen,
                path=path,
            )
        assert got["graph"].path == "graph"
        assert_dicts_close(got["graph"], got["generic"], what=est)


@pytest.mark.parametrize(
    "pid",
    [
        "residual-tanh",
        "gauss-residual-tanh-bn-sigma0.5",
        "conv1d-stride2-elu-maxpool1d",
        "unflatten-lenet-tanh-flat-inputs",
    ],
)
def test_report_and_terms_against_the_oracle(pid, one_thread):
    problem = GRAPH_PROBLEMS[pid]()
    fam = problem.fishertut_family()
    ref = oracle.conditional(problem)
    stats = ft.per_input_statistics(problem.model, problem.x, fam)
    assert stats.path == "graph"
    assert_dicts_close(stats.fisher, ref["fisher"], what="fisher")
    assert_dicts_close(stats.var_i1, ref["var_i1"], what="var_i1")
    assert_dicts_close(stats.var_i2, ref["var_i2"], what="var_i2")
    labels = fam.sample(problem.model(problem.x).detach(), 2, torch.Generator().manual_seed(3))
    terms = ft.estimator_terms(
        problem.model, problem.x, fam, samples_per_input=2, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(terms.labels, labels)
    i1, i2 = oracle.estimator_values(problem, labels)
    assert_dicts_close({k: v.mean((0, 1)) for k, v in terms.i1.items()}, i1, what="i1")
    assert_dicts_close({k: v.mean((0, 1)) for k, v in terms.i2.items()}, i2, what="i2")


def test_against_backpack_on_a_sequential_cnn(one_thread):
    from backpack import backpack as bp_context
    from backpack import extend
    from backpack.extensions import DiagGGNExact, DiagHessian, SumGradSquared

    problem = GRAPH_PROBLEMS["lenet-tanh-maxpool"]()
    fam = problem.fishertut_family()
    n = problem.x.shape[0]
    with torch.no_grad():
        labels = fam.sample(problem.model(problem.x), 1, torch.Generator().manual_seed(1))[:, 0]
    model = extend(copy.deepcopy(problem.model))
    with bp_context(DiagGGNExact(), SumGradSquared(), DiagHessian()):
        extend(nn.CrossEntropyLoss(reduction="sum"))(model(problem.x), labels).backward()
    params = dict(model.named_parameters())
    exact = {k: p.diag_ggn_exact / n for k, p in params.items()}
    i1 = {k: p.sum_grad_squared / n for k, p in params.items()}
    i2 = {k: p.diag_h / n for k, p in params.items()}
    assert_dicts_close(
        ft.fisher_diagonal(problem.model, problem.x, fam, "exact", path="graph"), exact, what="DiagGGNExact"
    )
    assert_dicts_close(
        ft.fisher_diagonal(problem.model, problem.x, fam, "i1", targets=labels, path="graph"), i1, what="SumGradSquared"
    )
    assert_dicts_close(
        ft.fisher_diagonal(problem.model, problem.x, fam, "i2", targets=labels, path="graph"), i2, what="DiagHessian"
    )


class Reused(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.head = nn.Linear(64, 3)

    def forward(self, x):
        return self.head(torch.flatten(torch.tanh(self.conv(self.conv(x))), 1))


class Branchy(nn.Module):
    """A Python integer from a shape: torch.fx cannot trace it (torch.func can)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x[..., : int(x.shape[-1])])


def _refusals():
    conv = lambda *rest: nn.Sequential(nn.Conv2d(1, 2, 3), *rest, nn.Flatten(), nn.Linear(72, 3))  # noqa: E731
    hooked = conv(nn.Tanh())
    hooked[0].register_forward_hook(lambda m, i, o: o * 2)
    param = conv(nn.Tanh())
    torch.nn.utils.parametrizations.weight_norm(param[0])
    return [
        ("layernorm", conv(nn.LayerNorm([2, 6, 6])), "LayerNorm"),
        ("inplace-relu", conv(nn.ReLU(inplace=True)), "in-place"),
        ("reused-module", Reused(), "called more than once"),
        ("hook", hooked, "hooks"),
        ("parametrization", param, "parametrization"),
        (
            "circular-padding",
            nn.Sequential(
                nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"), nn.Tanh(), nn.Flatten(), nn.Linear(128, 3)
            ),
            "padding_mode",
        ),
        ("untraceable", Branchy(), "torch.fx could not trace"),
        ("hardtanh", conv(nn.Hardtanh()), "Hardtanh"),
    ]


@pytest.mark.parametrize("pid,model,needle", _refusals(), ids=[r[0] for r in _refusals()])
def test_forced_graph_path_refuses_naming_the_layer_and_auto_falls_back(pid, model, needle):
    model = model.double().eval()
    x = torch.randn(2, *((4,) if pid == "untraceable" else (1, 8, 8)), dtype=torch.float64)
    with pytest.raises(ft.UnsupportedModelError, match=needle):
        ft.fisher_diagonal(model, x, ft.Categorical(), path="graph")
    assert ft.fisher_diagonal(model, x, ft.Categorical()).path == "generic"


def test_forced_graph_path_refuses_an_unflatten_of_the_batch_axis():
    model = nn.Sequential(nn.Unflatten(0, (1, 2)), nn.Flatten(0, 1), nn.Linear(4, 3)).double().eval()
    x = torch.randn(2, 4, dtype=torch.float64)
    with pytest.raises(ft.UnsupportedModelError, match=r"Unflatten must split a non-batch axis.*dim=0"):
        ft.fisher_diagonal(model, x, ft.Categorical(), path="graph")


def test_forced_graph_path_refuses_a_linear_layer_on_images():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Linear(6, 3)).double().eval()
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    with pytest.raises(ft.UnsupportedModelError, match=r"module '2' \(Linear\) gets inputs with 4 dims"):
        ft.fisher_diagonal(model, x, ft.Categorical(), path="graph")


class Broadcast(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(128, 3)

    def forward(self, x):
        y = torch.tanh(self.conv(x))
        return self.head(torch.flatten(y + self.pool(y), 1))


def test_broadcasting_addition_is_refused_on_the_graph_path_and_auto_falls_back(one_thread):
    model = Broadcast().double().eval()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ft.UnsupportedModelError, match="broadcasting"):
        ft.fisher_diagonal(model, x, ft.Categorical(), path="graph")
    assert ft.fisher_diagonal(model, x, ft.Categorical()).path == "generic"


def test_frozen_layers_in_the_middle(one_thread):
    problem = GRAPH_PROBLEMS["batchnorm-eval-tanh"]()
    problem.model[0].weight.requires_grad_(False)
    problem.model[4].requires_grad_(False)
    problem.model[5].bias.requires_grad_(False)
    fam = problem.fishertut_family()
    a = ft.variance_report(problem.model, problem.x, fam)
    b = ft.variance_report(problem.model, problem.x, fam, path="generic")
    assert a.path == "graph" and set(a.fisher) == {"0.bias", "1.weight", "1.bias", "5.weight", "7.weight", "7.bias"}
    for field in FIELDS:
        assert_dicts_close(getattr(a, field), getattr(b, field), what=field)


def test_training_mode_batch_norm_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 3)).double()
    assert "training mode" in GraphEngine.unsupported_reason(model)
    with pytest.raises(ValueError, match="training mode"):
        ft.fisher_diagonal(model, torch.randn(2, 1, 8, 8, dtype=torch.float64), ft.Categorical(), path="graph")


def test_mlp_stays_on_the_layerwise_path():
    model = ft.lab.models.mlp([4, 5, 3], "tanh", dtype=torch.float64)
    assert ft.fisher_diagonal(model, torch.randn(2, 4, dtype=torch.float64), ft.Categorical()).path == "layerwise"


def test_piecewise_linear_detection_from_the_graph():
    relu = GRAPH_PROBLEMS["lenet-relu-leaky"]().model
    assert piecewise_linear_parameters(relu) == {n for n, _ in relu.named_parameters()}
    tanh = GRAPH_PROBLEMS["lenet-tanh-maxpool"]().model
    assert piecewise_linear_parameters(tanh) == {"9.weight", "9.bias"}
    # ReLU inside the block, but the stem's tanh lies between... only the stem sees a curved op below itself
    res = ResNetTiny(F.relu, norm=True).double().eval()
    assert _curved_params(res) == {"stem.weight", "stem.bias"}
    # a tanh after the residual addition makes the whole block curved
    assert _curved_params(ResNetTiny(torch.tanh, norm=False)) == {
        n for n, _ in ResNetTiny(torch.tanh, norm=False).named_parameters()
    } - {"head.weight", "head.bias"}
    assert piecewise_linear_parameters(Reused()) == {"head.weight", "head.bias"}
    assert piecewise_linear_parameters(Branchy()) == frozenset()


@pytest.mark.parametrize("path", ["layerwise", "graph", "generic"])
def test_piecewise_linear_parameters_are_recorded_and_exactly_zero_on_every_engine(path, one_thread):
    if path == "layerwise":
        model = ft.lab.models.mlp([4, 5, 4, 3], "relu", dtype=torch.float64)
        x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        problem = oracle.Problem("mlp-relu", model, x, "categorical")
    else:
        problem = GRAPH_PROBLEMS["residual-relu-bn"]()
    fam = problem.fishertut_family()
    rep = ft.variance_report(problem.model, problem.x, fam, path=path)
    proven = piecewise_linear_parameters(problem.model)
    assert rep.piecewise_linear == proven and proven
    for k in proven:
        assert torch.all(rep.var_i2[k] == 0)
    ref = oracle.conditional(problem)
    assert_dicts_close(rep.var_i2, mean0(ref["var_i2"]), what="var_i2")
    for est in ("exact", "i2"):
        res = ft.fisher_diagonal(
            problem.model,
            problem.x,
            fam,
            est,
            path=path,
            generator=None if est == "exact" else torch.Generator().manual_seed(1),
        )
        assert res.piecewise_linear == proven


def test_tied_weights_are_refused_on_the_graph_path_and_prove_nothing(one_thread):
    torch.manual_seed(4)
    model = (
        nn.Sequential(
            nn.Conv2d(1, 1, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16, 16),
            nn.ReLU(),
            nn.Linear(16, 16),
            nn.Linear(16, 3),
        )
        .double()
        .eval()
    )
    model[5].weight = model[3].weight
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    with pytest.raises(ft.UnsupportedModelError, match="shared by several modules"):
        ft.fisher_diagonal(model, x, ft.Categorical(), path="graph")
    rep = ft.variance_report(model, x, ft.Categorical())
    assert rep.path == "generic" and rep.piecewise_linear == frozenset()
