r"""Downstream uses of a Fisher diagonal: elastic weight consolidation, a diagonal Laplace posterior, metrics.

Used by the chapter :doc:`/book/downstream`. Every function takes the Fisher diagonal as a
``{parameter name: tensor shaped like the parameter}`` dict, such as :func:`fishertut.fisher_diagonal`
returns, so any estimator can be plugged in:

* :func:`ewc_penalty`: :math:`\frac\lambda2\sum_i F_i(\theta_i-\theta^*_i)^2` (Kirkpatrick et al., 2017);
* :func:`laplace_variance`: the diagonal posterior variance :math:`1/(N F_i + \tau)`;
* :func:`laplace_predictive`: the Monte-Carlo predictive of that posterior, linearised or not;
* :func:`expected_calibration_error`, :func:`negative_log_likelihood`, :func:`predictive_entropy`;
* :func:`continual_metrics`: average accuracy and forgetting from a task-accuracy matrix;
* :func:`squared_minibatch_mean_gradient`: the "Fisher" of many EWC codebases, for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = [
    "ewc_penalty",
    "laplace_variance",
    "laplace_predictive",
    "expected_calibration_error",
    "negative_log_likelihood",
    "predictive_entropy",
    "continual_metrics",
    "squared_minibatch_mean_gradient",
]


def _trainable(model: nn.Module) -> dict[str, Tensor]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _check_diagonal(
    values: Mapping[str, Tensor], params: Mapping[str, Tensor], argument: str, non_negative: bool
) -> None:
    """``values`` has a finite tensor shaped like each trainable parameter (and no other key)."""
    if not isinstance(values, Mapping):
        raise TypeError(f"{argument} must be a dict {{parameter name: tensor}}, got {type(values).__name__}")
    if set(values) != set(params):
        missing, extra = sorted(set(params) - set(values)), sorted(set(values) - set(params))
        raise ValueError(
            f"{argument} must have one entry per trainable parameter of the model; "
            f"missing {missing}, unexpected {extra}"
        )
    for name, p in params.items():
        v = values[name]
        if not isinstance(v, Tensor) or v.shape != p.shape:
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"{argument}[{name!r}] must be a tensor of shape {tuple(p.shape)}, got {shape}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{argument}[{name!r}] has NaN or infinite entries")
        if non_negative and bool((v < 0).any()):
            raise ValueError(
                f"{argument}[{name!r}] has negative entries; a Fisher estimate such as Î2 can be "
                "negative, clamp it first (e.g. .clamp_min(0))"
            )


def _check_positive(value: float, argument: str, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{argument} must be a finite number {bound}, got {value!r}")
    return float(value)


def _check_count(value: int, argument: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{argument} must be a positive integer, got {value!r}")
    return value


def ewc_penalty(
    model: nn.Module, fisher: Mapping[str, Tensor], anchor: Mapping[str, Tensor], strength: float = 1.0
) -> Tensor:
    r"""The elastic-weight-consolidation penalty :math:`\frac\lambda2\sum_i F_i\,(\theta_i-\theta^*_i)^2`.

    Added to the loss of a new task, it keeps the parameters near the old task's solution
    :math:`\theta^*` in the directions where the old task's Fisher information :math:`F` is large.

    Args:
        model: the network being trained; its current trainable parameters are :math:`\theta`.
        fisher: the old task's Fisher diagonal :math:`F`, one non-negative tensor per trainable parameter.
        anchor: the old task's parameters :math:`\theta^*`, same keys and shapes (detached copies).
        strength: :math:`\lambda\ge0`.

    Returns:
        A scalar tensor, differentiable with respect to the model's parameters.
    """
    params = _trainable(model)
    _check_diagonal(fisher, params, "fisher", non_negative=True)
    _check_diagonal(anchor, params, "anchor", non_negative=False)
    lam = _check_positive(strength, "strength", allow_zero=True)
    total = sum((fisher[n] * (p - anchor[n]).square()).sum() for n, p in params.items())
    return 0.5 * lam * total


def laplace_variance(fisher: Mapping[str, Tensor], num_data: int, prior_precision: float) -> dict[str, Tensor]:
    r"""Diagonal Laplace posterior variances :math:`\sigma_i^2 = 1/(N F_i + \tau)`.

    The log posterior :math:`\sum_{n=1}^N\log p(y_n\mid x_n,\theta) - \frac\tau2\|\theta\|^2` has, at a mode,
    the Gauss–Newton curvature :math:`N F + \tau I`, where :math:`F` is the Fisher information per input
    (the mean over inputs that :func:`fishertut.fisher_diagonal` returns). Keeping its diagonal gives
    :math:`\theta\sim\mathcal N(\theta_{\mathrm{MAP}}, \operatorname{diag}(\sigma^2))`.

    Args:
        fisher: per-input Fisher diagonal, non-negative, ``{name: tensor}``.
        num_data: :math:`N`, the number of training pairs the posterior conditions on.
        prior_precision: :math:`\tau > 0`.

    Returns:
        ``{name: variance tensor}``, shaped like ``fisher``.
    """
    if not isinstance(fisher, Mapping) or not fisher:
        raise TypeError(f"fisher must be a non-empty dict {{parameter name: tensor}}, got {type(fisher).__name__}")
    _check_diagonal(fisher, {n: v for n, v in fisher.items()}, "fisher", non_negative=True)
    n = _check_count(num_data, "num_data")
    tau = _check_positive(prior_precision, "prior_precision")
    return {k: 1.0 / (n * v + tau) for k, v in fisher.items()}


@torch.no_grad()
def laplace_predictive(
    model: nn.Module,
    x: Tensor,
    variance: Mapping[str, Tensor],
    *,
    num_samples: int = 32,
    linearized: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Class probabilities under a diagonal Gaussian posterior around the model's parameters.

    With :math:`\delta_s\sim\mathcal N(0,\operatorname{diag}(\sigma^2))`, :math:`s=1..S`, returns
    :math:`\frac1S\sum_s\operatorname{softmax}(h_s(x))` where the logits are, linearised (the "GLM
    predictive" of Immer et al., 2021),

    .. math:: h_s(x) = h(x;\theta^*) + J(x)\,\delta_s \qquad (J = \partial h/\partial\theta \text{ at } \theta^*),

    computed by Jacobian-vector products (double backward), or with ``linearized=False``
    :math:`h_s(x) = h(x;\theta^*+\delta_s)`.
    With zero variance both equal :math:`\operatorname{softmax}(h(x;\theta^*))`, the MAP predictive.

    Args:
        model: maps ``(N, ...)`` to logits ``(N, C)``; its parameters are the posterior mean.
        x: inputs ``(N, ...)``.
        variance: posterior variances, e.g. from :func:`laplace_variance`.
        num_samples: :math:`S`.
        linearized: linearise the network around :math:`\theta^*` (default) or not.
        generator: random source of the :math:`\delta_s`, on the model's device.

    Returns:
        Probabilities ``(N, C)``.
    """
    params = _trainable(model)
    _check_diagonal(variance, params, "variance", non_negative=True)
    s = _check_count(num_samples, "num_samples")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if not isinstance(linearized, bool):
        raise TypeError(f"linearized must be True or False, got {linearized!r}")
    buffers = dict(model.named_buffers())
    fixed = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    mean = {n: p.detach().requires_grad_(linearized) for n, p in params.items()}
    std = {n: variance[n].to(p).sqrt() for n, p in mean.items()}

    def logits(theta: dict[str, Tensor]) -> Tensor:
        return functional_call(model, {**theta, **fixed, **buffers}, (x,))

    with torch.enable_grad():
        h0 = logits(mean)
        if h0.ndim != 2 or h0.shape[0] != x.shape[0]:
            raise ValueError(f"the model must map x of {x.shape[0]} rows to logits (N, C), got {tuple(h0.shape)}")
        if linearized:
            # J delta without forward-mode AD: g(u) = J^T u is linear in u, and d<g(u), delta>/du = J delta.
            u = torch.zeros_like(h0, requires_grad=True)
            jt_u = torch.autograd.grad(h0, list(mean.values()), u, create_graph=True, allow_unused=True)
            used = [(g, n) for g, n in zip(jt_u, mean) if g is not None]
    h0 = h0.detach()
    total = torch.zeros_like(h0)
    for _ in range(s):
        delta = {
            n: std[n] * torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device)
            for n, p in mean.items()
        }
        if linearized and used:
            with torch.enable_grad():
                jd = torch.autograd.grad([g for g, _ in used], u, [delta[n] for _, n in used], retain_graph=True)[0]
            h = h0 + jd
        elif linearized:
            h = h0
        else:
            h = logits({n: p + delta[n] for n, p in mean.items()})
        total += torch.softmax(h, dim=-1)
    return total / s


