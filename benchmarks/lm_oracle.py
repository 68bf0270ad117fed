r"""The oracle of ``benchmarks/lm.py``: per-position channel rows through the engines, and ``torch.func``.

Outputs ``(N, T, V)`` (or flattened ``(N, T·V)``) are independent categoricals per position. The exact diagonal
has the channels :math:`S_t` (the covariance factor of position ``t``) on position ``t``; the per-sequence Î1 one
channel :math:`(\varepsilon_1,\dots,\varepsilon_T)`; the per-token Î1 the channel :math:`\varepsilon_t` on
position ``t``. :func:`reference` computes the same three quantities from per-position log-likelihood
gradients by ``jacrev``, one sequence at a time.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call, jacrev
from torch.nn.attention import SDPBackend, sdpa_kernel

import fishertut as ft

Params = dict[str, Tensor]


def block_channels(blocks: Tensor) -> Tensor:
    """``(N, T, k, V)`` per-position channel rows to ``(N, T·k, T·V)`` rows that each live on one position."""
    n, t, k, v = blocks.shape
    out = blocks.new_zeros(n, t, k, t, v)
    idx = torch.arange(t)
    out[:, idx, :, idx, :] = blocks.transpose(0, 1)
    return out.reshape(n, t * k, t * v)


def per_position(engine: object, x: Tensor, rows: Tensor) -> Params:
    r""":math:`\frac1N\sum_n\sum_k (r_{nk}^\top \partial h_n/\partial\theta)^2` through ``engine``, per parameter."""
    _, tape = engine.forward(x)
    with torch.no_grad():
        return {t.targets[0][0]: t.jac.square().sum(1).mean(0) for t in engine.backward(tape, rows, None)}


def channels(model: torch.nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Channel rows of the exact diagonal, the per-sequence and the per-token Î1 (module docstring)."""
    n, t = x.shape
    with torch.no_grad():
        h = model(x).reshape(n * t, -1)
    fam, v = ft.Categorical(), h.shape[1]
    factors = fam.covariance_factor(h).view(n, t, v, v)
    eps = fam.residual(h, y.reshape(n * t, 1)).view(n, t, 1, v)
    return {
        "exact": block_channels(factors),
        "sequence": eps.reshape(n, 1, t * v),
        "token": block_channels(eps),
    }


def reference(model: torch.nn.Module, x: Tensor, y: Tensor) -> dict[str, Params]:
    """The three quantities by ``torch.func``: per-position log-likelihood gradients, enumerated or sampled."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    n, t = x.shape
    with torch.no_grad():
        p = torch.softmax(model(x).reshape(n, t, -1), -1)
    v = p.shape[-1]

    def logp(ps: Params, xi: Tensor) -> Tensor:
        return torch.log_softmax(functional_call(model, ps, (xi.unsqueeze(0),)).reshape(t, v), -1)

    with sdpa_kernel([SDPBackend.MATH]):  # the fused CPU kernel has no batching rule
        per_seq = [jacrev(logp)(params, xi) for xi in x]  # one sequence at a time: T·V × P each
    grads = {k: torch.stack([g[k] for g in per_seq]) for k in params}  # (N, T, V, *shape)
    out: dict[str, Params] = {"exact": {}, "sequence": {}, "token": {}}
    for k, g in grads.items():
        g = g.flatten(3)
        picked = g.gather(2, y[:, :, None, None].expand(n, t, 1, g.shape[-1]))[:, :, 0]
        out["exact"][k] = (p.unsqueeze(-1) * g.square()).sum((1, 2)).mean(0)
        out["sequence"][k] = picked.sum(1).square().mean(0)
        out["token"][k] = picked.square().sum(1).mean(0)
    return out


def rel_error(a: Params, b: Params) -> float:
    """Largest error relative to each tensor's largest entry."""
    return max(((a[k].flatten() - b[k].flatten()).abs().max() / b[k].abs().max().clamp_min(1e-30)).item() for k in b)
