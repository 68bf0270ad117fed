r"""Exact variances of the estimators of the mean Fisher, with inputs summed in minibatches before squaring.

Per parameter :math:`\theta_i`, over the report's inputs :math:`x_1..x_N`: :math:`\mathcal I` the mean Fisher,
:math:`v` the mean single-term variance of the estimator (:math:`V_1`, :math:`V_2`, or the Hutchinson
:math:`2(\|a\|^4-\sum_k a_k^4)`), :math:`\mathrm{var}_x` the input variance of :math:`I(\theta_i\mid x)`.

An estimate from :math:`M` inputs in minibatches of :math:`B` (the last one holding the remainder), ``S``
draws per minibatch, is :math:`\frac1{MS}\sum_{s,b} G_{b,s}^2` and one minibatch's term has variance
:math:`\sum_{n\in b} V_n + 2\sum_{n\ne m\in b} I_n I_m` (ordered pairs). With
:math:`\pi = \sum_b B_b(B_b-1)` the number of ordered pairs that share a minibatch:

* ``inputs="drawn"``: the :math:`M` inputs are drawn i.i.d. from the report's inputs (any grouping is then
  equivalent); by the law of total variance

  .. math:: \mathrm{Var} = \frac{\mathrm{var}_x}{M} + \frac{M v + 2\pi\,\mathcal I^2}{M^2 S};

* ``inputs="given"``: the report's own :math:`N` inputs, partitioned uniformly at random into minibatches;
  the variance over labels (or signs), averaged over partitions, with
  :math:`\mathbb E[I_nI_m] = \mathcal I^2 - \mathrm{var}_x/(N-1)` for a random pair :math:`n\ne m`:

  .. math:: \mathrm{Var} = \frac{N v + 2\pi\,(\mathcal I^2 - \mathrm{var}_x/(N-1))}{N^2 S}.

With ``B = 1`` (:math:`\pi = 0`) these are the per-input variances. Î2 is unchanged by ``minibatch``: the
Hessian diagonal of a sum is the sum of the diagonals, so summing before differentiating changes nothing.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["INPUT_MODELS", "same_minibatch_pairs", "minibatch_variance"]

INPUT_MODELS = ("drawn", "given")


def same_minibatch_pairs(num_inputs: int, minibatch: int) -> int:
    r""":math:`\pi = \sum_b B_b(B_b - 1)`, ordered pairs of distinct inputs in the same minibatch."""
    full, rest = divmod(num_inputs, minibatch)
    return full * minibatch * (minibatch - 1) + rest * (rest - 1)


def minibatch_variance(
    fisher: Tensor,
    var_x: Tensor,
    conditional: Tensor,
    num_inputs: int,
    samples: int,
    minibatch: int,
    inputs: str,
    report_inputs: int,
) -> Tensor:
    r"""The variance of the module docstring for one parameter tensor (all tensors shaped alike).

    Args:
        fisher: :math:`\mathcal I`.
        var_x: :math:`\mathrm{var}_x`.
        conditional: :math:`v`.
        num_inputs: :math:`M` (``"drawn"``) or :math:`N` (``"given"``, must equal ``report_inputs``).
        samples: draws ``S`` per minibatch.
        minibatch: ``B``.
        inputs: ``"drawn"`` or ``"given"``.
        report_inputs: the report's :math:`N`.
    """
    if inputs not in INPUT_MODELS:
        raise ValueError(f"inputs must be one of {INPUT_MODELS}, got {inputs!r}")
    m = num_inputs
    pairs = same_minibatch_pairs(m, minibatch)
    if inputs == "drawn":
        return var_x / m + (m * conditional + 2 * pairs * fisher.square()) / (m * m * samples)
    if m != report_inputs:
        raise ValueError(
            f"inputs='given' is the variance over the report's own {report_inputs} inputs; "
            f"num_inputs must be None or {report_inputs}, got {m}"
        )
    pair_mean = fisher.square() - (var_x / (m - 1) if m > 1 else 0 * var_x)
    return (m * conditional + 2 * pairs * pair_mean) / (m * m * samples)
