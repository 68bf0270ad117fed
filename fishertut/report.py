r"""Result types: the diagonal FIM estimate, the variance report with its bounds, and sample sizes.

Notation of the book (chapters "The variances of the two estimators", "Bounds on the variances", "Input and
label randomness"), per parameter :math:`\theta_i`, over inputs
:math:`x_1..x_N`:

* ``fisher``: :math:`\mathcal I(\theta_i) = \frac1N\sum_n I(\theta_i|x_n)`;
* ``var_i1``, ``var_i2``: :math:`\frac1N\sum_n V_k(\theta_i|x_n)`, the variance over one label
  :math:`y\sim p(y|x_n;\theta)` of estimator :math:`k`'s single-pair term, averaged over inputs;
* ``var_x``: :math:`\frac1N\sum_n (I(\theta_i|x_n) - \mathcal I(\theta_i))^2`, the input term, computed in one
  streaming pass as :math:`\frac1N\sum_n I(\theta_i|x_n)^2 - \mathcal I(\theta_i)^2` from float64 sums (so its
  absolute error is about the working precision times :math:`\mathcal I(\theta_i)^2`; clamped at 0);
* ``bounds``: per-input spectral bounds of :math:`V_1, V_2`, averaged the same way.

By the law of total variance, an estimator from ``N`` inputs drawn from these, with ``S`` labels each, has
:math:`\mathrm{Var}(\hat I_k) = \mathrm{var\_x}/N + \mathrm{var\_ik}/(NS)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .arguments import check_count
from .variances import minibatch_variance

__all__ = ["FisherDiagonal", "Bounds", "VarianceReport", "ConditionalStatistics", "EstimatorTerms"]

ESTIMATORS = ("exact", "i1", "i1_sequence", "i2", "hutchinson")
SAMPLED = ("i1", "i1_sequence", "i2", "hutchinson")


class FisherDiagonal(dict):
    r"""``{parameter name: tensor shaped like the parameter}``, with how it was computed.

    Attributes:
        estimator: ``"exact"``, ``"i1"``, ``"i1_sequence"``, ``"i2"`` or ``"hutchinson"``.
        path: the engine used, ``"layerwise"``, ``"graph"`` or ``"generic"``, or ``"autograd"`` (one backward per
            minibatch).
        num_inputs: number of inputs :math:`N`.
        samples_per_input: labels per input (1 for ``"exact"`` and for data labels).
        labels: ``"model"`` (sampled), ``"given"`` (targets), ``"argmax"``, or ``None`` for ``"exact"``.
        minibatch: inputs summed before squaring (1: per-input estimators).
        piecewise_linear: parameters proven from the traced graph to have :math:`u \equiv 0` (every operation
            between them and the output piecewise linear); their second derivatives were never computed.
        normalize: ``"sequence"`` or ``"token"`` (:mod:`fishertut.families.positions`).
    """

    def __init__(
        self,
        values: dict[str, Tensor],
        *,
        estimator: str,
        path: str,
        num_inputs: int,
        samples_per_input: int,
        labels: str | None,
        minibatch: int = 1,
        piecewise_linear: frozenset[str] = frozenset(),
        normalize: str = "sequence",
    ) -> None:
        super().__init__(values)
        self.normalize = normalize
        self.estimator = estimator
        self.path = path
        self.num_inputs = num_inputs
        self.samples_per_input = samples_per_input
        self.labels = labels
        self.minibatch = minibatch
        self.piecewise_linear = piecewise_linear

    def __repr__(self) -> str:
        return (
            f"FisherDiagonal(estimator={self.estimator!r}, path={self.path!r}, num_inputs={self.num_inputs}, "
            f"samples_per_input={self.samples_per_input}, minibatch={self.minibatch}, parameters={list(self)})"
        )


@dataclass
class Bounds:
    r"""Spectral bounds on the single-label variances, averaged over inputs (dicts like ``fisher``).

    Variant (our choice among the valid forms of the paper's Theorem 4.1; eq. eq-bounds-projected of the book):
    eigenvalues are taken on the subspace where the directions live, after projecting out the
    null direction :math:`\mathbf 1` of the categorical :math:`\Lambda` (:math:`\Pi w = w - \mathrm{mean}(w)\mathbf 1`),
    which changes neither :math:`V_1` nor :math:`V_2` (shift invariance, chapter "Classification"):

    * ``v1_lower``/``v1_upper``: :math:`\|\Pi v_i\|^4\,\lambda_{\min/\max}(M)`, :math:`M` restricted to symmetric
      tensors of that subspace (lower is 0 for a categorical with ``C >= 3``; tight for ``C = 2``;
      both equal :math:`2I^2` for the Gaussian);
    * ``v2_lower``/``v2_upper``: :math:`\|\Pi u_i\|^2\,\lambda_{\min/\max}(\Lambda)` on the subspace
      (:math:`\lambda^+_{\min}` for the categorical; both equal :math:`\|u_i\|^2/\sigma^2` for the Gaussian).
    """

    v1_lower: dict[str, Tensor]
    v1_upper: dict[str, Tensor]
    v2_lower: dict[str, Tensor]
    v2_upper: dict[str, Tensor]


def check_estimator(estimator: str, allowed: tuple[str, ...] = ("i1", "i2")) -> None:
    """Raise ``ValueError`` unless ``estimator`` is one of ``allowed`` (the one estimator-name check)."""
    if estimator not in allowed:
        raise ValueError(f"estimator must be one of {allowed}, got {estimator!r}")


@dataclass
class VarianceReport:
    r"""Exact FIM diagonal, conditional variances of Î1 and Î2, input variance and bounds (module docstring).

    Attributes:
        fisher, var_i1, var_i2, var_x: ``{parameter name: tensor shaped like the parameter}``. With outputs
            with positions, ``var_i1`` is the per-token Î1's (:mod:`fishertut.families.positions`).
        var_i1_sequence: the per-sequence Î1's (square of the summed score over positions): ``var_i1`` plus
            :math:`2[(\sum_t c_tI_t)^2 - \sum_t c_t^2I_t^2]` averaged over inputs; equal to ``var_i1`` without
            positions.
        var_hutchinson: mean over inputs of the Rademacher Hutchinson term's variance
            :math:`2(\|a\|^4 - \sum_k a_k^4)` (:mod:`fishertut.minibatch`).
        bounds: :class:`Bounds`.
        num_inputs: the number of inputs the averages run over.
        path: the engine used.
        piecewise_linear: parameters proven from the traced graph to have :math:`u \equiv 0` (so
            ``var_i2`` is 0 there); their second derivatives were never computed.
        max_positions: the most positions of one input's output (1 for ``(N, C)`` outputs).
        normalize: ``"sequence"`` or ``"token"``.
    """

    fisher: dict[str, Tensor]
    var_i1: dict[str, Tensor]
    var_i2: dict[str, Tensor]
    var_x: dict[str, Tensor]
    bounds: Bounds
    num_inputs: int
    path: str
    family: object = field(repr=False, default=None)
    var_hutchinson: dict[str, Tensor] = field(default_factory=dict)
    piecewise_linear: frozenset[str] = frozenset()
    var_i1_sequence: dict[str, Tensor] = field(default_factory=dict)
    max_positions: int = 1
    normalize: str = "sequence"

    def statistics(self) -> dict[str, dict[str, Tensor]]:
        """The per-parameter fields by name: ``fisher``, ``var_x``, ``var_i1``, ``var_i2`` and the four bounds."""
        b = self.bounds
        return {
            "fisher": self.fisher,
            "var_x": self.var_x,
            "var_i1": self.var_i1,
            "var_i2": self.var_i2,
            "v1_lower": b.v1_lower,
            "v1_upper": b.v1_upper,
            "v2_lower": b.v2_lower,
            "v2_upper": b.v2_upper,
        }

    def bias(self, estimate: dict[str, Tensor]) -> dict[str, Tensor]:
        r"""``estimate`` minus the exact Fisher of the report, per parameter: the error of a fixed-label estimate.

        The empirical Fisher (``targets`` from the data) and the argmax-label recipe (``targets="argmax"``) are
        deterministic given the inputs, and biased by design: this difference is their whole error. Pass an
        estimate over the same inputs (and ``mask``, ``normalize``) as the report.

        Raises:
            ValueError: the estimate covers other parameters, another number of inputs or normalisation.
        """
        if set(estimate) != set(self.fisher):
            raise ValueError(f"estimate has parameters {sorted(estimate)}, the report {sorted(self.fisher)}")
        for attr in ("num_inputs", "normalize"):
            mine, theirs = getattr(self, attr), getattr(estimate, attr, getattr(self, attr))
            if mine != theirs:
                raise ValueError(
                    f"estimate has {attr}={theirs!r} but the report {attr}={mine!r}: compare like with like"
                )
        return {k: estimate[k] - self.fisher[k] for k in self.fisher}

    def conditional_variance(self, estimator: str) -> dict[str, Tensor]:
        """``var_i1``, ``var_i1_sequence``, ``var_i2`` or ``var_hutchinson``."""
        check_estimator(estimator, SAMPLED)
        return {
            "i1": self.var_i1,
            "i1_sequence": self.var_i1_sequence or self.var_i1,
            "i2": self.var_i2,
            "hutchinson": self.var_hutchinson,
        }[estimator]

    def estimator_variance(
        self,
        estimator: str,
        num_inputs: int | None = None,
        samples_per_input: int = 1,
        minibatch: int = 1,
        inputs: str = "drawn",
    ) -> dict[str, Tensor]:
        r"""Exact variance of an estimate of the mean Fisher (:mod:`fishertut.variances`).

        With ``minibatch=1``: :math:`\mathrm{Var}(\hat I_k) = \mathrm{var\_x}/N + \mathrm{var\_ik}/(N S)`
        (eq. eq-ilv-total-variance).
        With ``B = minibatch`` inputs summed before squaring (GNB for ``"i1"``, Hutchinson) and ``B | N``:
        :math:`\mathrm{var\_x}/N + (\mathrm{var\_ik} + 2(B-1)\mathcal I^2)/(NS)`. ``"i2"`` ignores ``minibatch``.
        For outputs with positions, GNB over sequences is ``"i1_sequence"`` with ``minibatch=B`` (the squared
        sum of every token's score in the minibatch); ``"i1"`` (per token) takes ``minibatch=1`` only there.

        Args:
            estimator: ``"i1"``, ``"i1_sequence"``, ``"i2"`` or ``"hutchinson"``.
            num_inputs: :math:`N` (default: the report's ``num_inputs``).
            samples_per_input: :math:`S`, labels (or sign vectors) per input, or per minibatch.
            minibatch: :math:`B`, inputs summed before squaring.
            inputs: ``"drawn"``: the inputs are drawn i.i.d. from the report's inputs (input term included;
                any grouping is then equivalent); ``"given"``: the report's own inputs, grouped by a uniformly
                random partition into minibatches (the variance over labels, averaged over partitions).
        """
        cond = self.conditional_variance(estimator)
        n = check_count(self.num_inputs if num_inputs is None else num_inputs, "num_inputs")
        s = check_count(samples_per_input, "samples_per_input")
        b = 1 if estimator == "i2" else check_count(minibatch, "minibatch")
        if estimator == "i1" and b > 1 and self.max_positions > 1:
            raise ValueError(
                "minibatch > 1 sums whole sequences before squaring: for outputs with positions that is "
                "estimator='i1_sequence' (GNB over sequences); 'i1' is per token and takes minibatch=1"
            )
        return {
            k: minibatch_variance(self.fisher[k], self.var_x[k], cond[k], n, s, b, inputs, self.num_inputs)
            for k in self.fisher
        }

    def sample_size(
        self,
        epsilon: float,
        delta: float = 0.05,
        estimator: str = "i1",
        samples_per_input: int = 1,
        relative: bool = True,
    ) -> dict[str, Tensor]:
        r"""Inputs :math:`N` with :math:`P(|\hat I_k(\theta_i) - \mathcal I(\theta_i)| \ge \epsilon') \le \delta`.

        :math:`N \ge (\mathrm{var\_x} + \mathrm{var\_ik}/S)/(\delta\,\epsilon'^2)` with
        :math:`\epsilon' = \epsilon\,\mathcal I(\theta_i)` if ``relative`` else :math:`\epsilon` (eq. eq-ilv-chebyshev).
        Parameters with zero variance need one input;
        a relative target for a parameter with zero Fisher information but non-zero variance needs
        ``inf``.
        """
        if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
        if not (isinstance(delta, (int, float)) and 0 < delta < 1):
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        cond = self.conditional_variance(estimator)
        s = check_count(samples_per_input, "samples_per_input")
        out = {}
        for k, fisher in self.fisher.items():
            num = self.var_x[k] + cond[k] / s
            tol = epsilon * fisher.abs() if relative else torch.full_like(fisher, float(epsilon))
            need = torch.ceil(num / (delta * tol.square()))
            out[k] = torch.where(num > 0, need, torch.ones_like(need)).clamp_min(1)
        return out


@dataclass
class ConditionalStatistics:
    r"""Per-input values: each dict maps a parameter name to a tensor ``(N, *parameter.shape)``.

    ``fisher[k][n]`` is :math:`I(\theta|x_n)`; ``var_i1``, ``var_i2`` are :math:`V_1, V_2(\theta|x_n)` and
    ``var_hutchinson`` the Hutchinson term's variance; ``bounds`` holds the per-input bounds;
    ``piecewise_linear`` the parameters proven to have :math:`u \equiv 0`.
    """

    fisher: dict[str, Tensor]
    var_i1: dict[str, Tensor]
    var_i2: dict[str, Tensor]
    bounds: Bounds
    path: str
    var_hutchinson: dict[str, Tensor] = field(default_factory=dict)
    piecewise_linear: frozenset[str] = frozenset()
    var_i1_sequence: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class EstimatorTerms:
    r"""Single-pair terms of the two estimators: dicts of ``(N, S, *parameter.shape)`` tensors.

    ``i1[k][n, s]`` is :math:`(\partial_{\theta}\log p(y_{ns}|x_n))^2` and ``i2[k][n, s]`` is
    :math:`-\partial^2_{\theta}\log p(y_{ns}|x_n)`; ``labels`` are the :math:`y_{ns}`. The estimators are the
    means over ``(n, s)``. ``piecewise_linear``: the parameters proven to have :math:`u \equiv 0`.
    With outputs with positions, ``i1`` is the per-token term :math:`\sum_t c_t g_t^2`, ``i1_sequence`` the
    per-sequence term :math:`(\sum_t\sqrt{c_t}g_t)^2` and ``i2`` :math:`-\sum_t c_t\partial^2\log p(y_t|x)`;
    ``labels`` are ``(N, S, *positions)`` (:mod:`fishertut.families.positions`).
    """

    i1: dict[str, Tensor]
    i2: dict[str, Tensor]
    labels: Tensor
    path: str
    piecewise_linear: frozenset[str] = frozenset()
    i1_sequence: dict[str, Tensor] = field(default_factory=dict)
