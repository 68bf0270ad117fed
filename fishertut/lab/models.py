"""Networks of the book: the MLP and LeNet builders, the one trained "theory network", and the default device.

* :func:`mlp`: ``Linear -> act -> ... -> Linear``, seeded (used by every chapter, the case study, the tests
  and the benchmarks);
* :func:`lenet`: the small convolutional network of the CNN case study and of ``benchmarks/cnn.py``;
* :func:`theory_network`: the small sigmoid MNIST classifier that the theory chapters study, trained (chapters
  "Exponential-family outputs", "The two estimators", "The variances of the two estimators", "Classification", "Bounds",
  "Input and label randomness" and "A practical guide");
* :func:`default_device`: CUDA when available, else the CPU (every chapter).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .data import MNIST, load_mnist
from .training import train_classifier

__all__ = ["ACTIVATIONS", "mlp", "lenet", "default_device", "TrainedNetwork", "theory_network"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}


def _activation(name: str) -> type[nn.Module]:
    """The module class of :data:`ACTIVATIONS` named ``name``; a ``ValueError`` naming ``activation`` otherwise."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def _seeded_sequential(
    layers: Callable[[], list[nn.Module]],
    seed: int | None,
    dtype: torch.dtype,
    device: torch.device | str | None,
) -> nn.Sequential:
    """``nn.Sequential(*layers())`` in eval mode, initialised under ``seed`` with the global CPU generator restored.

    ``seed=None`` initialises from the global generator as it is (and advances it).
    """
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        model = nn.Sequential(*layers())
    return model.to(dtype=dtype, device=device).eval()


def mlp(
    sizes: Sequence[int],
    activation: str = "sigmoid",
    *,
    seed: int | None = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    flatten: bool = False,
) -> nn.Sequential:
    """A multilayer perceptron ``Linear -> act -> ... -> Linear`` with a linear last layer.

    Args:
        sizes: widths ``[d_in, h_1, ..., h_{L-1}, C]``; at least two entries.
        activation: a key of :data:`ACTIVATIONS`.
        seed: seeds PyTorch's default initialisation (``None`` leaves the global generator alone).
        dtype: of the parameters.
        device: of the parameters.
        flatten: start with ``nn.Flatten()`` (for image batches ``(N, 1, 28, 28)``).

    Returns:
        An ``nn.Sequential`` in eval mode. Its parameters are named ``"<index>.weight"`` / ``"<index>.bias"``.
    """
    sizes = list(sizes)
    if len(sizes) < 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"sizes must list at least two positive integer widths, got {sizes}")
    act = _activation(activation)

    def layers() -> list[nn.Module]:
        out: list[nn.Module] = [nn.Flatten()] if flatten else []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            out.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                out.append(act())
        return out

    return _seeded_sequential(layers, seed, dtype, device)


def lenet(
    activation: str = "tanh",
    *,
    seed: int | None = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    flat_inputs: bool = True,
) -> nn.Sequential:
    """A LeNet-style convolutional network for 28×28 digits, seeded, in eval mode.

    Layout (20,522 parameters): ``Conv2d(1, 8, 5) -> act -> MaxPool2d(2) -> Conv2d(8, 16, 5) -> act ->
    MaxPool2d(2) -> Flatten -> Linear(256, 64) -> act -> Linear(64, 10)``. The feature maps are
    ``(8, 24, 24)``, ``(8, 12, 12)``, ``(16, 8, 8)`` and ``(16, 4, 4)``: each weight of the first convolution
    is shared by 576 output positions, each of the second by 64.

    Args:
        activation: a key of :data:`ACTIVATIONS` (the case study and the benchmark: ``"tanh"``, ``"relu"``).
        seed: seeds PyTorch's default initialisation (``None`` leaves the global generator alone); the same seed
            gives the same weights with and without ``flat_inputs``.
        dtype: of the parameters.
        device: of the parameters.
        flat_inputs: start with ``nn.Unflatten(1, (1, 28, 28))``, so that the network takes the flat ``(N, 784)``
            digits of :func:`~fishertut.lab.data.load_mnist` (the graph engine takes the reshape exactly); else it
            takes images ``(N, 1, 28, 28)``.

    Returns:
        An ``nn.Sequential``; its parameters are named ``"<index>.weight"`` / ``"<index>.bias"``, the indices
        shifted by one when ``flat_inputs``.
    """
    act = _activation(activation)

    def layers() -> list[nn.Module]:
        head: list[nn.Module] = [nn.Unflatten(1, (1, 28, 28))] if flat_inputs else []
        return head + [
            nn.Conv2d(1, 8, 5),
            act(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 5),
            act(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(256, 64),
            act(),
            nn.Linear(64, 10),
        ]

    return _seeded_sequential(layers, seed, dtype, device)


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class TrainedNetwork:
    """A trained classifier with its data (on the model's device and dtype).

    Attributes:
        model: the network, in eval mode.
        data: :class:`~fishertut.lab.data.MNIST` with images in the model's dtype, on its device.
        losses: mean training loss of each epoch.
        test_accuracy: accuracy on ``data.test_x``.
    """

    model: nn.Module
    data: MNIST
    losses: list[float]
    test_accuracy: float


def theory_network(
    sizes: Sequence[int] = (784, 32, 16, 10),
    activation: str = "sigmoid",
    *,
    epochs: int = 3,
    lr: float = 1e-2,
    batch_size: int = 128,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    data: MNIST | None = None,
) -> TrainedNetwork:
    """The small MNIST MLP of the theory chapters, trained with Adam on ``data.train_x``.

    :func:`mlp` ``(sizes, activation, seed=seed)`` trained by :func:`~fishertut.lab.training.train_classifier`
    for ``epochs`` epochs; the same arguments give the same network, so chapters can share it.

    Args:
        sizes: widths ``[784, h_1, ..., C]``.
        activation: a key of :data:`ACTIVATIONS`.
        epochs: training epochs.
        lr: Adam's learning rate.
        batch_size: of the training loop.
        seed: seeds the initialisation and the shuffling.
        dtype: of the network and the returned images.
        device: default :func:`default_device`.
        data: :class:`~fishertut.lab.data.MNIST` (moved to ``dtype`` and ``device``); default
            :func:`~fishertut.lab.data.load_mnist`.

    Returns:
        :class:`TrainedNetwork`.
    """
    device = torch.device(device) if device is not None else default_device()
    data = load_mnist(dtype=dtype, device=device) if data is None else data.to(dtype, device)
    model = mlp(list(sizes), activation, seed=seed, dtype=dtype, device=device)
    losses = train_classifier(model, data.train_x, data.train_y, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    with torch.no_grad():
        accuracy = float((model(data.test_x).argmax(1) == data.test_y).double().mean())
    return TrainedNetwork(model=model, data=data, losses=losses, test_accuracy=accuracy)
