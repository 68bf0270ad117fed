"""Tests of ``fishertut.lab.models``: the MLP builder and the one theory network (synthetic stand-in data)."""

from __future__ import annotations

import pytest
import torch

from fishertut.lab import models, training
from fishertut.lab.data import MNIST

DT = torch.float64


def _synthetic() -> MNIST:
    g = torch.Generator().manual_seed(0)
    return MNIST(
        torch.rand(96, 12, generator=g),
        torch.randint(0, 3, (96,), generator=g),
        torch.rand(30, 12, generator=g),
        torch.randint(0, 3, (30,), generator=g),
        "synthetic",
    )


def test_theory_network_is_deterministic_and_converts_data() -> None:
    synthetic = _synthetic()
    a = models.theory_network((12, 6, 3), epochs=2, data=synthetic, device="cpu")
    b = models.theory_network((12, 6, 3), epochs=2, data=synthetic, device="cpu")
    assert a.data.train_x.dtype == DT and a.data.train_y.dtype == torch.int64 and not a.model.training
    assert len(a.losses) == 2 and 0.0 <= a.test_accuracy <= 1.0
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    # the recipe: mlp + train_classifier with the default epochs' learning rate and seed
    ref = models.mlp([12, 6, 3], "sigmoid", seed=0, dtype=DT)
    training.train_classifier(ref, synthetic.train_x.double(), synthetic.train_y, epochs=2, lr=1e-2, seed=0)
    for pa, pr in zip(a.model.parameters(), ref.parameters()):
        assert torch.equal(pa, pr)
    correct = (ref(synthetic.test_x.double()).argmax(1) == synthetic.test_y).double().mean()
    assert a.test_accuracy == pytest.approx(float(correct), abs=0)


def test_mlp_layout_seed_and_errors() -> None:
    net = models.mlp([5, 4, 3], "tanh", seed=3, flatten=True)
    assert [type(m).__name__ for m in net] == ["Flatten", "Linear", "Tanh", "Linear"]
    assert not net.training
    state = torch.random.get_rng_state()
    again = models.mlp([5, 4, 3], "tanh", seed=3, flatten=True)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), again.parameters()))
    with pytest.raises(ValueError, match="activation must be one of"):
        models.mlp([2, 2], "swish")
    with pytest.raises(ValueError, match="sizes must list"):
        models.mlp([3])


def test_default_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert models.default_device().type == expected


def test_mnist_to_converts_images_not_labels() -> None:
    data = _synthetic().to(DT, "cpu")
    assert data.train_x.dtype == DT and data.test_x.dtype == DT
    assert data.train_y.dtype == torch.int64 and data.source == "synthetic"


def test_lenet_layout_seed_and_flat_inputs() -> None:
    import fishertut as ft

    state = torch.random.get_rng_state()
    flat = models.lenet("relu", seed=4, dtype=DT)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone
    images = models.lenet("relu", seed=4, dtype=DT, flat_inputs=False)
    assert [type(m).__name__ for m in flat] == ["Unflatten"] + [type(m).__name__ for m in images]
    assert [type(m).__name__ for m in images] == [
        "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear", "ReLU", "Linear"
    ]  # fmt: skip
    assert sum(p.numel() for p in flat.parameters()) == 208 + 3216 + 16448 + 650
    assert not flat.training and all(p.dtype == DT for p in flat.parameters())
    for p, q in zip(flat.parameters(), images.parameters()):
        assert torch.equal(p, q)  # the same weights with and without the reshape
    x = torch.rand(3, 784, dtype=DT, generator=torch.Generator().manual_seed(0))
    assert torch.equal(flat(x), images(x.reshape(3, 1, 28, 28)))
    # The flat-input network runs on the graph engine, and ReLU makes every parameter piecewise linear.
    report = ft.variance_report(flat, x, ft.Categorical())
    assert report.path == "graph"
    assert report.piecewise_linear == {n for n, _ in flat.named_parameters()}
    with pytest.raises(ValueError, match="activation must be one of"):
        models.lenet("swish")
