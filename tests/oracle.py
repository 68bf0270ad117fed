"""Brute-force reference values, independent of fishertut's formulas.

Per input x_n, every label y gets a weight w(y): the class probabilities (categorical, exact enumeration) or
Gauss-Hermite nodes with 3 points per output dimension (Gaussian; exact for polynomials of degree <= 5 in y,
and the score is linear and the negative Hessian affine in y). With the score s(y) = d log p(y|x)/d theta and
a(y) = -d^2 log p(y|x)/d theta^2 from torch.func on torch.distributions log-likelihoods:

    I = sum_y w s^2,   V1 = sum_y w s^4 - I^2,   V2 = sum_y w a^2 - (sum_y w a)^2.

Hessians are forward-over-reverse, or reverse-over-reverse for operators without a forward-mode rule
(weight_norm). The bounds use dense eigendecompositions of the C^2 x C^2 fourth-moment matrix and of Lambda.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical as TorchCategorical
from torch.distributions import Normal
from torch.func import functional_call, grad, hessian, jacrev


def _hessian(f, argnums=0):
    """torch.func.hessian, falling back to jacrev(jacrev) where forward mode is not implemented."""

    def both(*args):
        try:
            return hessian(f, argnums=argnums)(*args)
        except NotImplementedError:
            return jacrev(jacrev(f, argnums=argnums), argnums=argnums)(*args)

    return both


@dataclass
class Problem:
    """A declared test setting: model (float64, eval), inputs and family description."""

    id: str
    model: nn.Module
    x: torch.Tensor
    family: str  # "categorical" or "gaussian"
    sigma: float | torch.Tensor = 1.0  # a number, or one per output

    def fishertut_family(self):
        import fishertut as ft

        return ft.Categorical() if self.family == "categorical" else ft.Gaussian(self.sigma)


def flat_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}


def _log_prob(problem: Problem, params, x, y):
    h = functional_call(problem.model, params, (x.unsqueeze(0),)).squeeze(0)
    if problem.family == "categorical":
        return TorchCategorical(logits=h).log_prob(y)
    return Normal(h, problem.sigma).log_prob(y).sum()


def labels_and_weights(problem: Problem, h: torch.Tensor) -> tuple[list[torch.Tensor], list[float]]:
    """Labels covering the label distribution of one output ``h`` (C,) exactly for degree <= 5 polynomials."""
    if problem.family == "categorical":
        p = torch.softmax(h, 0)
        return [torch.tensor(c) for c in range(h.numel())], p.tolist()
    nodes, weights = np.polynomial.hermite_e.hermegauss(3)  # probabilists' Hermite: weight exp(-x^2/2)
    weights = weights / math.sqrt(2 * math.pi)
    ys, ws = [], []
    for combo in itertools.product(range(3), repeat=h.numel()):
        ys.append(h + problem.sigma * torch.tensor([nodes[i] for i in combo], dtype=h.dtype))
        ws.append(float(np.prod([weights[i] for i in combo])))
    return ys, ws


def score_and_neg_hessian(problem: Problem, x: torch.Tensor, y: torch.Tensor):
    """s(y) and a(y) = -diag Hessian of log p(y|x) for one input, as dicts of parameter-shaped tensors."""
    params = flat_params(problem.model)
    s = grad(_log_prob, argnums=1)(problem, params, x, y)
    hess = _hessian(_log_prob, argnums=1)(problem, params, x, y)
    a = {
        k: -hess[k][k].reshape(params[k].numel(), params[k].numel()).diagonal().reshape(params[k].shape) for k in params
    }
    return s, a


def conditional(problem: Problem) -> dict[str, dict[str, torch.Tensor]]:
    """Per-input I, V1, V2 (dicts name -> (N, *shape)) and the mean of a(y) (must equal I)."""
    out = {"fisher": {}, "fisher_from_hessian": {}, "var_i1": {}, "var_i2": {}}
    rows = {k: [] for k in out}
    for x in problem.x:
        with torch.no_grad():
            h = problem.model(x.unsqueeze(0)).squeeze(0)
        ys, ws = labels_and_weights(problem, h)
        acc = {"s2": 0, "s4": 0, "a": 0, "a2": 0}
        for y, w in zip(ys, ws):
            s, a = score_and_neg_hessian(problem, x, y)
            acc["s2"] = acc["s2"] + w * torch.cat([v.flatten() for v in s.values()]) ** 2
            acc["s4"] = acc["s4"] + w * torch.cat([v.flatten() for v in s.values()]) ** 4
            flat_a = torch.cat([v.flatten() for v in a.values()])
            acc["a"] = acc["a"] + w * flat_a
            acc["a2"] = acc["a2"] + w * flat_a**2
        rows["fisher"].append(acc["s2"])
        rows["fisher_from_hessian"].append(acc["a"])
        rows["var_i1"].append(acc["s4"] - acc["s2"] ** 2)
        rows["var_i2"].append(acc["a2"] - acc["a"] ** 2)
    return {k: unflatten(problem.model, torch.stack(v)) for k, v in rows.items()}


def conditional_by_chain_rule(problem: Problem) -> dict[str, dict[str, torch.Tensor]]:
    """Per-input I, V1, V2 like :func:`conditional`, faster: through the outputs, by the chain rule.

    With v = dh/dtheta and u = diag d^2h/dtheta^2 (from :func:`output_derivatives`) and, per label, the
    gradient g and Hessian H of log p(y|h) in h (torch.func on torch.distributions), the score is g.v_i and
    the negative diagonal Hessian a_i = -(v_i^T H v_i + g.u_i).
    """
    h, v, u = output_derivatives(problem)

    def log_prob(hh, y):
        if problem.family == "categorical":
            return TorchCategorical(logits=hh).log_prob(y)
        return Normal(hh, problem.sigma).log_prob(y).sum()

    rows = {"fisher": [], "var_i1": [], "var_i2": []}
    for hn, vn, un in zip(h, v, u):
        ys, ws = labels_and_weights(problem, hn)
        s2 = s4 = a1 = a2 = 0
        for y, w in zip(ys, ws):
            g = grad(log_prob)(hn, y)
            hess = hessian(log_prob)(hn, y)
            s = g @ vn
            a = -((hess @ vn) * vn).sum(0) - g @ un
            s2, s4, a1, a2 = s2 + w * s**2, s4 + w * s**4, a1 + w * a, a2 + w * a**2
        rows["fisher"].append(s2)
        rows["var_i1"].append(s4 - s2**2)
        rows["var_i2"].append(a2 - a1**2)
    return {k: unflatten(problem.model, torch.stack(r)) for k, r in rows.items()}


def unflatten(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """(..., P) -> {name: (..., *shape)} in named_parameters order."""
    out, offset = {}, 0
    for n, p in model.named_parameters():
        out[n] = flat[..., offset : offset + p.numel()].reshape(flat.shape[:-1] + p.shape)
        offset += p.numel()
    return out


def output_derivatives(problem: Problem) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """H (N, C), v = dh/dtheta (N, C, P) and u = diag d^2 h_c/dtheta^2 (N, C, P) by jacrev and hessian."""
    params = flat_params(problem.model)

    def out(p, x):
        return functional_call(problem.model, p, (x.unsqueeze(0),)).squeeze(0)

    hs, vs, us = [], [], []
    for x in problem.x:
        hs.append(out(params, x))
        jac = jacrev(out)(params, x)
        vs.append(torch.cat([jac[k].reshape(jac[k].shape[0], -1) for k in params], 1))
        hes = _hessian(out)(params, x)
        us.append(
            torch.cat(
                [hes[k][k].reshape(-1, params[k].numel(), params[k].numel()).diagonal(dim1=1, dim2=2) for k in params],
                1,
            )
        )
    return torch.stack(hs).detach(), torch.stack(vs), torch.stack(us)


def dense_bounds(problem: Problem) -> dict[str, dict[str, torch.Tensor]]:
    """Per-input bounds from dense eigendecompositions (the library's variant, computed the slow way)."""
    h, v, u = output_derivatives(problem)
    n, c, _ = v.shape
    rows = {"v1_lower": [], "v1_upper": [], "v2_lower": [], "v2_upper": []}
    for i in range(n):
        if problem.family == "categorical":
            p = torch.softmax(h[i], 0)
            lam = torch.diag(p) - torch.outer(p, p)
            eps = torch.eye(c, dtype=h.dtype) - p
            k4 = sum(p[j] * torch.outer(torch.kron(eps[j], eps[j]), torch.kron(eps[j], eps[j])) for j in range(c))
            q = torch.linalg.qr(torch.cat([torch.ones(c, 1, dtype=h.dtype), torch.eye(c, dtype=h.dtype)], 1))[0][:, 1:c]
            proj = q @ q.T
        else:
            # sigma: one number, or one per output; Isserlis: E[e_a e_b e_c e_d] = L_ab L_cd + L_ac L_bd + L_ad L_bc
            eye = torch.eye(c, dtype=h.dtype)
            lam = eye / torch.as_tensor(problem.sigma, dtype=h.dtype) ** 2
            k4 = (
                torch.einsum("ab,cd->abcd", lam, lam)
                + torch.einsum("ac,bd->abcd", lam, lam)
                + torch.einsum("ad,bc->abcd", lam, lam)
            ).reshape(c * c, c * c)
            q = eye
            proj = eye
        m = k4 - torch.outer(lam.reshape(-1), lam.reshape(-1))
        sym = []
        for a_ in range(q.shape[1]):
            for b_ in range(a_, q.shape[1]):
                t = torch.outer(q[:, a_], q[:, b_])
                t = (t + t.T).reshape(-1)
                sym.append(t / t.norm())
        basis = torch.stack(sym, 1)
        m_sym = torch.linalg.eigvalsh(basis.T @ m @ basis)
        lam_sub = torch.linalg.eigvalsh(q.T @ lam @ q)
        pv = (proj @ v[i]).square().sum(0)
        pu = (proj @ u[i]).square().sum(0)
        rows["v1_lower"].append(m_sym[0].clamp_min(0) * pv**2)
        rows["v1_upper"].append(torch.linalg.eigvalsh(m)[-1] * pv**2)
        rows["v2_lower"].append(lam_sub[0] * pu)
        rows["v2_upper"].append(lam_sub[-1] * pu)
    return {k: unflatten(problem.model, torch.stack(r)) for k, r in rows.items()}


def estimator_values(problem: Problem, labels: torch.Tensor) -> tuple[dict, dict]:
    """Î1 and Î2 by brute force for the labels (N, S, ...) : means of s^2 and a over all pairs."""
    s2, a = 0, 0
    count = 0
    for x, ys in zip(problem.x, labels):
        for y in ys:
            s, neg = score_and_neg_hessian(problem, x, y)
            s2 = s2 + torch.cat([t.flatten() for t in s.values()]) ** 2
            a = a + torch.cat([t.flatten() for t in neg.values()])
            count += 1
    return unflatten(problem.model, s2 / count), unflatten(problem.model, a / count)
