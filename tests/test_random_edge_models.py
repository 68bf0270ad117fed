"""Property: random models built from the idioms of issue 17 are exact (torch.func oracle) or refused clearly.

A model is a chain of blocks drawn from: Linear + activation, a Linear subclass with its own ``forward``, a
custom ``autograd.Function`` (twice differentiable, or with a backward that is right once only), a
checkpointed block (reentrant or not), and a recurrent block (RNN, GRU or LSTM with random settings); it may
end in a learned 0-d temperature, take its inputs as a mapping passed by keyword (returning an object with
``logits``), and the Gaussian may have one sigma per output. The oracle differentiates an equivalent model
(``torch.tanh`` for the Functions, the checkpointed function run plainly) with the same parameters.

Each example compares ``variance_report`` (Fisher, both conditional variances) and GNB with given labels
(``minibatch=2``, the one-backward path) with the oracle, whose Fisher must be nonzero. ``variance_report``
must refuse a model with a Function that is not twice differentiable (naming it, unless a checkpoint,
which torch.func cannot run, is refused first); GNB needs first derivatives only and must be exact.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from hypothesis import event, given, note, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.checkpoint import checkpoint

import fishertut as ft
import oracle
from oracle import Problem
from test_edge_models import DetachedTanh, SmoothTanh

EXAMPLES = max(10, settings().max_examples // 10)


class ScaledLinear(nn.Linear):
    """A Linear subclass with its own forward: a fast path must not take it for a plain Linear."""

    def forward(self, x):
        return 2.0 * super().forward(x)


class FunctionBlock(nn.Module):
    """Linear, then tanh through a custom autograd.Function (``torch.tanh`` in the reference)."""

    def __init__(self, a, b, function):
        super().__init__()
        self.lin, self.function, self.reference = nn.Linear(a, b), function, False

    def forward(self, x):
        z = self.lin(x)
        return torch.tanh(z) if self.reference else self.function.apply(z)


class CheckpointBlock(nn.Module):
    """Linear + sigmoid under ``torch.utils.checkpoint`` (run plainly in the reference)."""

    def __init__(self, a, b, reentrant):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(a, b), nn.Sigmoid())
        self.reentrant, self.reference = reentrant, False

    def forward(self, x):
        if self.reference:
            return self.inner(x)
        return checkpoint(self.inner, x, use_reentrant=self.reentrant)


class RecurrentBlock(nn.Module):
    """A two-step sequence ``(x, tanh x)`` through a recurrent module; its last output or final state."""

    def __init__(self, a, b, kind, read, **kwargs):
        super().__init__()
        self.rnn, self.read = kind(a, b, **kwargs), read
        self.width = b * (2 if kwargs.get("bidirectional") and read == "output" else 1)

    def forward(self, x):
        seq = torch.stack([x, torch.tanh(x)], 1 if self.rnn.batch_first else 0)
        out, state = self.rnn(seq)
        if self.read == "state":
            h = state[0] if isinstance(self.rnn, nn.LSTM) else state
            return h[-1]
        return out[:, -1] if self.rnn.batch_first else out[-1]


@dataclasses.dataclass
class Output:
    logits: torch.Tensor


class EdgeNet(nn.Module):
    """The blocks in a chain; optional 0-d temperature and keyword inputs ``x`` and ``shift``."""

    def __init__(self, blocks, temperature, keyword):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.t = nn.Parameter(torch.tensor(1.3)) if temperature else None
        self.keyword = keyword

    def run(self, x, shift=None):
        h = self.blocks(x if shift is None else x + shift)
        return h if self.t is None else h / self.t

    def forward(self, *args, **kwargs):
        if self.keyword:
            return Output(self.run(kwargs["x"], kwargs["shift"]))
        return self.run(*args)


class Reference(nn.Module):
    """The oracle's model: the same parameters (names prefixed ``net.``), plain ops, one tensor in."""

    def __init__(self, net, width):
        super().__init__()
        self.net, self.width = net, width

    def forward(self, x):
        if not isinstance(self.net, EdgeNet):
            return self.net(x)
        if self.net.keyword:
            return self.net.run(x[:, : self.width], x[:, self.width :])
        return self.net.run(x)


