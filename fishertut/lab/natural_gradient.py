r"""Natural-gradient descent with the diagonal FIM replaced by an estimate (the paper's Figure 1).

One step on a batch :math:`B` of inputs with data labels:

.. math:: \theta \leftarrow \theta - \eta\,\frac{\nabla_\theta L_B(\theta)}{\hat{\mathcal I}(\theta) + \lambda},
          \qquad L_B = -\frac1{|B|}\sum_{n\in B}\log p(y_n|x_n;\theta),

elementwise, with :math:`\hat{\mathcal I}` the exact diagonal FIM on the batch inputs (``"exact"``) or its
Monte-Carlo estimate Î1 or Î2 (:func:`~fishertut.fisher_diagonal`, ``samples_per_input`` model labels per
input), learning rate :math:`\eta` and damping :math:`\lambda`.

The toy problems are ours (the paper's settings are not reproduced here): 2-D Gaussian inputs with
different scales on the two axes, a linear-Gaussian regression and a logistic regression (see
:func:`toy_problem`). Both models are linear in :math:`\theta`, so :math:`u_i \equiv 0`: Î2 equals the exact
diagonal FIM for every sampled label, and Î2-NGD takes exactly the exact-NGD steps (chapter "Natural gradient
with estimated Fisher information", section "Why Î2 is exact here").

See chapter "Natural gradient with estimated Fisher information".
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..api import fisher_diagonal, variance_report
from ..checks.arguments import ESTIMATORS, check_estimator
from ..families import Categorical, ExponentialFamily, Gaussian
from ..groups import flatten

__all__ = [
    "TASKS",
    "binary_logit",
    "ToyProblem",
    "NGDRun",
    "toy_problem",
    "negative_log_likelihood",
    "natural_gradient_descent",
]

TASKS = ("regression", "classification")


def binary_logit(
    in_features: int = 2, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> nn.Sequential:
    r"""Logistic regression as a two-class softmax whose first logit is fixed at 0: :math:`h = (0,\ w^\top x + b)`.

    Then :math:`p(y=1|x) = \sigma(w^\top x + b)`, the Bernoulli model. It is built as
    ``nn.Sequential(Linear(in_features, 1), Linear(1, 2))`` with the second layer frozen at weight
    :math:`(0, 1)^\top` and no bias, so that the fast layer-wise engine applies and the only trainable
    parameters are ``0.weight`` (``(1, in_features)``) and ``0.bias`` (``(1,)``).
    """
    net = nn.Sequential(nn.Linear(in_features, 1), nn.Linear(1, 2, bias=False)).to(dtype=dtype, device=device)
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[0.0], [1.0]]))
    net[1].weight.requires_grad_(False)
    return net.eval()


@dataclass
class ToyProblem:
    """A seeded 2-D toy problem (see :func:`toy_problem`).

    Attributes:
        task: ``"regression"`` or ``"classification"``.
        family: the output family (``Gaussian(sigma)`` or ``Categorical()``).
        train_x, train_y, test_x, test_y: the data.
        theta_star: ``(3,)`` the generating parameters :math:`(w_1, w_2, b)`.
        theta_init: ``(3,)`` the starting point of every run.
        description: one sentence stating the generator.
    """

    task: str
    family: ExponentialFamily
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    theta_star: Tensor
    theta_init: Tensor
    description: str

    def model(self, theta: Tensor | None = None) -> nn.Module:
        """A fresh model (``nn.Sequential(Linear(2, 1))`` or :func:`binary_logit`) with ``(w_1, w_2, b) = theta``.

        Args:
            theta: ``(3,)``; default :attr:`theta_init`.
        """
        theta = self.theta_init if theta is None else theta
        dtype, device = self.train_x.dtype, self.train_x.device
        if self.task == "regression":
            net = nn.Sequential(nn.Linear(2, 1)).to(dtype=dtype, device=device).eval()
        else:
            net = binary_logit(2, dtype=dtype, device=device)
        lin = net[0]
        with torch.no_grad():
            lin.weight.copy_(theta[:2].reshape(1, 2))
            lin.bias.copy_(theta[2:3])
        return net.eval()


def toy_problem(
    task: str,
    *,
    n_train: int = 256,
    n_test: int = 4096,
    seed: int = 0,
    scales: tuple[float, float] = (1.0, 0.25),
    theta_star: tuple[float, float, float] = (1.0, -2.0, 0.5),
    theta_init: tuple[float, float, float] = (-2.0, 2.0, 0.0),
    sigma: float = 0.5,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> ToyProblem:
    r"""Generate a 2-D toy problem.

    Inputs :math:`x \sim \mathcal N(0, \mathrm{diag}(s_1^2, s_2^2))`, labels :math:`y` from the model at ``theta_star``:

    * ``"regression"``: :math:`y = w^{*\top} x + b^* + \sigma\xi`, :math:`\xi\sim\mathcal N(0,1)`;
      family ``Gaussian(sigma)``.
    * ``"classification"``: :math:`y \sim \mathrm{Bernoulli}(\sigma(w^{*\top}x + b^*))`; family ``Categorical()``
      over the logits of :func:`binary_logit`.

    The unequal input scales make the loss ill-conditioned along :math:`w_2`, which a diagonal
    preconditioner corrects.

    Args:
        task: ``"regression"`` or ``"classification"``.
        n_train: size of the training set.
        n_test: size of the test set.
        seed: seeds a CPU generator for inputs, noise and labels.
        scales: the input standard deviations :math:`(s_1, s_2)`.
        theta_star: :math:`(w_1^*, w_2^*, b^*)`.
        theta_init: where every run starts.
        sigma: noise standard deviation of the regression.
        dtype: of the tensors.
        device: of the tensors.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    gen = torch.Generator().manual_seed(seed)
    star = torch.tensor(theta_star, dtype=torch.float64)
    n = n_train + n_test
    x = torch.randn(n, 2, generator=gen, dtype=torch.float64) * torch.tensor(scales, dtype=torch.float64)
    s = x @ star[:2] + star[2]
    if task == "regression":
        y = (s + sigma * torch.randn(n, generator=gen, dtype=torch.float64)).unsqueeze(1).to(dtype)
        family: ExponentialFamily = Gaussian(sigma)
        what = f"y = w*.x + b* + {sigma:g} N(0, 1)"
    else:
        y = (torch.rand(n, generator=gen, dtype=torch.float64) < torch.sigmoid(s)).long()
        family = Categorical()
        what = "y ~ Bernoulli(sigmoid(w*.x + b*))"
    x = x.to(dtype)
    description = (
        f"{task}: {n_train} training and {n_test} test points, x ~ N(0, diag({scales[0]:g}^2, "
        f"{scales[1]:g}^2)), {what} with (w1*, w2*, b*) = {tuple(theta_star)}, seed {seed}"
    )
    return ToyProblem(
        task,
        family,
        x[:n_train].to(device),
        y[:n_train].to(device),
        x[n_train:].to(device),
        y[n_train:].to(device),
        star.to(dtype=dtype, device=device),
        torch.tensor(theta_init, dtype=dtype, device=device),
        description,
    )


