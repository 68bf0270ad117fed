"""Tests of fishertut.lab.natural_gradient: toy problems, the binary-logit model and diagonal NGD."""

from __future__ import annotations

import pytest
import torch

import fishertut as ft
from fishertut.lab import natural_gradient as ng

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=ng.TASKS)
def problem(request: pytest.FixtureRequest) -> ng.ToyProblem:
    return ng.toy_problem(request.param, n_train=64, n_test=256, seed=0)


def _run(p: ng.ToyProblem, estimator: str, **kw) -> ng.NGDRun:
    return ng.natural_gradient_descent(
        p.model(), p.family, (p.train_x, p.train_y), (p.test_x, p.test_y), estimator, **kw
    )


def test_toy_problem_is_seeded_and_shaped(problem: ng.ToyProblem) -> None:
    again = ng.toy_problem(problem.task, n_train=64, n_test=256, seed=0)
    assert torch.equal(problem.train_x, again.train_x) and torch.equal(problem.test_y, again.test_y)
    other = ng.toy_problem(problem.task, n_train=64, n_test=256, seed=1)
    assert not torch.equal(problem.train_x, other.train_x)
    assert problem.train_x.shape == (64, 2) and problem.test_x.shape == (256, 2)
    assert problem.train_x.dtype == torch.float64
    # The input scales are as stated: the second coordinate is about four times narrower.
    sd = problem.test_x.std(0)
    assert 0.8 < float(sd[0]) < 1.2 and 0.2 < float(sd[1]) < 0.3
    assert problem.task in problem.description and "seed 0" in problem.description


def test_classification_labels_follow_the_model() -> None:
    p = ng.toy_problem("classification", n_train=10, n_test=20000, seed=0)
    assert p.test_y.dtype == torch.int64 and set(p.test_y.unique().tolist()) == {0, 1}
    net = p.model(p.theta_star)
    with torch.no_grad():
        prob = torch.softmax(net(p.test_x), 1)[:, 1]
    # E[y] = E[p(y=1|x)]: the difference is a mean of 20000 independent zero-mean terms of variance <= 1/4.
    diff = float(p.test_y.double().mean() - prob.mean())
    assert abs(diff) < 5 * 0.5 / 20000**0.5


