"""Models written the way users write them: each result is exact (against the torch.func oracle) or refused.

One test per case: reused modules and shared parameters, in-place activations, hooks, parametrizations,
targets as lists, batch-invariant labels, float32 Gaussian residuals, non-finite later batches, half
precision, odd outputs and inputs, and the first-batch guards against silent misuse.
"""

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize
from torch.utils.data import DataLoader, TensorDataset

import fishertut as ft
import oracle
from helpers import assert_dicts_close, mean0
from oracle import Problem

FIELDS = ("fisher", "var_i1", "var_i2", "var_x")


def _inputs(n=4, d=4, seed=0):
    return torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _out_of_place(model):
    """A copy computing the same function without in-place modules (the oracle's reference model)."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if getattr(m, "inplace", False):
            m.inplace = False
    return model


def oracle_report(model, x, family="categorical", sigma=1.0):
    """fisher, var_i1, var_i2 and var_x averaged over the inputs, from the oracle's per-input values."""
    ref = oracle.conditional_by_chain_rule(Problem("user", _out_of_place(model), x, family, sigma))
    fisher = mean0(ref["fisher"])
    var_x = {k: (v - fisher[k]).square().mean(0) for k, v in ref["fisher"].items()}
    return {"fisher": fisher, "var_i1": mean0(ref["var_i1"]), "var_i2": mean0(ref["var_i2"]), "var_x": var_x}


def assert_exact(model, x, path_expected, family="categorical", sigma=1.0, path="auto"):
    fam = ft.Categorical() if family == "categorical" else ft.Gaussian(sigma)
    rep = ft.variance_report(model, x, fam, path=path)
    assert rep.path == path_expected
    ref = oracle_report(model, x, family, sigma)
    for field in FIELDS:
        assert_dicts_close(getattr(rep, field), ref[field], rtol=1e-9, what=field)
    return rep


def _seeded(seed, *modules):
    torch.manual_seed(seed)
    return nn.Sequential(*[m() if callable(m) and not isinstance(m, nn.Module) else m for m in modules])


# --- 1. module reuse and shared parameters -------------------------------------------------------------------


@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh, nn.SiLU], ids=["relu", "tanh", "silu"])
def test_reused_activation_instance_is_exact_on_the_layerwise_path(act):
    a = act()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), a, nn.Linear(5, 5), a, nn.Linear(5, 3)).double().eval()
    assert_exact(model, _inputs(), "layerwise")


def test_reused_nested_block_of_activations_is_exact_on_the_layerwise_path():
    block = nn.Sequential(nn.Tanh(), nn.Identity())
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), block, nn.Linear(5, 5), block, nn.Linear(5, 2)).double().eval()
    assert_exact(model, _inputs(), "layerwise")


def test_reused_linear_falls_back_to_generic_and_is_refused_by_layerwise():
    torch.manual_seed(2)
    lin = nn.Linear(5, 5)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), lin, nn.Tanh(), lin, nn.Linear(5, 3)).double().eval()
    assert_exact(model, _inputs(), "generic")
    with pytest.raises(ft.UnsupportedModelError, match=r"parameter '2.weight' is also used as '4.weight'"):
        ft.fisher_diagonal(model, _inputs(), ft.Categorical(), path="layerwise")


def test_reused_nested_block_with_a_linear_falls_back_to_generic():
    torch.manual_seed(3)
    block = nn.Sequential(nn.Linear(5, 5), nn.Sigmoid())
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), block, block, nn.Linear(5, 2)).double().eval()
    assert_exact(model, _inputs(), "generic", family="gaussian", sigma=0.7)


def test_two_linears_sharing_one_weight_parameter():
    torch.manual_seed(4)
    a, b = nn.Linear(5, 5), nn.Linear(5, 5)
    b.weight = a.weight
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), a, nn.Tanh(), b, nn.Linear(5, 3)).double().eval()
    rep = assert_exact(model, _inputs(), "generic")
    assert "2.weight" in rep.fisher and "4.weight" not in rep.fisher and "4.bias" in rep.fisher