def _check_probs(probs: Tensor, labels: Tensor | None = None) -> None:
    if not isinstance(probs, Tensor) or probs.ndim != 2 or probs.shape[0] == 0:
        shape = tuple(probs.shape) if isinstance(probs, Tensor) else type(probs).__name__
        raise ValueError(f"probs must be a non-empty tensor (N, C) of class probabilities, got {shape}")
    if not bool(((probs >= 0) & (probs <= 1)).all()) or not torch.allclose(
        probs.sum(-1), torch.ones((), dtype=probs.dtype, device=probs.device), atol=1e-4
    ):
        raise ValueError("probs must hold probabilities: entries in [0, 1], rows summing to 1")
    if labels is None:
        return
    if (
        not isinstance(labels, Tensor)
        or labels.shape != probs.shape[:1]
        or labels.dtype not in (torch.int64, torch.int32)
    ):
        raise ValueError(f"labels must be an integer tensor of shape ({probs.shape[0]},) aligned with probs")
    if bool(((labels < 0) | (labels >= probs.shape[1])).any()):
        raise ValueError(f"labels must be class indices in [0, {probs.shape[1] - 1}]")


def expected_calibration_error(probs: Tensor, labels: Tensor, num_bins: int = 15) -> float:
    r"""Expected calibration error with equal-width confidence bins.

    With confidence :math:`c_n = \max_k p_{nk}`, prediction :math:`\hat y_n = \arg\max_k p_{nk}` and bins
    :math:`B_b = \{n: c_n\in((b-1)/M, b/M]\}` (the first also takes :math:`c_n = 0`),

    .. math:: \mathrm{ECE} = \sum_{b=1}^M \frac{|B_b|}{N}\,
              \Big|\frac1{|B_b|}\sum_{n\in B_b}[\hat y_n = y_n] - \frac1{|B_b|}\sum_{n\in B_b}c_n\Big|.

    Args:
        probs: class probabilities ``(N, C)``.
        labels: true classes ``(N,)``.
        num_bins: :math:`M`.
    """
    _check_probs(probs, labels)
    m = _check_count(num_bins, "num_bins")
    conf, pred = probs.double().max(dim=-1)
    correct = (pred == labels).double()
    bins = (conf * m).ceil().long().clamp(1, m) - 1
    count = torch.zeros(m, dtype=torch.float64, device=probs.device).index_add_(0, bins, torch.ones_like(conf))
    gap = torch.zeros_like(count).index_add_(0, bins, correct - conf)
    return float(gap.abs().sum() / conf.numel())


