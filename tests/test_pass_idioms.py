"""One pass for every entry point: validation, fast paths that take only stock layers, no silent zeros, true reasons.

Every idiom below is either exact on every entry point (``fisher_diagonal`` with each estimator and
``minibatch`` 1 and > 1, ``variance_report``, ``per_input_statistics``, ``estimator_terms``, ``estimate``),
against the brute-force ``torch.func`` oracle of ``tests/oracle.py`` in float64, or refused with a message that
names the argument or the module.
"""

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import fishertut as ft
import oracle
from helpers import assert_dicts_close

FAM = ft.Categorical()


def _x(n=4, d=3, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _labels(n=4, classes=4, seed=2):
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


class ScaledLinear(nn.Linear):
    """A Linear subclass with its own forward (the fast paths used to take it as a plain Linear)."""

    def forward(self, x):
        return 2.0 * super().forward(x)


class HalfFlatten(nn.Flatten):
    """An nn.Flatten subclass that also scales."""

    def forward(self, x):
        return 0.5 * super().forward(x)


class Checkpointed(nn.Module):
    """``c(tanh(a(x)))`` with the inner block under a reentrant checkpoint (or plainly, for the oracle)."""

    def __init__(self, plain=False):
        super().__init__()
        self.a, self.c, self.plain = nn.Linear(3, 5), nn.Linear(5, 4), plain

    def block(self, h):
        return torch.tanh(self.a(h))

    def forward(self, x):
        return self.c(self.block(x) if self.plain else checkpoint(self.block, x, use_reentrant=True))


class SpareHead(nn.Module):
    """A model with a trainable head its forward never calls."""

    def __init__(self):
        super().__init__()
        self.a, self.c, self.spare = nn.Linear(3, 5), nn.Linear(5, 4), nn.Linear(3, 2)

    def forward(self, x):
        return self.c(torch.sigmoid(self.a(x)))


class Detached(SpareHead):
    """The first layer is used, but a detach hides it from autograd."""

    def forward(self, x):
        return self.c(torch.sigmoid(self.a(x)).detach())


def _seeded(build, seed=0):
    torch.manual_seed(seed)
    return build().double().eval()


def _scaled():
    return _seeded(lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), ScaledLinear(5, 4)))


def _half_flatten():
    return _seeded(lambda: nn.Sequential(HalfFlatten(), nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)))


def _checkpointed():
    model = _seeded(Checkpointed)
    twin = _seeded(lambda: Checkpointed(plain=True))
    twin.load_state_dict(model.state_dict())
    return model, twin


def _score_sums(problem, labels, minibatch):
    """(1/N) sum over minibatches of the squared summed scores (GNB with given labels), by brute force."""
    scores = [
        torch.cat([t.flatten() for t in oracle.score_and_neg_hessian(problem, x, y)[0].values()])
        for x, y in zip(problem.x, labels)
    ]
    total = sum(sum(scores[i : i + minibatch]).square() for i in range(0, len(scores), minibatch))
    return oracle.unflatten(problem.model, total / len(scores))


def _hutchinson(problem, minibatch, seed):
    r"""Hutchinson by brute force with the library's documented draws: Rademacher xi per minibatch.

    :math:`G_b = \sum_n \xi_n^\top S_n J_n` with :math:`S = \mathrm{diag}(\sqrt p) - \sqrt p\,p^\top`.
    """
    h, v, _ = oracle.output_derivatives(problem)
    gen = torch.Generator().manual_seed(seed)
    total = 0
    step = minibatch if minibatch > 1 else h.shape[0]
    for start in range(0, h.shape[0], step):
        hb, vb = h[start : start + step], v[start : start + step]
        xi = torch.randint(0, 2, (hb.shape[0], 1, hb.shape[1]), generator=gen).double() * 2 - 1
        p = torch.softmax(hb, 1)
        s = torch.diag_embed(p.sqrt()) - p.sqrt().unsqueeze(2) * p.unsqueeze(1)
        g = torch.einsum("nc,ncd,ndp->np", xi[:, 0], s, vb)
        for first in range(0, g.shape[0], minibatch):
            total = total + g[first : first + minibatch].sum(0).square()
    return oracle.unflatten(problem.model, total / h.shape[0])


