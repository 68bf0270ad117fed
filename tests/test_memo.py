"""The per-model memo of first-batch findings (fishertut/memo.py): reused only while the model is unchanged.

Each test makes a first call (which remembers), changes something the findings depend on, and checks that the
next call notices: a fresh model copy (no memo) is the oracle for the values, a guard's exception or the chosen
path for the checks.
"""

from __future__ import annotations

import copy
import gc
import warnings
import weakref

import pytest
import torch
from torch import nn

import fishertut as ft
from fishertut.lab.gpt import tiny_gpt

V, T = 5, 4


def _gpt() -> nn.Module:
    return tiny_gpt(vocab=V, context=T, d=8, heads=2, layers=1, dtype=torch.float64)


def _x(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (n, T), generator=torch.Generator().manual_seed(seed))


class Counted(nn.Module):
    """Counts the forwards of its inner model (a plain container: every engine runs its forward)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


class CentredInTraining(nn.Module):
    """Subtracts the batch mean in training mode: each row then depends on the others (no stock layer's rule)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h - h.mean(0, keepdim=True) if self.training else h


def _fresh(model: nn.Module, *args, **kwargs) -> dict[str, torch.Tensor]:
    """The oracle: the same call on a deep copy of ``model``, which nothing remembers."""
    return dict(ft.fisher_diagonal(copy.deepcopy(model), *args, **kwargs).items())


def _close(a, b) -> None:
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("estimator", "minibatch"), [("exact", 1), ("i1_sequence", 1), ("i1_sequence", 3), ("hutchinson", 3)]
)
def test_a_repeated_call_skips_the_probes_and_gives_the_same_result(estimator, minibatch):
    model, x, fam = Counted(_gpt()), _x(), ft.Categorical()
    kwargs = {"minibatch": minibatch} if minibatch > 1 else {}

    def run():
        gen = torch.Generator().manual_seed(3)
        return ft.fisher_diagonal(model, x, fam, estimator, generator=gen, **kwargs)

    first = run()
    calls_first = model.calls
    second = run()
    assert model.calls - calls_first < calls_first, (calls_first, model.calls - calls_first)
    assert second.path == first.path
    _close(dict(second.items()), dict(first.items()))
    _close(dict(second.items()), _fresh(model, x, fam, estimator, generator=torch.Generator().manual_seed(3), **kwargs))


def test_a_switch_to_training_mode_runs_the_independent_rows_guard_again():
    model = nn.Sequential(nn.Linear(3, 4), CentredInTraining(), nn.Tanh(), nn.Linear(4, 2)).double().eval()
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ft.fisher_diagonal(model, x, ft.Categorical())
    model.train()
    with pytest.raises(ft.UnsupportedModelError, match="depends on the other inputs"):
        ft.fisher_diagonal(model, x, ft.Categorical())


def test_a_forward_hook_added_after_a_call_changes_the_engine():
    model, x = _gpt(), _x()
    assert ft.fisher_diagonal(model, x, ft.Categorical()).path == "transformer"
    handle = model.blocks[0].register_forward_hook(lambda m, args, out: None)
    assert ft.fisher_diagonal(model, x, ft.Categorical()).path == "generic"
    handle.remove()
    assert ft.fisher_diagonal(model, x, ft.Categorical()).path == "transformer"


def test_a_backward_hook_added_after_a_call_is_refused():
    model, x = _gpt(), _x()
    ft.fisher_diagonal(model, x, ft.Categorical(), "i1_sequence", minibatch=3)
    model.norm.register_full_backward_hook(lambda m, gin, gout: None)
    with pytest.raises(ft.UnsupportedModelError, match="backward hook"):
        ft.fisher_diagonal(model, x, ft.Categorical(), "i1_sequence", minibatch=3)


def test_updated_and_replaced_parameters_are_read_afresh():
    model, x, fam = _gpt(), _x(), ft.Categorical()
    ft.fisher_diagonal(model, x, fam)
    with torch.no_grad():
        model.norm.weight.mul_(1.5)  # an in-place update (an optimizer step)
    _close(dict(ft.fisher_diagonal(model, x, fam).items()), _fresh(model, x, fam))
    model.norm.weight = nn.Parameter(torch.linspace(0.5, 2.0, 8, dtype=torch.float64))  # a new tensor
    _close(dict(ft.fisher_diagonal(model, x, fam).items()), _fresh(model, x, fam))


def test_a_new_input_shape_is_probed_again():
    model, fam = _gpt(), ft.Categorical()
    ft.fisher_diagonal(model, _x(), fam)
    short = _x()[:, :2]
    _close(dict(ft.fisher_diagonal(model, short, fam).items()), _fresh(model, short, fam))


def test_the_memo_does_not_keep_a_model_alive():
    model = _gpt()
    ft.fisher_diagonal(model, _x(), ft.Categorical(), "i1_sequence", minibatch=3)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_the_probabilities_warning_follows_the_family_of_each_call():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Softmax(-1)).double().eval()
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for a Gaussian model
        ft.fisher_diagonal(model, x, ft.Gaussian(1.0))
    for _ in range(2):  # the first Categorical call probes, the second reads the memo: both warn
        with pytest.warns(UserWarning, match="look like probabilities"):
            ft.fisher_diagonal(model, x, ft.Categorical())


def test_a_first_call_on_one_input_leaves_the_independent_rows_guard_to_the_next():
    model = nn.Sequential(nn.Linear(3, 4), CentredInTraining(), nn.Tanh(), nn.Linear(4, 2)).double()
    model.train()  # rows depend on each other; one input alone cannot show it
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ft.fisher_diagonal(model, x[:1], ft.Categorical(), "hutchinson", minibatch=2)
    with pytest.raises(ft.UnsupportedModelError, match="depends on the other inputs"):
        ft.fisher_diagonal(model, x, ft.Categorical(), "hutchinson", minibatch=2)
