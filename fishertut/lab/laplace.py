r"""The diagonal Laplace posterior of an MLP classifier in closed form: logit variances, predictive, evidence.

Used by the chapter :doc:`/book/downstream` (with :mod:`fishertut.lab.downstream`):

* :func:`linearised_logit_variance`: the diagonal of :math:`J_n\operatorname{diag}(\sigma^2)J_n^\top`, the
  variances of the linearised logits :math:`h(x_n;\theta^*) + J_n\delta` under
  :math:`\delta\sim\mathcal N(0,\operatorname{diag}(\sigma^2))`, without forming :math:`J_n`;
* :func:`probit_predictive`: the probit approximation of the linearised ("GLM") predictive from them;
* :func:`laplace_log_evidence`: the diagonal-Laplace approximation of the marginal likelihood, used to choose
  the prior precision :math:`\tau` (MacKay, 1992; Immer et al., 2021).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["linearised_logit_variance", "probit_predictive", "laplace_log_evidence"]


def _layers(model: nn.Module) -> list[nn.Module]:
    if not isinstance(model, nn.Sequential) or not isinstance(model[-1], nn.Linear):
        raise ValueError(
            "model must be an nn.Sequential of Linear layers and element-wise activations, ending in Linear"
        )
    for m in model:
        if not isinstance(m, (nn.Linear, nn.Flatten)) and any(True for _ in m.parameters()):
            raise ValueError(f"model: {type(m).__name__} has parameters; only Linear layers may have them")
    return list(model)


def linearised_logit_variance(model: nn.Module, x: Tensor, variance: Mapping[str, Tensor]) -> Tensor:
    r"""Variances ``(N, C)`` of :math:`J_n\delta`, :math:`\delta\sim\mathcal N(0,\mathrm{diag}\,\sigma^2)`.

    The diagonal of :math:`\Sigma_n = J_n\operatorname{diag}(\sigma^2)J_n^\top`, without forming :math:`J_n`. For a
    Linear layer with input :math:`a_n` and :math:`G_n = \partial h/\partial z` ``(C, out)`` at its output
    :math:`z = Wa + b`, :math:`J_{n,c,(j,k)} = G_{n,cj}a_{n,k}`, so the layer adds
    :math:`\sum_j G_{n,cj}^2\,s_{n,j}` with :math:`s_{n,j} = \sum_k\sigma^2_{W,jk}a_{n,k}^2+\sigma^2_{b,j}`:
    :math:`O(N\cdot\mathrm{in}\cdot\mathrm{out})` per layer. :math:`G` is carried back through the element-wise
    activations by their derivative.

    Args:
        model: ``nn.Sequential`` of ``nn.Linear`` and parameter-free element-wise modules (``Flatten`` allowed),
            ending in ``nn.Linear``; its parameters are :math:`\theta^*`.
        x: inputs ``(N, ...)``.
        variance: ``{name: tensor}`` posterior variances of every parameter (e.g.
            :func:`fishertut.lab.downstream.laplace_variance`).
    """
    layers = _layers(model)
    prefixes = {id(m): k for k, m in model.named_modules()}
    inputs: list[tuple[nn.Module, Tensor]] = []  # each Linear or activation with its input
    with torch.no_grad():
        a = x
        for m in layers:
            if not isinstance(m, nn.Flatten):
                inputs.append((m, a))
            a = m(a)
        n, classes = a.shape
        g = torch.eye(classes, dtype=a.dtype, device=a.device).expand(n, classes, classes)
        out = torch.zeros(n, classes, dtype=torch.float64, device=a.device)
        for m, a_in in reversed(inputs):
            if isinstance(m, nn.Linear):
                prefix = prefixes[id(m)]
                s = a_in.square() @ variance[f"{prefix}.weight"].to(a_in).T
                if m.bias is not None:
                    s = s + variance[f"{prefix}.bias"].to(a_in)
                out += (g.double().square() @ s.double()[:, :, None]).squeeze(-1)
                g = g @ m.weight
            else:
                with torch.enable_grad():
                    z = a_in.detach().requires_grad_(True)
                    (slope,) = torch.autograd.grad(m(z).sum(), z)
                g = g * slope[:, None, :]
    return out


def probit_predictive(logits: Tensor, logit_variance: Tensor) -> Tensor:
    r"""The probit approximation of the linearised predictive, :math:`\mathrm{softmax}_c(h_c/\sqrt{1+\pi v_c/8})`.

    :math:`\mathbb E[\operatorname{softmax}(h+J\delta)]` with :math:`(J\delta)_c` of variance :math:`v_c`, approximated
    as MacKay (1992) does for the logistic link, per class; the default "link approximation" of the
    linearised Laplace predictive of Daxberger et al. (2021). Deterministic, with no Monte-Carlo draws.

    Args:
        logits: :math:`h(x_n;\theta^*)`, ``(N, C)``.
        logit_variance: :math:`v`, ``(N, C)``, e.g. from :func:`linearised_logit_variance`.

    Returns:
        Probabilities ``(N, C)`` in float64.
    """
    if logits.ndim != 2 or logit_variance.shape != logits.shape:
        raise ValueError(f"logit_variance must have the shape of logits (N, C) = {tuple(logits.shape)}")
    if bool((logit_variance < 0).any()):
        raise ValueError("logit_variance must be non-negative")
    kappa = (1.0 + math.pi / 8.0 * logit_variance.double()).rsqrt()
    return torch.softmax(logits.double() * kappa, -1)


def laplace_log_evidence(
    fisher: Mapping[str, Tensor],
    num_data: int,
    prior_precision: float | Tensor,
    mean: Mapping[str, Tensor],
    log_likelihood: float,
) -> Tensor:
    r"""The diagonal-Laplace log marginal likelihood :math:`\log p(\mathcal D\mid\tau)` at each prior precision.

    With the prior :math:`\mathcal N(0,\tau^{-1}I)` on the :math:`P` parameters, the mode :math:`\theta^*` and the
    curvature :math:`NF+\tau I` (diagonal),

    .. math:: \log p(\mathcal D\mid\tau)\approx \log p(\mathcal D\mid\theta^*) + \frac P2\log\tau
              - \frac\tau2\|\theta^*\|^2 - \frac12\sum_i\log(NF_i+\tau)

    (the :math:`2\pi` of the prior and of the Gaussian integral cancel). It is exact for a linear-Gaussian
    model whose curvature is diagonal. Keeping :math:`\theta^*` fixed while :math:`\tau` varies is the usual
    post-hoc tuning of the prior.

    Args:
        fisher: per-input Fisher diagonal :math:`F`, non-negative, ``{name: tensor}``.
        num_data: :math:`N`.
        prior_precision: :math:`\tau > 0`, a number or a 1-D tensor of them.
        mean: :math:`\theta^*`, same keys and shapes as ``fisher``.
        log_likelihood: :math:`\log p(\mathcal D\mid\theta^*) = \sum_n\log p(y_n\mid x_n,\theta^*)`.

    Returns:
        A float64 tensor shaped like ``prior_precision``.
    """
    if set(fisher) != set(mean):
        raise ValueError("fisher and mean must have the same parameter names")
    if not isinstance(num_data, int) or num_data < 1:
        raise ValueError(f"num_data must be a positive integer, got {num_data!r}")
    tau = torch.as_tensor(prior_precision, dtype=torch.float64)
    if not bool((tau > 0).all()) or not bool(torch.isfinite(tau).all()):
        raise ValueError(f"prior_precision must be finite and > 0, got {prior_precision!r}")
    f = torch.cat([fisher[k].detach().double().flatten() for k in fisher])
    if bool((f < 0).any()):
        raise ValueError("fisher has negative entries; clamp an Î2 estimate first (e.g. .clamp_min(0))")
    theta_sq = float(sum(mean[k].detach().double().square().sum() for k in fisher))
    t = tau.reshape(-1, 1)
    log_det = torch.log(num_data * f + t).sum(-1)
    out = log_likelihood + 0.5 * f.numel() * t.squeeze(-1).log() - 0.5 * t.squeeze(-1) * theta_sq - 0.5 * log_det
    return out.reshape(tau.shape)