def _assert_every_entry_point_exact(model, truth_model, x, path="auto"):
    """Every entry point on ``model`` against the oracle run on ``truth_model`` (the same function)."""
    problem = oracle.Problem("idiom", truth_model, x, "categorical")
    truth = oracle.conditional(problem)
    mean = {k: v.mean(0) for k, v in truth["fisher"].items()}
    y = _labels(x.shape[0])
    assert_dicts_close(ft.fisher_diagonal(model, x, FAM, path=path), mean, what="exact")
    rep = ft.variance_report(model, x, FAM, path=path)
    assert_dicts_close(rep.fisher, mean, what="report fisher")
    assert_dicts_close(rep.var_i1, {k: v.mean(0) for k, v in truth["var_i1"].items()}, what="report var_i1")
    assert_dicts_close(rep.var_i2, {k: v.mean(0) for k, v in truth["var_i2"].items()}, what="report var_i2")
    per = ft.per_input_statistics(model, x, FAM, path=path)
    for stat in ("fisher", "var_i1", "var_i2"):
        assert_dicts_close(getattr(per, stat), truth[stat], what=f"per-input {stat}")
    terms = ft.estimator_terms(model, x, FAM, targets=y, path=path)
    i1, i2 = oracle.estimator_values(problem, y.unsqueeze(1))
    assert_dicts_close({k: v.mean((0, 1)) for k, v in terms.i1.items()}, i1, what="terms i1")
    assert_dicts_close({k: v.mean((0, 1)) for k, v in terms.i2.items()}, i2, what="terms i2")
    for minibatch in (1, 2):
        got = ft.fisher_diagonal(model, x, FAM, "i1", targets=y, minibatch=minibatch, path=path)
        assert_dicts_close(got, _score_sums(problem, y, minibatch), what=f"i1 B={minibatch}")
        got = ft.fisher_diagonal(model, x, FAM, "i2", targets=y, minibatch=minibatch, path=path)
        assert_dicts_close(got, i2, what=f"i2 B={minibatch}")
        got = ft.fisher_diagonal(
            model, x, FAM, "hutchinson", minibatch=minibatch, generator=torch.Generator().manual_seed(5), path=path
        )
        assert_dicts_close(got, _hutchinson(problem, minibatch, 5), what=f"hutchinson B={minibatch}")
    est = ft.estimate(model, x, FAM, rtol=0.1, generator=torch.Generator().manual_seed(3), path=path)
    for k, value in est.items():  # Chebyshev at rtol=0.1, delta=0.05: 0.5 is five times the planned error
        assert ((value - mean[k]).abs() <= 0.5 * mean[k] + 1e-12).all(), k
        assert k in est.unused or (value != 0).any(), k
    return rep


def _entry_points(model, x, **kwargs):
    """Every entry point as a zero-argument call, for refusals."""
    y = _labels(x.shape[0])
    return {
        "exact": lambda: ft.fisher_diagonal(model, x, FAM, **kwargs),
        "i1": lambda: ft.fisher_diagonal(model, x, FAM, "i1", targets=y, **kwargs),
        "i1-minibatch": lambda: ft.fisher_diagonal(model, x, FAM, "i1", minibatch=4, **kwargs),
        "i2": lambda: ft.fisher_diagonal(model, x, FAM, "i2", targets=y, **kwargs),
        "hutchinson": lambda: ft.fisher_diagonal(model, x, FAM, "hutchinson", **kwargs),
        "hutchinson-minibatch": lambda: ft.fisher_diagonal(model, x, FAM, "hutchinson", minibatch=2, **kwargs),
        "report": lambda: ft.variance_report(model, x, FAM, **kwargs),
        "per-input": lambda: ft.per_input_statistics(model, x, FAM, **kwargs),
        "terms": lambda: ft.estimator_terms(model, x, FAM, **kwargs),
        "estimate": lambda: ft.estimate(model, x, FAM, **kwargs),
    }


ENTRY_POINTS = list(_entry_points(None, _x()))


# item 1: one pass for every path


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_bogus_path_is_refused_on_every_entry_point(entry):
    paths = r"path must be one of \('auto', 'layerwise', 'graph', 'transformer', 'generic'\)"
    with pytest.raises(ValueError, match=paths):
        _entry_points(_scaled(), _x(), path="bogus")[entry]()


@pytest.mark.parametrize("entry", [e for e in ENTRY_POINTS if e in ("exact", "i1", "i1-minibatch", "report")])
def test_a_bogus_process_group_is_refused(entry):
    with pytest.raises(TypeError, match="process_group must be None or a torch.distributed process group"):
        _entry_points(_scaled(), _x(), process_group="bogus")[entry]()