# --- 2. in-place activations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "act,path",
    [
        (lambda: nn.ELU(inplace=True), "layerwise"),
        (lambda: nn.SiLU(inplace=True), "layerwise"),
        (lambda: nn.ReLU(inplace=True), "layerwise"),
        (lambda: nn.LeakyReLU(0.2, inplace=True), "layerwise"),
        (lambda: nn.Hardtanh(-0.5, 0.5, inplace=True), "generic"),
        (lambda: nn.CELU(0.7, inplace=True), "generic"),
    ],
    ids=["elu", "silu", "relu", "leakyrelu", "hardtanh", "celu"],
)
def test_inplace_activation_is_exact(act, path):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 6), act(), nn.Linear(6, 6), act(), nn.Linear(6, 3)).double().eval()
    assert_exact(model, _inputs(), path)
    assert_exact(model, _inputs(), "generic", path="generic")
    assert all(m.inplace for m in model.modules() if hasattr(m, "inplace"))  # the user's flags are restored


class _InplaceInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        h = self.lin(x)
        h[:, 0] += 1.0  # in-place write into an intermediate
        return h


class _PreallocatedOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        h = self.lin(x)
        out = torch.zeros(h.shape, dtype=h.dtype)
        out += h  # in-place into a fresh tensor: fine eagerly, not batchable by vmap
        return out


def test_inplace_write_into_an_intermediate_is_exact_on_generic():
    torch.manual_seed(6)
    model = _InplaceInForward().double().eval()
    rep = ft.variance_report(model, _inputs(), ft.Categorical())
    assert rep.path == "generic"
    ref = oracle_report(model, _inputs())
    for field in FIELDS:
        assert_dicts_close(getattr(rep, field), ref[field], rtol=1e-9, what=field)


def test_inplace_operation_torch_func_cannot_batch_is_refused_clearly():
    torch.manual_seed(6)
    with pytest.raises(
        ft.UnsupportedModelError, match="generic path could not differentiate _PreallocatedOutput"
    ) as info:
        ft.variance_report(_PreallocatedOutput().double().eval(), _inputs(), ft.Categorical())
    assert isinstance(info.value.__cause__, RuntimeError)


# --- 3. hooks ------------------------------------------------------------------------------------------------


def _mlp(seed=7, out=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, out)).double().eval()


def test_forward_pre_hook_on_the_container_is_honoured():
    model = _mlp()
    model.register_forward_pre_hook(lambda mod, inp: (2 * inp[0],))
    assert_exact(model, _inputs(), "generic")
    with pytest.raises(ft.UnsupportedModelError, match=r"the model \(Sequential\) has forward hooks"):
        ft.variance_report(model, _inputs(), ft.Categorical(), path="layerwise")


def test_forward_hook_on_a_submodule_is_honoured():
    model = _mlp()
    model[1].register_forward_hook(lambda mod, inp, out: 3 * out)
    assert_exact(model, _inputs(), "generic", family="gaussian", sigma=0.5)
    with pytest.raises(ft.UnsupportedModelError, match=r"module '1' \(Tanh\) has forward hooks"):
        ft.variance_report(model, _inputs(), ft.Categorical(), path="layerwise")


def test_global_forward_hook_is_honoured():
    model = _mlp()
    handle = nn.modules.module.register_module_forward_hook(
        lambda mod, inp, out: out * 0.5 if isinstance(mod, nn.Linear) else None
    )
    try:
        assert_exact(model, _inputs(), "generic")
    finally:
        handle.remove()


def test_backward_hook_is_refused_on_every_path():
    model = _mlp()
    model[0].register_full_backward_hook(lambda mod, gin, gout: None)
    for path in ("auto", "layerwise", "generic"):
        with pytest.raises(ft.UnsupportedModelError, match=r"module '0' \(Linear\) has backward hooks"):
            ft.fisher_diagonal(model, _inputs(), ft.Categorical(), path=path)


# --- 4. parametrizations -------------------------------------------------------------------------------------


