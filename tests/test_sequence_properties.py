"""Property tests over the shape space of outputs with positions: position axes, class axis, mask, normalisation.

A position-wise network applied to inputs ``(N, *positions, F)`` has, per position, the Fisher and variances of
the same network on that position's row alone. Those come from the 2-D API on the rows (one output per input);
the sequence API (the generic engine, flattened outputs) must combine them with the position weights
``c = mask`` or ``mask / count``.
"""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fishertut as ft
from helpers import assert_dicts_close


class PositionWise(nn.Module):
    def __init__(self, features, classes, axis):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 3), nn.Tanh(), nn.Linear(3, classes))
        self.axis = axis

    def forward(self, x):
        return self.net(x).movedim(-1, self.axis)


@st.composite
def settings_(draw):
    positions = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    n = draw(st.integers(1, 3))
    classes = draw(st.integers(2, 4))
    gaussian = draw(st.booleans())
    ndim = 2 + len(positions)
    axis = ndim - 1 if gaussian else draw(st.integers(1, ndim - 1))
    negative = draw(st.booleans())
    mask = torch.tensor(
        draw(st.lists(st.booleans(), min_size=n * math.prod(positions), max_size=n * math.prod(positions)))
    )
    normalize = draw(st.sampled_from(["sequence", "token"]))
    seed = draw(st.integers(0, 2**16))
    return (
        positions,
        n,
        classes,
        gaussian,
        axis,
        axis - ndim if negative else axis,
        mask.reshape(n, *positions),
        normalize,
        seed,
    )


@settings(max_examples=30)
@given(settings_())
def test_sequence_statistics_combine_the_per_row_ones(case):
    positions, n, classes, gaussian, axis, class_axis, mask, normalize, seed = case
    torch.manual_seed(seed)
    model = PositionWise(2, classes, axis).double().eval()
    x = torch.randn(n, *positions, 2, dtype=torch.float64)
    fam = ft.Gaussian(0.8) if gaussian else ft.Categorical(class_axis=class_axis)
    rows_model = PositionWise(2, classes, 1).double().eval()
    rows_model.load_state_dict(model.state_dict())
    rows = ft.per_input_statistics(rows_model, x.reshape(-1, 2), ft.Gaussian(0.8) if gaussian else ft.Categorical())
    per = ft.per_input_statistics(model, x, fam, mask=mask, normalize=normalize)
    count = mask.reshape(n, -1).sum(1, keepdim=True).clamp_min(1).to(torch.float64)
    c = mask.reshape(n, -1).to(torch.float64) / (count if normalize == "token" else 1)

    def combine(values, power):
        return {
            k: (c.reshape(n, -1, *[1] * (v.ndim - 1)) ** power * v.reshape(n, -1, *v.shape[1:])).sum(1)
            for k, v in values.items()
        }

    fisher = combine(rows.fisher, 1)
    assert_dicts_close(per.fisher, fisher, what="fisher")
    assert_dicts_close(per.var_i1, combine(rows.var_i1, 2), what="var_i1")
    assert_dicts_close(per.var_i2, combine(rows.var_i2, 2), what="var_i2")
    squares = combine({k: v.square() for k, v in rows.fisher.items()}, 2)
    expected_seq = {k: combine(rows.var_i1, 2)[k] + 2 * (fisher[k].square() - squares[k]) for k in fisher}
    assert_dicts_close(per.var_i1_sequence, expected_seq, what="var_i1_sequence")
    fourth = combine({k: rows.fisher[k].square() - rows.var_hutchinson[k] / 2 for k in fisher}, 2)
    expected_h = {k: 2 * (fisher[k].square() - fourth[k]) for k in fisher}
    assert_dicts_close(per.var_hutchinson, expected_h, rtol=1e-9, what="var_hutchinson")