@st.composite
def blocks(draw, a, b):
    """One block mapping ``a`` features to ``b``; returns ``(block, kind)``."""
    kind = draw(st.sampled_from(["linear", "subclass", "smooth-fn", "detached-fn", "checkpoint", "recurrent"]))
    if kind == "linear":
        return nn.Sequential(nn.Linear(a, b), nn.Tanh()), kind
    if kind == "subclass":
        return nn.Sequential(ScaledLinear(a, b), nn.Sigmoid()), kind
    if kind in ("smooth-fn", "detached-fn"):
        return FunctionBlock(a, b, SmoothTanh if kind == "smooth-fn" else DetachedTanh), kind
    if kind == "checkpoint":
        reentrant = draw(st.booleans())
        return CheckpointBlock(a, b, reentrant), f"checkpoint-{'reentrant' if reentrant else 'plain'}"
    rnn = draw(st.sampled_from([nn.RNN, nn.GRU, nn.LSTM]))
    kwargs = {
        "num_layers": draw(st.integers(1, 2)),
        "batch_first": draw(st.booleans()),
        "bidirectional": draw(st.booleans()),
        "bias": draw(st.booleans()),
    }
    hidden = max(1, b // (2 if kwargs["bidirectional"] else 1))
    block = RecurrentBlock(a, hidden, rnn, draw(st.sampled_from(["output", "state"])), **kwargs)
    read = nn.Linear(block.width, b)
    return nn.Sequential(block, read), f"recurrent-{rnn.__name__}"


@st.composite
def edge_models(draw):
    """``(model, inputs, reference, x, family, sigma, kinds)``."""
    family = draw(st.sampled_from(["categorical", "gaussian"]))
    outputs = draw(st.integers(2, 3)) if family == "categorical" else draw(st.integers(1, 2))
    sigma = draw(st.sampled_from(["one", "per-output"])) if family == "gaussian" else "one"
    sigma = 0.8 if sigma == "one" else torch.linspace(0.5, 1.5, outputs, dtype=torch.float64)
    torch.manual_seed(draw(st.integers(0, 2**16)))
    width = draw(st.integers(1, 3))
    depth = draw(st.integers(1, 2))
    layers, kinds = [], []
    for _ in range(depth):
        block, kind = draw(blocks(width, width))
        layers.append(block)
        kinds.append(kind)
    layers.append(nn.Linear(width, outputs))
    keyword, temperature = draw(st.booleans()), draw(st.booleans())
    if keyword or temperature or draw(st.booleans()):
        model = EdgeNet(layers, temperature, keyword).double().eval()
    else:  # a plain Sequential: the fast paths may take it, and must not take a subclassed layer for its parent
        model = nn.Sequential(*layers).double().eval()
    n = draw(st.integers(2, 4))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 99)))
    x = torch.randn(n, 2 * width if keyword else width, dtype=torch.float64, generator=gen)
    inputs = {"x": x[:, :width], "shift": x[:, width:]} if keyword else x
    reference = copy.deepcopy(model)
    for m in reference.modules():
        if hasattr(m, "reference"):
            m.reference = True
    return model, inputs, Reference(reference, width), x, family, sigma, kinds


def _strip(d):
    return {k[len("net.") :]: v for k, v in d.items()}


def _close(got, want, what):
    assert set(got) == set(want), (what, sorted(got), sorted(want))
    for k in want:
        err = (got[k] - want[k]).abs().max().item()
        assert err <= 1e-9 * want[k].abs().max().item() + 1e-13, (what, k, err)


@settings(max_examples=EXAMPLES)
@given(edge_models())
def test_edge_models_are_exact_or_refused_clearly(case):
    model, inputs, reference, x, family, sigma, kinds = case
    note(f"{kinds} sigma={sigma}\n{model!r}")
    fam = ft.Categorical() if family == "categorical" else ft.Gaussian(sigma)
    problem = Problem("edge", reference, x, family, sigma)
    ref = oracle.conditional_by_chain_rule(problem)
    fisher = _strip({k: v.mean(0) for k, v in ref["fisher"].items()})
    assert max(float(v.abs().max()) for v in fisher.values()) > 1e-8, "the oracle's Fisher is zero"

    checkpointed = any(k.startswith("checkpoint") for k in kinds)
    try:
        rep = ft.variance_report(model, inputs, fam)
    except ft.UnsupportedModelError as err:
        # torch.func cannot run checkpoints (saved-tensor hooks, or a Function without setup_context)
        assert checkpointed or ("DetachedTanh" in str(err) and "not twice differentiable" in str(err)), str(err)
        event("variance_report refused")
    else:
        assert "detached-fn" not in kinds, "second derivatives through a Function that is right once were accepted"
        event(f"variance_report exact on {rep.path}")
        _close(rep.fisher, fisher, "fisher")
        _close(rep.var_i1, _strip({k: v.mean(0) for k, v in ref["var_i1"].items()}), "var_i1")
        _close(rep.var_i2, _strip({k: v.mean(0) for k, v in ref["var_i2"].items()}), "var_i2")

    # first derivatives only: GNB with given labels on the one-backward path
    h = reference(x).detach()
    gen = torch.Generator().manual_seed(0)
    if family == "categorical":
        y = torch.multinomial(torch.softmax(h, 1), 1, generator=gen)[:, 0]
    else:
        y = h + torch.randn(h.shape, generator=gen, dtype=h.dtype)
    scores = [
        torch.cat([t.flatten() for t in oracle.score_and_neg_hessian(problem, x[k], y[k])[0].values()])
        for k in range(x.shape[0])
    ]
    gnb = sum(sum(scores[k : k + 2]).square() for k in range(0, len(scores), 2)) / len(scores)
    want = _strip(oracle.unflatten(reference, gnb))
    assert max(float(v.abs().max()) for v in want.values()) > 0
    _close(ft.fisher_diagonal(model, inputs, fam, "i1", targets=y, minibatch=2), want, "gnb")
    event("gnb exact")
