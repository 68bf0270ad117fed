r"""Spectral bounds of the conditional variances in several variants, next to the library's.

The library reports one variant of the paper's eigenvalue bounds (its Theorem 4.1), projected on the subspace
where the output directions live (:class:`~fishertut.Bounds`). Chapter "Bounds" compares it with

* the unprojected variant (a): eigenvalues over the whole output space;
* the exact-:math:`I` split (d): :math:`\lambda_{\max}(\mathrm{mat}\,K)\,\|v_i\|^4 - I(\theta_i|x)^2`,
  with and without the projection,

per input, and checks that each bound holds (:func:`bounds_hold`). The MNIST case study uses the same check.

Used by chapters :doc:`/book/bounds` and :doc:`/book/mnist_case_study`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..api import estimator_terms, per_input_statistics
from ..families import Categorical, ExponentialFamily, Gaussian
from ..report import Bounds, ConditionalStatistics

__all__ = ["BoundVariants", "bound_variants", "bounds_hold"]


def bounds_hold(lower: Tensor, value: Tensor, upper: Tensor, rtol: float = 1e-9) -> bool:
    """Whether ``lower <= value <= upper`` everywhere, up to a relative slack ``rtol`` of ``|upper|``.

    The slack absorbs rounding: a bound that is tight (equal to the value) may differ from it in the last bits.
    """
    slack = rtol * upper.abs() + 1e-300
    return bool(((lower <= value + slack) & (value <= upper + slack)).all())


@dataclass
class BoundVariants:
    r"""Per-input spectral bounds of :math:`V_1` and :math:`V_2` in several variants; dicts of ``(N, *shape)``.

    Attributes:
        statistics: the library's :func:`~fishertut.per_input_statistics` (true :math:`I, V_1, V_2` and the
            projected bounds the library reports, :class:`~fishertut.Bounds`).
        unprojected: variant (a) without the projection:
            :math:`\|v_i\|^4\lambda_{\min/\max}(M)` and :math:`\|u_i\|^2\lambda_{\min/\max}(\Lambda)` with the
            eigenvalues over the whole output space (the lower bounds are 0 for a categorical output).
        v1_upper_split: variant (d), :math:`\lambda_{\max}(\mathrm{mat}\,K)\,\|v_i\|^4 - I(\theta_i|x)^2`.
        v1_upper_split_projected: variant (d) with :math:`\Pi v_i` in place of :math:`v_i`.
        v_norm_sq, u_norm_sq: :math:`\|v_i\|^2` and :math:`\|u_i\|^2`.
    """

    statistics: ConditionalStatistics
    unprojected: Bounds
    v1_upper_split: dict[str, Tensor]
    v1_upper_split_projected: dict[str, Tensor]
    v_norm_sq: dict[str, Tensor]
    u_norm_sq: dict[str, Tensor]


def bound_variants(
    model: nn.Module, inputs: Tensor, family: ExponentialFamily, batch_size: int | None = None
) -> BoundVariants:
    r"""The library's projected bounds, the unprojected variant (a) and variant (d), per input.

    The norms come from the library itself: with the unit-variance Gaussian family,
    :math:`I(\theta_i|x) = \|v_i\|^2` and :math:`V_2 = \|u_i\|^2`, and the single-pair term of Î1 at the
    label :math:`y = h + \mathbf 1` (residual :math:`\varepsilon = \mathbf 1`) is :math:`(\mathbf 1^\top v_i)^2`;
    for the categorical family the projected norm is :math:`\|\Pi v_i\|^2 = \|v_i\|^2 - (\mathbf 1^\top v_i)^2/C`.

    Args:
        model: as in :func:`~fishertut.per_input_statistics` (small models: ``N × P`` values per statistic).
        inputs: a tensor ``(N, ...)``.
        family: :class:`~fishertut.Categorical` or :class:`~fishertut.Gaussian`.
        batch_size: passed on.

    Returns:
        :class:`BoundVariants`.
    """
    stats = per_input_statistics(model, inputs, family, batch_size=batch_size)
    norms = per_input_statistics(model, inputs, Gaussian(1.0), batch_size=batch_size)
    with torch.no_grad():
        h = model(inputs)
    spec = family.spectrum(h)
    m = h.shape[1]
    cov_eig = torch.linalg.eigvalsh(family.covariance(h))
    m_min_full = torch.zeros_like(spec.m_max) if m >= 2 else spec.m_max
    # the categorical Λ has the null vector 1: its smallest eigenvalue is exactly 0
    lam_min = torch.zeros_like(spec.m_max) if isinstance(family, Categorical) else cov_eig[:, 0].clamp_min(0)
    k_max = family.kurtosis_matrix_max(h)

    def per_input(scale: Tensor, values: Tensor) -> Tensor:
        return scale.reshape(-1, *([1] * (values.ndim - 1))) * values

    v4 = {k: v.square() for k, v in norms.fisher.items()}
    u2 = norms.var_i2
    unprojected = Bounds(
        v1_lower={k: per_input(m_min_full, v) for k, v in v4.items()},
        v1_upper={k: per_input(spec.m_max, v) for k, v in v4.items()},
        v2_lower={k: per_input(lam_min, v) for k, v in u2.items()},
        v2_upper={k: per_input(cov_eig[:, -1], v) for k, v in u2.items()},
    )
    split = {k: per_input(k_max, v) - stats.fisher[k].square() for k, v in v4.items()}
    if isinstance(family, Categorical):
        ones = estimator_terms(model, inputs, Gaussian(1.0), targets=h + 1, batch_size=batch_size).i1
        pv4 = {k: (v - ones[k][:, 0] / m).clamp_min(0).square() for k, v in norms.fisher.items()}
    else:
        pv4 = v4
    split_projected = {k: per_input(k_max, v) - stats.fisher[k].square() for k, v in pv4.items()}
    return BoundVariants(
        statistics=stats,
        unprojected=unprojected,
        v1_upper_split=split,
        v1_upper_split_projected=split_projected,
        v_norm_sq=norms.fisher,
        u_norm_sq=u2,
    )