def negative_log_likelihood(probs: Tensor, labels: Tensor) -> float:
    r"""Mean negative log-likelihood :math:`-\frac1N\sum_n\log p_{n,y_n}` of predicted probabilities ``(N, C)``."""
    _check_probs(probs, labels)
    picked = probs.double().gather(1, labels.long()[:, None]).squeeze(1)
    return float(-picked.log().mean())


def predictive_entropy(probs: Tensor) -> Tensor:
    r"""Entropy :math:`-\sum_k p_{nk}\log p_{nk}` of each row of ``probs`` ``(N, C)``, in nats; ``(N,)``."""
    _check_probs(probs)
    p = probs.double()
    return -(p * p.clamp_min(1e-300).log()).sum(-1)


def continual_metrics(accuracy: Tensor) -> tuple[float, float]:
    r"""Average final accuracy and average forgetting of a continual-learning run.

    ``accuracy[i, j]`` is the accuracy on task :math:`j` after training on tasks :math:`0..i`
    (:math:`T\times T`). Returns :math:`\bar a = \frac1T\sum_j a_{T-1,j}` and the forgetting
    :math:`\frac1{T-1}\sum_{j<T-1}\big(\max_{j\le i<T-1} a_{ij} - a_{T-1,j}\big)` (Chaudhry et al., 2018).
    """
    if (
        not isinstance(accuracy, Tensor)
        or accuracy.ndim != 2
        or accuracy.shape[0] != accuracy.shape[1]
        or accuracy.shape[0] < 2
    ):
        shape = tuple(accuracy.shape) if isinstance(accuracy, Tensor) else type(accuracy).__name__
        raise ValueError(f"accuracy must be a square tensor (T, T) with T >= 2 tasks, got {shape}")
    a = accuracy.double()
    t = a.shape[0]
    final = a[t - 1]
    best = torch.stack([a[j : t - 1, j].max() for j in range(t - 1)])
    return float(final.mean()), float((best - final[: t - 1]).mean())


def squared_minibatch_mean_gradient(
    model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 64
) -> dict[str, Tensor]:
    r"""The "Fisher diagonal" as many EWC codebases compute it: squared minibatch-mean gradients, averaged.

    With the data labels, consecutive minibatches :math:`B_1..B_M` of ``x`` (the last may be smaller) and the
    mean cross-entropy :math:`L_m = \frac1{|B_m|}\sum_{n\in B_m}\ell(y_n\mid x_n)`, returns
    :math:`\frac1M\sum_m (\partial_{\theta_i} L_m)^2`. For independent terms its expectation is
    :math:`\frac1B\hat F_{\mathrm{emp}} + (1-\frac1B)\bar g^2` (:math:`\bar g` the full-data mean gradient):
    about :math:`B` times smaller than the empirical Fisher near a minimum, and neither it nor the Fisher.
    Kept for comparison, not as an estimator to use.

    Args:
        model: classifier mapping ``(N, ...)`` to logits ``(N, C)``.
        x: inputs ``(N, ...)``.
        y: integer labels ``(N,)``, the data's.
        batch_size: :math:`B`.

    Returns:
        ``{name: tensor shaped like the parameter}``.
    """
    params = _trainable(model)
    b = _check_count(batch_size, "batch_size")
    if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError("x and y must be tensors with the same, non-zero number of rows")
    out = {n: torch.zeros_like(p) for n, p in params.items()}
    batches = 0
    for s in range(0, x.shape[0], b):
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(x[s : s + b]), y[s : s + b])
            grads = torch.autograd.grad(loss, list(params.values()))
        for (n, _), g in zip(params.items(), grads):
            out[n] += g.detach().square()
        batches += 1
    return {n: v / batches for n, v in out.items()}
