"""Tests of ``fishertut.analysis`` against independent computations.

Every helper is checked against something computed another way: hand-made reports with known values
for the pooling functions, brute-force ``torch.func`` derivatives and dense moment tensors for the bound
variants, ``per_input_statistics`` and ``fisher_diagonal`` for the class table, replayed random draws and
seeded Monte Carlo (tolerances from the variance) for the simulation, and closed forms for the variance
of a sample variance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.func import functional_call, hessian, jacrev

import fishertut as ft
from fishertut import analysis
from fishertut.data import MNIST

DT = torch.float64


# ----------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------


def _net(activation: str = "sigmoid", sizes=(4, 5, 3), seed: int = 0) -> torch.nn.Sequential:
    net = ft.models.mlp(list(sizes), activation, seed=seed, dtype=DT)
    with torch.no_grad():  # larger weights: confident, non-uniform outputs and strong curvature
        for p in net.parameters():
            p.mul_(2.0)
    return net


def _inputs(n: int = 12, d: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=DT)


def _fake_report(fisher, var_i1, var_i2, var_x, bounds=None, n=10) -> ft.VarianceReport:
    """A VarianceReport with given per-parameter values (bounds default to var ± 0)."""
    t = lambda d: {k: torch.as_tensor(v, dtype=DT) for k, v in d.items()}  # noqa: E731
    fisher, var_i1, var_i2, var_x = t(fisher), t(var_i1), t(var_i2), t(var_x)
    if bounds is None:
        bounds = ft.Bounds(var_i1, var_i1, var_i2, var_i2)
    return ft.VarianceReport(fisher=fisher, var_i1=var_i1, var_i2=var_i2, var_x=var_x, bounds=bounds,
                             num_inputs=n, path="test", family=ft.Categorical())


# ----------------------------------------------------------------------------------------------
# pooling
# ----------------------------------------------------------------------------------------------


def test_default_groups_match_layer_groups() -> None:
    net = ft.models.mlp([4, 5, 6, 3], "tanh", dtype=DT)
    names = [n for n, _ in net.named_parameters()]
    assert analysis.default_groups(names) == ft.models.layer_groups(net)


@pytest.mark.parametrize("leading", [0, 1, 2])
def test_group_values_concatenates_in_order(leading: int) -> None:
    g = torch.Generator().manual_seed(0)
    lead = (3, 2)[:leading]
    values = {"a": torch.randn(*lead, 2, 3, generator=g), "b": torch.randn(*lead, 4, generator=g)}
    out = analysis.group_values(values, ["b", "a"], leading=leading)
    assert out.dtype == DT and out.shape == (*lead, 4 + 6)
    flat_b = values["b"].reshape(*lead, -1).double()
    flat_a = values["a"].reshape(*lead, -1).double()
    torch.testing.assert_close(out[..., :4], flat_b)
    torch.testing.assert_close(out[..., 4:], flat_a)


def test_layer_summary_against_hand_computed_means() -> None:
    fisher = {"w": [[1.0, 3.0]], "b": [2.0]}
    var_i1 = {"w": [[4.0, 0.0]], "b": [5.0]}
    var_i2 = {"w": [[0.0, 0.0]], "b": [0.0]}
    var_x = {"w": [[1.0, 1.0]], "b": [4.0]}
    lower1 = {"w": [[0.0, 0.0]], "b": [0.0]}
    upper1 = {"w": [[40.0, 0.0]], "b": [50.0]}
    bounds = ft.Bounds(*({k: torch.tensor(v, dtype=DT) for k, v in d.items()} for d in (lower1, upper1, var_i2, var_i2)))
    rep = _fake_report(fisher, var_i1, var_i2, var_x, bounds)
    df = analysis.layer_summary(rep, {"g": ["w", "b"], "only b": ["b"]})
    row = df.loc["g"]
    assert row["num_params"] == 3
    assert row["fisher"] == pytest.approx(2.0)
    assert row["var_i1"] == pytest.approx(3.0)
    assert row["var_x"] == pytest.approx(2.0)
    assert row["sd_i1"] == pytest.approx(math.sqrt(3.0))
    assert row["rel_sd_i1"] == pytest.approx(math.sqrt(3.0) / 2.0)
    assert row["v1_upper"] == pytest.approx(30.0)
    assert row["log10_v1_upper"] == pytest.approx(1.0)            # mean bound 30 / mean variance 3
    assert row["log10_v1_lower"] == math.inf                      # zero lower bound, positive variance
    assert math.isnan(row["log10_v2_upper"]) and math.isnan(row["log10_v2_lower"])   # 0 / 0
    assert row["sd_i2"] == 0 and row["rel_sd_i2"] == 0
    assert df.loc["only b", "fisher"] == pytest.approx(2.0)
    assert df.loc["only b", "log10_v1_upper"] == pytest.approx(1.0)


def test_layer_summary_on_a_network_report() -> None:
    net, x, fam = _net(), _inputs(), ft.Categorical()
    rep = ft.variance_report(net, x, fam)
    df = analysis.layer_summary(rep)
    assert list(df.index) == ["layer 1", "layer 2"]
    for layer, names in ft.models.layer_groups(net).items():
        allf = np.concatenate([rep.fisher[n].numpy().ravel() for n in names])
        allv = np.concatenate([rep.var_i1[n].numpy().ravel() for n in names])
        allu = np.concatenate([rep.bounds.v1_upper[n].numpy().ravel() for n in names])
        assert df.loc[layer, "fisher"] == pytest.approx(allf.mean(), rel=1e-12)
        assert df.loc[layer, "log10_v1_upper"] == pytest.approx(np.log10(allu.mean() / allv.mean()), rel=1e-10)
        assert df.loc[layer, "log10_v1_upper"] >= 0
    assert df.loc["layer 1", "log10_v2_lower"] >= 0 and df.loc["layer 1", "log10_v2_upper"] >= 0
    assert df.loc["layer 2", "var_i2"] == 0       # last layer: u = 0, so the V2 ratios are 0/0
    assert math.isnan(df.loc["layer 2", "log10_v2_upper"])


def test_recommend_estimator_rule_and_sample_sizes() -> None:
    fisher = {"a": [1.0, 2.0, 0.0], "b": [1.0, 1.0], "c": [3.0]}
    var_i1 = {"a": [1.0, 1.0, 0.0], "b": [1.0, 1.0], "c": [2.0]}
    var_i2 = {"a": [5.0, 0.5, 0.0], "b": [0.0, 0.0], "c": [2.0]}
    var_x = {"a": [1.0, 1.0, 0.0], "b": [0.5, 1.5], "c": [0.0]}
    rep = _fake_report(fisher, var_i1, var_i2, var_x)
    groups = {"A": ["a"], "B": ["b"], "C": ["c"]}
    df = analysis.recommend_estimator(rep, groups, epsilon=0.1, delta=0.05)
    assert list(df["recommended"]) == ["i1", "i2", "i2"]          # C is a tie: Î2
    assert df.loc["A", "frac_i2_better"] == pytest.approx(0.5)    # parameters with variance: 2, one better
    assert df.loc["B", "frac_i2_better"] == pytest.approx(1.0)
    # x share of the pooled means: A: var_x 2/3, var_i1 2/3 -> 1/2
    assert df.loc["A", "x_share_i1"] == pytest.approx(0.5)
    assert df.loc["B", "x_share_i2"] == pytest.approx(1.0)
    # Chebyshev N by hand: (var_x + var_k) / (delta eps^2 I^2), informative parameters only, median
    n_a = sorted([math.ceil((1 + 1) / (0.05 * 0.01 * 1)), math.ceil((1 + 1) / (0.05 * 0.01 * 4))])
    assert df.loc["A", "n_i1"] == pytest.approx(np.median(n_a))
    assert df.loc["A", "n"] == df.loc["A", "n_i1"]
    assert df.loc["B", "n"] == pytest.approx(np.median([math.ceil(0.5 / 5e-4), math.ceil(1.5 / 5e-4)]))
    assert df.loc["C", "n"] == pytest.approx(math.ceil(2 / (5e-4 * 9)))
    # more labels per input: the label term is divided by S
    df4 = analysis.recommend_estimator(rep, groups, samples_per_input=4)
    assert df4.loc["A", "n_i1"] < df.loc["A", "n_i1"]
    assert df4.loc["A", "x_share_i1"] == pytest.approx((2 / 3) / (2 / 3 + (2 / 3) / 4))


def test_recommend_estimator_on_networks() -> None:
    fam = ft.Categorical()
    relu = _net("relu", sizes=(4, 6, 3))
    rec = analysis.recommend_estimator(ft.variance_report(relu, _inputs(), fam))
    assert (rec["recommended"] == "i2").all() and (rec["rel_sd_i2"] == 0).all()
    sig = _net("sigmoid", sizes=(4, 6, 5, 3))
    rep = ft.variance_report(sig, _inputs(), fam)
    rec = analysis.recommend_estimator(rep)
    assert rec.loc["layer 3", "recommended"] == "i2"              # last layer
    for layer, names in ft.models.layer_groups(sig).items():
        s1 = sum(float(rep.var_i1[n].sum()) for n in names)
        s2 = sum(float(rep.var_i2[n].sum()) for n in names)
        assert rec.loc[layer, "recommended"] == ("i2" if s2 <= s1 else "i1")


def test_combine_by_group() -> None:
    est = {"i1": {"a": torch.zeros(2), "b": torch.zeros(3)}, "i2": {"a": torch.ones(2), "b": torch.ones(3)}}
    out = analysis.combine_by_group(est, {"g1": "i2", "g2": "i1"}, {"g1": ["a"], "g2": ["b"]})
    assert out["a"] is est["i2"]["a"] and out["b"] is est["i1"]["b"]
    with pytest.raises(KeyError):
        analysis.combine_by_group({"i1": est["i1"]}, {"g1": "i2"}, {"g1": ["a"]})


# ----------------------------------------------------------------------------------------------
# bound variants, against brute force
# ----------------------------------------------------------------------------------------------


def _brute_derivatives(net: torch.nn.Module, x: torch.Tensor) -> tuple[dict, dict]:
    """v[name]: (N, C, P_name) and u[name]: (N, C, P_name) by torch.func."""
    params = {n: p.detach() for n, p in net.named_parameters()}
    f = lambda prm, xi: functional_call(net, prm, (xi[None],))[0]  # noqa: E731
    v = {n: [] for n in params}
    u = {n: [] for n in params}
    for xi in x:
        jac = jacrev(f)(params, xi)
        hes = hessian(f)(params, xi)
        for n, p in params.items():
            c = jac[n].shape[0]
            v[n].append(jac[n].reshape(c, -1))
            u[n].append(torch.diagonal(hes[n][n].reshape(c, p.numel(), p.numel()), dim1=1, dim2=2))
    return {n: torch.stack(t) for n, t in v.items()}, {n: torch.stack(t) for n, t in u.items()}


def _dense_categorical(h: torch.Tensor) -> dict[str, torch.Tensor]:
    p = torch.softmax(h, 1)
    n, c = p.shape
    eps = torch.eye(c, dtype=DT) - p[:, None, :]                    # (N, y, C)
    mat_k = torch.einsum("ny,nya,nyb,nyc,nyd->nabcd", p, eps, eps, eps, eps).reshape(n, c * c, c * c)
    lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    m = mat_k - lam.reshape(n, -1, 1) * lam.reshape(n, 1, -1)
    return {"p": p, "lam": lam, "k_max": torch.linalg.eigvalsh(mat_k)[:, -1], "m_max": torch.linalg.eigvalsh(m)[:, -1],
            "lam_max": torch.linalg.eigvalsh(lam)[:, -1]}


def test_bound_variants_categorical_against_brute_force() -> None:
    net, x, fam = _net("tanh", sizes=(3, 4, 4)), _inputs(8, 3), ft.Categorical()
    bv = analysis.bound_variants(net, x, fam)
    v, u = _brute_derivatives(net, x)
    with torch.no_grad():
        dense = _dense_categorical(net(x))
    p = dense["p"]
    for name in v:
        shape = (len(x), *dict(net.named_parameters())[name].shape)
        vv, uu = v[name], u[name]                                       # (N, C, P)
        v2, u2 = vv.square().sum(1), uu.square().sum(1)
        torch.testing.assert_close(bv.v_norm_sq[name].reshape(len(x), -1), v2)
        torch.testing.assert_close(bv.u_norm_sq[name].reshape(len(x), -1), u2)
        fisher = (p[:, :, None] * (vv - (p[:, :, None] * vv).sum(1, keepdim=True)).square()).sum(1)
        torch.testing.assert_close(bv.statistics.fisher[name].reshape(len(x), -1), fisher)
        ub = bv.unprojected
        torch.testing.assert_close(ub.v1_upper[name].reshape(len(x), -1), dense["m_max"][:, None] * v2.square())
        torch.testing.assert_close(ub.v2_upper[name].reshape(len(x), -1), dense["lam_max"][:, None] * u2)
        assert float(ub.v1_lower[name].abs().max()) == 0 and float(ub.v2_lower[name].abs().max()) == 0
        split = dense["k_max"][:, None] * v2.square() - fisher.square()
        torch.testing.assert_close(bv.v1_upper_split[name].reshape(len(x), -1), split)
        pv = vv - vv.mean(1, keepdim=True)
        split_p = dense["k_max"][:, None] * pv.square().sum(1).square() - fisher.square()
        torch.testing.assert_close(bv.v1_upper_split_projected[name].reshape(len(x), -1), split_p,
                                   rtol=1e-7, atol=1e-12)
        # every variant holds, and projecting never loosens
        true1, true2 = bv.statistics.var_i1[name], bv.statistics.var_i2[name]
        tol = 1e-10
        for upper in (ub.v1_upper[name], bv.v1_upper_split[name], bv.v1_upper_split_projected[name],
                      bv.statistics.bounds.v1_upper[name]):
            assert bool((true1 <= upper + tol).all())
        assert bool((true2 <= ub.v2_upper[name] + tol).all())
        assert bool((bv.statistics.bounds.v1_upper[name] <= ub.v1_upper[name] + tol).all())
        assert bool((bv.statistics.bounds.v2_upper[name] <= ub.v2_upper[name] + tol).all())
        assert bv.statistics.fisher[name].shape == shape


def test_bound_variants_gaussian_are_exact() -> None:
    net, x = _net("tanh", sizes=(3, 4, 2)), _inputs(6, 3)
    fam = ft.Gaussian(sigma=0.5)
    bv = analysis.bound_variants(net, x, fam)
    st = bv.statistics
    for name in st.fisher:
        # M = (I + P_swap)/σ⁴: 2/σ⁴ on symmetric tensors, so ‖v‖⁴ λ_max(M) = 2 I² = V1; λ(Λ) = 1/σ²
        torch.testing.assert_close(bv.unprojected.v1_upper[name], st.var_i1[name])
        torch.testing.assert_close(bv.unprojected.v2_upper[name], st.var_i2[name])
        torch.testing.assert_close(bv.unprojected.v2_lower[name], st.var_i2[name])
        assert float(bv.unprojected.v1_lower[name].abs().max()) == 0          # antisymmetric directions (m = 2)
        # (d): λ_max(mat K) = (m + 2)/σ⁴ = 4/σ⁴, so (d) = 4 I² - I² = 3 I²
        torch.testing.assert_close(bv.v1_upper_split[name], 3 * st.fisher[name].square())


def test_kurtosis_matrix_max_against_dense() -> None:
    h = 1.5 * torch.randn(20, 5, generator=torch.Generator().manual_seed(3), dtype=DT)
    torch.testing.assert_close(analysis.kurtosis_matrix_max(ft.Categorical(), h), _dense_categorical(h)["k_max"])
    sigma, m = 0.7, 3
    eye = torch.eye(m, dtype=DT)
    k = (torch.einsum("ab,cd->abcd", eye, eye) + torch.einsum("ac,bd->abcd", eye, eye)
         + torch.einsum("ad,bc->abcd", eye, eye)) / sigma**4
    dense = torch.linalg.eigvalsh(k.reshape(m * m, m * m))[-1]
    out = analysis.kurtosis_matrix_max(ft.Gaussian(sigma), torch.zeros(4, m, dtype=DT))
    torch.testing.assert_close(out, dense.expand(4))


# ----------------------------------------------------------------------------------------------
# class table and simulation
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table_setup():
    net, x, fam = _net("sigmoid", sizes=(4, 5, 3)), _inputs(10), ft.Categorical()
    return net, x, fam, analysis.class_table(net, x, fam)


def test_class_table_moments_equal_per_input_statistics(table_setup) -> None:
    net, x, fam, table = table_setup
    st = ft.per_input_statistics(net, x, fam)
    p = table.probs
    torch.testing.assert_close(p, torch.softmax(net(x), 1).detach())
    for name in st.fisher:
        w = p.reshape(*p.shape, *([1] * (table.i1[name].ndim - 2)))
        for terms, var in ((table.i1[name], st.var_i1[name]), (table.i2[name], st.var_i2[name])):
            mean = (w * terms).sum(1)
            torch.testing.assert_close(mean, st.fisher[name], rtol=1e-9, atol=1e-14)
            torch.testing.assert_close((w * (terms - mean.unsqueeze(1)).square()).sum(1), var, rtol=1e-8, atol=1e-14)


def test_class_table_estimate_equals_fisher_diagonal(table_setup) -> None:
    net, x, fam, table = table_setup
    g = torch.Generator().manual_seed(4)
    idx = torch.randint(0, len(x), (7,), generator=g)
    labels = torch.randint(0, 3, (7, 3), generator=g)
    rows = idx.repeat_interleave(3)
    for est in ("i1", "i2"):
        direct = ft.fisher_diagonal(net, x[rows], fam, est, targets=labels.reshape(-1))
        got = table.estimate(est, idx, labels)
        for name in direct:
            torch.testing.assert_close(got[name], direct[name], rtol=1e-10, atol=1e-15)


def test_class_table_select_and_errors(table_setup) -> None:
    net, x, fam, table = table_setup
    keep = {"0.weight": torch.tensor([0, 5, 7]), "2.bias": torch.tensor([1])}
    sub = table.select(keep)
    assert set(sub.i1) == set(keep) and sub.i1["0.weight"].shape == (len(x), 3, 3)
    torch.testing.assert_close(sub.i2["0.weight"], table.i2["0.weight"].reshape(len(x), 3, -1)[:, :, [0, 5, 7]])
    with pytest.raises(TypeError):
        analysis.class_table(net, x, ft.Gaussian(1.0))
    with pytest.raises(ValueError):
        table.terms("exact")


def test_simulate_estimates_replays_its_draws(table_setup) -> None:
    _, x, _, table = table_setup
    n, s = 6, 4
    out = analysis.simulate_estimates(table, "i1", n, s, repetitions=1, generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    idx = torch.randint(0, len(x), (1, n), generator=g)
    labels = torch.multinomial(table.probs[idx.reshape(-1)], s, replacement=True, generator=g)
    ref = table.estimate("i1", idx[0], labels)
    for name in ref:
        torch.testing.assert_close(out[name][0], ref[name], rtol=1e-12, atol=1e-15)


def test_simulate_estimates_mean_and_variance(table_setup) -> None:
    net, x, fam, table = table_setup
    rep = ft.variance_report(net, x, fam)
    g = torch.Generator().manual_seed(11)
    reps, n, s = 4000, 5, 2
    for est in ("i1", "i2"):
        # chunked (max_rows small) must not change the distribution, only the memory
        sims = analysis.simulate_estimates(table, est, n, s, reps, g, max_rows=64)
        pred = rep.estimator_variance(est, num_inputs=n, samples_per_input=s)
        for name in sims:
            f, var = rep.fisher[name].flatten(), pred[name].flatten()
            samples = sims[name].reshape(reps, -1)
            live = var > 0
            z_mean = (samples.mean(0) - f)[live] / (var[live] / reps).sqrt()
            assert float(z_mean.abs().max()) < 5
            emp, se = analysis.empirical_variance(samples, mean=f)
            z_var = (emp - var)[live] / se[live]
            assert float(z_var.abs().max()) < 5, (est, name)
            torch.testing.assert_close(samples[:, ~live], f[~live].expand(reps, -1))


# ----------------------------------------------------------------------------------------------
# empirical variance
# ----------------------------------------------------------------------------------------------


def test_empirical_variance_known_mean() -> None:
    x = torch.tensor([[1.0, 3.0], [3.0, 5.0], [2.0, 1.0], [6.0, 3.0]], dtype=DT)
    mu = torch.tensor([2.0, 3.0], dtype=DT)
    var, se = analysis.empirical_variance(x, mean=mu)
    sq = (x - mu).square()
    torch.testing.assert_close(var, sq.mean(0))
    torch.testing.assert_close(se, sq.std(0) / 2.0)


def test_empirical_variance_unknown_mean_closed_form() -> None:
    r = 50                                     # a Rademacher sample with exactly population moments
    x = torch.tensor([1.0, -1.0] * (r // 2), dtype=DT)
    var, se = analysis.empirical_variance(x)
    assert float(var) == pytest.approx(r / (r - 1))                    # unbiased s²
    # Var(s²) = (μ4 - (R-3)/(R-1) σ⁴)/R with μ4 = σ⁴ = 1
    assert float(se) ** 2 == pytest.approx(2 / (r * (r - 1)))
    # Gaussian data: Var(s²) = 2σ⁴/(R-1); the standard error estimates the spread of s² over experiments
    g = torch.Generator().manual_seed(0)
    samples = 2.0 * torch.randn(2000, 40, generator=g, dtype=DT)        # 2000 experiments of R = 40
    s2, se2 = analysis.empirical_variance(samples, dim=1)
    true_sd = math.sqrt(2 * 16 / 39)
    assert float(s2.mean()) == pytest.approx(4.0, abs=5 * true_sd / math.sqrt(2000))
    assert float(s2.std()) == pytest.approx(true_sd, rel=0.1)
    assert float(se2.square().mean().sqrt()) == pytest.approx(true_sd, rel=0.15)
    with pytest.raises(ValueError):
        analysis.empirical_variance(x[:3])
    with pytest.raises(ValueError):
        analysis.empirical_variance(x[:1], mean=torch.tensor(0.0, dtype=DT))


# ----------------------------------------------------------------------------------------------
# the network helper (synthetic stand-in data: this tests the wrapper, not MNIST)
# ----------------------------------------------------------------------------------------------


def test_mnist_network_is_deterministic_and_converts_data() -> None:
    g = torch.Generator().manual_seed(0)
    synthetic = MNIST(torch.rand(96, 12, generator=g), torch.randint(0, 3, (96,), generator=g),
                      torch.rand(30, 12, generator=g), torch.randint(0, 3, (30,), generator=g), "synthetic")
    a = analysis.mnist_network((12, 6, 3), epochs=2, data=synthetic, device="cpu")
    b = analysis.mnist_network((12, 6, 3), epochs=2, data=synthetic, device="cpu")
    assert a.data.train_x.dtype == DT and not a.model.training
    assert len(a.losses) == 2 and 0.0 <= a.test_accuracy <= 1.0
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    ref = ft.models.mlp([12, 6, 3], "sigmoid", seed=0, dtype=DT)
    ft.training.train_classifier(ref, synthetic.train_x.double(), synthetic.train_y, epochs=2, lr=3e-3, seed=0)
    for pa, pr in zip(a.model.parameters(), ref.parameters()):
        assert torch.equal(pa, pr)


def test_bound_variants_binary_at_one_half() -> None:
    """At p = 1/2, M = 0 and V1 = 0: variant (d), projected, must be 0 too (not -I²)."""
    net = ft.models.mlp([3, 4, 2], "tanh", seed=0, dtype=DT)
    with torch.no_grad():
        net[2].weight[1].copy_(net[2].weight[0])
        net[2].bias[1].copy_(net[2].bias[0])
    bv = analysis.bound_variants(net, _inputs(5, 3), ft.Categorical())
    for name, v1 in bv.statistics.var_i1.items():
        scale = float(bv.statistics.fisher[name].abs().max()) ** 2 + 1e-300
        assert float(v1.abs().max()) <= 1e-12 * scale
        assert float(bv.v1_upper_split_projected[name].abs().max()) <= 1e-12 * scale
    # the last layer has Fisher information (hidden layers move both logits alike: Πv = 0)
    assert float(bv.statistics.fisher["2.weight"].min()) >= 0 and float(bv.statistics.fisher["2.bias"].min()) > 0
