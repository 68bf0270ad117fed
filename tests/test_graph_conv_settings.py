"""Random convolution settings (seeded sweep) on the graph engine.

Its per-input derivative terms equal the generic engine's, for first derivatives and for diagonal second
derivatives of random output-space channels; forward and backward second derivatives agree.
"""

import random

import pytest
import torch
from torch import nn

from fishertut.engines.generic import GenericEngine
from fishertut.engines.graph.engine import GraphEngine


def _random_net(seed):
    rng = random.Random(seed)
    dim = rng.choice([1, 2])
    conv, pool = (nn.Conv1d, nn.MaxPool1d) if dim == 1 else (nn.Conv2d, nn.MaxPool2d)
    groups = rng.choice([1, 2])
    cin, cout = 2 * rng.choice([1, 2]) if groups == 2 else rng.choice([1, 3]), 2 * rng.choice([1, 2])
    kernel, stride, dilation = rng.choice([1, 2, 3]), rng.choice([1, 2]), rng.choice([1, 2])
    padding = rng.choice([0, 1, 2])
    act = rng.choice([nn.Tanh, nn.Sigmoid, nn.Softplus, nn.ReLU, nn.GELU])
    size = 9
    torch.manual_seed(seed)
    first = conv(
        cin,
        cout,
        kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=rng.choice([True, False]),
    )
    layers = [first, act()]
    if rng.random() < 0.5:
        layers.append(pool(2, ceil_mode=True))
    layers += [conv(cout, 2, 2, bias=rng.choice([True, False])), nn.Tanh(), nn.Flatten()]
    x = torch.randn(3, cin, *([size] * dim), dtype=torch.float64)
    body = nn.Sequential(*layers).double()
    width = body(x).shape[1]
    model = nn.Sequential(*layers, nn.Linear(width, 3)).double().eval()
    return model, x


def _terms(engine, x, channels, curvature):
    if hasattr(engine, "check_input"):
        engine.check_input(x)
    with torch.no_grad():
        _, tape = engine.forward(x)
        out = {}
        for t in engine.backward(tape, channels, curvature):
            for index, (name, _) in enumerate(t.targets):
                a1, a2 = t.activation_power(index, 1), t.activation_power(index, 2)
                if a1 is None:
                    out[name] = (t.jac, t.curv)
                else:
                    out[name] = (
                        (t.jac.unsqueeze(-1) * a1[:, None, None]).flatten(2),
                        (t.curv.unsqueeze(-1) * a2[:, None, None]).flatten(2),
                    )
    return out


@pytest.mark.parametrize("seed", range(12))
def test_random_conv_settings_match_the_generic_engine(seed, one_thread):
    model, x = _random_net(seed)
    gen = torch.Generator().manual_seed(seed)
    channels = torch.randn(3, 2, 3, generator=gen, dtype=torch.float64)
    curvature = torch.randn(3, 2, 3, generator=gen, dtype=torch.float64)
    got = _terms(GraphEngine(model), x, channels, curvature)
    want = _terms(GenericEngine(model), x, channels, curvature)
    assert set(got) == set(want)
    for name in want:
        for a, b, what in zip(got[name], want[name], ("first", "second")):
            scale = b.abs().max().item()
            assert (a - b).abs().max().item() <= 1e-10 * scale + 1e-14, f"{name} {what} derivatives"


@pytest.mark.parametrize("seed", range(12))
def test_forward_and_backward_second_derivatives_agree(seed, one_thread):
    """The first convolution's second derivatives taken forward (tangents) equal those taken backward."""
    model, x = _random_net(seed)
    gen = torch.Generator().manual_seed(seed)
    channels = torch.randn(3, 2, 3, generator=gen, dtype=torch.float64)
    forward, backward = GraphEngine(model, tangents=True), GraphEngine(model, tangents=False)
    got = _terms(forward, x, channels, channels)
    want = _terms(backward, x, channels, channels)
    assert forward.forward_layers == {1} and backward.forward_layers == set()
    for name in want:
        for a, b in zip(got[name], want[name]):
            assert (a - b).abs().max().item() <= 1e-10 * b.abs().max().item() + 1e-14, name
