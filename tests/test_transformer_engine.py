"""The transformer engine: exact against torch.func brute force, chosen only for the models it takes.

Tiny decoder-only GPTs (``fishertut.lab.gpt``) in float64, in each way of writing attention, normalisation,
activation and positions. Independent references: ``jacrev``/``hessian`` of the outputs (the engine's
channel derivatives and second derivatives), the oracle's enumeration over labels (the report), and an
enumeration over each position's labels (the Fisher of independent per-position categoricals).
"""

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad
from torch.nn.attention import SDPBackend, sdpa_kernel

import fishertut as ft
import oracle
from fishertut.engines import select_engine
from fishertut.engines.transformer import TransformerEngine
from fishertut.lab.gpt import tiny_gpt
from helpers import assert_dicts_close, mean0

V, T = 5, 3
VARIANTS = [
    {"attention": "mha"},
    {"attention": "sdpa", "norm": "rms", "activation": "silu", "positions": "parameter"},
    {"attention": "manual", "norm": "rms"},
]


def _gpt(**options):
    model = tiny_gpt(vocab=V, context=T, d=4, heads=2, layers=1, dtype=torch.float64, **options)
    with torch.no_grad():  # confident, non-uniform outputs
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
    return model


def _tokens(n=2, seed=0):
    return torch.randint(0, V, (n, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: o["attention"])
def test_channel_and_second_derivatives_against_jacrev_and_hessian(one_thread, options):
    model, x = _gpt(flat=True, **options), _tokens()
    engine = select_engine(model, x, "auto")
    assert isinstance(engine, TransformerEngine)
    gen = torch.Generator().manual_seed(3)
    h, tape = engine.forward(x)
    c = h[0].numel()
    channels = torch.randn(2, 4, c, generator=gen, dtype=torch.float64)
    curv_channels = torch.randn(2, 2, c, generator=gen, dtype=torch.float64)
    terms = {t.targets[0][0]: t for t in engine.backward(tape, channels, curv_channels)}
    with sdpa_kernel([SDPBackend.MATH]):  # the fused CPU kernel has no double backward
        _, v, u = oracle.output_derivatives(oracle.Problem("gpt", model, x, "categorical"))
    offset = 0
    for name, p in model.named_parameters():
        sl = slice(offset, offset + p.numel())
        offset += p.numel()
        torch.testing.assert_close(terms[name].jac, channels @ v[:, :, sl], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(terms[name].curv, curv_channels @ u[:, :, sl], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("options", VARIANTS[:2], ids=lambda o: o["attention"])
def test_report_against_the_oracle(one_thread, options):
    model = _gpt(flat=True, **options)
    problem = oracle.Problem("gpt", model, _tokens(), "categorical")
    rep = ft.variance_report(model, problem.x, ft.Categorical())
    assert rep.path == "transformer"
    with sdpa_kernel([SDPBackend.MATH]):
        ref = oracle.conditional(problem)
    for field in ("fisher", "var_i1", "var_i2"):
        assert_dicts_close(getattr(rep, field), mean0(ref[field]), what=field)


def test_per_position_fisher_with_block_channels_against_enumeration(one_thread):
    # Independent categoricals per position: the Fisher of a sequence is the sum over positions of each
    # position's Fisher, reached through the engine with channels that each live on one position.
    model, x = _gpt(), _tokens()
    engine = select_engine(model, x, "transformer")
    h, tape = engine.forward(x)
    fam = ft.Categorical()
    factors = fam.covariance_factor(h.reshape(-1, V)).reshape(2, T, V, V)
    channels = torch.zeros(2, T, V, T, V, dtype=h.dtype)
    for t in range(T):
        channels[:, t, :, t, :] = factors[:, t]
    got = {
        t.targets[0][0]: t.jac.square().sum(1).mean(0)
        for t in engine.backward(tape, channels.reshape(2, T * V, T * V), None)
    }
    params = {n: p.detach() for n, p in model.named_parameters()}

    def log_prob(ps, xi, t, y):
        return torch.log_softmax(functional_call(model, ps, (xi.unsqueeze(0),))[0, t], -1)[y]

    expected = {n: torch.zeros(p.numel(), dtype=p.dtype) for n, p in params.items()}
    for xi, hi in zip(x, h):
        for t in range(T):
            for y, py in enumerate(torch.softmax(hi[t], -1)):
                s = grad(log_prob)(params, xi, t, y)
                for n in expected:
                    expected[n] += py * s[n].flatten().square() / len(x)
    assert_dicts_close(got, expected, what="per-position fisher")


def test_per_sequence_i1_is_one_backward_per_label(one_thread):
    # Î1 with labels drawn from the model: the square of the summed sequence score, against torch.func
    model, x = _gpt(flat=True), _tokens()
    gen = torch.Generator().manual_seed(5)
    est = ft.fisher_diagonal(model, x, ft.Categorical(), "i1", generator=gen)
    assert est.path == "transformer"
    labels = ft.estimator_terms(model, x, ft.Categorical(), generator=torch.Generator().manual_seed(5)).labels
    params = {n: p.detach() for n, p in model.named_parameters()}

    def log_prob(ps, xi, y):
        return torch.log_softmax(functional_call(model, ps, (xi.unsqueeze(0),))[0], -1)[y]

    scores = [grad(log_prob)(params, xi, y[0]) for xi, y in zip(x, labels)]
    expected = {n: sum(s[n].square() for s in scores) / len(x) for n in params}
    assert_dicts_close(est, expected, what="i1")


class _Softplus(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, 4)
        self.act = nn.Softplus()
        self.out = nn.Linear(4, V)

    def forward(self, x):
        return self.out(self.act(self.emb(x))).flatten(1)


def test_models_it_does_not_take_fall_back_or_are_refused_by_name(one_thread):
    x = _tokens()
    model = _Softplus().double()
    with pytest.raises(ft.UnsupportedModelError, match=r"module 'act' \(Softplus\)"):
        ft.fisher_diagonal(model, x, ft.Categorical(), path="transformer")
    assert ft.fisher_diagonal(model, x, ft.Categorical()).path == "generic"
    mlp = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)).double()
    with pytest.raises(ft.UnsupportedModelError, match="not a sequence model"):
        ft.fisher_diagonal(mlp, torch.randn(2, 3, dtype=torch.float64), ft.Categorical(), path="transformer")
    gpt = _gpt(flat=True)
    handle = gpt.blocks[0].mlp[0].register_forward_hook(lambda m, i, o: o * 2)
    try:
        with pytest.raises(ft.UnsupportedModelError, match="forward hooks"):
            ft.fisher_diagonal(gpt, x, ft.Categorical(), path="transformer")
        assert ft.fisher_diagonal(gpt, x, ft.Categorical()).path == "generic"
    finally:
        handle.remove()
    gpt.blocks[0].mlp[1].forward = lambda z: z.tanh()
    with pytest.raises(ft.UnsupportedModelError, match=r"'blocks.0.mlp.1' \(GELU\) has its forward replaced"):
        ft.fisher_diagonal(gpt, x, ft.Categorical(), path="transformer")


def test_float32_agrees_with_float64_and_generic(one_thread):
    model = _gpt(flat=True)
    x = _tokens(3)
    ref = ft.fisher_diagonal(model, x, ft.Categorical(), path="generic")
    got = ft.fisher_diagonal(model.float(), x, ft.Categorical())
    assert got.path == "transformer"
    assert_dicts_close(got, ref, rtol=1e-4, what="float32 fisher")


class _Cube(torch.autograd.Function):
    """``x**3`` with a hand-written backward that is itself differentiable (exact second derivatives)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x**3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * g * x * x


class _CubedBlock(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, h):
        return h + 0.1 * _Cube.apply(self.lin(h))


def test_a_custom_function_sends_the_model_to_the_generic_engine_exact(one_thread):
    """Second derivatives through a custom Function are the generic engine's to check: the report stays exact."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(V, 4), _CubedBlock(4), nn.Flatten(), nn.Linear(4 * T, V)).double()
    problem = oracle.Problem("cubed", model, _tokens(n=3), "categorical")
    report = ft.variance_report(model, problem.x, ft.Categorical())
    assert report.path == "generic"
    with pytest.raises(ft.UnsupportedModelError, match="custom autograd.Function"):
        ft.variance_report(model, problem.x, ft.Categorical(), path="transformer")
    ref = oracle.conditional(problem)
    for field in ("fisher", "var_i1", "var_i2"):
        assert_dicts_close(getattr(report, field), mean0(ref[field]), what=field)
