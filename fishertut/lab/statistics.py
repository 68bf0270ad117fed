r"""Small-sample statistics for comparisons over seeds: Student's t quantile and interval, AUROC.

Used by the chapter :doc:`/book/downstream`, whose comparisons pair estimators by seed:

* :func:`t_cdf` and :func:`t_quantile`: Student's t distribution with :math:`\nu` degrees of freedom, from the
  regularised incomplete beta function (by its continued fraction, as in Numerical Recipes), so that no SciPy is needed;
* :func:`t_interval`: the two-sided interval :math:`\bar d \pm t_{1-\alpha/2,\,n-1}\,s/\sqrt n` of a mean, such as
  the mean over seeds of paired differences;
* :func:`auroc`: the area under the ROC curve of a score that should be larger on the positive set, by the
  Mann–Whitney rank formula with ties counted one half.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["t_cdf", "t_quantile", "Interval", "t_interval", "auroc"]


def _check_dof(dof: float) -> float:
    if isinstance(dof, bool) or not isinstance(dof, (int, float)) or not math.isfinite(dof) or dof <= 0:
        raise ValueError(f"dof must be a finite number > 0, got {dof!r}")
    return float(dof)


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of :math:`I_x(a, b)` (modified Lentz), converging for :math:`x < (a+1)/(a+b+2)`."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float, y: float) -> float:
    r"""The regularised incomplete beta function :math:`I_x(a, b)` for :math:`a, b > 0`, with :math:`y = 1 - x`.

    ``y`` is passed separately so that a caller who knows it accurately (near :math:`x = 1`) loses no digits.
    """
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, y) / b


def t_cdf(t: float, dof: float) -> float:
    r""":math:`P(T\le t)` for Student's t with ``dof`` :math:`=\nu` degrees of freedom.

    :math:`P(T\le t) = 1 - \tfrac12 I_{\nu/(\nu+t^2)}(\nu/2, 1/2)` for :math:`t\ge0`, and symmetric.
    """
    nu = _check_dof(dof)
    tail = 0.5 * _incomplete_beta(0.5 * nu, 0.5, nu / (nu + t * t), t * t / (nu + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, dof: float) -> float:
    r"""The :math:`p`-quantile of Student's t with ``dof`` degrees of freedom, e.g. ``t_quantile(0.975, 9)`` = 2.262.

    Found by bisection on :func:`t_cdf` to a relative precision of about :math:`10^{-12}`.
    """
    nu = _check_dof(dof)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p < 1.0:
        raise ValueError(f"p must be a probability in (0, 1), got {p!r}")
    if p < 0.5:
        return -t_quantile(1.0 - p, nu)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, nu) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, nu) < p else (lo, mid)
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    r"""A mean with its two-sided t interval.

    Attributes:
        mean: the sample mean :math:`\bar d`.
        half_width: :math:`t_{1-\alpha/2,n-1}\,s/\sqrt n`.
        n: the number of values.
        level: the confidence level :math:`1-\alpha`.
    """

    mean: float
    half_width: float
    n: int
    level: float

    @property
    def low(self) -> float:
        """The lower end, ``mean - half_width``."""
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        """The upper end, ``mean + half_width``."""
        return self.mean + self.half_width

    @property
    def excludes_zero(self) -> bool:
        r"""Whether 0 lies outside the interval: the paired t test rejects a zero mean at level :math:`\alpha`."""
        return self.low > 0 or self.high < 0


def t_interval(values: Sequence[float] | Tensor, level: float = 0.95) -> Interval:
    r"""The t interval :math:`\bar d \pm t_{(1+\text{level})/2,\,n-1}\, s/\sqrt n` of the mean of ``values``.

    With ``values`` the per-seed differences between two methods run on the same seeds, this is the paired t
    interval; it excludes 0 exactly when the paired t test rejects "no difference" at :math:`1-\text{level}`.

    Args:
        values: :math:`n\ge2` finite numbers (:math:`s` is the sample standard deviation, :math:`n-1` in the
            denominator).
        level: the confidence level, in (0, 1).
    """
    d = torch.as_tensor(list(values) if not isinstance(values, Tensor) else values, dtype=torch.float64).flatten()
    if d.numel() < 2 or not bool(torch.isfinite(d).all()):
        raise ValueError(f"values must hold at least 2 finite numbers, got {d.numel()} values")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    n = d.numel()
    half = t_quantile(0.5 + 0.5 * level, n - 1) * float(d.std()) / math.sqrt(n)
    return Interval(float(d.mean()), half, n, float(level))


def auroc(negative: Tensor, positive: Tensor) -> float:
    r"""Area under the ROC curve of a score meant to be larger on ``positive`` than on ``negative``.

    :math:`\mathrm{AUROC} = P(s^+ > s^-) + \tfrac12 P(s^+ = s^-)` over independent draws from the two sets,
    computed from the ranks of the pooled scores (ties get their mean rank):
    :math:`(R^+ - n^+(n^++1)/2)/(n^+n^-)` with :math:`R^+` the rank sum of the positives. 1 separates the
    sets perfectly, 0.5 is chance.

    Args:
        negative: scores ``(n-,)`` of the negative set (e.g. in-distribution inputs).
        positive: scores ``(n+,)`` of the positive set (e.g. out-of-distribution inputs).
    """
    sets = []
    for name, s in (("negative", negative), ("positive", positive)):
        if not isinstance(s, Tensor) or s.ndim != 1 or s.numel() == 0 or not bool(torch.isfinite(s).all()):
            raise ValueError(f"{name} must be a non-empty 1-D tensor of finite scores")
        sets.append(s.detach().to(torch.float64).cpu())
    neg, pos = sets
    pooled = torch.cat([neg, pos])
    values, inverse, counts = torch.unique(pooled, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts  # 0-based rank of each distinct value's first occurrence
    mean_rank = first.double() + (counts.double() + 1.0) / 2.0  # 1-based mean rank of its ties
    rank_sum = float(mean_rank[inverse[neg.numel() :]].sum())
    n_pos, n_neg = pos.numel(), neg.numel()
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
