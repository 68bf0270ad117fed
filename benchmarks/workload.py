"""The benchmark's workload: the network, the MNIST inputs, the shared labels, and the fishertut calls timed.

Every call returns plain ``{parameter name: tensor}`` dicts (or dicts of them) averaged over the ``N`` inputs,
so that :func:`benchmarks.registry.check_agreement` can compare a fishertut number with the peer number it is
timed against (the peers are in :mod:`benchmarks.references`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import fishertut as ft

__all__ = [
    "SIZES",
    "REPORT_FIELDS",
    "Problem",
    "make_problem",
    "fishertut_exact",
    "fishertut_i1",
    "fishertut_i2",
    "fishertut_report",
    "fishertut_i2_terms",
]

SIZES = (784, 256, 128, 64, 10)
REPORT_FIELDS = ("fisher", "var_i1", "var_i2", "var_x", "v1_lower", "v1_upper", "v2_lower", "v2_upper")

Params = dict[str, Tensor]


@dataclass
class Problem:
    r"""One benchmark configuration: network, inputs and the labels shared by every library.

    Attributes:
        activation: ``"sigmoid"`` or ``"tanh"``.
        model: ``ft.lab.models.mlp(sizes, activation, seed)``, untrained (timings do not depend on the weights).
        x: ``(N, 784)`` real MNIST digits (the 5,000 of ``ft.lab.data.load_mnist()``, cycled when ``N > 5,000``).
        labels: ``(N,)`` one label per input sampled once from the model, :math:`y_n \sim p(y|x_n;\theta)`
            (by inverse CDF from seeded uniforms, so that ``head(m)`` equals the problem built with ``m``).
        family: ``ft.Categorical()``.
    """

    activation: str
    model: nn.Sequential
    x: Tensor
    labels: Tensor
    family: ft.Categorical

    @property
    def n(self) -> int:
        """The number of inputs."""
        return self.x.shape[0]

    def head(self, n: int) -> Problem:
        """The same problem restricted to its first ``n`` inputs (for subset timings and checks)."""
        return Problem(self.activation, self.model, self.x[:n], self.labels[:n], self.family)


def make_problem(
    n: int,
    activation: str,
    sizes: tuple[int, ...] = SIZES,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Problem:
    """Build the benchmark problem with ``n`` inputs (see :class:`Problem`)."""
    model = ft.lab.models.mlp(list(sizes), activation, seed=seed, dtype=dtype, device=device)
    data = ft.lab.data.load_mnist()
    pool = torch.cat([data.train_x, data.test_x])
    if sizes[0] != pool.shape[1]:
        raise ValueError(f"the first width must be {pool.shape[1]} (MNIST pixels), got {sizes[0]}")
    x = pool.repeat(math.ceil(n / pool.shape[0]), 1)[:n].to(dtype=dtype, device=device).contiguous()
    family = ft.Categorical()
    with torch.no_grad():
        prob = family.probabilities(model(x)).double()
    # Inverse-CDF draws from one uniform per input: y_n ~ p(y|x_n), and the first m labels of a problem
    # with N > m inputs are those of the problem with m inputs (so subset timings see the same data).
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 1, generator=gen, dtype=torch.float64).to(device)
    labels = (prob.cumsum(1) < u).sum(1).clamp_max(prob.shape[1] - 1)
    return Problem(activation, model, x, labels, family)


# --- fishertut: the four timed calls ------------------------------------------------------------------


def _plain(d: dict[str, Tensor]) -> Params:
    return {k: v.detach() for k, v in d.items()}


def fishertut_exact(p: Problem) -> Params:
    r"""Exact diagonal FIM :math:`\frac1N\sum_n \mathrm{diag}(J_n^\top\Lambda_n J_n)`."""
    return _plain(ft.fisher_diagonal(p.model, p.x, p.family, "exact"))


def fishertut_i1(p: Problem) -> Params:
    r"""Î1 with the problem's sampled labels: :math:`\frac1N\sum_n (\partial_\theta\log p(y_n|x_n))^2`."""
    return _plain(ft.fisher_diagonal(p.model, p.x, p.family, "i1", targets=p.labels))


def fishertut_i2(p: Problem) -> Params:
    r"""Î2 with the problem's sampled labels: :math:`\frac1N\sum_n -\partial^2_\theta\log p(y_n|x_n)`."""
    return _plain(ft.fisher_diagonal(p.model, p.x, p.family, "i2", targets=p.labels))


def fishertut_report(p: Problem) -> dict[str, Params]:
    """The full :func:`fishertut.variance_report`, as ``{field: {parameter: tensor}}`` (``REPORT_FIELDS``)."""
    rep = ft.variance_report(p.model, p.x, p.family)
    return {k: _plain(v) for k, v in rep.statistics().items()}


def fishertut_i2_terms(p: Problem) -> Params:
    """Per-input Î2 terms ``(N, *shape)`` for the problem's labels (to check BackPACK's BatchDiagHessian)."""
    terms = ft.estimator_terms(p.model, p.x, p.family, targets=p.labels)
    return {k: v[:, 0].detach() for k, v in terms.i2.items()}


# --- BackPACK --------------------------------------------------------------------------------------------
