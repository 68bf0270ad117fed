"""Brute-force reference for outputs with positions, independent of fishertut's formulas.

For a whole batch at once (torch.func on ``functional_call`` of the model, float64), every joint label sequence
``y = (y_1..y_T)`` of an input is enumerated with its probability ``prod_t p(y_t|x)`` (categorical), or with
tensor-product Gauss-Hermite weights, 3 nodes per (position, dimension) (Gaussian; exact for the polynomials of
degree <= 5 per coordinate met here). The log-likelihood of a sequence is the sum over unmasked positions of
``log p(y_t|x)``. Per label sequence:

* per-position scores ``g_t = d log p(y_t|x)/d theta`` from ``jacrev`` of the per-position log-likelihoods;
* the negative Hessian diagonal of ``log p(y|x)`` from forward-over-reverse second derivatives of the outputs
  and of the log-partition (``log p = sum_t (t(y_t).h_t - F(h_t))`` up to a constant).

Then for each input: Fisher ``E[(sum_t g_t)^2]``; per-token term ``sum_t g_t^2``, per-sequence term
``(sum_t g_t)^2``, Î2 term ``-d^2 log p``: their means and variances over the enumeration. Token normalisation
divides the terms by the input's count of unmasked positions.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch.func import functional_call, jacfwd, jacrev


class SequenceOracle:
    """Per-input exact quantities, each ``(N, P)`` with ``P`` the flattened trainable parameters.

    Args:
        model: float64 module mapping ``x`` to ``(N, T, C)`` (or ``(N, C, T)`` with ``classes_first``).
        x: the whole batch of inputs.
        mask: boolean ``(N, T)`` or ``None``.
        family: ``"categorical"`` or ``"gaussian"``.
        normalize: ``"sequence"`` or ``"token"``.
        sigma: the Gaussian's noise level.
    """

    def __init__(self, model, x, mask=None, family="categorical", normalize="sequence", classes_first=False, sigma=1.0):
        self.model, self.x, self.family, self.sigma = model, x, family, sigma
        self.classes_first = classes_first
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.shapes = [p.shape for n, p in model.named_parameters() if p.requires_grad]
        self.theta = torch.cat([p.detach().reshape(-1) for n, p in model.named_parameters() if p.requires_grad])
        h = self.outputs(self.theta)
        self.n, self.t, self.c = h.shape
        self.mask = torch.ones(self.n, self.t, dtype=torch.bool) if mask is None else mask
        count = self.mask.sum(1).to(torch.float64)
        self.scale = 1.0 / count if normalize == "token" else torch.ones(self.n, dtype=torch.float64)
        self.h = h.detach()
        second = jacfwd(jacrev(self.outputs))(self.theta)  # (N, T, C, P, P)
        self.out_curv = torch.diagonal(second, dim1=-2, dim2=-1)
        self.partition_curv = torch.diagonal(jacfwd(jacrev(self.partition))(self.theta), dim1=-2, dim2=-1)

    def params(self, theta):
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes):
            size = math.prod(shape)
            out[name] = theta[start : start + size].reshape(shape)
            start += size
        return out

    def outputs(self, theta):
        h = functional_call(self.model, self.params(theta), (self.x,))
        return h.movedim(1, -1) if self.classes_first else h

    def partition(self, theta):
        h = self.outputs(theta)
        if self.family == "categorical":
            return torch.logsumexp(h, -1)
        return 0.5 * h.square().sum(-1) / self.sigma**2

    def position_loglik(self, theta, y):
        """``log p(y_t|x)`` per (input, position), masked positions 0: ``(N, T)``."""
        h = self.outputs(theta)
        if self.family == "categorical":
            ll = torch.log_softmax(h, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
        else:
            ll = -0.5 * (y - h).square().sum(-1) / self.sigma**2
        return ll * self.mask

    def labels(self):
        """Joint label sequences (the same index for every input) with per-input weights ``(N,)``."""
        if self.family == "categorical":
            p = torch.softmax(self.h, -1)
            for ys in itertools.product(range(self.c), repeat=self.t):
                y = torch.tensor(ys).expand(self.n, self.t)
                yield y, p.gather(-1, y.unsqueeze(-1)).squeeze(-1).prod(1)
            return
        nodes = [(-math.sqrt(3), 1 / 6), (0.0, 2 / 3), (math.sqrt(3), 1 / 6)]
        for combo in itertools.product(nodes, repeat=self.t * self.c):
            z = torch.tensor([c[0] for c in combo], dtype=torch.float64).reshape(self.t, self.c)
            w = math.prod(c[1] for c in combo)
            yield self.h + self.sigma * z, torch.full((self.n,), w, dtype=torch.float64)

    def neg_hessian(self, y):
        """``-d^2 log p(y|x)/d theta_i^2`` per input ``(N, P)``: from the outputs' and partition's curvature."""
        m = self.mask.to(torch.float64)[:, :, None]
        if self.family == "categorical":
            onehot = torch.nn.functional.one_hot(y, self.c).to(torch.float64)
            stat_curv = (onehot[..., None] * self.out_curv).sum(2)
        else:
            stat_curv = (y[..., None] * self.out_curv).sum(2) / self.sigma**2
        return -(m * (stat_curv - self.partition_curv)).sum(1)

    def statistics(self):
        """``{name: (N, P)}``: fisher and the mean and variance of the three estimator terms."""
        acc = {}
        for y, w in self.labels():
            g = jacrev(self.position_loglik)(self.theta, y)  # (N, T, P)
            terms = {"tok": g.square().sum(1), "seq": g.sum(1).square(), "i2": self.neg_hessian(y)}
            for k, v in terms.items():
                acc[k + "1"] = acc.get(k + "1", 0) + w[:, None] * v
                acc[k + "2"] = acc.get(k + "2", 0) + w[:, None] * v.square()
        s = self.scale[:, None]
        out = {"fisher": s * acc["seq1"]}
        for k in ("tok", "seq", "i2"):
            out["mean_" + k] = s * acc[k + "1"]
            out["var_" + k] = s.square() * (acc[k + "2"] - acc[k + "1"].square())
        return out

    def terms_at(self, labels):
        """The three estimator terms ``(N, P)`` at given labels ``(N, T)`` (or ``(N, T, D)``)."""
        g = jacrev(self.position_loglik)(self.theta, labels)
        s = self.scale[:, None]
        return {"i1": s * g.square().sum(1), "i1_sequence": s * g.sum(1).square(), "i2": s * self.neg_hessian(labels)}


def flat(d: dict) -> torch.Tensor:
    """Per-parameter tensors shaped like the parameters, concatenated: ``(P,)``."""
    return torch.cat([v.reshape(-1) for v in d.values()])


def flat_per_input(d: dict, lead: int = 1) -> torch.Tensor:
    """Per-parameter tensors ``(*lead axes, *shape)`` concatenated along the parameter axes."""
    first = next(iter(d.values()))
    return torch.cat([v.reshape(*first.shape[:lead], -1) for v in d.values()], -1)


def sequence_scores(oracle: SequenceOracle) -> tuple[torch.Tensor, torch.Tensor]:
    """Every joint label sequence's weight ``(L, N)`` and summed score ``(L, N, P)`` (scaled by ``sqrt(c)``)."""
    weights, scores = [], []
    for y, w in oracle.labels():
        g = jacrev(oracle.position_loglik)(oracle.theta, y)
        weights.append(w)
        scores.append(oracle.scale.sqrt()[:, None] * g.sum(1))
    return torch.stack(weights), torch.stack(scores)
