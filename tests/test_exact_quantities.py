"""Exact quantities (FIM diagonal, V1, V2, x-term, bounds) against the brute-force oracle, both engines."""

import pytest
import torch

import fishertut as ft
from helpers import assert_dicts_close, mean0
from problems import PROBLEMS

PATHS = ["layerwise", "generic"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pid", sorted(PROBLEMS))
def test_exact_fisher_diagonal(pid, path, oracle_values):
    problem, ref, _ = oracle_values(pid)
    fam = problem.fishertut_family()
    F = ft.fisher_diagonal(problem.model, problem.x, fam, "exact", path=path)
    assert F.path == path and F.num_inputs == problem.x.shape[0]
    assert_dicts_close(F, mean0(ref["fisher"]), what="fisher")
    # the Fisher also equals the expected negative Hessian (chapter "Exponential-family outputs")
    assert_dicts_close(F, mean0(ref["fisher_from_hessian"]), what="E[-Hessian]")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pid", sorted(PROBLEMS))
def test_variance_report(pid, path, oracle_values):
    problem, ref, bounds = oracle_values(pid)
    rep = ft.variance_report(problem.model, problem.x, problem.fishertut_family(), path=path)
    assert rep.path == path and rep.num_inputs == problem.x.shape[0]
    assert_dicts_close(rep.fisher, mean0(ref["fisher"]), what="fisher")
    assert_dicts_close(rep.var_i1, mean0(ref["var_i1"]), what="var_i1")
    assert_dicts_close(rep.var_i2, mean0(ref["var_i2"]), what="var_i2")
    var_x = {k: v.var(0, unbiased=False) for k, v in ref["fisher"].items()}
    assert_dicts_close(rep.var_x, var_x, rtol=1e-9, what="var_x")
    for name in ("v1_lower", "v1_upper", "v2_lower", "v2_upper"):
        assert_dicts_close(getattr(rep.bounds, name), mean0(bounds[name]), rtol=1e-9, what=name)


@pytest.mark.parametrize("pid", sorted(PROBLEMS))
def test_per_input_statistics_and_bounds_hold(pid, oracle_values):
    problem, ref, bounds = oracle_values(pid)
    st = ft.per_input_statistics(problem.model, problem.x, problem.fishertut_family())
    assert_dicts_close(st.fisher, ref["fisher"], what="fisher")
    assert_dicts_close(st.var_i1, ref["var_i1"], what="var_i1")
    assert_dicts_close(st.var_i2, ref["var_i2"], what="var_i2")
    for k in st.fisher:
        tol = 1e-10 * (1 + st.bounds.v1_upper[k].abs().max() + st.bounds.v2_upper[k].abs().max())
        assert (st.bounds.v1_lower[k] <= st.var_i1[k] + tol).all()
        assert (st.var_i1[k] <= st.bounds.v1_upper[k] + tol).all()
        assert (st.bounds.v2_lower[k] <= st.var_i2[k] + tol).all()
        assert (st.var_i2[k] <= st.bounds.v2_upper[k] + tol).all()


@pytest.mark.parametrize("pid", sorted(PROBLEMS))
def test_last_layer_has_zero_i2_variance(pid):
    problem = PROBLEMS[pid]()
    rep = ft.variance_report(problem.model, problem.x, problem.fishertut_family())
    last = [n for n, _ in problem.model.named_parameters()][-2:]
    last = [n for n in last if n.startswith(str(len(problem.model) - 1) + ".")]
    assert last, "the last Linear layer has parameters"
    for n in last:
        assert torch.count_nonzero(rep.var_i2[n]) == 0
        assert torch.count_nonzero(rep.bounds.v2_upper[n]) == 0


@pytest.mark.parametrize("pid", ["cat-relu-2h", "gauss-relu-2h-D3", "cat-leakyrelu-1h"])
def test_piecewise_linear_networks_have_zero_i2_variance_everywhere(pid):
    problem = PROBLEMS[pid]()
    rep = ft.variance_report(problem.model, problem.x, problem.fishertut_family())
    assert all(torch.count_nonzero(v) == 0 for v in rep.var_i2.values())


@pytest.mark.parametrize("pid", [p for p in PROBLEMS if p.startswith("gauss")])
def test_gaussian_v1_is_twice_fisher_squared_per_input(pid):
    problem = PROBLEMS[pid]()
    st = ft.per_input_statistics(problem.model, problem.x, problem.fishertut_family())
    for k in st.fisher:
        torch.testing.assert_close(st.var_i1[k], 2 * st.fisher[k] ** 2, rtol=1e-12, atol=0)
        # and the Gaussian bounds are equalities (chapter "Regression")
        torch.testing.assert_close(st.bounds.v1_lower[k], st.var_i1[k], rtol=1e-12, atol=0)
        torch.testing.assert_close(st.bounds.v1_upper[k], st.var_i1[k], rtol=1e-12, atol=0)


def test_binary_bounds_are_tight_for_v1():
    problem = PROBLEMS["binary-tanh-1h"]()
    st = ft.per_input_statistics(problem.model, problem.x, problem.fishertut_family())
    for k in st.fisher:
        torch.testing.assert_close(st.bounds.v1_lower[k], st.var_i1[k], rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(st.bounds.v1_upper[k], st.var_i1[k], rtol=1e-10, atol=1e-14)
