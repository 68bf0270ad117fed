"""Bad input gets a clear exception naming the argument or module and what was expected. One test per case."""

import pytest
import torch
from torch import nn

import fishertut as ft


@pytest.fixture
def model():
    return ft.lab.models.mlp([3, 4, 3], "tanh", dtype=torch.float64)


@pytest.fixture
def x():
    return torch.randn(5, 3, dtype=torch.float64)


def test_empty_tensor_inputs(model):
    with pytest.raises(ValueError, match="inputs is empty"):
        ft.fisher_diagonal(model, torch.empty(0, 3, dtype=torch.float64), ft.Categorical())


def test_empty_iterable_inputs(model):
    with pytest.raises(ValueError, match="inputs is empty"):
        ft.variance_report(model, [], ft.Categorical())


def test_inputs_of_the_wrong_type(model):
    with pytest.raises(TypeError, match="inputs must be a tensor or an iterable"):
        ft.fisher_diagonal(model, 3.0, ft.Categorical())


def test_output_not_two_dimensional(x):
    model = nn.Sequential(nn.Linear(3, 4), nn.Flatten(0)).double().eval()
    with pytest.raises(ValueError, match=r"must have shape \(N, C\).*got shape \(\d+,\)"):
        ft.fisher_diagonal(model, x, ft.Categorical(), path="generic")


def test_categorical_with_one_class(x):
    model = ft.lab.models.mlp([3, 4, 1], "tanh", dtype=torch.float64)
    with pytest.raises(ValueError, match="at least 2 columns"):
        ft.fisher_diagonal(model, x, ft.Categorical())


def test_targets_of_the_wrong_shape(model, x):
    with pytest.raises(ValueError, match=r"targets for Categorical must have shape \(N,\) = \(5,\)"):
        ft.fisher_diagonal(model, x, ft.Categorical(), "i1", targets=torch.zeros(5, 1, dtype=torch.long))


def test_targets_out_of_range(model, x):
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        ft.fisher_diagonal(model, x, ft.Categorical(), "i1", targets=torch.tensor([0, 1, 2, 3, 0]))


def test_targets_not_integer(model, x):
    with pytest.raises(ValueError, match="integer class indices"):
        ft.fisher_diagonal(model, x, ft.Categorical(), "i2", targets=torch.zeros(5, dtype=torch.float64))


def test_gaussian_targets_of_the_wrong_shape(model, x):
    with pytest.raises(ValueError, match=r"targets for Gaussian must have the output's shape"):
        ft.fisher_diagonal(model, x, ft.Gaussian(), "i1", targets=torch.zeros(5, dtype=torch.float64))


def test_fewer_targets_than_inputs(model, x):
    with pytest.raises(ValueError, match="targets has 4 rows but inputs has"):
        ft.fisher_diagonal(model, x, ft.Categorical(), "i1", targets=torch.zeros(4, dtype=torch.long))


def test_targets_with_the_exact_estimator(model, x):
    with pytest.raises(ValueError, match="targets are not used by estimator='exact'"):
        ft.fisher_diagonal(model, x, ft.Categorical(), "exact", targets=torch.zeros(5, dtype=torch.long))


def test_nan_in_inputs(model, x):
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="inputs contain NaN or Inf"):
        ft.fisher_diagonal(model, x, ft.Categorical())


def test_inf_in_parameters(model, x):
    with torch.no_grad():
        model[2].weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="model parameter '2.weight' contains NaN or Inf"):
        ft.variance_report(model, x, ft.Categorical())


def test_unknown_estimator(model, x):
    with pytest.raises(
        ValueError, match=r"estimator must be one of \('exact', 'i1', 'i1_sequence', 'i2', 'hutchinson'\), got 'i3'"
    ):
        ft.fisher_diagonal(model, x, ft.Categorical(), "i3")


def test_dropout_in_training_mode(x):
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1), nn.Linear(4, 3)).double()
    with pytest.raises(ValueError, match=r"module '1' \(Dropout\) is in training mode.*model.eval\(\)"):
        ft.fisher_diagonal(model, x, ft.Categorical())