def test_the_issue_reproducer_names_the_argument():
    with pytest.raises(ValueError, match="path must be one of"):
        ft.fisher_diagonal(_scaled(), _x(), FAM, estimator="i1", minibatch=4, path="bogus", process_group="bogus")


def test_the_one_backward_path_takes_the_engine_choice_and_its_guards():
    cnn = _seeded(lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3)))
    x = torch.randn(4, 1, 4, 4, dtype=torch.float64)
    with pytest.raises(ft.UnsupportedModelError, match="layer-wise path needs an nn.Sequential|Conv2d"):
        ft.fisher_diagonal(cnn, x, FAM, "i1", minibatch=2, path="layerwise")
    assert ft.fisher_diagonal(cnn, x, FAM, "i1", minibatch=2).path == "graph"
    mlp = _scaled()
    handle = mlp[0].register_full_backward_hook(lambda *a: None)
    with pytest.raises(ft.UnsupportedModelError, match="backward hooks"):
        ft.fisher_diagonal(mlp, _x(), FAM, "hutchinson", minibatch=2)
    handle.remove()
    with pytest.warns(UserWarning, match="look like probabilities"):
        ft.fisher_diagonal(nn.Sequential(_scaled(), nn.Softmax(1)), _x(), FAM, "i1", minibatch=2)


def test_estimate_plans_per_input_estimators_from_the_engine_that_runs():
    cnn = _seeded(lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3)))
    x = torch.randn(16, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    est = ft.estimate(cnn, x, FAM, rtol=1e-3, estimators=("exact", "i1"), generator=torch.Generator().manual_seed(1))
    assert {e.estimator for e in est.plan.values()} == {"exact"}  # the graph engine runs per-input estimators
    assert_dicts_close(est, ft.fisher_diagonal(cnn, x, FAM), rtol=1e-12)
    with pytest.raises(ValueError, match="need a fast path"):
        ft.estimate(cnn, x, FAM, estimators=("exact",), path="generic")


# item 2: fast paths take only the layers they know


@pytest.mark.parametrize("build", [_scaled, _half_flatten], ids=["ScaledLinear", "HalfFlatten"])
def test_subclassed_layers_are_exact_on_every_entry_point(build):
    model = build()
    x = _x()
    rep = _assert_every_entry_point_exact(model, model, x)
    assert rep.path == "generic"


@pytest.mark.parametrize("path", ["layerwise", "graph"])
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_subclassed_layers_are_refused_under_a_forced_fast_path(path, entry):
    needle = {"layerwise": r"module '2' \(ScaledLinear\)", "graph": r"module '2' \(ScaledLinear\)"}[path]
    with pytest.raises(ft.UnsupportedModelError, match=needle + r" overrides the forward of torch.nn.Linear"):
        _entry_points(_scaled(), _x(), path=path)[entry]()


@pytest.mark.parametrize("path", ["layerwise", "graph"])
def test_a_flatten_subclass_is_refused_under_a_forced_fast_path(path):
    with pytest.raises(ft.UnsupportedModelError, match=r"\(HalfFlatten\) overrides the forward of torch.nn.Flatten"):
        ft.fisher_diagonal(_half_flatten(), _x(), FAM, path=path)


def test_a_quantisation_aware_linear_is_not_taken_for_a_linear():
    from torch.ao.nn.qat import Linear as QATLinear
    from torch.ao.quantization import disable_observer, get_default_qat_qconfig

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), QATLinear(5, 4, qconfig=get_default_qat_qconfig())).eval()
    x = _x().float()
    model(x)
    model.apply(disable_observer)  # fixed quantisation grid: the function no longer moves with each call
    for path in ("layerwise", "graph"):
        with pytest.raises(ft.UnsupportedModelError, match=r"torch.ao.nn.qat.modules.linear.Linear\) overrides"):
            ft.fisher_diagonal(model, x, FAM, path=path)
    got = ft.fisher_diagonal(model, x, FAM)
    assert got.path == "generic"
    problem = oracle.Problem("qat", model, x, "categorical")
    truth = {k: v.mean(0) for k, v in oracle.conditional(problem)["fisher"].items()}
    assert_dicts_close(got, truth, rtol=1e-5, atol_scale=1e-6)
    # second derivatives through a straight-through gradient are undefined: refused, naming the module
    for call in (
        lambda: ft.variance_report(model, x, FAM),
        lambda: ft.fisher_diagonal(model, x, FAM, estimator="i2", generator=torch.Generator().manual_seed(0)),
    ):
        with pytest.raises(ft.UnsupportedModelError, match=r"'2.weight_fake_quant' \(\w*FakeQuantize\) fake-quantises"):
            call()