def negative_log_likelihood(model: nn.Module, family: ExponentialFamily, x: Tensor, y: Tensor) -> Tensor:
    r"""Mean negative log-likelihood :math:`-\frac1N\sum_n\log p(y_n|x_n;\theta)` with the data labels ``y``."""
    h = model(x)
    return -family.log_prob(h, family.check_targets(y, h)).mean()


@dataclass
class NGDRun:
    r"""Trajectory of :func:`natural_gradient_descent`.

    Attributes:
        estimator: ``"exact"``, ``"i1"`` or ``"i2"``.
        names: parameter names, in the order of the columns of ``params`` and ``fisher``.
        epoch: ``(T+1,)`` the (fractional) epoch of each recorded point; 0 is the start.
        params: ``(T+1, D)`` the flattened parameters :math:`\theta_t`.
        train_loss, test_loss: ``(T+1,)`` mean negative log-likelihoods on the full sets.
        fisher: ``(T, D)`` the diagonal FIM (estimate) used at each step.
        label_variance: ``{"i1": (T,), "i2": (T,)}``: at each step, at the current :math:`\theta_t` and batch,
            :math:`\sum_i \frac1{|B|S}\cdot\frac1{|B|}\sum_{n\in B}V_k(\theta_i|x_n)`, the variance over the
            sampled labels of each estimator, summed over the parameters (recorded for both estimators
            whatever ``estimator`` drives the run).
        settings: the step size, damping, batch size, samples per input, epochs and seed.
    """

    estimator: str
    names: list[str]
    epoch: Tensor
    params: Tensor
    train_loss: Tensor
    test_loss: Tensor
    fisher: Tensor
    label_variance: dict[str, Tensor]
    settings: dict[str, Any] = field(default_factory=dict)