class _Symmetric(nn.Module):
    def forward(self, w):
        return w.triu() + w.triu(1).transpose(0, 1)


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
@pytest.mark.parametrize(
    "wrap",
    [
        lambda m: parametrizations.weight_norm(m),
        lambda m: parametrizations.spectral_norm(m),
        lambda m: parametrize.register_parametrization(m, "weight", _Symmetric()),
    ],
    ids=["weight_norm", "spectral_norm", "user_parametrization"],
)
def test_parametrized_layer_is_exact_on_generic_and_keyed_by_named_parameters(wrap):
    torch.manual_seed(8)
    model = (
        nn.Sequential(nn.Linear(4, 5), nn.Tanh(), wrap(nn.Linear(5, 5)), nn.Sigmoid(), nn.Linear(5, 3)).double().eval()
    )
    rep = assert_exact(model, _inputs(), "generic")
    assert list(rep.fisher) == [n for n, _ in model.named_parameters()]
    assert any(".parametrizations.weight.original" in n for n in rep.fisher)
    with pytest.raises(
        ft.UnsupportedModelError,
        match=r"module '2' \(ParametrizedLinear\) has a parametrization of its tensors \(weight\)",
    ):
        ft.variance_report(model, _inputs(), ft.Categorical(), path="layerwise")


# --- 5. targets as lists and arrays --------------------------------------------------------------------------


@pytest.mark.parametrize("convert", [list, np.asarray], ids=["list", "numpy"])
def test_categorical_targets_as_list_or_array_are_used(convert):
    model, x = _mlp(), _inputs()
    y = torch.tensor([0, 2, 1, 1])
    want = ft.fisher_diagonal(model, x, ft.Categorical(), "i1", targets=y)
    got = ft.fisher_diagonal(model, x, ft.Categorical(), "i1", targets=convert(y.tolist()))
    assert got.labels == "given"
    assert_dicts_close(got, want, rtol=1e-15, what="i1")


def test_gaussian_targets_as_numpy_float_array_are_used():
    model, x = _mlp(out=2), _inputs()
    y = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    want = ft.fisher_diagonal(model, x, ft.Gaussian(0.5), "i2", targets=y)
    got = ft.fisher_diagonal(model, x, ft.Gaussian(0.5), "i2", targets=y.numpy())
    assert_dicts_close(got, want, rtol=1e-15, what="i2")


@pytest.mark.parametrize(
    "targets,message",
    [
        (["a", "b", "c", "d"], "targets must be a tensor, or a list or numpy"),
        ({0: 1}, "targets must be None, 'data', a tensor, or a list"),
    ],
    ids=["strings", "dict"],
)
def test_targets_of_another_kind_are_refused(targets, message):
    with pytest.raises(TypeError, match=message):
        ft.fisher_diagonal(_mlp(), _inputs(), ft.Categorical(), "i1", targets=targets)


# --- 6. sampled labels do not depend on batching, engine or function -----------------------------------------


@pytest.mark.parametrize("family", [ft.Categorical(), ft.Gaussian(0.3)], ids=["categorical", "gaussian"])
def test_sampled_labels_do_not_depend_on_batching_engine_or_function(family):
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double().eval()
    x = _inputs(n=37)

    def gen():
        return torch.Generator().manual_seed(11)

    ref = ft.fisher_diagonal(model, x, family, "i2", samples_per_input=3, generator=gen())
    loader = DataLoader(TensorDataset(x), batch_size=5)
    runs = {
        "batch_size=4": ft.fisher_diagonal(model, x, family, "i2", samples_per_input=3, generator=gen(), batch_size=4),
        "dataloader": ft.fisher_diagonal(model, loader, family, "i2", samples_per_input=3, generator=gen()),
        "generic": ft.fisher_diagonal(
            model, x, family, "i2", samples_per_input=3, generator=gen(), path="generic", batch_size=16
        ),
    }
    terms = ft.estimator_terms(model, x, family, samples_per_input=3, generator=gen(), batch_size=7)
    runs["estimator_terms"] = {k: v.mean((0, 1)) for k, v in terms.i2.items()}
    for what, got in runs.items():
        assert_dicts_close(got, ref, rtol=1e-12, what=what)


# --- 7. float32 Gaussian residuals ---------------------------------------------------------------------------