# item 3: no silent zeros


@pytest.mark.parametrize("path", ["auto", "generic"])
def test_a_reentrant_checkpoint_is_exact_on_every_entry_point(path):
    model, twin = _checkpointed()
    rep = _assert_every_entry_point_exact(model, twin, _x(), path=path)
    assert rep.unused == frozenset() and (rep.fisher["a.weight"] != 0).all()


def test_the_issue_reproducers_give_no_zeros():
    model, twin = _checkpointed()
    x = _x(16)
    got = ft.fisher_diagonal(model, x, FAM, estimator="i1", minibatch=4, generator=torch.Generator().manual_seed(0))
    assert (got["a.weight"] != 0).all() and (got["a.bias"] != 0).all()
    est = ft.estimate(model, x, FAM, rtol=0.1, generator=torch.Generator().manual_seed(0))
    exact = ft.fisher_diagonal(twin, x, FAM)
    assert all(((est[k] - exact[k]).abs() <= 0.5 * exact[k]).all() for k in est)


def test_an_unused_parameter_is_zero_and_listed_on_every_entry_point():
    model = _seeded(SpareHead)
    x = _x()
    rep = _assert_every_entry_point_exact(model, model, x)
    spare = {"spare.weight", "spare.bias"}
    assert rep.unused == spare and all((rep.fisher[k] == 0).all() for k in spare)
    y = _labels()
    results = [
        ft.fisher_diagonal(model, x, FAM, "i1", targets=y, minibatch=2),
        ft.fisher_diagonal(model, x, FAM, "hutchinson"),
        ft.per_input_statistics(model, x, FAM),
        ft.estimator_terms(model, x, FAM),
        ft.estimate(model, x, FAM, generator=torch.Generator().manual_seed(0)),
    ]
    assert all(r.unused == spare for r in results)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_used_parameter_autograd_does_not_reach_is_refused(entry):
    with pytest.raises(ft.UnsupportedModelError, match=r"parameter 'a.weight' is used by the model's forward, but"):
        _entry_points(_seeded(Detached), _x())[entry]()


# item 9: true reasons


class BatchCentred(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)

    def forward(self, x):
        h = self.a(x)
        return h - h.mean(0, keepdim=True)


class FixedBatch(BatchCentred):
    def forward(self, x):
        return self.a(x).reshape(4, -1)


class ItemInForward(BatchCentred):
    def forward(self, x):
        h = self.a(x)
        return h * 2.0 if h.abs().max().item() > 1e6 else h


@pytest.mark.parametrize("build", [BatchCentred, FixedBatch], ids=["batch-centred", "fixed-batch"])
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_batch_dependent_rows_are_refused_for_that_reason(build, entry):
    # a minibatch of 2 rows shows the fixed batch of 4 as outputs of the wrong number of rows: also true
    with pytest.raises(
        (ft.UnsupportedModelError, ValueError), match="other inputs of its batch|4 rows for a batch of 2"
    ):
        _entry_points(_seeded(build), _x())[entry]()


def test_batch_dependence_is_caught_after_a_one_row_first_batch():
    x = _x()
    with pytest.raises(ft.UnsupportedModelError, match="depends on the other inputs of its batch"):
        ft.variance_report(_seeded(BatchCentred), [x[:1], x[1:]], FAM)


def test_a_model_vmap_cannot_batch_runs_one_input_at_a_time_exactly():
    # .item() in forward: vmap over the inputs of a batch fails, so the generic engine loops over them
    model, x = _seeded(ItemInForward), _x()
    ref = oracle.conditional_by_chain_rule(oracle.Problem("item", model, x, "categorical"))
    rep = ft.variance_report(model, x, FAM)
    assert rep.path == "generic"
    for field in ("fisher", "var_i1", "var_i2"):
        assert_dicts_close(getattr(rep, field), {k: v.mean(0) for k, v in ref[field].items()}, rtol=1e-9)