def natural_gradient_descent(
    model: nn.Module,
    family: ExponentialFamily,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor] | None = None,
    estimator: str = "exact",
    *,
    epochs: int = 20,
    batch_size: int | None = None,
    lr: float = 0.5,
    damping: float = 1e-3,
    samples_per_input: int = 1,
    seed: int = 0,
    track_variance: bool = True,
) -> NGDRun:
    r"""Run diagonal natural-gradient descent with the exact FIM, Î1 or Î2 (module docstring).

    The model is copied; the original is left untouched. Each epoch visits the training set once in
    mini-batches of ``batch_size`` (default: the whole set, one step per epoch), in an order drawn from a
    CPU generator seeded with ``seed``; the labels of Î1/Î2 come from a second generator (on the model's
    device) seeded with ``seed``. The two streams are separate, so runs with different estimators see the
    same batches.

    Args:
        model: the network (any model :func:`~fishertut.fisher_diagonal` accepts).
        family: its output family.
        train: ``(x, y)`` training inputs and data labels.
        test: ``(x, y)`` for the test loss (default: ``train``).
        estimator: ``"exact"``, ``"i1"`` or ``"i2"``.
        epochs: passes over the training set.
        batch_size: inputs per step (default: all).
        lr: step size :math:`\eta`.
        damping: :math:`\lambda > 0`, added to the diagonal before dividing.
        samples_per_input: model labels per input for Î1/Î2.
        seed: seeds the batch order and the sampled labels.
        track_variance: record :attr:`NGDRun.label_variance` (one :func:`~fishertut.variance_report` per step).

    Returns:
        :class:`NGDRun`.
    """
    check_estimator(estimator, ESTIMATORS)
    if not (isinstance(damping, (int, float)) and damping > 0 and math.isfinite(damping)):
        raise ValueError(f"damping must be a positive number, got {damping!r}")
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    model = copy.deepcopy(model).eval()
    x, y = train
    tx, ty = train if test is None else test
    n = x.shape[0]
    bs = n if batch_size is None else int(batch_size)
    if not 1 <= bs <= n:
        raise ValueError(f"batch_size must be in [1, {n}], got {batch_size!r}")
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    names = list(params)
    device = next(iter(params.values())).device
    order_gen = torch.Generator().manual_seed(seed)
    label_gen = torch.Generator(device=device).manual_seed(seed)
    steps_per_epoch = math.ceil(n / bs)

    def losses() -> tuple[float, float]:
        with torch.no_grad():
            return (
                float(negative_log_likelihood(model, family, x, y)),
                float(negative_log_likelihood(model, family, tx, ty)),
            )

    traj, fishers, train_l, test_l, epoch_at = [], [], [], [], []
    var = {"i1": [], "i2": []}

    def record(step: int) -> None:
        traj.append(flatten(params, names).clone())
        a, b = losses()
        train_l.append(a)
        test_l.append(b)
        epoch_at.append(step / steps_per_epoch)

    record(0)
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=order_gen).to(x.device)
        for s in range(0, n, bs):
            idx = perm[s : s + bs]
            xb, yb = x[idx], y[idx]
            if estimator == "exact":
                fim = fisher_diagonal(model, xb, family, "exact")
            else:
                fim = fisher_diagonal(
                    model,
                    xb,
                    family,
                    estimator,
                    samples_per_input=samples_per_input,
                    generator=label_gen,
                )
            if track_variance:
                rep = variance_report(model, xb, family)
                for k in ("i1", "i2"):
                    cond = rep.conditional_variance(k)
                    total = float(sum(cond[nm].sum() for nm in names))
                    var[k].append(total / (len(idx) * samples_per_input))
            model.zero_grad(set_to_none=True)
            loss = negative_log_likelihood(model, family, xb, yb)
            grads = torch.autograd.grad(loss, [params[nm] for nm in names])
            with torch.no_grad():
                for nm, g in zip(names, grads):
                    params[nm].sub_(lr * g / (fim[nm] + damping))
            fishers.append(flatten(fim, names).clone())
            step += 1
            record(step)
    dtype = traj[0].dtype
    return NGDRun(
        estimator=estimator,
        names=names,
        epoch=torch.tensor(epoch_at, dtype=torch.float64),
        params=torch.stack(traj).cpu(),
        train_loss=torch.tensor(train_l, dtype=torch.float64),
        test_loss=torch.tensor(test_l, dtype=torch.float64),
        fisher=torch.stack(fishers).cpu() if fishers else torch.empty(0, len(traj[0]), dtype=dtype),
        label_variance={k: torch.tensor(v, dtype=torch.float64) for k, v in var.items()},
        settings={
            "lr": lr,
            "damping": damping,
            "batch_size": bs,
            "samples_per_input": samples_per_input,
            "epochs": epochs,
            "seed": seed,
            "steps_per_epoch": steps_per_epoch,
        },
    )
