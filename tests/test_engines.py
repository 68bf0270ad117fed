"""Engine selection, the generic path on models the layer-wise path cannot take, float32, deeper nets."""

import pytest
import torch
from torch import nn

import fishertut as ft
import oracle
from helpers import assert_dicts_close, mean0
from oracle import Problem


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.inp = nn.Linear(3, 4)
        self.block = nn.Linear(4, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        a = torch.tanh(self.inp(x))
        return self.out(a + torch.sigmoid(self.block(a)))


def test_generic_path_on_a_residual_module_matches_the_oracle():
    torch.manual_seed(0)
    problem = Problem("residual", Residual().double().eval(), torch.randn(3, 3, dtype=torch.float64), "categorical")
    rep = ft.variance_report(problem.model, problem.x, problem.fishertut_family(), path="generic")
    assert rep.path == "generic"
    ref = oracle.conditional(problem)
    assert_dicts_close(rep.fisher, mean0(ref["fisher"]), what="fisher")
    assert_dicts_close(rep.var_i1, mean0(ref["var_i1"]), what="var_i1")
    assert_dicts_close(rep.var_i2, mean0(ref["var_i2"]), what="var_i2")


def test_generic_path_on_a_conv_net_and_image_inputs():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double().eval()
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    problem = Problem("conv", model, x, "categorical")
    F = ft.fisher_diagonal(model, x, ft.Categorical(), path="generic")
    assert F.path == "generic"
    assert_dicts_close(F, mean0(oracle.conditional(problem)["fisher"]), what="fisher")


def test_flatten_first_is_layerwise_and_image_without_flatten_is_rejected():
    model = ft.lab.models.mlp([16, 5, 3], "tanh", dtype=torch.float64, flatten=True)
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    a = ft.variance_report(model, x, ft.Categorical())
    b = ft.variance_report(model, x, ft.Categorical(), path="generic")
    assert a.path == "layerwise"
    assert_dicts_close(a.var_i2, b.var_i2, what="var_i2")
    no_flatten = ft.lab.models.mlp([4, 5, 3], "tanh", dtype=torch.float64)
    # without Flatten the output (3, 2, 3) has positions: each input's Fisher sums its two positions
    x3 = torch.randn(3, 2, 4, dtype=torch.float64)
    per_position = ft.fisher_diagonal(no_flatten, x3.reshape(6, 4), ft.Categorical())
    summed = ft.fisher_diagonal(no_flatten, x3, ft.Categorical())
    assert summed.path == "generic"
    assert_dicts_close(summed, {k: 2 * v for k, v in per_position.items()}, what="positions")
    with pytest.raises(ft.UnsupportedModelError, match="2-D inputs"):
        ft.fisher_diagonal(no_flatten, torch.randn(3, 2, 4, dtype=torch.float64), ft.Categorical(), path="layerwise")


def test_nested_sequential_frozen_layer_and_dropout_in_eval():
    torch.manual_seed(2)
    model = (
        nn.Sequential(
            nn.Sequential(nn.Linear(3, 4), nn.Sigmoid()),
            nn.Dropout(0.5),
            nn.Linear(4, 4),
            nn.Identity(),
            nn.Tanh(),
            nn.Linear(4, 3),
        )
        .double()
        .eval()
    )
    model[0][0].weight.requires_grad_(False)
    x = torch.randn(5, 3, dtype=torch.float64)
    a = ft.variance_report(model, x, ft.Categorical())
    b = ft.variance_report(model, x, ft.Categorical(), path="generic")
    assert a.path == "layerwise" and "0.0.weight" not in a.fisher and "0.0.bias" in a.fisher
    for field in ("fisher", "var_i1", "var_i2", "var_x"):
        assert_dicts_close(getattr(a, field), getattr(b, field), rtol=1e-9, what=field)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "softplus", "gelu", "silu", "elu", "relu"])
