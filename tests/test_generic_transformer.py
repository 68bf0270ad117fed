"""A small pre-LN transformer block runs exactly on the generic engine.

LayerNorm, ``nn.MultiheadAttention``, a GELU MLP and residual additions: the report against the torch.func
oracle, and the piecewise-linear parameters.
"""

import warnings

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import fishertut as ft
import oracle
from fishertut.engines.graph.trace import piecewise_linear_parameters
from helpers import assert_dicts_close, mean0


class PreLNBlock(nn.Module):
    def __init__(self, d=4, heads=2, tokens=3, classes=3):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.head = nn.Linear(d * tokens, classes)

    def forward(self, x):
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        x = x + self.mlp(self.ln2(x))
        return self.head(x.flatten(1))


def test_pre_ln_transformer_block_on_the_generic_engine(one_thread):
    torch.manual_seed(0)
    model = PreLNBlock().double().eval()
    x = torch.randn(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    problem = oracle.Problem("pre-ln-block", model, x, "categorical")
    rep = ft.variance_report(model, x, ft.Categorical(), path="generic")
    assert rep.path == "generic"
    auto = ft.variance_report(model, x, ft.Categorical())
    assert auto.path == "transformer"  # the sequence models' fast path, the same numbers
    # the oracle's forward-over-reverse Hessians need attention's composite (math) kernel
    with sdpa_kernel([SDPBackend.MATH]):
        ref = oracle.conditional(problem)
    for field in ("fisher", "var_i1", "var_i2"):
        assert_dicts_close(getattr(rep, field), mean0(ref[field]), what=field)
        assert_dicts_close(getattr(auto, field), mean0(ref[field]), what=field)
    # only what lies after the last curved operation (the GELU, LayerNorm, attention) is piecewise linear
    assert piecewise_linear_parameters(model) == {"mlp.2.weight", "mlp.2.bias", "head.weight", "head.bias"}
    assert rep.piecewise_linear == piecewise_linear_parameters(model)


def test_attention_runs_without_the_fused_kernel_and_without_warnings(one_thread):
    # In float32 eval mode PyTorch would take its fused attention kernel, which vmap can only loop over
    # (with a UserWarning); the engine turns that fast path off while it works and restores the setting.
    torch.manual_seed(0)
    model = PreLNBlock().eval()
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))
    assert torch.backends.mha.get_fastpath_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = ft.variance_report(model, x, ft.Categorical())
    assert torch.backends.mha.get_fastpath_enabled()
    ref = ft.variance_report(model.double(), x.double(), ft.Categorical())
    for field in ("fisher", "var_i1", "var_i2"):
        assert_dicts_close(getattr(rep, field), getattr(ref, field), rtol=1e-4, what=field)
