r"""Monte Carlo over the classes of a categorical output: every single-pair term, and cheap repetitions.

* :func:`class_table`: for a categorical output, every single-pair term of :math:`\hat I_1` and
  :math:`\hat I_2` for every (input, class);
* :func:`simulate_estimates`: independent repetitions of the estimators, drawn from that table;
* :func:`empirical_variance`: a variance estimated from repetitions, with its standard error.

Used by chapters "Regression" (the standard error of a sample variance), "Input and label randomness" and
"The empirical Fisher".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist

import torch
from torch import Tensor, nn

from ..api import estimator_terms
from ..checks.arguments import check_estimator
from ..families import Categorical

__all__ = [
    "ClassTable",
    "class_table",
    "simulate_estimates",
    "empirical_variance",
    "sample_variance_se",
    "bonferroni_z",
]


@dataclass
class ClassTable:
    r"""Single-pair terms of both estimators for every input and every class (categorical output).

    Attributes:
        probs: ``(N, C)`` class probabilities :math:`p_c(x_n)`.
        i1: ``{name: (N, C, *shape)}``, :math:`(\partial_{\theta_i}\log p(c|x_n))^2`.
        i2: ``{name: (N, C, *shape)}``, :math:`-\partial^2_{\theta_i}\log p(c|x_n)`.
    """

    probs: Tensor
    i1: dict[str, Tensor]
    i2: dict[str, Tensor]

    def terms(self, estimator: str) -> dict[str, Tensor]:
        """``i1`` or ``i2``."""
        check_estimator(estimator)
        return self.i1 if estimator == "i1" else self.i2

    def select(self, keep: Mapping[str, Tensor]) -> ClassTable:
        """A table restricted to some entries: ``keep`` maps parameter names to flat indices into the parameter.

        The result's tensors are ``(N, C, len(indices))``; parameters not in ``keep`` are dropped. Use it to
        follow a subset of the parameters in :func:`simulate_estimates` at a fraction of the cost.
        """

        def pick(terms: dict[str, Tensor]) -> dict[str, Tensor]:
            return {n: terms[n].reshape(*terms[n].shape[:2], -1)[:, :, i.to(terms[n].device)] for n, i in keep.items()}

        return ClassTable(probs=self.probs, i1=pick(self.i1), i2=pick(self.i2))

    def estimate(self, estimator: str, indices: Tensor, labels: Tensor) -> dict[str, Tensor]:
        r"""The estimator's value for inputs ``indices`` ``(n,)`` with labels ``labels`` ``(n, S)``.

        Equals :func:`~fishertut.fisher_diagonal` on ``inputs[indices]`` with those labels.
        """
        labels = labels.reshape(indices.shape[0], -1)
        rows = indices.unsqueeze(1).expand_as(labels)
        return {k: v[rows, labels].mean(dim=(0, 1)) for k, v in self.terms(estimator).items()}


def class_table(model: nn.Module, inputs: Tensor, family: Categorical, batch_size: int | None = None) -> ClassTable:
    r"""Every single-pair term of Î1 and Î2 for each input and class, from :func:`~fishertut.estimator_terms`.

    One call per class ``c`` with the labels all set to ``c``. Memory: ``2 × N × C × P`` values.
    Since :math:`\mathbb E_y[\cdot] = \sum_c p_c(\cdot)`, the table gives :math:`I(\theta_i|x_n)`, :math:`V_1`,
    :math:`V_2`
    as weighted sums (the tests check that) and any Monte-Carlo repetition of the estimators as a weighted
    sum of its rows (:func:`simulate_estimates`).

    Args:
        model: the network; its output must be ``(N, C)`` logits.
        inputs: ``(N, ...)``.
        family: :class:`~fishertut.Categorical`.
        batch_size: passed on.
    """
    if not isinstance(family, Categorical):
        raise TypeError(f"class_table needs a Categorical family, got {family!r}")
    with torch.no_grad():
        h = model(inputs)
    n, c = h.shape
    probs = family.probabilities(h)
    parts: dict[str, list[dict[str, Tensor]]] = {"i1": [], "i2": []}
    for cls in range(c):
        labels = torch.full((n,), cls, dtype=torch.int64, device=h.device)
        tm = estimator_terms(model, inputs, family, targets=labels, batch_size=batch_size)
        parts["i1"].append(tm.i1)
        parts["i2"].append(tm.i2)

    def stack(ps: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        return {k: torch.cat([p[k] for p in ps], dim=1) for k in ps[0]}

    return ClassTable(probs=probs, i1=stack(parts["i1"]), i2=stack(parts["i2"]))


def simulate_estimates(
    table: ClassTable,
    estimator: str,
    num_inputs: int,
    samples_per_input: int = 1,
    repetitions: int = 1000,
    generator: torch.Generator | None = None,
    max_rows: int = 1 << 20,
) -> dict[str, Tensor]:
    r"""Independent repetitions of Î1 or Î2 with inputs drawn from the table's inputs and labels from the model.

    Each repetition draws ``num_inputs`` inputs uniformly with replacement from the table's ``N`` inputs and
    ``samples_per_input`` labels :math:`y\sim p(y|x)` for each, and returns the estimator (the mean of the
    single-pair terms), exactly what :func:`~fishertut.fisher_diagonal` returns for those inputs and labels
    (:meth:`ClassTable.estimate`). The estimate is linear in the counts :math:`w_{nc}` of the
    (input, class) pairs drawn, so all repetitions are one matrix product ``counts @ terms``.

    Args:
        table: from :func:`class_table`.
        estimator: ``"i1"`` or ``"i2"``.
        num_inputs: inputs per repetition.
        samples_per_input: labels per input.
        repetitions: number of independent repetitions ``R``.
        generator: random source (on the table's device).
        max_rows: at most this many (repetition, input) rows are drawn at once (memory).

    Returns:
        ``{name: (R, *shape)}`` estimates.
    """
    terms = table.terms(estimator)
    probs = table.probs
    n_pool, c = probs.shape
    device = probs.device
    reps_per_chunk = max(1, max_rows // max(1, num_inputs))
    counts = []
    for start in range(0, repetitions, reps_per_chunk):
        r = min(reps_per_chunk, repetitions - start)
        idx = torch.randint(0, n_pool, (r, num_inputs), generator=generator, device=device)
        labels = torch.multinomial(
            probs[idx.reshape(-1)], samples_per_input, replacement=True, generator=generator
        ).reshape(r, -1)
        cell = (idx.unsqueeze(2) * c + labels.reshape(r, num_inputs, samples_per_input)).reshape(r, -1)
        w = torch.zeros(r, n_pool * c, dtype=probs.dtype, device=device)
        w.scatter_add_(1, cell, torch.ones_like(cell, dtype=probs.dtype))
        counts.append(w)
    w = torch.cat(counts) / (num_inputs * samples_per_input)
    return {k: (w @ v.reshape(n_pool * c, -1)).reshape(repetitions, *v.shape[2:]) for k, v in terms.items()}


def empirical_variance(samples: Tensor, mean: Tensor | None = None, dim: int = 0) -> tuple[Tensor, Tensor]:
    r"""Variance of repeated estimates along ``dim``, and the standard error of that variance estimate.

    With the true ``mean`` :math:`\mu` known, the estimate is :math:`\hat\sigma^2 = \frac1R\sum_r (X_r-\mu)^2`,
    an average of ``R`` i.i.d. values :math:`(X_r-\mu)^2`, so its standard error is their standard deviation
    over :math:`\sqrt R`. Otherwise it is the unbiased sample variance :math:`s^2`, with
    :math:`\mathrm{Var}(s^2) = \frac1R\big(\mu_4 - \frac{R-3}{R-1}\sigma^4\big)`, :math:`\mu_4` the fourth central
    moment (plug-in estimates of :math:`\mu_4` and :math:`\sigma^2`).

    Args:
        samples: repetitions along ``dim`` (at least 2; 4 without ``mean``).
        mean: the known expectation, broadcastable to ``samples`` with ``dim`` removed; ``None`` if unknown.
        dim: the repetition axis.

    Returns:
        ``(variance, standard error)``, each ``samples`` without ``dim``.
    """
    r = samples.shape[dim]
    if mean is not None:
        sq = (samples - mean.unsqueeze(dim)).square()
        if r < 2:
            raise ValueError(f"need at least 2 repetitions, got {r}")
        return sq.mean(dim), sq.std(dim) / math.sqrt(r)
    if r < 4:
        raise ValueError(f"need at least 4 repetitions without a known mean, got {r}")
    centred = samples - samples.mean(dim, keepdim=True)
    var = centred.square().sum(dim) / (r - 1)
    return var, sample_variance_se(centred.square().mean(dim), centred.pow(4).mean(dim), r)


def sample_variance_se(variance: Tensor, fourth_moment: Tensor, repetitions: int) -> Tensor:
    r"""Standard error of the unbiased sample variance :math:`s^2` of ``repetitions`` i.i.d. values.

    :math:`\sqrt{\mathrm{Var}(s^2)} = \sqrt{\big(\mu_4 - \frac{R-3}{R-1}\sigma^4\big)/R}` with :math:`\sigma^2` the
    variance and :math:`\mu_4` the fourth central moment of one value (true values, or plug-in estimates as in
    :func:`empirical_variance`); negative rounding is clamped to 0.

    Args:
        variance: :math:`\sigma^2`, any shape.
        fourth_moment: :math:`\mu_4`, broadcastable with ``variance``.
        repetitions: :math:`R \ge 2`.
    """
    r = repetitions
    return ((fourth_moment - (r - 3) / (r - 1) * variance.square()) / r).clamp_min(0).sqrt()


def bonferroni_z(num_tests: int, level: float = 1e-3) -> float:
    r"""Critical :math:`|z|` for ``num_tests`` two-sided z-tests at family-wise level ``level`` (Bonferroni).

    :math:`z^* = \Phi^{-1}\big(1 - \alpha/(2m)\big)`: if every standardised error is (approximately) standard
    normal, the largest of :math:`m` of them exceeds :math:`z^*` with probability at most :math:`\alpha`, however
    they are correlated (the union bound). The book's Monte-Carlo checks assert :math:`\max_i |z_i| < z^*`.

    Args:
        num_tests: :math:`m \ge 1`, the number of z-scores compared.
        level: :math:`\alpha \in (0, 1)`.
    """
    if num_tests < 1:
        raise ValueError(f"num_tests must be at least 1, got {num_tests}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return NormalDist().inv_cdf(1 - level / (2 * num_tests))
