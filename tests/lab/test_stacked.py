"""Tests of fishertut.lab.stacked: a stack of runs trains exactly as the runs do one by one.

The reference is fishertut.lab.training.train_classifier with fishertut.lab.downstream.ewc_penalty, run
separately for each copy, in float64.
"""

from __future__ import annotations

import copy

import pytest
import torch

import fishertut as ft
from fishertut.lab import downstream as ds
from fishertut.lab import stacked
from fishertut.lab.training import train_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


def test_stacked_training_equals_separate_runs_with_their_penalties() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(37, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (37,), generator=gen)
    nets = [ft.lab.models.mlp([6, 5, 3], "tanh", seed=s, dtype=torch.float64) for s in range(3)]
    anchors = [{n: p.detach() + 0.1 for n, p in net.named_parameters()} for net in nets]
    fishers = [
        {n: torch.rand(p.shape, generator=gen, dtype=torch.float64) for n, p in net.named_parameters()} for net in nets
    ]
    strengths, seeds = [0.0, 2.0, 30.0], [4, 5, 6]
    params = stacked.stack(nets)
    penalty = stacked.stacked_ewc_penalty(
        {n: torch.stack([f[n] for f in fishers]) for n in params},
        {n: torch.stack([a[n] for a in anchors]) for n in params},
        torch.tensor(strengths),
    )
    stacked.train_stacked(nets[0], params, x, y, seeds, epochs=2, batch_size=8, lr=1e-2, penalty=penalty)
    for r, net in enumerate(nets):
        alone = copy.deepcopy(net)
        train_classifier(
            alone,
            x,
            y,
            epochs=2,
            batch_size=8,
            lr=1e-2,
            seed=seeds[r],
            penalty=lambda m, r=r: ds.ewc_penalty(m, fishers[r], anchors[r], strength=strengths[r]),
        )
        back = stacked.unstack(nets[0], params, r)
        for (name, p), q in zip(alone.named_parameters(), back.parameters()):
            torch.testing.assert_close(q, p, rtol=1e-9, atol=1e-11, msg=name)
        logits = stacked.stacked_logits(nets[0], params, x)[r]
        torch.testing.assert_close(logits, alone(x).detach(), rtol=1e-9, atol=1e-11)
    assert not stacked.unstack(nets[0], params, 1).training


def test_stacked_arguments_are_checked() -> None:
    nets = [ft.lab.models.mlp([4, 3], "tanh", seed=0), ft.lab.models.mlp([4, 2], "tanh", seed=0)]
    with pytest.raises(ValueError, match="share one architecture"):
        stacked.stack(nets)
    params = stacked.stack(nets[:1])
    with pytest.raises(ValueError, match="one seed per run: 1 runs, got 2 seeds"):
        stacked.train_stacked(nets[0], params, torch.randn(3, 4), torch.zeros(3, dtype=torch.long), [0, 1])
    with pytest.raises(ValueError, match="must be non-negative"):
        stacked.stacked_ewc_penalty(
            {"0.weight": -torch.ones(1, 3, 4)}, {"0.weight": torch.ones(1, 3, 4)}, torch.ones(1)
        )
