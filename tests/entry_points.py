"""Every public entry point of fishertut on one model, each compared with the torch.func oracle in float64.

:func:`assert_every_entry_point` runs ``fisher_diagonal`` (exact, i1, i2 and hutchinson, with ``minibatch`` 1
and 2), ``variance_report`` (bounds included), ``per_input_statistics``, ``estimator_terms`` and ``estimate``
on a model and checks each against brute-force values computed on a *reference* model (by default the model
itself; for a model that takes a mapping of tensors, a wrapper taking one tensor). Labels are given, and the
Hutchinson signs are redrawn here from a copy of the generator, so that every value is deterministic. The
oracle's Fisher information must be nonzero: no case can pass by returning zeros.
"""

from __future__ import annotations

import torch

import fishertut as ft
import oracle
from helpers import assert_dicts_close, mean0
from oracle import Problem

RTOL = 1e-9


def _family(family, sigma):
    return ft.Categorical() if family == "categorical" else ft.Gaussian(sigma)


def _flat(d):
    return torch.cat([v.flatten() for v in d.values()])


def _renamed(d, prefix):
    return {k[len(prefix) :]: v for k, v in d.items()} if prefix else d


def _labels(h, family, sigma, seed):
    gen = torch.Generator().manual_seed(seed)
    if family == "categorical":
        return torch.multinomial(torch.softmax(h, 1), 1, generator=gen)[:, 0]
    return h + torch.as_tensor(sigma, dtype=h.dtype) * torch.randn(h.shape, generator=gen, dtype=h.dtype)


def _signs(n, c, seed):
    return torch.randint(0, 2, (n, 1, c), generator=torch.Generator().manual_seed(seed)).to(torch.float64) * 2 - 1


def _close(got, want, what, prefix=""):
    assert_dicts_close(got, _renamed(want, prefix), rtol=RTOL, atol_scale=1e-12, what=what)


def assert_every_entry_point(model, inputs, family="categorical", sigma=1.0, reference=None, x=None, prefix=""):
    """Every entry point on ``model`` and ``inputs`` is exact against the oracle on ``reference`` and ``x``.

    Args:
        model: the model fishertut is given.
        inputs: its inputs (a tensor, or a mapping of tensors).
        family: ``"categorical"`` or ``"gaussian"``.
        sigma: the Gaussian's sigma (a number or one per output).
        reference: a float64 model taking the tensor ``x`` that computes the same function with the same
            parameters (default: ``model``).
        x: the reference's inputs (default: ``inputs``).
        prefix: what the reference's parameter names have in front of the model's.
    """
    reference = model if reference is None else reference
    x = inputs if x is None else x
    fam = _family(family, sigma)
    problem = Problem("edge", reference, x, family, sigma)
    h, v, _ = oracle.output_derivatives(problem)
    n, c = h.shape
    cond = oracle.conditional_by_chain_rule(problem)
    fisher = mean0(cond["fisher"])
    assert _flat(fisher).abs().max() > 1e-6, "the oracle's Fisher information is zero: the case proves nothing"

    _close(ft.fisher_diagonal(model, inputs, fam), fisher, "exact", prefix)
    y = _labels(h, family, sigma, seed=3)
    labels = y.unsqueeze(1)
    i1, i2 = oracle.estimator_values(problem, labels)
    _close(ft.fisher_diagonal(model, inputs, fam, "i1", targets=y), i1, "i1", prefix)
    _close(ft.fisher_diagonal(model, inputs, fam, "i2", targets=y), i2, "i2", prefix)
    scores = [_flat(oracle.score_and_neg_hessian(problem, x[k], labels[k, 0])[0]) for k in range(n)]
    gnb = sum(sum(scores[k : k + 2]).square() for k in range(0, n, 2)) / n
    _close(
        ft.fisher_diagonal(model, inputs, fam, "i1", targets=y, minibatch=2),
        oracle.unflatten(reference, gnb),
        "i1, minibatch=2",
        prefix,
    )

    # Hutchinson: a_n = A_n^T J_n with A A^T = Lambda written out; the signs redrawn from the same seed
    if family == "categorical":
        p = torch.softmax(h, 1)
        roots = [torch.diag(q.sqrt()) - torch.outer(q, q.sqrt()) for q in p]
    else:
        roots = [torch.eye(c, dtype=h.dtype) / torch.as_tensor(sigma, dtype=h.dtype)] * n
    a = [r.T @ v[k] for k, r in enumerate(roots)]
    xi = _signs(n, c, seed=5)
    ref = sum((xi[k, 0] @ a[k]).square() for k in range(n)) / n
    got = ft.fisher_diagonal(model, inputs, fam, "hutchinson", generator=torch.Generator().manual_seed(5))
    _close(got, oracle.unflatten(reference, ref), "hutchinson", prefix)
    gen = torch.Generator().manual_seed(5)
    blocks = [_signs_from(gen, min(2, n - k), c) for k in range(0, n, 2)]
    ref = sum((sum(b[j, 0] @ a[k + j] for j in range(b.shape[0]))).square() for k, b in zip(range(0, n, 2), blocks))
    got = ft.fisher_diagonal(model, inputs, fam, "hutchinson", generator=torch.Generator().manual_seed(5), minibatch=2)
    _close(got, oracle.unflatten(reference, ref / n), "hutchinson, minibatch=2", prefix)

    rep = ft.variance_report(model, inputs, fam)
    var_x = {k: (t - fisher[k]).square().mean(0) for k, t in cond["fisher"].items()}
    for field, want in (
        ("fisher", fisher),
        ("var_i1", mean0(cond["var_i1"])),
        ("var_i2", mean0(cond["var_i2"])),
        ("var_x", var_x),
    ):
        _close(getattr(rep, field), want, f"variance_report.{field}", prefix)
    bounds = oracle.dense_bounds(problem)
    for field, want in bounds.items():
        _close(getattr(rep.bounds, field), mean0(want), f"bounds.{field}", prefix)

    per = ft.per_input_statistics(model, inputs, fam)
    for field in ("fisher", "var_i1", "var_i2"):
        _close(getattr(per, field), cond[field], f"per_input_statistics.{field}", prefix)

    terms = ft.estimator_terms(model, inputs, fam, targets=y)
    pairs = [oracle.score_and_neg_hessian(problem, x[k], labels[k, 0]) for k in range(n)]
    want_i1 = torch.stack([_flat(s).square() for s, _ in pairs]).unsqueeze(1)
    want_i2 = torch.stack([_flat(a2) for _, a2 in pairs]).unsqueeze(1)
    _close(terms.i1, oracle.unflatten(reference, want_i1), "estimator_terms.i1", prefix)
    _close(terms.i2, oracle.unflatten(reference, want_i2), "estimator_terms.i2", prefix)

    est = ft.estimate(model, inputs, fam, rtol=0.5, generator=torch.Generator().manual_seed(7))
    truth = _renamed(fisher, prefix)
    for k, value in est.items():
        bound = 8 * est.stderr[k] + RTOL * truth[k].abs().max() + 1e-12
        assert bool(((value - truth[k]).abs() <= bound).all()), f"estimate[{k}] is off by more than 8 stderr"
    return rep


def _signs_from(gen, rows, c):
    return torch.randint(0, 2, (rows, 1, c), generator=gen).to(torch.float64) * 2 - 1