def test_float32_gaussian_i1_is_unbiased_when_sigma_is_small_against_the_outputs():
    torch.manual_seed(10)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double().eval()
    with torch.no_grad():
        model[2].bias.fill_(100.0)  # outputs near 100, sigma 1e-5: (h + sigma n) - h keeps ~1 digit of n
    x, sigma, s = _inputs(n=8), 1e-5, 500
    rep = ft.variance_report(model, x, ft.Gaussian(sigma))
    est = ft.fisher_diagonal(
        model.float(),
        x.float(),
        ft.Gaussian(sigma),
        "i1",
        samples_per_input=s,
        generator=torch.Generator().manual_seed(0),
    )
    for k in rep.fisher:
        sd = (rep.var_i1[k] / (len(x) * s)).sqrt()
        z = (est[k].double() - rep.fisher[k]) / sd
        assert z.abs().max() < 5.5, (k, z.abs().max())  # a biased residual is off by thousands of sd


# --- 8. non-finite values in a later batch -------------------------------------------------------------------


def test_nan_input_in_a_later_batch_gets_the_library_message():
    model, x = _mlp(), _inputs(n=6)
    bad = x.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="inputs contain NaN or Inf"):
        ft.variance_report(model, [x, bad], ft.Categorical())
    with pytest.raises(ValueError, match="inputs contain NaN or Inf"):
        ft.fisher_diagonal(model, [x, bad], ft.Categorical(), "i1", generator=torch.Generator().manual_seed(0))


class _Sqrt(nn.Module):
    def forward(self, z):
        return z.sqrt()


def test_nan_output_in_a_later_batch_gets_the_library_message():
    torch.manual_seed(12)
    model = nn.Sequential(nn.Linear(4, 3), _Sqrt()).double().eval()
    with torch.no_grad():
        model[0].bias.fill_(100.0)
    x = _inputs(n=6)
    later = x.clone()
    later[3] = -1e4
    for call in (
        lambda: ft.variance_report(model, [x, later], ft.Categorical()),
        lambda: ft.fisher_diagonal(model, [x, later], ft.Categorical(), "i1"),
    ):
        with pytest.raises(ValueError, match=r"Categorical\(\): the model output contains NaN or Inf"):
            call()


# --- 9. half precision ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,rtol", [(torch.float16, 2e-2), (torch.bfloat16, 1e-1)], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("family", [ft.Categorical(), ft.Gaussian(0.5)], ids=["categorical", "gaussian"])
def test_half_precision_reports(dtype, rtol, family):
    model, x = _mlp(out=3), _inputs(n=6)
    ref = ft.variance_report(model, x, family)
    low = ft.variance_report(copy.deepcopy(model).to(dtype), x.to(dtype), family)
    per = ft.per_input_statistics(copy.deepcopy(model).to(dtype), x.to(dtype), family)
    for field in ("fisher", "var_i1", "var_i2"):
        assert all(v.dtype == dtype for v in getattr(low, field).values())
        assert_dicts_close(
            {k: v.double() for k, v in getattr(low, field).items()},
            getattr(ref, field),
            rtol=rtol,
            atol_scale=0,
            what=field,
        )
    assert_dicts_close(
        {k: v.double().mean(0) for k, v in per.fisher.items()},
        ref.fisher,
        rtol=rtol,
        atol_scale=0,
        what="per-input fisher",
    )


# --- 10. model outputs and inputs of the wrong kind ----------------------------------------------------------


