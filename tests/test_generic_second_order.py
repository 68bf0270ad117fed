"""The generic engine's second derivatives through normalisation layers, whose fused kernels mislead forward mode.

PyTorch's forward-over-forward rule for LayerNorm and instance norm is wrong with respect to their input, so the
engine runs ``nn.LayerNorm`` as a composite and checks forward mode against reverse mode once per engine,
falling back to reverse mode where they differ (e.g. ``F.layer_norm`` called inside a custom ``forward``).
Every case is checked against the torch.func oracle (reverse-mode Hessians) in float64.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fishertut.engines.composites import composites
from fishertut.engines.generic import GenericEngine
from test_user_models import assert_exact


class FunctionalLayerNorm(nn.Module):
    """``F.layer_norm`` written inside ``forward``: no module for the engine to replace."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.weight)


def _mlp_with(norm: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), norm, nn.Tanh(), nn.Linear(5, 3)).double().eval()


def _conv_with(norm: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(2, 3, 3), norm, nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4, 3)).double().eval()


CASES = {
    "layernorm": lambda: (_mlp_with(nn.LayerNorm(5)), torch.randn(5, 4, dtype=torch.float64)),
    "layernorm-no-affine": lambda: (
        _mlp_with(nn.LayerNorm(5, elementwise_affine=False)),
        torch.randn(5, 4, dtype=torch.float64),
    ),
    "functional-layernorm": lambda: (_mlp_with(FunctionalLayerNorm(5)), torch.randn(5, 4, dtype=torch.float64)),
    "instancenorm": lambda: (
        _conv_with(nn.InstanceNorm1d(3, affine=True)),
        torch.randn(5, 2, 6, dtype=torch.float64),
    ),
    "groupnorm": lambda: (_conv_with(nn.GroupNorm(1, 3)), torch.randn(5, 2, 6, dtype=torch.float64)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("family", ["categorical", "gaussian"])
def test_normalisation_layers_are_exact_on_the_generic_engine(case, family):
    model, x = CASES[case]()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():  # off their initial values, so that every term is non-trivial
            p.add_(0.2 * torch.randn_like(p))
    assert_exact(model, x, "generic", family=family, sigma=0.8)


@pytest.mark.parametrize(
    "case,agrees",
    [("layernorm", True), ("groupnorm", True), ("functional-layernorm", False), ("instancenorm", False)],
)
def test_forward_mode_check_falls_back_exactly_where_torch_is_wrong(case, agrees):
    model, x = CASES[case]()
    engine = GenericEngine(model)
    with composites(model):
        engine._choose_mode(x[:1])
    assert engine.forward_mode is agrees


def test_forward_mode_check_keeps_forward_mode_on_ordinary_models():
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Sigmoid(), nn.Linear(6, 3)).to(dtype)
        engine = GenericEngine(model)
        engine._choose_mode(torch.randn(1, 4, dtype=dtype))
        assert engine.forward_mode


def test_composites_restore_the_modules_and_the_attention_setting():
    norm, prelu = nn.LayerNorm(3), nn.PReLU()
    model = nn.Sequential(nn.Linear(3, 3), norm, prelu, norm, nn.Linear(3, 2))
    x = torch.randn(4, 3)
    before = model(x)
    with composites(model):
        assert "forward" in vars(norm) and "forward" in vars(prelu)
        assert not torch.backends.mha.get_fastpath_enabled()
        torch.testing.assert_close(model(x), before)
    assert "forward" not in vars(norm) and "forward" not in vars(prelu)
    assert torch.backends.mha.get_fastpath_enabled()
    assert torch.equal(model(x), before)
