"""Brute-force minibatch estimators: exact means and variances of one minibatch's squared summed gradient.

For a multiset ``block`` of input indices, the squared summed gradient Q = (sum_{n in block} g_n)^2 per
parameter is enumerated over every joint label (categorical: classes; Gaussian: Gauss-Hermite nodes with 3
points per output, exact for degree <= 5 per coordinate, and Q^2 has degree 4) or every joint sign vector
(Hutchinson: all of {+1, -1}^(C |block|)). Scores come from torch.func on torch.distributions
log-likelihoods (oracle.score_and_neg_hessian), Jacobians from jacrev, and A_n is written out here:
diag(sqrt p) - p sqrt(p)^T (categorical) or I / sigma (Gaussian).
"""

from __future__ import annotations

import itertools
import math

import torch

import oracle


class BruteForce:
    """Per-input label scores and Hutchinson vectors of a problem, and block moments by enumeration."""

    def __init__(self, problem: oracle.Problem) -> None:
        self.problem = problem
        h, v, _ = oracle.output_derivatives(problem)
        self.scores, self.a = [], []
        for n, x in enumerate(problem.x):
            ys, ws = oracle.labels_and_weights(problem, h[n])
            rows = []
            for y, w in zip(ys, ws):
                s, _ = oracle.score_and_neg_hessian(problem, x, y)
                rows.append((w, torch.cat([t.flatten() for t in s.values()])))
            self.scores.append(rows)
            if problem.family == "categorical":
                p = torch.softmax(h[n], 0)
                root = torch.diag(p.sqrt()) - torch.outer(p, p.sqrt())
            else:
                root = torch.eye(h.shape[1], dtype=h.dtype) / problem.sigma
            self.a.append(root.T @ v[n])  # a_n = A_n^T J_n, (C, P)
        self.num_classes = h.shape[1]

    def block_moments(self, block: tuple[int, ...], estimator: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(E Q, Var Q) per parameter for one minibatch made of the inputs ``block`` (repeats allowed)."""
        m1 = m2 = 0
        if estimator == "i1":
            for combo in itertools.product(*(self.scores[n] for n in block)):
                w = math.prod(c[0] for c in combo)
                q = sum(c[1] for c in combo).square()
                m1, m2 = m1 + w * q, m2 + w * q.square()
        else:
            c = self.num_classes
            count = 2 ** (c * len(block))
            for signs in itertools.product((-1.0, 1.0), repeat=c * len(block)):
                xi = torch.tensor(signs, dtype=torch.float64).reshape(len(block), c)
                q = sum(xi[j] @ self.a[n] for j, n in enumerate(block)).square()
                m1, m2 = m1 + q / count, m2 + q.square() / count
        return m1, m2 - m1.square()

    def variance_given(self, estimator: str, minibatch: int, samples: int) -> torch.Tensor:
        """Var of the estimate over the problem's inputs, averaged over all orderings (uniform partitions)."""
        n = len(self.scores)
        cache, total = {}, 0
        perms = list(itertools.permutations(range(n)))
        for perm in perms:
            var = 0
            for start in range(0, n, minibatch):
                key = tuple(sorted(perm[start : start + minibatch]))
                if key not in cache:
                    cache[key] = self.block_moments(key, estimator)[1]
                var = var + cache[key]
            total = total + var / (n * n * samples)
        return total / len(perms)

    def variance_drawn(self, estimator: str, num_inputs: int, minibatch: int, samples: int) -> torch.Tensor:
        """Var of the estimate from ``num_inputs`` i.i.d. uniform draws of the inputs (law of total variance)."""
        n = len(self.scores)
        cache, means, cond = {}, [], []
        for seq in itertools.product(range(n), repeat=num_inputs):
            mean = var = 0
            for start in range(0, num_inputs, minibatch):
                key = tuple(sorted(seq[start : start + minibatch]))
                if key not in cache:
                    cache[key] = self.block_moments(key, estimator)
                mean, var = mean + cache[key][0], var + cache[key][1]
            means.append(mean / num_inputs)
            cond.append(var / (num_inputs**2 * samples))
        means = torch.stack(means)
        return torch.stack(cond).mean(0) + means.var(0, unbiased=False)
