"""A small, seeded training loop for the classifiers and regressors of the chapters and the case study.

Used by chapters :doc:`/book/exponential_family` to :doc:`/book/practical_guide` (through
:func:`~fishertut.lab.models.theory_network`), "Regression" (a squared-error loss), "The empirical Fisher" and
"Case study: an MNIST classifier".
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["train_classifier"]


def train_classifier(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int = 1,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
    loss: Callable[[Tensor, Tensor], Tensor] | None = None,
    penalty: Callable[[nn.Module], Tensor] | None = None,
) -> list[float]:
    """Minimise a mean loss (default the softmax cross-entropy) with Adam; returns each epoch's mean data loss.

    Each minibatch step minimises ``loss(model(x_b), y_b) + penalty(model)``. The model is put in train mode
    during the loop and back in eval mode before ``on_epoch_end(epoch, model)`` (epochs counted from 1) and at
    the end. Mini-batches are shuffled by a CPU generator seeded with ``seed``.

    Args:
        model: the network; its parameters are updated in place.
        x: ``(N, ...)`` inputs.
        y: ``(N, ...)`` targets (class indices for the default loss).
        epochs: passes over the data.
        batch_size: inputs per step.
        lr: Adam's learning rate.
        seed: seeds the shuffling.
        progress: show a ``tqdm`` progress bar over the epochs.
        on_epoch_end: called as ``on_epoch_end(epoch, model)`` after each epoch.
        loss: ``loss(outputs, targets)``, the mean loss of a minibatch; default the softmax cross-entropy.
        penalty: ``penalty(model)``, a scalar added to each minibatch loss (e.g. a regulariser); not part of
            the returned losses.

    Returns:
        The mean data loss (without the penalty) of each epoch, averaged over its minibatches weighted by size.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x and y must have the same, non-zero number of rows, got {x.shape[0]} and {y.shape[0]}")
    loss_fn = nn.functional.cross_entropy if loss is None else loss
    gen = torch.Generator(device="cpu").manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
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
            idx = order[s : s + batch_size]
            opt.zero_grad()
            data_loss = loss_fn(model(x[idx]), y[idx])
            objective = data_loss if penalty is None else data_loss + penalty(model)
            objective.backward()
            opt.step()
            total += data_loss.item() * idx.numel()
        losses.append(total / x.shape[0])
        model.eval()
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
    model.eval()
    return losses
