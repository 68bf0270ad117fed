"""Tests of the core per-group views: ``fishertut.groups`` and ``fishertut.pooling``.

Hand-made reports with known values for the pooling functions, and the reports of small networks for the
recommendation rule (the last layer's zero ``V_2``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fishertut as ft
from helpers import gaussian_inputs, scaled_net

DT = torch.float64


def _net(activation: str = "sigmoid", sizes=(4, 5, 3), seed: int = 0) -> torch.nn.Sequential:
    return scaled_net(activation, sizes, seed)


def _inputs(n: int = 12, d: int = 4, seed: int = 1) -> torch.Tensor:
    return gaussian_inputs(n, d, seed)


def _fake_report(fisher, var_i1, var_i2, var_x, bounds=None, n=10) -> ft.VarianceReport:
    """A VarianceReport with given per-parameter values (bounds default to var ± 0)."""

    def t(d: dict) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(v, dtype=DT) for k, v in d.items()}

    fisher, var_i1, var_i2, var_x = t(fisher), t(var_i1), t(var_i2), t(var_x)
    if bounds is None:
        bounds = ft.Bounds(var_i1, var_i1, var_i2, var_i2)
    return ft.VarianceReport(
        fisher=fisher,
        var_i1=var_i1,
        var_i2=var_i2,
        var_x=var_x,
        bounds=bounds,
        num_inputs=n,
        path="test",
        family=ft.Categorical(),
    )


def test_layer_groups_by_module_from_a_model_or_names() -> None:
    net = ft.lab.models.mlp([4, 5, 6, 3], "tanh", dtype=DT, flatten=True)
    expected = {"layer 1": ["1.weight", "1.bias"], "layer 2": ["3.weight", "3.bias"], "layer 3": ["5.weight", "5.bias"]}
    assert ft.layer_groups(net) == expected
    assert ft.layer_groups(["a", "b.weight", "b.bias", "c.d.weight"]) == {
        "layer 1": ["a"],
        "layer 2": ["b.weight", "b.bias"],
        "layer 3": ["c.d.weight"],
    }
    net[1].bias.requires_grad_(False)  # frozen parameters are left out
    assert ft.layer_groups(net)["layer 1"] == ["1.weight"]
    with pytest.raises(TypeError, match="the string"):
        ft.layer_groups("0.weight")


@pytest.mark.parametrize("leading", [0, 1, 2])
def test_group_values_concatenates_in_order(leading: int) -> None:
    g = torch.Generator().manual_seed(0)
    lead = (3, 2)[:leading]
    values = {"a": torch.randn(*lead, 2, 3, generator=g), "b": torch.randn(*lead, 4, generator=g)}
    out = ft.flatten(values, ["b", "a"], leading=leading)
    assert out.dtype == DT and out.shape == (*lead, 4 + 6)
    flat_b = values["b"].reshape(*lead, -1).double()
    flat_a = values["a"].reshape(*lead, -1).double()
    torch.testing.assert_close(out[..., :4], flat_b)
    torch.testing.assert_close(out[..., 4:], flat_a)
    with pytest.raises(KeyError, match="not among"):
        ft.flatten(values, ["c"])


def test_layer_summary_against_hand_computed_means() -> None:
    fisher = {"w": [[1.0, 3.0]], "b": [2.0]}
    var_i1 = {"w": [[4.0, 0.0]], "b": [5.0]}
    var_i2 = {"w": [[0.0, 0.0]], "b": [0.0]}
    var_x = {"w": [[1.0, 1.0]], "b": [4.0]}
    lower1 = {"w": [[0.0, 0.0]], "b": [0.0]}
    upper1 = {"w": [[40.0, 0.0]], "b": [50.0]}
    bounds = ft.Bounds(
        *({k: torch.tensor(v, dtype=DT) for k, v in d.items()} for d in (lower1, upper1, var_i2, var_i2))
    )
    rep = _fake_report(fisher, var_i1, var_i2, var_x, bounds)
    df = ft.layer_summary(rep, {"g": ["w", "b"], "only b": ["b"]})
    row = df.loc["g"]
    assert row["num_params"] == 3
    assert row["fisher"] == pytest.approx(2.0)
    assert row["var_i1"] == pytest.approx(3.0)
    assert row["var_x"] == pytest.approx(2.0)
    assert row["sd_i1"] == pytest.approx(math.sqrt(3.0))
    assert row["rel_sd_i1"] == pytest.approx(math.sqrt(3.0) / 2.0)
    assert row["v1_upper"] == pytest.approx(30.0)
    assert row["log10_v1_upper"] == pytest.approx(1.0)  # mean bound 30 / mean variance 3
    assert row["log10_v1_lower"] == math.inf  # zero lower bound, positive variance
    assert math.isnan(row["log10_v2_upper"]) and math.isnan(row["log10_v2_lower"])  # 0 / 0
    assert row["sd_i2"] == 0 and row["rel_sd_i2"] == 0
    assert df.loc["only b", "fisher"] == pytest.approx(2.0)
    assert df.loc["only b", "log10_v1_upper"] == pytest.approx(1.0)


def test_layer_summary_on_a_network_report() -> None:
    net, x, fam = _net(), _inputs(), ft.Categorical()
    rep = ft.variance_report(net, x, fam)
    df = ft.layer_summary(rep)
    assert list(df.index) == ["layer 1", "layer 2"]
    for layer, names in ft.layer_groups(net).items():
        allf = np.concatenate([rep.fisher[n].numpy().ravel() for n in names])
        allv = np.concatenate([rep.var_i1[n].numpy().ravel() for n in names])
        allu = np.concatenate([rep.bounds.v1_upper[n].numpy().ravel() for n in names])
        assert df.loc[layer, "fisher"] == pytest.approx(allf.mean(), rel=1e-12)
        assert df.loc[layer, "log10_v1_upper"] == pytest.approx(np.log10(allu.mean() / allv.mean()), rel=1e-10)
        assert df.loc[layer, "log10_v1_upper"] >= 0
    assert df.loc["layer 1", "log10_v2_lower"] >= 0 and df.loc["layer 1", "log10_v2_upper"] >= 0
    assert df.loc["layer 2", "var_i2"] == 0  # last layer: u = 0, so the V2 ratios are 0/0
    assert math.isnan(df.loc["layer 2", "log10_v2_upper"])


def test_recommend_estimator_rule_and_sample_sizes() -> None:
    fisher = {"a": [1.0, 2.0, 0.0], "b": [1.0, 1.0], "c": [3.0]}
    var_i1 = {"a": [1.0, 1.0, 0.0], "b": [1.0, 1.0], "c": [2.0]}
    var_i2 = {"a": [5.0, 0.5, 0.0], "b": [0.0, 0.0], "c": [2.0]}
    var_x = {"a": [1.0, 1.0, 0.0], "b": [0.5, 1.5], "c": [0.0]}
    rep = _fake_report(fisher, var_i1, var_i2, var_x)
    groups = {"A": ["a"], "B": ["b"], "C": ["c"]}
    df = ft.recommend_estimator(rep, groups, epsilon=0.1, delta=0.05)
    assert list(df["recommended"]) == ["i1", "i2", "i2"]  # C is a tie: Î2
    assert df.loc["A", "frac_i2_better"] == pytest.approx(0.5)  # parameters with variance: 2, one better
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
    df4 = ft.recommend_estimator(rep, groups, samples_per_input=4)
    assert df4.loc["A", "n_i1"] < df.loc["A", "n_i1"]
    assert df4.loc["A", "x_share_i1"] == pytest.approx((2 / 3) / (2 / 3 + (2 / 3) / 4))


def test_recommend_estimator_on_networks() -> None:
    fam = ft.Categorical()
    relu = _net("relu", sizes=(4, 6, 3))
    rec = ft.recommend_estimator(ft.variance_report(relu, _inputs(), fam))
    assert (rec["recommended"] == "i2").all() and (rec["rel_sd_i2"] == 0).all()
    sig = _net("sigmoid", sizes=(4, 6, 5, 3))
    rep = ft.variance_report(sig, _inputs(), fam)
    rec = ft.recommend_estimator(rep)
    assert rec.loc["layer 3", "recommended"] == "i2"  # last layer
    for layer, names in ft.layer_groups(sig).items():
        s1 = sum(float(rep.var_i1[n].sum()) for n in names)
        s2 = sum(float(rep.var_i2[n].sum()) for n in names)
        assert rec.loc[layer, "recommended"] == ("i2" if s2 <= s1 else "i1")


def test_combine_by_group() -> None:
    est = {"i1": {"a": torch.zeros(2), "b": torch.zeros(3)}, "i2": {"a": torch.ones(2), "b": torch.ones(3)}}
    out = ft.combine_by_group(est, {"g1": "i2", "g2": "i1"}, {"g1": ["a"], "g2": ["b"]})
    assert out["a"] is est["i2"]["a"] and out["b"] is est["i1"]["b"]
    with pytest.raises(KeyError):
        ft.combine_by_group({"i1": est["i1"]}, {"g1": "i2"}, {"g1": ["a"]})


def test_report_statistics_names_every_per_parameter_field():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    rep = ft.variance_report(model, torch.randn(5, 3, dtype=torch.float64), ft.Categorical())
    stats = rep.statistics()
    assert list(stats) == ["fisher", "var_x", "var_i1", "var_i2", "v1_lower", "v1_upper", "v2_lower", "v2_upper"]
    assert stats["var_x"] is rep.var_x and stats["v2_upper"] is rep.bounds.v2_upper
