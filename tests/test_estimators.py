"""Î1 and Î2: against brute force for given and sampled labels, and by seeded Monte Carlo."""

import pytest
import torch

import fishertut as ft
import oracle
from helpers import assert_dicts_close
from problems import CORE, PROBLEMS


def _labels(problem, seed, samples):
    with torch.no_grad():
        h = problem.model(problem.x)
    return problem.fishertut_family().sample(h, samples, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("path", ["layerwise", "generic"])
@pytest.mark.parametrize("pid", CORE)
def test_sampled_labels_match_brute_force(pid, path):
    problem = PROBLEMS[pid]()
    fam = problem.fishertut_family()
    labels = _labels(problem, seed=3, samples=2)
    i1_ref, i2_ref = oracle.estimator_values(problem, labels)
    for est, ref in (("i1", i1_ref), ("i2", i2_ref)):
        got = ft.fisher_diagonal(
            problem.model,
            problem.x,
            fam,
            est,
            samples_per_input=2,
            generator=torch.Generator().manual_seed(3),
            path=path,
        )
        assert got.labels == "model" and got.samples_per_input == 2 and got.path == path
        assert_dicts_close(got, ref, what=est)


@pytest.mark.parametrize("pid", CORE)
def test_given_targets_match_brute_force(pid):
    problem = PROBLEMS[pid]()
    fam = problem.fishertut_family()
    y = _labels(problem, seed=5, samples=1)[:, 0]
    i1_ref, i2_ref = oracle.estimator_values(problem, y.unsqueeze(1))
    assert_dicts_close(ft.fisher_diagonal(problem.model, problem.x, fam, "i1", targets=y), i1_ref, what="EF")
    assert_dicts_close(ft.fisher_diagonal(problem.model, problem.x, fam, "i2", targets=y), i2_ref, what="i2")


@pytest.mark.parametrize("pid", ["cat-tanh-2h", "gauss-sigmoid-2h-sigma0.5"])
def test_estimator_terms_are_the_pairs_of_the_estimators(pid):
    problem = PROBLEMS[pid]()
    fam = problem.fishertut_family()
    terms = ft.estimator_terms(
        problem.model, problem.x, fam, samples_per_input=3, generator=torch.Generator().manual_seed(9)
    )
    assert torch.equal(terms.labels, _labels(problem, 9, 3))
    for est in ("i1", "i2"):
        got = ft.fisher_diagonal(
            problem.model, problem.x, fam, est, samples_per_input=3, generator=torch.Generator().manual_seed(9)
        )
        assert_dicts_close({k: v.mean((0, 1)) for k, v in getattr(terms, est).items()}, got, what=est)
    i1_ref, i2_ref = oracle.estimator_values(problem, terms.labels[:, :1])
    assert_dicts_close({k: v[:, 0].mean(0) for k, v in terms.i2.items()}, i2_ref, what="i2 pair")


@pytest.mark.parametrize("pid", ["cat-sigmoid-1h", "binary-tanh-1h", "gauss-tanh-1h", "gauss-softplus-3h-D1"])
def test_monte_carlo_unbiased_with_variance_derived_tolerance(pid):
    """E[Î1] = E[Î2] = I: the mean of S labels per input lies within 5 standard errors sqrt(var_ik / (N S))."""
    problem = PROBLEMS[pid]()
    fam = problem.fishertut_family()
    rep = ft.variance_report(problem.model, problem.x, fam)
    n, s = problem.x.shape[0], 20000
    for est in ("i1", "i2"):
        got = ft.fisher_diagonal(
            problem.model, problem.x, fam, est, samples_per_input=s, generator=torch.Generator().manual_seed(11)
        )
        var = rep.conditional_variance(est)
        for k in got:
            se = (var[k] / (n * s)).sqrt()
            err = (got[k] - rep.fisher[k]).abs()
            exact = se == 0
            assert (err[~exact] <= 5 * se[~exact]).all(), f"{est} {k}: max z {(err / se)[~exact].max():.2f}"
            assert (err[exact] <= 1e-12 * (1 + rep.fisher[k][exact].abs())).all(), f"{est} {k} zero-variance"


@pytest.mark.parametrize("pid", ["cat-tanh-2h", "gauss-sigmoid-2h-sigma0.5"])
def test_monte_carlo_variance_matches_v1_v2(pid):
    """The sample variance of the single-pair terms matches V1, V2 per input within 5 standard errors.

    The standard error of a sample variance is sqrt((m4 - var^2) / S) with m4 the 4th central moment.
    """
    problem = PROBLEMS[pid]()
    fam = problem.fishertut_family()
    st = ft.per_input_statistics(problem.model, problem.x, fam)
    s = 20000
    terms = ft.estimator_terms(
        problem.model, problem.x, fam, samples_per_input=s, generator=torch.Generator().manual_seed(12)
    )
    for est, exact in (("i1", st.var_i1), ("i2", st.var_i2)):
        for k, t in getattr(terms, est).items():
            centred = t - t.mean(1, keepdim=True)
            var = centred.square().mean(1)
            m4 = centred.pow(4).mean(1)
            se = ((m4 - var.square()).clamp_min(0) / s).sqrt()
            assert ((var - exact[k]).abs() <= 5 * se + 1e-12 * (1 + exact[k].abs())).all(), f"{est} {k}"


def test_i1_is_nonnegative_and_i2_can_be_negative():
    problem = PROBLEMS["cat-sigmoid-1h"]()
    terms = ft.estimator_terms(
        problem.model,
        problem.x,
        problem.fishertut_family(),
        samples_per_input=200,
        generator=torch.Generator().manual_seed(0),
    )
    assert all((v >= 0).all() for v in terms.i1.values())
    assert any((v < 0).any() for v in terms.i2.values())


def test_samples_per_input_law_of_total_variance():
    """With inputs resampled, Var(Î) = var_x / N + var_ik / (N S) (chapter "Input and label randomness").

    Checked by Monte Carlo on a scalar summary, with a tolerance from the chi-square spread of a sample variance
    over R repetitions.
    """
    problem = PROBLEMS["cat-tanh-2h"]()
    fam = problem.fishertut_family()
    rep = ft.variance_report(problem.model, problem.x, fam)
    pool, n, s, reps = problem.x, 3, 4, 4000
    gen = torch.Generator().manual_seed(21)
    idx = torch.randint(0, pool.shape[0], (reps * n,), generator=gen)
    terms = ft.estimator_terms(problem.model, pool[idx], fam, samples_per_input=s, generator=gen)
    for est in ("i1", "i2"):
        predicted_all = rep.estimator_variance(est, num_inputs=n, samples_per_input=s)
        for name, t in getattr(terms, est).items():
            values = t.reshape(reps, n * s, -1).mean(1)  # one estimate per repetition
            predicted = predicted_all[name].reshape(-1)
            empirical = values.var(0)
            # standard error of a sample variance over R repetitions: var * sqrt((kurtosis - 1) / R)
            centred = values - values.mean(0)
            kurt = centred.pow(4).mean(0) / centred.square().mean(0).square()
            se = predicted * ((kurt - 1) / reps).sqrt()
            assert ((empirical - predicted).abs() <= 5 * se + 1e-15).all(), f"{est} {name}"


def test_batching_and_dataloader_give_the_same_result():
    problem = PROBLEMS["cat-softplus-3h"]()
    fam = problem.fishertut_family()
    ref = ft.variance_report(problem.model, problem.x, fam)
    one = ft.variance_report(problem.model, problem.x, fam, batch_size=1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(problem.x, torch.zeros(4)), batch_size=3)
    dl = ft.variance_report(problem.model, loader, fam)
    for other in (one, dl):
        for field in ("fisher", "var_i1", "var_i2", "var_x"):
            assert_dicts_close(getattr(other, field), getattr(ref, field), rtol=1e-9, what=field)


def test_targets_from_data_pairs_give_the_empirical_fisher():
    problem = PROBLEMS["cat-tanh-2h"]()
    fam = problem.fishertut_family()
    y = torch.tensor([0, 1, 2, 3])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(problem.x, y), batch_size=3)
    a = ft.fisher_diagonal(problem.model, loader, fam, "i1", targets="data")
    b = ft.fisher_diagonal(problem.model, problem.x, fam, "i1", targets=y)
    assert a.labels == "given"
    assert_dicts_close(a, b, what="EF")


def test_generator_makes_results_reproducible():
    problem = PROBLEMS["cat-tanh-2h"]()
    fam = problem.fishertut_family()
    a = ft.fisher_diagonal(problem.model, problem.x, fam, "i1", generator=torch.Generator().manual_seed(4))
    b = ft.fisher_diagonal(problem.model, problem.x, fam, "i1", generator=torch.Generator().manual_seed(4))
    c = ft.fisher_diagonal(problem.model, problem.x, fam, "i1", generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
