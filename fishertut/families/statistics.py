r"""The exact conditional statistics of one input, summed over its positions, from output-space derivatives.

For a group of ``n`` directions (units or parameters) with output derivatives ``jac`` :math:`v` and ``curv``
:math:`u`, ``(N, K, n)`` in the model's flat order, and the position weights :math:`c_{n,t}` of
:class:`~fishertut.families.positions.Positions`, per input (the paper's per-input quantities, one position at a time):

====================  ===================================================================================
``fisher``            :math:`I = \sum_t c_t I_t`, :math:`I_t = v_t^\top\Lambda_t v_t`
``var_i1``            :math:`\sum_t c_t^2 V_{1,t}` (per-token Î1)
``var_i1_sequence``   :math:`\sum_t c_t^2 V_{1,t} + 2[(\sum_t c_tI_t)^2 - \sum_t c_t^2 I_t^2]` (per-sequence Î1)
``var_i2``            :math:`\sum_t c_t^2\,u_t^\top\Lambda_t u_t`
``var_hutchinson``    :math:`2(\|a\|^4 - \sum_k a_k^4)`, :math:`a` the stacked :math:`\sqrt{c_t}\,A_t^\top v_t`
``v1_*``, ``v2_*``    :math:`\sum_t c_t^2\lambda(M_t)\|\Pi v_t\|^4`, :math:`\sum_t c_t^2\lambda(\Lambda_t)\|\Pi u_t\|^2`
``fisher_sq``         :math:`I^2` (for the input term)
====================  ===================================================================================

Sums of per-position bounds bound the sums of per-position variances. With one position and :math:`c = 1`
these are the paper's single-output quantities. :math:`A_tA_t^\top = \Lambda_t`, as in the book.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .positions import Positions

__all__ = ["conditional_statistics"]


def conditional_statistics(
    layout: Positions, h: Tensor, jac: Tensor, curv: Tensor | None, curv_zero: bool, with_square: bool
) -> list[tuple[str, Tensor, int]]:
    """The report's unit statistics ``(name, values (N, n), degree)`` (module table) for one group of units."""
    fam, n = layout.family, h.shape[0]
    hr, jr = layout.rows(h), layout.from_model(jac)
    c = layout.weights.to(device=h.device, dtype=h.dtype).reshape(-1, 1)
    c2 = c.square()

    def total(values: Tensor) -> Tensor:
        return values.reshape(n, layout.num_positions, -1).sum(1)

    spectrum = fam.spectrum(hr)
    q = fam.quad(hr, jr)
    fisher = total(c * q)
    var_i1 = total(c2 * fam.fourth_cumulant_form(hr, jr))
    cq = (c * q).to(torch.float64)
    pairs = (total(cq).square() - total(cq.square())).clamp_min(0)
    pj = fam.project(jr).square().sum(1).square()
    if curv_zero:
        var_i2, pg = torch.zeros_like(fisher), torch.zeros_like(q)
    else:
        ur = layout.from_model(curv)
        pg = fam.project(ur).square().sum(1)
        var_i2 = total(c2 * fam.quad(hr, ur))
    a2 = (fam.covariance_factor(hr) @ jr).to(torch.float64).square() * c.to(torch.float64)[:, :, None]
    a2 = a2.reshape(n, -1, a2.shape[-1])
    stats = [
        ("fisher", fisher, 2),
        ("var_i1", var_i1, 4),
        ("var_i1_sequence", var_i1 + 2 * pairs.to(var_i1.dtype), 4),
        ("var_i2", var_i2, 4),
        ("v1_lower", total(c2 * spectrum.m_min[:, None] * pj), 4),
        ("v1_upper", total(c2 * spectrum.m_max[:, None] * pj), 4),
        ("v2_lower", total(c2 * spectrum.cov_min[:, None] * pg), 4),
        ("v2_upper", total(c2 * spectrum.cov_max[:, None] * pg), 4),
        ("var_hutchinson", 2 * (a2.sum(1).square() - a2.square().sum(1)), 4),
    ]
    if with_square:
        stats.append(("fisher_sq", fisher.to(torch.float64).square(), 4))  # squared in float64: var_x cancels
    return stats
