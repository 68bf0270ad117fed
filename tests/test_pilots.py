"""The pilot of ft.estimate: sampled moments against exact ones and against the draws themselves; "auto"."""

import pytest
import torch
from torch import nn

import fishertut as ft
from fishertut.pilots import EXACT_PILOT_OUTPUTS, pilot_moments
from sequence_models import TinyGPT, build, left_padded


def _mlp():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Softplus(), nn.Linear(5, 3))
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    return model.double().eval(), x


def _lm(kind):
    """A GRU (the generic engine) or a tiny GPT (the transformer engine) on left-padded sequences."""
    ids, mask = left_padded(6, 3, 4, [0, 1, 2, 0, 1, 2], seed=7)
    return build(kind), ids, mask


def _moments(model, x, statistics, kinds=("i1", "hutchinson"), draws=3, seed=0, mask=None):
    gen = torch.Generator().manual_seed(seed)
    moments, _ = pilot_moments(
        model, x, ft.Categorical(), statistics, kinds, draws, gen, None, "auto", mask, "sequence", None, len(x)
    )
    return moments


@pytest.mark.parametrize("problem", ["mlp", "gru", "gpt"])
def test_sampled_moments_are_unbiased(problem, one_thread):
    """Sampled pilots are unbiased for the exact pilot's means.

    Over 300 (80, 40) sampled pilots, the mean of each pilot mean (Fisher, its square, each conditional variance)
    lies within 5 standard errors (estimated from the replicates) of the exact pilot's value, for every
    parameter.
    """
    model, x, *rest = _mlp() if problem == "mlp" else _lm(problem)
    mask = rest[0] if rest else None
    exact = _moments(model, x, "exact", mask=mask)
    count, draws = {"mlp": (300, 3), "gru": (80, 8), "gpt": (40, 8)}[problem]
    reps = [_moments(model, x, "sampled", draws=draws, seed=s, mask=mask) for s in range(count)]
    kinds = ("i1", "hutchinson") if problem == "mlp" else ("i1_sequence", "hutchinson")
    assert reps[0]["4.bias" if problem == "mlp" else "head.bias"].kinds == (
        ("i1", "i1_sequence", "hutchinson") if problem == "mlp" else kinds
    )
    for k, m in exact.items():
        getters = {"I": lambda t: t.fisher, "Q": lambda t: t.mean("Q")}
        getters.update({kind: (lambda t, kind=kind: t.cond(kind)) for kind in kinds})
        for name, get in getters.items():
            draws = torch.stack([get(r[k]) for r in reps])
            se = draws.std(0) / len(reps) ** 0.5
            gap = (draws.mean(0) - get(m)).abs()
            assert (gap <= 5 * se + 1e-12 * get(m).abs().max()).all(), (k, name, (gap / se).max())


def test_sampled_sums_are_the_moments_of_the_draws(one_thread):
    """The pilot's sums (one pass of unit statistics) equal the moments formed from estimator_terms' draws.

    The same labels (an input's labels do not depend on the function); per input the mean, the unbiased
    variance, the square's estimate and the products the plan uses, summed over the inputs.
    """
    model, x = _mlp()
    draws = 5
    got = _moments(model, x, "sampled", kinds=("i1",), draws=draws, seed=11)
    terms = ft.estimator_terms(model, x, ft.Categorical(), samples_per_input=draws,
                               generator=torch.Generator().manual_seed(11))  # fmt: skip
    for k, t in terms.i1.items():
        t = t.flatten(2)  # (N, S, params)
        i, v = t.mean(1), t.var(1)
        values = {"I": i, "Q": i.square() - v / draws, "V:i1": v}
        for name, value in {**values, "I*Q": i * values["Q"], "V:i1*V:i1": v * v, "V:i1*Q": v * values["Q"]}.items():
            torch.testing.assert_close(got[k].sums[name], value.sum(0), rtol=1e-10, atol=1e-14)
        assert got[k].count == len(x)


def test_auto_takes_exact_for_few_outputs_and_samples_a_language_model():
    model, x = _mlp()
    est = ft.estimate(model, x, ft.Categorical(), rtol=0.5, generator=torch.Generator().manual_seed(0))
    assert est.pilot_statistics == "exact"
    torch.manual_seed(0)
    lm = TinyGPT(vocab=32, positions=9).double().eval()  # 9 * 32 = 288 outputs per input
    assert 9 * 32 > EXACT_PILOT_OUTPUTS
    ids = torch.randint(0, 32, (16, 9), generator=torch.Generator().manual_seed(1))
    kwargs = dict(rtol=0.5, delta=0.2, estimators=("i1", "hutchinson"), max_samples=4)
    est = ft.estimate(lm, ids, ft.Categorical(), generator=torch.Generator().manual_seed(0), **kwargs)
    assert est.pilot_statistics == "sampled"
    assert {e.estimator for e in est.plan.values()} <= {"i1", "hutchinson"}


def test_bad_pilot_arguments():
    model, x = _mlp()
    with pytest.raises(ValueError, match=r"pilot_statistics must be one of \('auto', 'exact', 'sampled'\)"):
        ft.estimate(model, x, ft.Categorical(), pilot_statistics="drawn")
    with pytest.raises(ValueError, match="pilot_draws must be at least 2"):
        ft.estimate(model, x, ft.Categorical(), pilot_draws=1)
    with pytest.raises(ValueError, match="pilot_draws must be a positive integer"):
        ft.estimate(model, x, ft.Categorical(), pilot_draws=2.5)