class _Wrapped(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.lin, self.kind = nn.Linear(4, 3), kind

    def forward(self, x):
        h = self.lin(x)
        return {"tuple": lambda: (h, h), "dict": lambda: {"scores": h}, "float64": lambda: h.double()}[self.kind]()


@pytest.mark.parametrize(
    "kind,message",
    [
        ("tuple", "must return one tensor of shape \\(N, C\\), got a tuple"),
        ("dict", "must return one tensor of shape \\(N, C\\), got a dict"),
        ("float64", "output has dtype torch.float64 but its parameters have dtype torch.float32"),
    ],
)
def test_model_output_of_the_wrong_kind_is_refused(kind, message):
    model = _Wrapped(kind).eval()
    with pytest.raises(ValueError, match=message):
        ft.fisher_diagonal(model, torch.randn(3, 4), ft.Categorical())


@pytest.mark.parametrize(
    "x,message",
    [
        # more rows than the first chunk: the message gives the whole batch's shape
        (torch.randn(64, 5, dtype=torch.float64), r"inputs of shape \(64, 5\) .* rows have 4 features"),
        (torch.randn(4, dtype=torch.float64), r"inputs must be shaped \(N, features\) .* 1-D tensor of shape \(4,\)"),
        (
            torch.ones(3, 4, dtype=torch.long),
            r"inputs of shape \(3, 4\) and dtype torch.int64 .* floating inputs of "
            r"dtype torch.float64",
        ),
    ],
    ids=["wrong-width", "one-dimensional", "integer"],
)
@pytest.mark.parametrize("path", ["auto", "generic"])
def test_inputs_the_model_cannot_take_get_an_error_naming_inputs(x, message, path):
    with pytest.raises(ValueError, match=message) as info:
        ft.fisher_diagonal(_mlp(), x, ft.Categorical(), path=path)
    assert "1-D" in message or isinstance(info.value.__cause__, RuntimeError)


# --- 11. silent misuse ---------------------------------------------------------------------------------------


def test_categorical_model_ending_in_softmax_warns_about_logits():
    torch.manual_seed(13)
    model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1)).double().eval()
    with pytest.warns(UserWarning, match="Categorical expects logits"):
        ft.fisher_diagonal(model, _inputs(), ft.Categorical())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ft.fisher_diagonal(_mlp(), _inputs(), ft.Categorical())  # logits: no warning


class _Centred(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x - x.mean(0, keepdim=True))


def test_model_whose_rows_depend_on_the_batch_is_refused():
    with pytest.raises(ft.UnsupportedModelError, match="depends on the other inputs of its batch"):
        ft.variance_report(_Centred().double().eval(), _inputs(), ft.Categorical())


def test_targets_tensor_with_a_shuffling_dataloader_is_refused():
    x = _inputs(n=8)
    loader = DataLoader(TensorDataset(x), batch_size=4, shuffle=True)
    with pytest.raises(ValueError, match="RandomSampler"):
        ft.fisher_diagonal(_mlp(), loader, ft.Categorical(), "i1", targets=torch.zeros(8, dtype=torch.long))


def test_bare_tuple_of_inputs_and_labels_is_refused_with_a_hint():
    x, y = _inputs(), torch.tensor([0, 1, 2, 0])
    with pytest.raises(TypeError, match=r"bare tuple of two tensors.*\[\(x, y\)\]"):
        ft.fisher_diagonal(_mlp(), (x, y), ft.Categorical(), "i1", targets="data")
    one = ft.fisher_diagonal(_mlp(), [(x, y)], ft.Categorical(), "i1", targets="data")
    assert one.num_inputs == 4


@pytest.mark.parametrize("count", [np.int64(2), np.int32(2), torch.tensor(2)], ids=["np.int64", "np.int32", "0-d"])
def test_counts_as_numpy_integers_or_0d_tensors(count):
    model, x = _mlp(), _inputs()
    want = ft.fisher_diagonal(
        model, x, ft.Categorical(), "i1", samples_per_input=2, batch_size=2, generator=torch.Generator().manual_seed(0)
    )
    got = ft.fisher_diagonal(
        model,
        x,
        ft.Categorical(),
        "i1",
        samples_per_input=count,
        batch_size=count,
        generator=torch.Generator().manual_seed(0),
    )
    assert got.samples_per_input == 2 and type(got.samples_per_input) is int
    assert_dicts_close(got, want, rtol=1e-15, what="i1")


def test_float_count_is_still_refused():
    with pytest.raises(ValueError, match="samples_per_input must be a positive integer, got 2.0"):
        ft.fisher_diagonal(_mlp(), _inputs(), ft.Categorical(), "i1", samples_per_input=2.0)


def test_model_on_the_meta_device_is_refused():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="meta device"):
        ft.fisher_diagonal(model, torch.empty(2, 4, device="meta"), ft.Categorical())


# --- 12. frozen parameters, and the engine chosen once -------------------------------------------------------


