"""A small, seeded training loop for the classifiers of the chapters and the case study."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

__all__ = ["train_classifier"]


def train_classifier(model: nn.Module, x: Tensor, y: Tensor, *, epochs: int = 1, batch_size: int = 128,
                     lr: float = 1e-3, seed: int = 0, progress: bool = False,
                     on_epoch_end: Callable[[int, nn.Module], None] | None = None,
                     loss: Callable[[Tensor, Tensor], Tensor] | None = None,
                     penalty: Callable[[nn.Module], Tensor] | None = None) -> list[float]:
    """Minimise ``loss(outputs, targets)`` (default: cross-entropy) with Adam; returns each epoch's mean loss.

    ``penalty(model)``, if given, is added to every mini-batch loss (e.g. an EWC penalty); the returned
    losses include it.

    The model is put in train mode during the loop and back in eval mode before ``on_epoch_end(epoch, model)``
    (epochs counted from 1) and at the end. Mini-batches are shuffled by a generator seeded with ``seed``.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x and y must have the same, non-zero number of rows, got {x.shape[0]} and {y.shape[0]}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss() if loss is None else loss
    losses = []
    epochs_iter = range(1, epochs + 1)
    if progress:
        from tqdm.auto import tqdm

        epochs_iter = tqdm(epochs_iter, desc="training", unit="epoch")
    for epoch in epochs_iter:
        model.train()
        order = torch.randperm(x.shape[0], generator=gen).to(x.device)
        total = 0.0
        for s in range(0, x.shape[0], batch_size):
            idx = order[s:s + batch_size]
            opt.zero_grad()
            value = loss_fn(model(x[idx]), y[idx])
            if penalty is not None:
                value = value + penalty(model)
            value.backward()
            opt.step()
            total += value.item() * idx.numel()
        losses.append(total / x.shape[0])
        model.eval()
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
    model.eval()
    return losses
