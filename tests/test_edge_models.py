"""Custom autograd.Functions, recurrent networks, 0-d parameters, per-output sigma and overflow (issue 17, 4-8).

Each case is exact on every entry point against the torch.func oracle (:mod:`entry_points`), or refused with
an error that names what is at fault.
"""

import pytest
import torch
from torch import nn

import fishertut as ft
from entry_points import assert_every_entry_point


def _x(n=4, d=3, seed=0):
    return torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


class DetachedTanh(torch.autograd.Function):
    """tanh whose backward is right once but saves its output detached: not twice differentiable."""

    generate_vmap_rule = True

    @staticmethod
    def forward(i):
        return torch.tanh(i)

    @staticmethod
    def setup_context(ctx, inputs, out):
        ctx.save_for_backward(out.detach())

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


class SmoothTanh(DetachedTanh):
    """The same tanh, saving its output as it is: twice differentiable."""

    @staticmethod
    def setup_context(ctx, inputs, out):
        ctx.save_for_backward(out)


class FunctionNet(nn.Module):
    def __init__(self, act, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.a, self.b, self.act = nn.Linear(3, 4), nn.Linear(4, 3), act

    def forward(self, x):
        return self.b(self.act(self.a(x)))


def test_custom_function_twice_differentiable_is_exact_on_every_entry_point():
    model = FunctionNet(SmoothTanh.apply).double()
    plain = FunctionNet(torch.tanh).double()  # the oracle differentiates torch.tanh itself
    plain.load_state_dict(model.state_dict())
    rep = assert_every_entry_point(model, _x(), reference=plain, x=_x())
    assert rep.path == "generic"
    assert max(float(v.abs().max()) for v in rep.var_i2.values()) > 1e-3


@pytest.mark.parametrize("entry", ["variance_report", "i2", "per_input_statistics", "estimator_terms", "estimate"])
def test_custom_function_not_twice_differentiable_is_refused_naming_it(entry):
    model = FunctionNet(DetachedTanh.apply).double()
    x, fam = _x(), ft.Categorical()
    call = {
        "variance_report": lambda: ft.variance_report(model, x, fam),
        "i2": lambda: ft.fisher_diagonal(model, x, fam, "i2"),
        "per_input_statistics": lambda: ft.per_input_statistics(model, x, fam),
        "estimator_terms": lambda: ft.estimator_terms(model, x, fam),
        "estimate": lambda: ft.estimate(model, x, fam),
    }[entry]
    with pytest.raises(ft.UnsupportedModelError, match="DetachedTanh.*not twice differentiable"):
        call()


def test_custom_function_first_derivatives_stay_exact_when_second_ones_are_wrong():
    model = FunctionNet(DetachedTanh.apply).double()
    plain = FunctionNet(torch.tanh).double()
    plain.load_state_dict(model.state_dict())
    for est in ("exact", "i1"):
        kw = {} if est == "exact" else {"targets": torch.tensor([0, 1, 2, 1])}
        got = ft.fisher_diagonal(model, _x(), ft.Categorical(), est, **kw)
        want = ft.fisher_diagonal(plain, _x(), ft.Categorical(), est, path="generic", **kw)
        assert got.keys() == want.keys() and all(torch.allclose(got[k], want[k], rtol=1e-12) for k in got)


def test_graph_path_refuses_custom_functions_and_auto_goes_generic():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return SmoothTanh.apply(self.m(x))

    with pytest.raises(ft.UnsupportedModelError, match="custom autograd.Function.*SmoothTanh"):
        ft.fisher_diagonal(Wrap(), _x(), ft.Categorical(), path="graph")
    assert ft.fisher_diagonal(Wrap(), _x(), ft.Categorical()).path == "generic"


class Recurrent(nn.Module):
    """A recurrent block over a sequence made from the input, then a Linear on its last step or state."""

    def __init__(self, kind, read, steps=3, **kwargs):
        super().__init__()
        torch.manual_seed(1)
        self.steps, self.read = steps, read
        self.rnn = kind(2, 3, **kwargs)
        dirs = 2 if kwargs.get("bidirectional") else 1
        width = kwargs.get("proj_size") or 3
        self.head = nn.Linear(width * dirs, 3)

    def forward(self, x):
        seq = x.reshape(x.shape[0], self.steps, 2)
        if not self.rnn.batch_first:
            seq = seq.transpose(0, 1)
        out, state = self.rnn(seq)
        if self.read == "state":
            h = state[0] if isinstance(self.rnn, nn.LSTM) else state
            return self.head(torch.cat([h[-1], h[-2]], 1) if self.rnn.bidirectional else h[-1])
        return self.head(out[:, -1] if self.rnn.batch_first else out[-1])


RECURRENT_CASES = {
    "rnn-tanh": (nn.RNN, "output", {"batch_first": True}),
    "rnn-relu-2layers-seqfirst": (nn.RNN, "state", {"nonlinearity": "relu", "num_layers": 2}),
    "gru-bidirectional": (nn.GRU, "output", {"batch_first": True, "bidirectional": True}),
    "gru-2layers-state": (nn.GRU, "state", {"num_layers": 2, "bias": False}),
    "lstm": (nn.LSTM, "output", {"batch_first": True}),
    "lstm-2layers-bidirectional-seqfirst": (nn.LSTM, "state", {"num_layers": 2, "bidirectional": True}),
    "lstm-proj": (nn.LSTM, "output", {"batch_first": True, "proj_size": 2}),
}


@pytest.mark.parametrize("case", list(RECURRENT_CASES))
def test_recurrent_networks_are_exact_on_every_entry_point(case):
    kind, read, kwargs = RECURRENT_CASES[case]
    model = Recurrent(kind, read, **kwargs).double().eval()
    rep = assert_every_entry_point(model, _x(d=6), family="gaussian" if "gru" in case else "categorical", sigma=0.7)
    assert rep.path == "generic"


def test_recurrent_dropout_in_training_mode_is_refused():
    model = Recurrent(nn.GRU, "output", batch_first=True, num_layers=2, dropout=0.5).double()
    with pytest.raises(ValueError, match="dropout=0.5 in training mode"):
        ft.variance_report(model, _x(d=6), ft.Categorical())


class Temperature(nn.Module):
    """Logits divided by a learned 0-d temperature."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.body = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
        self.t = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        return self.body(x) / self.t


@pytest.mark.parametrize("family", ["categorical", "gaussian"])
def test_zero_dimensional_parameter_is_exact_on_every_entry_point(family):
    rep = assert_every_entry_point(Temperature().double(), _x(), family=family, sigma=0.8)
    assert rep.fisher["t"].shape == () and float(rep.fisher["t"]) > 0


def test_per_output_sigma_is_exact_on_every_entry_point():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    sigma = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    rep = assert_every_entry_point(model, _x(), family="gaussian", sigma=sigma)
    one = ft.variance_report(model, _x(), ft.Gaussian(1.0))
    assert not torch.allclose(rep.fisher["2.weight"], one.fisher["2.weight"])


def test_per_output_sigma_draws_labels_with_each_outputs_sigma():
    fam = ft.Gaussian([0.1, 10.0])
    h = torch.zeros(20000, 2, dtype=torch.float64)
    y = fam.sample(h, 1, torch.Generator().manual_seed(0))[:, 0]
    # sample std of 20000 normals: relative standard error 1/sqrt(2 * 20000) = 0.5%; allow 5 of them
    assert torch.allclose(y.std(0), torch.tensor([0.1, 10.0], dtype=torch.float64), rtol=0.025)


@pytest.mark.parametrize(
    "sigma,error,match",
    [
        ("1.0", TypeError, "sigma must be a positive number"),
        (None, TypeError, "sigma must be a positive number"),
        (True, TypeError, "sigma must be a positive number"),
        (torch.tensor([1.0, -1.0]), ValueError, "finite positive"),
        (torch.ones(2, 2), ValueError, "one value per output"),
    ],
)
def test_bad_sigma_is_refused(sigma, error, match):
    with pytest.raises(error, match=match):
        ft.Gaussian(sigma)


def test_per_output_sigma_of_the_wrong_length_is_refused():
    model = nn.Linear(3, 2).double()
    with pytest.raises(ValueError, match="sigma has 3 values, but the model has 2 outputs"):
        ft.fisher_diagonal(model, _x(), ft.Gaussian([1.0, 2.0, 3.0]))


def _overflowing():
    """float32; tanh near 0 (its slope 1), logits ~10, but derivatives ~1e20: their squares leave the range."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    with torch.no_grad():
        model[0].weight.mul_(1e-19)
        model[0].bias.zero_()
        model[2].weight.mul_(1e20)
    return model


@pytest.mark.parametrize(
    "entry",
    ["exact", "i1", "i2", "hutchinson", "i1-minibatch", "variance_report", "per_input", "terms", "estimate"],
)
@pytest.mark.parametrize("family", ["categorical", "gaussian"])
def test_overflow_is_refused_naming_the_statistic_and_parameter(entry, family):
    model, fam = _overflowing(), ft.Categorical() if family == "categorical" else ft.Gaussian()
    x = _x().float()
    assert torch.isfinite(model(x)).all()
    call = {
        "exact": lambda: ft.fisher_diagonal(model, x, fam),
        "i1": lambda: ft.fisher_diagonal(model, x, fam, "i1"),
        "i2": lambda: ft.fisher_diagonal(model, x, fam, "i2"),
        "hutchinson": lambda: ft.fisher_diagonal(model, x, fam, "hutchinson"),
        "i1-minibatch": lambda: ft.fisher_diagonal(model, x, fam, "i1", minibatch=2),
        "variance_report": lambda: ft.variance_report(model, x, fam),
        "per_input": lambda: ft.per_input_statistics(model, x, fam),
        "terms": lambda: ft.estimator_terms(model, x, fam),
        "estimate": lambda: ft.estimate(model, x, fam),
    }[entry]
    with pytest.raises(ValueError, match=r"of parameter '0\.(weight|bias)' overflowed torch.float32"):
        call()


def test_per_output_sigma_kurtosis_matrix_and_log_prob_against_dense_forms():
    sigma = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    fam, h = ft.Gaussian(sigma), torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lam = torch.diag(1 / sigma**2)
    # Isserlis: E[e_a e_b e_c e_d] = L_ab L_cd + L_ac L_bd + L_ad L_bc for the residual e ~ N(0, Lambda)
    k4 = sum(torch.einsum(spec, lam, lam) for spec in ("ab,cd->abcd", "ac,bd->abcd", "ad,bc->abcd")).reshape(9, 9)
    want = torch.linalg.eigvalsh(k4)[-1]
    assert torch.allclose(fam.kurtosis_matrix_max(h), want.expand(2), rtol=1e-12)
    y = h.unsqueeze(1) + torch.randn(2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = torch.distributions.Normal(h.unsqueeze(1), sigma).log_prob(y).sum(2)
    assert torch.allclose(fam.log_prob(h, y), ref, rtol=1e-12)
    assert torch.allclose(fam.covariance(h), lam.expand(2, 3, 3))
    s = fam.spectrum(h)
    assert torch.allclose(s.cov_max, torch.full((2,), 4.0, dtype=torch.float64))
    assert torch.allclose(s.m_min, torch.full((2,), 2 / 16, dtype=torch.float64))
