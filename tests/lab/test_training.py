"""Tests of ``fishertut.lab.training``: the loop against a hand-written Adam loop, with a loss and a penalty."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fishertut.lab import models, training

DT = torch.float64


def _data(n: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=DT), torch.randn(n, 2, generator=g, dtype=DT)


def _hand_loop(model, x, y, loss_fn, penalty, epochs, batch_size, lr, seed):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    means = []
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        total = 0.0
        for s in range(0, x.shape[0], batch_size):
            idx = order[s : s + batch_size]
            opt.zero_grad()
            data_loss = loss_fn(model(x[idx]), y[idx])
            (data_loss + (penalty(model) if penalty else 0.0)).backward()
            opt.step()
            total += data_loss.item() * idx.numel()
        means.append(total / x.shape[0])
    return means


@pytest.mark.parametrize("with_penalty", [False, True])
def test_loss_and_penalty_match_a_hand_written_loop(with_penalty: bool) -> None:
    x, y = _data()
    anchor = [p.detach().clone() + 0.3 for p in models.mlp([4, 3, 2], "tanh", seed=1, dtype=DT).parameters()]

    def penalty(model: nn.Module) -> torch.Tensor:
        return 0.5 * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))

    pen = penalty if with_penalty else None
    net = models.mlp([4, 3, 2], "tanh", seed=1, dtype=DT)
    ref = models.mlp([4, 3, 2], "tanh", seed=1, dtype=DT)
    mse = nn.functional.mse_loss
    got = training.train_classifier(net, x, y, epochs=3, batch_size=16, lr=1e-2, seed=4, loss=mse, penalty=pen)
    want = _hand_loop(ref, x, y, mse, pen, epochs=3, batch_size=16, lr=1e-2, seed=4)
    assert got == pytest.approx(want, rel=1e-12)
    for p, q in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_default_loss_is_cross_entropy_and_callback_sees_eval_mode() -> None:
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(40, 4, generator=g, dtype=DT), torch.randint(0, 3, (40,), generator=g)
    net = models.mlp([4, 5, 3], "sigmoid", seed=0, dtype=DT)
    ref = models.mlp([4, 5, 3], "sigmoid", seed=0, dtype=DT)
    modes = []
    got = training.train_classifier(
        net,
        x,
        y,
        epochs=2,
        batch_size=8,
        lr=1e-2,
        seed=0,
        on_epoch_end=lambda epoch, m: modes.append((epoch, m.training)),
    )
    want = _hand_loop(ref, x, y, nn.functional.cross_entropy, None, epochs=2, batch_size=8, lr=1e-2, seed=0)
    assert got == pytest.approx(want, rel=1e-12)
    assert modes == [(1, False), (2, False)] and not net.training


def test_errors() -> None:
    x, y = _data()
    net = models.mlp([4, 2], dtype=DT)
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        training.train_classifier(net, x, y, epochs=-1)
    with pytest.raises(ValueError, match="same, non-zero number of rows"):
        training.train_classifier(net, x, y[:3])