def test_a_vmap_failure_leaves_the_one_backward_path_exact():
    model = _seeded(ItemInForward)
    x, y = _x(), _labels()
    problem = oracle.Problem("item", model, x, "categorical")
    got = ft.fisher_diagonal(model, x, FAM, "i1", targets=y, minibatch=2)
    assert_dicts_close(got, _score_sums(problem, y, 2))


# the Protocol every engine meets


@pytest.mark.parametrize("kind", ft.engines.ENGINES, ids=lambda k: k.name)
def test_every_engine_meets_the_protocol_contract(kind):
    from fishertut.checks.arguments import PATHS
    from fishertut.engines import Engine
    from fishertut.terms import SumCollector

    if kind.name == "transformer":  # sequence models only: token embeddings in place of the first Linear
        model = _seeded(lambda: nn.Sequential(nn.Embedding(7, 5), nn.Tanh(), nn.Linear(5, 4), nn.Flatten()))
        x = torch.arange(6).view(6, 1)
    else:
        model = _seeded(lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)))
        x = _x(6)
    assert kind.name in PATHS and kind.unsupported_reason(model) is None
    engine = kind(model)
    assert isinstance(engine, Engine) and engine.input_reason(x) is None
    assert isinstance(engine.per_input_elements(8, True), int) and engine.per_input_elements(8, True) >= 1
    assert engine.piecewise_linear == frozenset({"2.weight", "2.bias"})
    with torch.enable_grad():
        h, tape = engine.forward(x)
        assert h.requires_grad  # the one-backward estimators differentiate the engine's forward
    torch.testing.assert_close(h, model(x), rtol=1e-12, atol=1e-12)
    col = SumCollector()
    with torch.no_grad():
        h = h.detach()
        for t in engine.backward(tape, FAM.covariance_factor(h), None):
            col.add([("fisher", t.jac.square().sum(1), 2)], t)
    truth = oracle.conditional(oracle.Problem("mlp", model, x, "categorical"))["fisher"]
    got = {n: col.sums[("fisher", n)].reshape(p.shape) / x.shape[0] for n, p in model.named_parameters()}
    assert_dicts_close(got, {k: v.mean(0) for k, v in truth.items()})
    cnn = nn.Sequential(nn.Conv2d(1, 1, 2), nn.Flatten(), nn.Linear(4, 2))
    reason = kind.unsupported_reason(cnn)
    takes_convolutions = kind.name not in ("layerwise", "transformer")
    assert (reason is None) == takes_convolutions and (reason is None or "Conv2d" in reason)


def test_the_engines_have_one_name_each():
    assert [k.name for k in ft.engines.ENGINES] == ["layerwise", "graph", "transformer", "generic"]
    assert [k.__module__.split(".")[2] for k in ft.engines.ENGINES] == ["layerwise", "graph", "transformer", "generic"]


@pytest.mark.parametrize("build", [_scaled, lambda: _checkpointed()[0], lambda: _seeded(SpareHead)])
@pytest.mark.parametrize("entry", ["exact", "i1-minibatch", "report"])
def test_the_model_is_traced_once_per_call(build, entry, monkeypatch):
    from fishertut.engines.graph import trace

    calls = []
    original = trace._LayerLeaves.trace

    def counting(self, root, *args, **kwargs):
        calls.append(type(root).__name__)
        return original(self, root, *args, **kwargs)

    monkeypatch.setattr(trace._LayerLeaves, "trace", counting)
    _entry_points(build(), _x())[entry]()
    assert len(calls) == 1


def test_a_parameter_read_only_for_other_inputs_is_not_listed_unused():
    class Routed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(3, 4)

        def forward(self, x):  # rows with a positive first feature go through b (none among the probe rows)
            return torch.cat([self.a(r) if r[0, 0] <= 0 else self.b(r) for r in x.split(1)])

    model = _seeded(Routed)
    x = _x(8)
    x[:4, 0] = -x[:4, 0].abs()
    x[4:, 0] = x[4:, 0].abs()
    y = _labels(8)
    got = ft.fisher_diagonal(model, x, FAM, "i1", targets=y, minibatch=2)  # per-input engines refuse the routing
    assert_dicts_close(got, _score_sums(oracle.Problem("routed", model, x, "categorical"), y, 2))
    assert got.unused == frozenset() and (got["b.weight"] != 0).any()