def test_binary_logit() -> None:
    net = ng.binary_logit(2)
    trainable = {n: q.shape for n, q in net.named_parameters() if q.requires_grad}
    assert trainable == {"0.weight": torch.Size([1, 2]), "0.bias": torch.Size([1])}
    x = torch.randn(5, 2, dtype=torch.float64)
    h = net(x)
    assert h.shape == (5, 2) and torch.equal(h[:, 0], torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(torch.softmax(h, 1)[:, 1], torch.sigmoid(net[0](x)[:, 0]))
    # The fast layer-wise engine applies.
    assert ft.fisher_diagonal(net, x, ft.Categorical()).path == "layerwise"


def test_model_sets_parameters(problem: ng.ToyProblem) -> None:
    theta = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
    net = problem.model(theta)
    flat = torch.cat([q.detach().flatten() for q in net.parameters() if q.requires_grad])
    torch.testing.assert_close(flat, theta)


def test_toy_models_have_no_i2_label_variance(problem: ng.ToyProblem) -> None:
    """Both models are linear in theta: u_i = 0, so V2 is exactly 0 and V1 is not (chapter "Natural gradient")."""
    rep = ft.variance_report(problem.model(), problem.train_x, problem.family)
    for name in rep.var_i2:
        assert float(rep.var_i2[name].abs().max()) == 0.0
        assert float(rep.var_i1[name].min()) > 0


def test_exact_ngd_decreases_loss(problem: ng.ToyProblem) -> None:
    run = _run(problem, "exact", epochs=15, lr=0.5)
    assert run.params.shape == (16, 3) and run.fisher.shape == (15, 3)
    assert bool((run.train_loss[1:] <= run.train_loss[:-1] + 1e-12).all())  # full batch, small steps
    assert run.test_loss[-1] < 0.8 * run.test_loss[0]
    # Regression: close to the noise floor, the entropy 1/2 + log(2 pi sigma^2)/2 of the label noise.
    if problem.task == "regression":
        sigma = problem.family.sigma
        floor = 0.5 + 0.5 * torch.log(torch.tensor(2 * torch.pi * sigma**2)).item()
        assert run.test_loss[-1] < floor + 0.1


def test_i2_ngd_equals_exact_ngd(problem: ng.ToyProblem) -> None:
    """Î2 equals the exact diagonal for linear models, so the trajectories coincide (same batches)."""
    kw = dict(epochs=3, batch_size=8, lr=0.2, seed=4)
    exact, i2, i1 = (_run(problem, e, **kw) for e in ("exact", "i2", "i1"))
    assert float((exact.params - i2.params).abs().max()) < 1e-10
    assert float((exact.fisher - i2.fisher).abs().max()) < 1e-10
    assert float((exact.params - i1.params).abs().max()) > 1e-3  # the labels of Î1 do matter
    assert bool((i2.label_variance["i2"] == 0).all()) and bool((i1.label_variance["i2"] == 0).all())
    assert bool((i1.label_variance["i1"] > 0).all())


def test_first_step_by_hand(problem: ng.ToyProblem) -> None:
    lr, damping = 0.3, 0.01
    run = _run(problem, "exact", epochs=1, lr=lr, damping=damping)
    net = problem.model()
    fim = ft.fisher_diagonal(net, problem.train_x, problem.family)
    loss = ng.negative_log_likelihood(net, problem.family, problem.train_x, problem.train_y)
    grads = torch.autograd.grad(loss, [net[0].weight, net[0].bias])
    step = torch.cat([(g / (fim[n] + damping)).flatten() for n, g in zip(("0.weight", "0.bias"), grads)])
    torch.testing.assert_close(run.params[1], run.params[0] - lr * step, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(run.fisher[0], torch.cat([fim["0.weight"].flatten(), fim["0.bias"]]))
    assert run.names == ["0.weight", "0.bias"]


def test_label_variance_is_the_report(problem: ng.ToyProblem) -> None:
    run = _run(problem, "i1", epochs=1, lr=0.1, seed=2)
    rep = ft.variance_report(problem.model(), problem.train_x, problem.family)
    expected = sum(float(v.sum()) for v in rep.var_i1.values()) / problem.train_x.shape[0]
    assert abs(float(run.label_variance["i1"][0]) - expected) <= 1e-12 * expected


def test_regression_i1_label_variance_closed_form() -> None:
    """Gaussian: V1 = 2 I(theta_i|x)^2 with I(theta_i|x) = x_i^2 / sigma^2 (chapter "Regression")."""
    p = ng.toy_problem("regression", n_train=32, n_test=32, seed=3)
    run = _run(p, "i1", epochs=1, lr=0.1)
    xt = torch.cat([p.train_x, torch.ones(32, 1, dtype=torch.float64)], 1)
    fisher_per_input = xt.square() / p.family.sigma**2
    expected = float((2 * fisher_per_input.square()).mean(0).sum()) / 32
    assert abs(float(run.label_variance["i1"][0]) - expected) <= 1e-12 * expected


def test_model_is_not_modified(problem: ng.ToyProblem) -> None:
    net = problem.model()
    before = [q.detach().clone() for q in net.parameters()]
    ng.natural_gradient_descent(
        net, problem.family, (problem.train_x, problem.train_y), estimator="i1", epochs=1, batch_size=16
    )
    assert all(torch.equal(a, q) for a, q in zip(before, net.parameters()))


def test_invalid_arguments(problem: ng.ToyProblem) -> None:
    data = (problem.train_x, problem.train_y)
    with pytest.raises(ValueError, match="estimator"):
        ng.natural_gradient_descent(problem.model(), problem.family, data, estimator="empirical")
    with pytest.raises(ValueError, match="damping"):
        ng.natural_gradient_descent(problem.model(), problem.family, data, damping=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        ng.natural_gradient_descent(problem.model(), problem.family, data, batch_size=65)
    with pytest.raises(ValueError, match="task"):
        ng.toy_problem("ranking")