@pytest.mark.parametrize(
    "function",
    [ft.fisher_diagonal, ft.variance_report, ft.per_input_statistics, ft.estimator_terms],
    ids=lambda f: f.__name__,
)
def test_docstrings_say_frozen_parameters_are_left_out(function):
    assert "requires_grad=False" in function.__doc__ and "left out" in function.__doc__


def test_engine_is_chosen_once_and_every_forward_pass_is_used(monkeypatch):
    import fishertut.passes as passes
    from fishertut.engines.layerwise import LayerwiseEngine

    chosen, rows = [], []
    select, forward = passes.select_engine, LayerwiseEngine.forward

    def counting_select(model, x, path):
        chosen.append(tuple(x.shape))
        return select(model, x, path)

    def counting_forward(self, x):
        rows.append(x.shape[0])
        return forward(self, x)

    monkeypatch.setattr(passes, "select_engine", counting_select)
    monkeypatch.setattr(LayerwiseEngine, "forward", counting_forward)
    x = _inputs(n=12)
    rep = ft.variance_report(_mlp(), [x[:5], x[5:]], ft.Categorical(), batch_size=3)
    assert chosen == [(5, 4)]
    # the first chunk gives C (no extra pass); its rows are then run one by one (the independent-rows guard)
    assert rows == [3, 1, 1, 1, 2, 3, 3, 1] and rep.num_inputs == 12
    rows.clear()
    ft.variance_report(_mlp(), x, ft.Categorical())
    assert rows == [4, 1, 1, 1, 1, 8]  # default size: a probe chunk of 4 rows, then the rest


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
@pytest.mark.parametrize("family,sigma", [("categorical", 1.0), ("gaussian", 0.6)])
def test_chain_rule_oracle_equals_the_brute_force_oracle(family, sigma):
    """The tests above use the faster oracle; here it meets the brute-force one on a model with everything."""
    torch.manual_seed(14)
    shared = nn.Linear(3, 3)
    model = (
        nn.Sequential(
            parametrizations.weight_norm(nn.Linear(3, 3)), nn.ELU(), shared, nn.Tanh(), shared, nn.Linear(3, 2)
        )
        .double()
        .eval()
    )
    model[1].register_forward_hook(lambda mod, inp, out: out + 0.1)
    problem = Problem("everything", model, _inputs(n=2, d=3), family, sigma)
    fast, slow = oracle.conditional_by_chain_rule(problem), oracle.conditional(problem)
    for field in ("fisher", "var_i1", "var_i2"):
        assert_dicts_close(fast[field], slow[field], rtol=1e-10, what=field)


def test_spectral_norm_in_training_mode_is_refused():
    torch.manual_seed(15)
    model = nn.Sequential(parametrizations.spectral_norm(nn.Linear(4, 3)))
    with pytest.raises(ValueError, match=r"module '0.parametrizations.weight.0' \(_SpectralNorm\) is in training mode"):
        ft.fisher_diagonal(model.double(), _inputs(), ft.Categorical())


# --- PReLU: its batched backward has no working vmap rule for images; the generic engine runs a composite ---------


@pytest.mark.parametrize("num_parameters", [1, 2])
def test_prelu_on_images_is_exact_and_leaves_the_module_as_it_was(num_parameters):
    torch.manual_seed(3)
    prelu = nn.PReLU(num_parameters, init=0.3)
    counted = []
    prelu.register_forward_hook(lambda mod, inp, out: counted.append(1))
    model = nn.Sequential(nn.Conv2d(1, 2, 3), prelu, nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double().eval()
    with torch.no_grad():
        prelu.weight.copy_(torch.linspace(0.1, 0.4, num_parameters))
    x = torch.randn(6, 1, 6, 6, dtype=torch.float64)
    assert_exact(model, x, "generic")
    assert_exact(model, x, "generic", family="gaussian", sigma=0.7)
    assert counted, "the PReLU module's own hooks run"
    assert "forward" not in vars(prelu)
    assert torch.equal(
        model(x),
        nn.functional.linear(nn.functional.prelu(model[0](x), prelu.weight).flatten(1), model[3].weight, model[3].bias),
    )
