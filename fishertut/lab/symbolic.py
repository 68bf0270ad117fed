r"""SymPy versions of the output families, for the derivations of the theory chapters.

Each chapter derives its formulas here, symbolically, and then compares them numerically with the torch code
of :mod:`fishertut.families` (through :func:`lambdify`), so that derivation and library cannot drift apart.

For an exponential family :math:`p(y|h) = \pi(y)\exp(t(y)^\top h - F(h))` the log-partition function
:math:`F` generates everything (chapters :doc:`/book/exponential_family` and :doc:`/book/conditional_variances`):

* :math:`\eta = \nabla F = \mathbb E[t(y)]` and :math:`\nabla^2 F = \mathrm{Cov}(t(y))` (:class:`SymbolicFamily`);
* along a direction :math:`w`, :math:`\phi(s) = F(h + s w)` is, up to a constant and a linear term, the
  cumulant generating function of :math:`\varepsilon^\top w`, so :math:`I = \phi''(0)`,
  :math:`V_1 = 2\phi''(0)^2 + \phi''''(0)` and, with :math:`\psi(s) = F(h + s u)`, :math:`V_2 = \psi''(0)`
  (:func:`conditional_variances`).

Two families, matching :mod:`fishertut.families`:

* :func:`gaussian`: the network predicts the mean :math:`\mu = h` of :math:`\mathcal N(\mu, \sigma^2 I)`;
  then :math:`t(y) = y/\sigma^2` and :math:`F(h) = \|h\|^2/(2\sigma^2)`, so that the score residual
  :math:`\varepsilon = t - \eta = (y-\mu)/\sigma^2` is the one of :class:`fishertut.Gaussian`;
* :func:`categorical`: :math:`t(y) = e_y`, :math:`F(h) = \log\sum_c e^{h_c}` (softmax logits).

The categorical fourth central moment tensor (:eq:`eq-cls-k` in :doc:`/book/classification`) is built two ways, by
enumeration over the classes (:func:`categorical_fourth_moment_enumerated`) and by the explicit Kronecker-delta formula
(:func:`categorical_fourth_moment`).

For sequence outputs (chapter :doc:`/book/language_model`), :func:`summed_score_moments` takes the
expectation of powers of a sum of independent zero-mean scores, term by term.

See chapters :doc:`/book/exponential_family`, :doc:`/book/conditional_variances` and :doc:`/book/classification`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import sympy as sp

__all__ = [
    "summed_score_moments",
    "SymbolicFamily",
    "gaussian",
    "categorical",
    "vector",
    "directional_derivative",
    "conditional_variances",
    "categorical_fourth_moment",
    "categorical_fourth_moment_enumerated",
    "contract",
    "positive_parameterization",
    "lambdify",
]


def vector(name: str, m: int, **assumptions: bool) -> sp.Matrix:
    """Column vector of ``m`` symbols ``name_1 .. name_m`` (SymPy assumptions passed on)."""
    return sp.Matrix(sp.symbols(f"{name}_1:{m + 1}", **assumptions))


@dataclass(frozen=True)
class SymbolicFamily:
    r"""An exponential family given by its log-partition function :math:`F(h)` in symbols :math:`h`.

    Attributes:
        name: ``"gaussian"`` or ``"categorical"``.
        h: ``(m, 1)`` matrix of the natural-parameter symbols.
        F: the log-partition function, an expression in ``h`` (and ``sigma`` for the Gaussian).
        sigma: the noise standard deviation symbol (Gaussian), else ``None``.
    """

    name: str
    h: sp.Matrix
    F: sp.Expr
    sigma: sp.Symbol | None = None

    @property
    def m(self) -> int:
        """Output dimension :math:`m` (classes for the categorical)."""
        return self.h.shape[0]

    def mean(self) -> sp.Matrix:
        r""":math:`\eta(h) = \nabla F(h)`, an ``(m, 1)`` matrix."""
        return sp.Matrix([sp.diff(self.F, hc) for hc in self.h])

    def covariance(self) -> sp.Matrix:
        r""":math:`\nabla^2 F(h)`, the covariance of :math:`t(y)` (an ``m × m`` matrix)."""
        return sp.hessian(self.F, list(self.h))

    def cumulant(self, order: int) -> sp.Array:
        r"""The cumulant tensor :math:`\nabla^k F(h)` of order ``k`` (an ``m^k`` array)."""
        return (
            sp.derive_by_array(self.F, list(self.h))
            if order == 1
            else sp.derive_by_array(self.cumulant(order - 1), list(self.h))
        )


def gaussian(m: int, sigma: sp.Symbol | None = None) -> SymbolicFamily:
    r"""Gaussian with known :math:`\sigma`, the network predicting the mean: :math:`F(h) = \|h\|^2/(2\sigma^2)`."""
    sigma = sp.Symbol("sigma", positive=True) if sigma is None else sigma
    h = vector("h", m, real=True)
    return SymbolicFamily("gaussian", h, sum(hc**2 for hc in h) / (2 * sigma**2), sigma)


def categorical(num_classes: int) -> SymbolicFamily:
    r"""Categorical with logits :math:`h`: :math:`F(h) = \log\sum_c e^{h_c}`."""
    h = vector("h", num_classes, real=True)
    return SymbolicFamily("categorical", h, sp.log(sum(sp.exp(hc) for hc in h)))


def positive_parameterization(family: SymbolicFamily, name: str = "q") -> tuple[dict, sp.Matrix]:
    r"""Substitution :math:`h_c = \log q_c` (``q`` positive symbols) that turns softmax expressions rational.

    After ``expr.subs(subs)``, :math:`e^{h_c} = q_c` and :math:`p_c = q_c/\sum_d q_d`, so that
    ``sympy.cancel`` decides identities between categorical expressions quickly.

    Returns:
        ``(subs, q)``: the substitution dictionary and the ``(m, 1)`` matrix of ``q`` symbols.
    """
    q = vector(name, family.m, positive=True)
    return {hc: sp.log(qc) for hc, qc in zip(family.h, q)}, q


def directional_derivative(family: SymbolicFamily, w: sp.Matrix, order: int) -> sp.Expr:
    r""":math:`\frac{d^k}{ds^k} F(h + s\,w)\big|_{s=0}`: the ``order``-th cumulant of :math:`\varepsilon^\top w`."""
    s = sp.Dummy("s")
    phi = family.F.subs({hc: hc + s * wc for hc, wc in zip(family.h, w)}, simultaneous=True)
    return sp.diff(phi, s, order).subs(s, 0)


def conditional_variances(family: SymbolicFamily, v: sp.Matrix, u: sp.Matrix) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    r"""Cumulant form of :math:`I(\theta_i|x)`, :math:`V_1` and :math:`V_2`.

    :eq:`eq-var-cumulant` in :doc:`/book/conditional_variances`.

    With :math:`\phi(s) = F(h+sv)` and :math:`\psi(s) = F(h+su)`:
    :math:`I = \phi''(0)`, :math:`V_1 = 2\phi''(0)^2 + \phi''''(0)`, :math:`V_2 = \psi''(0)`.

    Args:
        family: the output family.
        v: ``(m, 1)`` first derivative :math:`v_i = \partial h/\partial\theta_i`.
        u: ``(m, 1)`` diagonal second derivative :math:`u_i = \partial^2 h/\partial\theta_i^2`.

    Returns:
        ``(I, V1, V2)`` as SymPy expressions.
    """
    fisher = directional_derivative(family, v, 2)
    v1 = 2 * fisher**2 + directional_derivative(family, v, 4)
    return fisher, v1, directional_derivative(family, u, 2)


def _delta(*indices: int) -> int:
    return int(len(set(indices)) == 1)


def categorical_fourth_moment(p: Sequence[sp.Expr]) -> sp.Array:
    r"""The explicit 4th central moment tensor :math:`K_{abcd}` of a one-hot categorical.

    :eq:`eq-cls-k` in :doc:`/book/classification`.

    .. math::
        K_{abcd} = \delta_{abcd} p_a - (\delta_{abc} p_a p_d + \delta_{abd} p_a p_c + \delta_{acd} p_a p_b
        + \delta_{bcd} p_b p_a) + (\delta_{ab} p_a p_c p_d + \delta_{ac} p_a p_b p_d + \delta_{ad} p_a p_b p_c
        + \delta_{bc} p_b p_a p_d + \delta_{bd} p_b p_a p_c + \delta_{cd} p_c p_a p_b) - 3 p_a p_b p_c p_d

    Args:
        p: class probabilities :math:`p_1..p_C` (symbols or numbers summing to one).

    Returns:
        A ``C × C × C × C`` SymPy array.
    """
    p = list(p)
    c = len(p)
    k = sp.MutableDenseNDimArray.zeros(c, c, c, c)
    for a, b, cc, d in itertools.product(range(c), repeat=4):
        k[a, b, cc, d] = (
            _delta(a, b, cc, d) * p[a]
            - (
                _delta(a, b, cc) * p[a] * p[d]
                + _delta(a, b, d) * p[a] * p[cc]
                + _delta(a, cc, d) * p[a] * p[b]
                + _delta(b, cc, d) * p[b] * p[a]
            )
            + (
                _delta(a, b) * p[a] * p[cc] * p[d]
                + _delta(a, cc) * p[a] * p[b] * p[d]
                + _delta(a, d) * p[a] * p[b] * p[cc]
                + _delta(b, cc) * p[b] * p[a] * p[d]
                + _delta(b, d) * p[b] * p[a] * p[cc]
                + _delta(cc, d) * p[cc] * p[a] * p[b]
            )
            - 3 * p[a] * p[b] * p[cc] * p[d]
        )
    return sp.ImmutableDenseNDimArray(k)


def categorical_fourth_moment_enumerated(p: Sequence[sp.Expr]) -> sp.Array:
    r""":math:`K = \sum_y p_y\,\varepsilon_y^{\otimes 4}`, :math:`\varepsilon_y = e_y - p`, by enumerating the classes.

    It equals :func:`categorical_fourth_moment` on the simplex: compare symbolically after substituting
    :math:`p_C = 1 - \sum_{c<C} p_c`.
    """
    p = list(p)
    c = len(p)
    total = sp.MutableDenseNDimArray.zeros(c, c, c, c)
    for y in range(c):
        eps = [int(a == y) - p[a] for a in range(c)]
        for idx in itertools.product(range(c), repeat=4):
            total[idx] += p[y] * eps[idx[0]] * eps[idx[1]] * eps[idx[2]] * eps[idx[3]]
    return sp.ImmutableDenseNDimArray(total)


def contract(tensor: sp.Array, w: Sequence[sp.Expr]) -> sp.Expr:
    r"""Full contraction :math:`T[w^k] = \sum T_{a_1..a_k} w_{a_1}\cdots w_{a_k}` of a k-tensor with ``w``."""
    w = list(w)
    k = tensor.rank()
    return sp.Add(*[tensor[idx] * sp.Mul(*[w[a] for a in idx]) for idx in itertools.product(range(len(w)), repeat=k)])


def lambdify(symbols: Sequence[sp.Basic | sp.MatrixBase], expr: sp.Basic) -> Callable[..., np.ndarray]:
    """``sympy.lambdify`` to NumPy, batched: trailing axes of vector arguments, leading batch axes of results.

    Args:
        symbols: the arguments, each a symbol or a vector of symbols (an ``(m, 1)`` matrix such as ``h``).
        expr: an expression, matrix or array in those symbols.

    Returns:
        ``f(*values)``: a scalar argument takes an array of shape ``batch``, a vector argument of length ``m``
        an array of shape ``(*batch, m)``. Returns a float array ``(*batch, *expr.shape)`` (``expr.shape`` is
        empty for a scalar expression).
    """
    is_vector = [isinstance(s, sp.MatrixBase) for s in symbols]
    args = [list(s) if vec else s for s, vec in zip(symbols, is_vector)]
    shaped = isinstance(expr, (sp.MatrixBase, sp.NDimArray))
    fn = sp.lambdify(args, expr.tolist() if shaped else expr, modules="numpy")

    def call(*values: object) -> np.ndarray:
        values = [
            list(np.moveaxis(np.asarray(val, dtype=float), -1, 0)) if vec else np.asarray(val, dtype=float)
            for val, vec in zip(values, is_vector)
        ]
        out = fn(*values)
        given = [np.shape(val[0]) if vec else np.shape(val) for val, vec in zip(values, is_vector)]
        batch = np.broadcast_shapes(*given, *[np.shape(leaf) for leaf in _leaves(out)])
        arr = _stack(out, batch)
        rank = arr.ndim - len(batch)
        return np.moveaxis(arr, list(range(rank)), list(range(-rank, 0))) if rank else arr

    return call


def _leaves(out: object) -> list[object]:
    if isinstance(out, (list, tuple)):
        return [leaf for o in out for leaf in _leaves(o)]
    return [out]


def _stack(out: object, batch: tuple[int, ...]) -> np.ndarray:
    if isinstance(out, (list, tuple)):
        return np.stack([_stack(o, batch) for o in out])
    return np.broadcast_to(np.asarray(out, dtype=float), batch)


def summed_score_moments(positions: int) -> tuple[sp.Expr, sp.Expr, tuple[sp.Symbol, ...], tuple[sp.Symbol, ...]]:
    r"""Mean and variance of :math:`(\sum_t g_t)^2` for independent zero-mean :math:`g_1, \dots, g_T`.

    :math:`\mathbb E g_t^2 = I_t` and :math:`\mathbb E g_t^4 = m_t`; third moments are symbols too, and cancel.
    The square and the fourth power are expanded, and each monomial's expectation is the product of the
    per-position moments (independence), zero where some :math:`g_t` appears to the first power.

    Returns:
        ``(mean, variance, I, m)``: expressions in the symbols ``I = (I_1, ..., I_T)`` and ``m``.
    """
    g = sp.symbols(f"g1:{positions + 1}")
    fisher = sp.symbols(f"I1:{positions + 1}", positive=True)
    fourth = sp.symbols(f"m1:{positions + 1}", positive=True)
    third = sp.symbols(f"k1:{positions + 1}")

    def expect(expr: sp.Expr) -> sp.Expr:
        poly = sp.Poly(sp.expand(expr), *g)
        total = sp.Integer(0)
        for powers, coeff in poly.terms():
            moments = {0: 1, 1: 0, 2: None, 3: None, 4: None}
            term = coeff
            for t, k in enumerate(powers):
                term *= {2: fisher[t], 3: third[t], 4: fourth[t]}.get(k, moments.get(k))
            total += term
        return sp.expand(total)

    score = sum(g)
    mean = expect(score**2)
    return mean, sp.expand(expect(score**4) - mean**2), fisher, fourth