def test_batch_norm_in_training_mode(x):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).double()
    with pytest.raises(ValueError, match=r"module '1' \(BatchNorm1d\) is in training mode"):
        ft.variance_report(model, x, ft.Categorical())


def test_inputs_dtype_differs_from_parameters(model, x):
    with pytest.raises(
        ValueError, match="inputs have dtype torch.float32 but the model parameters have dtype torch.float64"
    ):
        ft.fisher_diagonal(model, x.float(), ft.Categorical())


def test_inputs_device_differs_from_parameters(model):
    with pytest.raises(ValueError, match="inputs are on meta but the model parameters are on cpu"):
        ft.fisher_diagonal(model, torch.empty(5, 3, dtype=torch.float64, device="meta"), ft.Categorical())


def test_parameters_of_mixed_dtypes(x):
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).eval()
    model[0].double()
    with pytest.raises(ValueError, match="model parameters have several dtypes"):
        ft.fisher_diagonal(model, x, ft.Categorical())


class _GeneratorElsewhere(torch.Generator):
    """A CPU generator that reports another device (no second device exists on CI machines)."""

    @property
    def device(self):
        return torch.device("meta")


def test_generator_on_another_device(model, x):
    with pytest.raises(ValueError, match="generator is on meta but the model is on cpu"):
        ft.fisher_diagonal(model, x, ft.Categorical(), "i1", generator=_GeneratorElsewhere())


def test_generator_of_the_wrong_type(model, x):
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        ft.fisher_diagonal(model, x, ft.Categorical(), "i1", generator=0)


def test_unsupported_layer_in_forced_layerwise_path():
    model = nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=1), nn.Linear(4, 3)).double().eval()
    with pytest.raises(ft.UnsupportedModelError, match=r"module '1' \(Softmax\) is not supported.*supported: Linear"):
        ft.fisher_diagonal(model, torch.randn(2, 3, dtype=torch.float64), ft.Categorical(), path="layerwise")


def test_unknown_path(model, x):
    with pytest.raises(ValueError, match="path must be one of"):
        ft.fisher_diagonal(model, x, ft.Categorical(), path="fast")


@pytest.mark.parametrize(
    "argument,kwargs", [("samples_per_input", {"samples_per_input": 0}), ("batch_size", {"batch_size": 0})]
)
def test_non_positive_counts(model, x, argument, kwargs):
    with pytest.raises(ValueError, match=f"{argument} must be a positive integer"):
        ft.fisher_diagonal(model, x, ft.Categorical(), "i1", **kwargs)


def test_family_of_the_wrong_type(model, x):
    with pytest.raises(TypeError, match="family must be a fishertut family"):
        ft.fisher_diagonal(model, x, "categorical")


def test_gaussian_sigma_must_be_positive():
    with pytest.raises(ValueError, match="sigma must be a finite positive number"):
        ft.Gaussian(sigma=0.0)


def test_model_without_trainable_parameters(model, x):
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="model has no trainable parameters"):
        ft.fisher_diagonal(model, x, ft.Categorical())


def test_targets_data_with_tensor_inputs(model, x):
    with pytest.raises(ValueError, match="targets='data' needs inputs that yield"):
        ft.fisher_diagonal(model, x, ft.Categorical(), "i1", targets="data")


def test_sample_size_arguments(model, x):
    rep = ft.variance_report(model, x, ft.Categorical())
    with pytest.raises(ValueError, match="epsilon must be a positive number"):
        rep.sample_size(0.0)
    with pytest.raises(ValueError, match=r"delta must be in \(0, 1\)"):
        rep.sample_size(0.1, delta=1.5)
    with pytest.raises(ValueError, match="estimator must be one of"):
        rep.estimator_variance("exact")


def test_nan_in_a_later_batch_is_reported_at_the_end(model, x):
    x[4, 0] = float("inf")
    with pytest.raises(ValueError, match="inputs contain NaN or Inf"):
        ft.variance_report(model, x, ft.Categorical(), batch_size=2)


def test_out_of_range_target_in_a_later_batch(model, x):
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\), got values in \[0, 7\]"):
        ft.fisher_diagonal(model, x, ft.Categorical(), "i2", targets=torch.tensor([0, 1, 2, 0, 7]), batch_size=2)