def test_float32_agrees_with_float64(activation):
    wide = ft.lab.models.mlp([20, 32, 24, 16, 10], activation, dtype=torch.float64, seed=4)
    x = torch.randn(64, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = ft.variance_report(wide, x, ft.Categorical())
    low = ft.variance_report(wide.float(), x.float(), ft.Categorical())
    for field in ("fisher", "var_i1", "var_i2"):
        got, want = getattr(low, field), getattr(ref, field)
        assert all(v.dtype == torch.float32 for v in got.values())
        assert_dicts_close(got, want, rtol=2e-4, atol_scale=1e-30, what=field)


def test_deep_wide_network_layerwise_equals_generic():
    model = ft.lab.models.mlp([6, 12, 10, 8, 8, 6, 4], "sigmoid", dtype=torch.float64, seed=5)
    x = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for fam in (ft.Categorical(), ft.Gaussian(0.3)):
        a = ft.variance_report(model, x, fam)
        b = ft.variance_report(model, x, fam, path="generic")
        for field in ("fisher", "var_i1", "var_i2", "var_x"):
            assert_dicts_close(getattr(a, field), getattr(b, field), rtol=1e-10, what=field)
        for name in ("v1_lower", "v1_upper", "v2_lower", "v2_upper"):
            assert_dicts_close(getattr(a.bounds, name), getattr(b.bounds, name), rtol=1e-10, what=name)


def test_sample_size_and_estimator_variance_formulas():
    model = ft.lab.models.mlp([4, 6, 3], "tanh", dtype=torch.float64, seed=6)
    x = torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    rep = ft.variance_report(model, x, ft.Categorical())
    var = rep.estimator_variance("i2", num_inputs=7, samples_per_input=3)
    n = rep.sample_size(0.1, delta=0.2, estimator="i2", samples_per_input=3)
    for k in rep.fisher:
        torch.testing.assert_close(var[k], rep.var_x[k] / 7 + rep.var_i2[k] / 21)
        want = torch.ceil((rep.var_x[k] + rep.var_i2[k] / 3) / (0.2 * (0.1 * rep.fisher[k]) ** 2))
        torch.testing.assert_close(n[k], want.clamp_min(1))
        # Chebyshev with N = n: Var / (eps I)^2 <= delta
        v_at_n = rep.var_x[k] / n[k] + rep.var_i2[k] / (n[k] * 3)
        assert (v_at_n / (0.1 * rep.fisher[k]) ** 2 <= 0.2 + 1e-12).all()
    absolute = rep.sample_size(0.01, estimator="i1", relative=False)
    for k in rep.fisher:
        torch.testing.assert_close(absolute[k], torch.ceil((rep.var_x[k] + rep.var_i1[k]) / (0.05 * 1e-4)).clamp_min(1))


def test_covariance_factor_squares_to_the_covariance():
    h = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for fam in (ft.Categorical(), ft.Gaussian(0.4)):
        s = fam.covariance_factor(h)
        torch.testing.assert_close(s.transpose(1, 2) @ s, fam.covariance(h), rtol=1e-13, atol=1e-15)


def test_float32_var_x_survives_cancellation():
    """The float32 report matches float64 where var_x = E[I^2] - E[I]^2 cancels.

    That happens where inputs carry nearly the same Fisher information (e.g. output biases of an untrained net
    on similar inputs).
    """
    model = ft.lab.models.mlp([30, 20, 10], "sigmoid", dtype=torch.float64, seed=8)
    base = torch.rand(1, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    x = base + 1e-2 * torch.randn(500, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ref = ft.variance_report(model, x, ft.Categorical())
    low = ft.variance_report(model.float(), x.float(), ft.Categorical())
    ratio = max((ref.fisher[k].square().max() / ref.var_x[k].max()).item() for k in ref.fisher)
    assert ratio > 1e4, "the test needs strong cancellation"
    assert_dicts_close(low.var_x, ref.var_x, rtol=1e-3, atol_scale=0, what="var_x")
