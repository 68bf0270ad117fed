"""Property: on random ``nn.Sequential`` models, the automatic path is exact (torch.func oracle) or refuses clearly.

Architectures come from a small grammar: depth, widths, every activation of the layer-wise engine with random
constructor arguments (and two it does not support), reused instances (activations, Linear layers, nested
blocks), nested blocks, in-place flags, eval-mode dropout, ``Flatten`` of image-shaped inputs, forward hooks
(on the container or a submodule), both families and the Gaussian's sigma. The test also predicts which
engine the automatic path must take, and checks that ``path="layerwise"`` refuses the others.
"""

from __future__ import annotations

import copy

import torch
from hypothesis import event, given, note
from hypothesis import strategies as st
from torch import nn

import fishertut as ft
import oracle
from oracle import Problem

# name: (strategy for the constructor's arguments, constructor)
ACTIVATIONS = {
    "sigmoid": (st.just({}), lambda a: nn.Sigmoid()),
    "tanh": (st.just({}), lambda a: nn.Tanh()),
    "softplus": (
        st.fixed_dictionaries({"beta": st.floats(0.5, 2.0), "threshold": st.floats(1.0, 20.0)}),
        lambda a: nn.Softplus(**a),
    ),
    "elu": (st.fixed_dictionaries({"alpha": st.floats(0.1, 2.0), "inplace": st.booleans()}), lambda a: nn.ELU(**a)),
    "gelu": (st.fixed_dictionaries({"approximate": st.sampled_from(["none", "tanh"])}), lambda a: nn.GELU(**a)),
    "silu": (st.fixed_dictionaries({"inplace": st.booleans()}), lambda a: nn.SiLU(**a)),
    "relu": (st.fixed_dictionaries({"inplace": st.booleans()}), lambda a: nn.ReLU(**a)),
    "leaky_relu": (
        st.fixed_dictionaries({"negative_slope": st.floats(0.01, 0.5), "inplace": st.booleans()}),
        lambda a: nn.LeakyReLU(**a),
    ),
    "hardtanh": (
        st.fixed_dictionaries(
            {"min_val": st.floats(-2.0, -0.5), "max_val": st.floats(0.5, 2.0), "inplace": st.booleans()}
        ),
        lambda a: nn.Hardtanh(**a),
    ),
    "mish": (st.fixed_dictionaries({"inplace": st.booleans()}), lambda a: nn.Mish(**a)),
}


@st.composite
def activations(draw, pool):
    """A fresh activation, or (if any) an instance already used in this model."""
    if pool and draw(st.booleans()):
        return draw(st.sampled_from(pool))
    name = draw(st.sampled_from(sorted(ACTIVATIONS)))
    args, make = ACTIVATIONS[name]
    act = make(draw(args))
    pool.append(act)
    return act


@st.composite
def models(draw):
    """``(model, x, family, sigma, layerwise_expected)`` for a random float64 network and inputs."""
    family = draw(st.sampled_from(["categorical", "gaussian"]))
    outputs = draw(st.integers(2, 3)) if family == "categorical" else draw(st.integers(1, 2))
    sigma = draw(st.floats(0.3, 2.0))
    depth = draw(st.integers(0, 3))
    widths = draw(st.lists(st.integers(1, 4), min_size=depth + 1, max_size=depth + 1)) + [outputs]
    torch.manual_seed(draw(st.integers(0, 2**16)))
    image = draw(st.booleans())
    layers, pool, linears = [], [], {}
    if image:
        layers.append(nn.Flatten())
    layerwise = True
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        lin = linears.get((a, b)) if draw(st.integers(0, 3)) == 0 else None  # reuse a Linear of this shape
        if lin is None:
            lin = linears[(a, b)] = nn.Linear(a, b, bias=draw(st.booleans()))
        else:
            layerwise = False
        block = [lin]
        if draw(st.integers(0, 4)) == 0:
            block.append(nn.Dropout(draw(st.floats(0.0, 0.9))))
        if i < depth:
            act = draw(activations(pool))
            layerwise &= _activation_supported(act)
            block.append(act)
        if draw(st.booleans()):
            nested = nn.Sequential(*block)
            layers.append(nested)
            if i < depth and widths[i] == widths[i + 1] and draw(st.integers(0, 3)) == 0:
                layers.append(nested)  # the same block twice: its Linear is reused
                layerwise = False
        else:
            layers.extend(block)
    model = nn.Sequential(*layers).double().eval()
    hook = draw(st.sampled_from(["none", "none", "pre-container", "forward-submodule"]))
    if hook == "pre-container":
        model.register_forward_pre_hook(lambda mod, inp: (1.5 * inp[0],))
    elif hook == "forward-submodule":
        target = draw(st.sampled_from([m for m in model.modules() if m is not model]))
        target.register_forward_hook(lambda mod, inp, out: out * 0.8 + 0.1)
    layerwise &= hook == "none"
    n = draw(st.integers(1, 3))
    shape = (n, 1, widths[0]) if image else (n, widths[0])
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    return model, x, family, sigma, layerwise


def _activation_supported(act: nn.Module) -> bool:
    """Whether the layer-wise engine has closed-form derivatives for ``act`` (all of the grammar but two)."""
    return not isinstance(act, (nn.Hardtanh, nn.Mish))


def _oracle(model, x, family, sigma):
    clean = copy.deepcopy(model)
    for m in clean.modules():
        if getattr(m, "inplace", False):
            m.inplace = False
    ref = oracle.conditional_by_chain_rule(Problem("random", clean, x, family, sigma))
    fisher = {k: v.mean(0) for k, v in ref["fisher"].items()}
    return {
        "fisher": fisher,
        "var_i1": {k: v.mean(0) for k, v in ref["var_i1"].items()},
        "var_i2": {k: v.mean(0) for k, v in ref["var_i2"].items()},
        "var_x": {k: (v - fisher[k]).square().mean(0) for k, v in ref["fisher"].items()},
    }


@given(models())
def test_automatic_path_is_exact_or_refuses_clearly(case):
    model, x, family, sigma, layerwise = case
    note(repr(model))
    fam = ft.Categorical() if family == "categorical" else ft.Gaussian(sigma)
    before = [(n, type(p), p.detach().clone()) for n, p in model.named_parameters(remove_duplicate=False)]
    try:
        rep = ft.variance_report(model, x, fam)
    except (ft.UnsupportedModelError, ValueError, TypeError) as err:
        event("refused")
        assert str(err) and type(err).__module__.startswith(("fishertut", "builtins"))
        return
    after = [(n, type(p), p.detach()) for n, p in model.named_parameters(remove_duplicate=False)]
    assert all(a[:2] == b[:2] and torch.equal(a[2], b[2]) for a, b in zip(before, after)), "the model was altered"
    event(f"exact on {rep.path}")
    assert rep.path == ("layerwise" if layerwise else "generic")
    ref = _oracle(model, x, family, sigma)
    fourth = (1 + max(v.abs().max().item() for v in ref["fisher"].values())) ** 2
    for field, want in ref.items():
        got = getattr(rep, field)
        assert set(got) == set(want)
        for k in want:
            err = (got[k] - want[k]).abs().max().item()
            assert err <= 1e-9 * want[k].abs().max().item() + 1e-12 * fourth, (field, k, err)
    if not layerwise:
        try:
            ft.fisher_diagonal(model, x, fam, path="layerwise")
        except ft.UnsupportedModelError as err:
            assert "layer-wise path" in str(err) or "use path='generic'" in str(err)
        else:
            raise AssertionError("path='layerwise' accepted a model it cannot honour")
