r"""Exponential-family output models :math:`p(y|x;\theta) = \pi(y)\exp(t(y)^\top h - F(h))`.

Every quantity of the book reduces, for one input :math:`x`, to three objects of the output
distribution (the paper's Section 1; chapters "Exponential-family outputs" and "The variances of the two estimators"):

* the *score residual* :math:`\varepsilon = \partial \log p(y|x)/\partial h`, so that the score of a
  parameter is :math:`\varepsilon^\top v_i` with :math:`v_i = \partial h/\partial\theta_i`;
* its covariance :math:`\Lambda = \mathrm{Cov}(\varepsilon) = -\partial^2 \log p/\partial h^2`, which does not
  depend on :math:`y` for both families here, so that :math:`I(\theta_i|x) = v_i^\top\Lambda v_i`;
* its fourth moment :math:`K[w^4] = \mathbb{E}[(\varepsilon^\top w)^4]`.

Categorical family: :math:`h` are logits, :math:`\varepsilon = e_y - p`, :math:`\Lambda = \mathrm{diag}(p)-pp^\top`.
For the Gaussian family the network predicts the mean :math:`\mu = h` of :math:`\mathcal N(\mu, \sigma^2 I)`, so
:math:`\varepsilon = (y-\mu)/\sigma^2` and :math:`\Lambda = I/\sigma^2` (chapter "Regression", "known variance").

Vectors ``w`` in output space are batched as ``(N, C, n)``: input, output coordinate, and any number ``n``
of directions (one per parameter or per unit). Reductions run over the output axis ``C`` (dim 1).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from .validation import Checks

__all__ = ["ExponentialFamily", "Categorical", "Gaussian", "OutputSpectrum"]


@dataclass(frozen=True)
class OutputSpectrum:
    r"""Per-input extreme eigenvalues that enter the spectral bounds (chapter "Bounds on the variances"), ``(N,)``.

    All eigenvalues are taken on the subspace where the family's directions live after
    :meth:`ExponentialFamily.project` (the orthogonal complement of :math:`\mathbf 1` for the categorical
    family, everything for the Gaussian), and for the fourth-moment matrix on the *symmetric* tensors of
    that subspace, since :math:`v\otimes v` is symmetric.

    Attributes:
        cov_max: :math:`\lambda_{\max}(\Lambda)`.
        cov_min: smallest eigenvalue of :math:`\Lambda` on the subspace (:math:`\lambda^+_{\min}` for the categorical).
        m_max: :math:`\lambda_{\max}(M)`, :math:`M = \mathrm{mat}(K) - \mathrm{vec}(\Lambda)\mathrm{vec}(\Lambda)^\top`.
        m_min: smallest eigenvalue of :math:`M` on the symmetric tensors of the subspace.
    """

    cov_max: Tensor
    cov_min: Tensor
    m_max: Tensor
    m_min: Tensor


class ExponentialFamily(ABC):
    """An output distribution whose natural parameter is the network output ``h`` of shape ``(N, C)``."""

    name: str = "family"

    def check_output(self, h: Tensor, checks: Checks | None = None) -> None:
        """Raise ``ValueError`` unless ``h`` is a finite floating tensor of shape ``(N, C)`` fit for the family.

        The finiteness check goes through ``checks`` (see :class:`fishertut.validation.Checks`) when given.
        """
        if not isinstance(h, Tensor) or not h.is_floating_point():
            raise ValueError(f"{self!r}: the model output must be a floating-point tensor, got {type(h).__name__}"
                             + (f" of dtype {h.dtype}" if isinstance(h, Tensor) else ""))
        if h.ndim != 2:
            raise ValueError(f"{self!r}: the model output must have shape (N, C) = (batch, {self._axis_name}), "
                             f"got shape {tuple(h.shape)}")
        if h.shape[1] < self.min_outputs:
            raise ValueError(f"{self!r}: the model output must have at least {self.min_outputs} columns "
                             f"({self._axis_name}), got shape {tuple(h.shape)}")
        (checks or Checks()).require(torch.isfinite(h).all(), lambda: f"{self!r}: the model output contains NaN or Inf")

    min_outputs: int = 1
    _axis_name: str = "outputs"

    @abstractmethod
    def check_targets(self, targets: Tensor, h: Tensor, checks: Checks | None = None) -> Tensor:
        """Validate data labels for outputs ``h`` and return them shaped ``(N, 1, ...)`` (one label per input)."""

    @abstractmethod
    def sample(self, h: Tensor, samples_per_input: int, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw ``samples_per_input`` labels per input from :math:`p(y|x;\theta)`; shape ``(N, S, ...)``."""

    def sample_with_residual(self, h: Tensor, samples_per_input: int,
                             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Labels drawn as :meth:`sample` draws them, ``(N, S, ...)``, and their :meth:`residual` ``(N, S, C)``."""
        y = self.sample(h, samples_per_input, generator)
        return y, self.residual(h, y)

    @abstractmethod
    def log_prob(self, h: Tensor, y: Tensor) -> Tensor:
        r""":math:`\log p(y|x;\theta)` for outputs ``h`` (N, C) and labels ``y`` (N, S, ...); shape ``(N, S)``."""

    @abstractmethod
    def residual(self, h: Tensor, y: Tensor) -> Tensor:
        r"""Score residual :math:`\varepsilon = \partial_h\log p(y|x)`, ``(N, S, C)``, of labels ``(N, S, ...)``."""

    @abstractmethod
    def covariance(self, h: Tensor) -> Tensor:
        r""":math:`\Lambda = \mathrm{Cov}(\varepsilon \mid x)`, shape ``(N, C, C)``."""

    @abstractmethod
    def covariance_factor(self, h: Tensor) -> Tensor:
        r"""A factor :math:`S` ``(N, C, C)`` with :math:`S^\top S = \Lambda`, so :math:`w^\top\Lambda w = \|S w\|^2`."""

    @abstractmethod
    def quad(self, h: Tensor, w: Tensor) -> Tensor:
        r""":math:`w^\top \Lambda w` for ``w`` of shape ``(N, C, n)``; shape ``(N, n)``."""

    @abstractmethod
    def fourth_moment(self, h: Tensor, w: Tensor) -> Tensor:
        r""":math:`K[w^4] = \mathbb E[(\varepsilon^\top w)^4 \mid x]` for ``w`` ``(N, C, n)``; shape ``(N, n)``."""

    def fourth_cumulant_form(self, h: Tensor, w: Tensor) -> Tensor:
        r"""Single-label variance of the squared score, :math:`V_1 = K[w^4] - (w^\top\Lambda w)^2` (eq. eq-var-v1)."""
        return self.fourth_moment(h, w) - self.quad(h, w) ** 2

    @abstractmethod
    def project(self, w: Tensor) -> Tensor:
        r"""Project ``w`` (N, C, n) onto the subspace on which :math:`\Lambda` and :math:`M` act (:math:`\Pi w`)."""

    @abstractmethod
    def spectrum(self, h: Tensor) -> OutputSpectrum:
        """Per-input extreme eigenvalues used by the bounds."""


class Categorical(ExponentialFamily):
    r"""Softmax classification: :math:`t(y) = e_y`, :math:`F(h) = \log\sum_c e^{h_c}`, :math:`p = \mathrm{softmax}(h)`.

    The model output ``h`` are logits of shape ``(N, C)`` with ``C >= 2``; labels are class indices.
    Class sums are exact: :math:`I = \sum_c p_c (w_c - \bar w)^2` and :math:`K[w^4] = \sum_c p_c (w_c-\bar w)^4`
    with :math:`\bar w = p^\top w` (chapter "Classification", eq. eq-cls-diag).
    """

    name = "categorical"
    min_outputs = 2
    _axis_name = "classes"

    def __repr__(self) -> str:
        return "Categorical()"

    def check_targets(self, targets: Tensor, h: Tensor, checks: Checks | None = None) -> Tensor:
        n, c = h.shape
        if not isinstance(targets, Tensor):
            raise TypeError(f"targets must be a tensor of class indices, got {type(targets).__name__}")
        if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
            raise ValueError(f"targets for Categorical must be integer class indices, got dtype {targets.dtype}")
        if tuple(targets.shape) != (n,):
            raise ValueError(f"targets for Categorical must have shape (N,) = ({n},), got {tuple(targets.shape)}")
        if targets.device != h.device:
            raise ValueError(f"targets are on {targets.device} but the model output is on {h.device}")
        if n:
            (checks or Checks()).require(
                (targets.min() >= 0) & (targets.max() < c),
                lambda: f"targets must be class indices in [0, {c}), got values in "
                        f"[{int(targets.min())}, {int(targets.max())}]")
        # clamping is a no-op for valid labels and keeps a deferred failure from indexing out of range
        return targets.long().clamp(0, c - 1).unsqueeze(1)

    def probabilities(self, h: Tensor) -> Tensor:
        """Softmax probabilities ``p`` of shape ``(N, C)``."""
        return torch.softmax(h, dim=1)

    def sample(self, h: Tensor, samples_per_input: int, generator: torch.Generator | None = None) -> Tensor:
        p = self.probabilities(h)
        return torch.multinomial(p, samples_per_input, replacement=True, generator=generator)

    def log_prob(self, h: Tensor, y: Tensor) -> Tensor:
        return torch.log_softmax(h, dim=1).gather(1, y)

    def residual(self, h: Tensor, y: Tensor) -> Tensor:
        p = self.probabilities(h)
        onehot = torch.nn.functional.one_hot(y, h.shape[1]).to(h.dtype)
        return onehot - p.unsqueeze(1)

    def covariance(self, h: Tensor) -> Tensor:
        p = self.probabilities(h)
        return torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)

    def covariance_factor(self, h: Tensor) -> Tensor:
        r""":math:`S = \mathrm{diag}(\sqrt p)(I - \mathbf 1 p^\top)`: :math:`(S w)_c = \sqrt{p_c}(w_c - \bar w)`."""
        p = self.probabilities(h)
        eye = torch.eye(h.shape[1], dtype=h.dtype, device=h.device)
        return p.sqrt().unsqueeze(2) * (eye - p.unsqueeze(1))

    def _centred(self, h: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        p = self.probabilities(h).unsqueeze(2)
        return p, w - (p * w).sum(1, keepdim=True)

    def quad(self, h: Tensor, w: Tensor) -> Tensor:
        p, d = self._centred(h, w)
        return (p * d.square()).sum(1)

    def fourth_moment(self, h: Tensor, w: Tensor) -> Tensor:
        p, d = self._centred(h, w)
        return (p * d.square().square()).sum(1)

    def fourth_cumulant_form(self, h: Tensor, w: Tensor) -> Tensor:
        r""":math:`V_1 = \mathrm{Var}_{y\sim p}((w_y - \bar w)^2) = \sum_c p_c ((w_c-\bar w)^2 - I)^2` (eq-cls-diag).

        Computed as a variance of the class values, not as a difference of moments, so that it
        stays non-negative and accurate when :math:`V_1 \ll I^2`.
        """
        p, d = self._centred(h, w)
        d2 = d.square()
        return (p * (d2 - (p * d2).sum(1, keepdim=True)).square()).sum(1)

    def project(self, w: Tensor) -> Tensor:
        return w - w.mean(1, keepdim=True)

    def residual_gram(self, h: Tensor) -> Tensor:
        r""":math:`Q_{cd} = (\varepsilon_c^\top\varepsilon_d)^2` with :math:`\varepsilon_c = e_c - p`, ``(N, C, C)``.

        The Gram matrix of the :math:`\mathrm{vec}(\varepsilon_c\varepsilon_c^\top)` behind the fourth-moment spectra.
        """
        p = self.probabilities(h)
        eps = torch.eye(h.shape[1], dtype=h.dtype, device=h.device).unsqueeze(0) - p.unsqueeze(1)
        return (eps @ eps.transpose(1, 2)).square()

    def spectrum(self, h: Tensor) -> OutputSpectrum:
        r"""Eigenvalues of :math:`\Lambda = \mathrm{diag}(p)-pp^\top` and of :math:`M` (eq. eq-cls-spectrum).

        :math:`\Lambda` has the null vector :math:`\mathbf 1`, so on :math:`\mathbf 1^\perp` its spectrum is the
        eigenvalues but the smallest: ``cov_min`` is the second smallest eigenvalue.
        :math:`M = \sum_c p_c (m_c - \bar m)(m_c-\bar m)^\top` with
        :math:`m_c = \mathrm{vec}(\varepsilon_c\varepsilon_c^\top)`,
        :math:`\varepsilon_c = e_c - p`, has rank at most :math:`C-1`, and its non-zero eigenvalues are those
        of the :math:`C\times C` Gram matrix :math:`B_{cd} = \sqrt{p_c p_d}\langle m_c-\bar m, m_d-\bar m\rangle`, where
        :math:`\langle m_c, m_d\rangle = (\varepsilon_c^\top\varepsilon_d)^2`. Its range lies in the symmetric
        tensors of :math:`\mathbf 1^\perp`, whose dimension :math:`C(C-1)/2` exceeds :math:`C-1` for
        :math:`C\ge 3`: there ``m_min`` is 0; for :math:`C=2` that space is a line and ``m_min = m_max``.
        """
        if h.dtype in (torch.float16, torch.bfloat16):  # no eigensolver in half precision: solve in float32
            s = self.spectrum(h.float())
            return OutputSpectrum(*(t.to(h.dtype) for t in (s.cov_max, s.cov_min, s.m_max, s.m_min)))
        p = self.probabilities(h)
        c = p.shape[1]
        cov_eig = torch.linalg.eigvalsh(self.covariance(h))
        q = self.residual_gram(h)
        qp = (q * p.unsqueeze(1)).sum(2)
        gram = q - qp.unsqueeze(2) - qp.unsqueeze(1) + (qp * p).sum(1)[:, None, None]
        sq = p.sqrt()
        m_max = torch.linalg.eigvalsh(sq.unsqueeze(2) * gram * sq.unsqueeze(1))[:, -1].clamp_min(0)
        m_min = m_max if c == 2 else torch.zeros_like(m_max)
        return OutputSpectrum(cov_max=cov_eig[:, -1], cov_min=cov_eig[:, 1].clamp_min(0), m_max=m_max, m_min=m_min)


class Gaussian(ExponentialFamily):
    r"""Regression with :math:`y \sim \mathcal N(\mu, \sigma^2 I_D)`, the network predicting :math:`\mu = h` (N, D).

    :math:`\varepsilon = (y-\mu)/\sigma^2`, :math:`\Lambda = I/\sigma^2`, :math:`I(\theta_i|x) = \|v_i\|^2/\sigma^2`,
    :math:`K[w^4] = 3\|w\|^4/\sigma^4`, :math:`V_1 = 2I^2` and :math:`V_2 = \|u_i\|^2/\sigma^2` (eq. eq-reg-closed).

    Args:
        sigma: the known, fixed noise standard deviation (> 0).
    """

    name = "gaussian"
    _axis_name = "output dimensions"

    def __init__(self, sigma: float = 1.0) -> None:
        sigma = float(sigma)
        if not math.isfinite(sigma) or sigma <= 0:
            raise ValueError(f"Gaussian: sigma must be a finite positive number, got {sigma}")
        self.sigma = sigma

    def __repr__(self) -> str:
        return f"Gaussian(sigma={self.sigma:g})"

    @property
    def precision(self) -> float:
        r""":math:`1/\sigma^2`."""
        return 1.0 / self.sigma**2

    def check_targets(self, targets: Tensor, h: Tensor, checks: Checks | None = None) -> Tensor:
        if not isinstance(targets, Tensor):
            raise TypeError(f"targets must be a tensor, got {type(targets).__name__}")
        if tuple(targets.shape) != tuple(h.shape):
            raise ValueError(f"targets for Gaussian must have the output's shape (N, D) = {tuple(h.shape)}, "
                             f"got {tuple(targets.shape)}")
        if targets.dtype != h.dtype:
            raise ValueError(f"targets have dtype {targets.dtype} but the model output has dtype {h.dtype}")
        if targets.device != h.device:
            raise ValueError(f"targets are on {targets.device} but the model output is on {h.device}")
        (checks or Checks()).require(torch.isfinite(targets).all(), lambda: "targets contain NaN or Inf")
        return targets.unsqueeze(1)

    def noise(self, h: Tensor, samples_per_input: int, generator: torch.Generator | None = None) -> Tensor:
        r"""Standard normal draws :math:`n` ``(N, S, D)``, input by input, whatever the batching.

        ``torch.randn`` pairs its draws differently for different tensor sizes, so splitting the inputs into
        other batches would change the labels. Here each entry is the normal quantile of one float64 uniform
        from ``torch.rand``, which consumes the generator entry by entry.
        """
        u = torch.rand((h.shape[0], samples_per_input, h.shape[1]), generator=generator, dtype=torch.float64,
                       device=h.device)
        return torch.special.ndtri(u.clamp_min(2.0**-60)).to(h.dtype)

    def sample(self, h: Tensor, samples_per_input: int, generator: torch.Generator | None = None) -> Tensor:
        return h.unsqueeze(1) + self.sigma * self.noise(h, samples_per_input, generator)

    def sample_with_residual(self, h: Tensor, samples_per_input: int,
                             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        r"""Labels :math:`y = h + \sigma n` and residuals :math:`\varepsilon = n/\sigma`, formed from the noise.

        :math:`((h + \sigma n) - h)/\sigma^2` would lose the digits of :math:`n` when :math:`\sigma \ll |h|`.
        """
        n = self.noise(h, samples_per_input, generator)
        return h.unsqueeze(1) + self.sigma * n, n / self.sigma

    def log_prob(self, h: Tensor, y: Tensor) -> Tensor:
        d = h.shape[1]
        return (-0.5 * (y - h.unsqueeze(1)).square().sum(2) * self.precision
                - 0.5 * d * math.log(2 * math.pi * self.sigma**2))

    def residual(self, h: Tensor, y: Tensor) -> Tensor:
        return (y - h.unsqueeze(1)) * self.precision

    def covariance(self, h: Tensor) -> Tensor:
        eye = torch.eye(h.shape[1], dtype=h.dtype, device=h.device)
        return (self.precision * eye).expand(h.shape[0], -1, -1)

    def covariance_factor(self, h: Tensor) -> Tensor:
        eye = torch.eye(h.shape[1], dtype=h.dtype, device=h.device)
        return (eye / self.sigma).expand(h.shape[0], -1, -1)

    def quad(self, h: Tensor, w: Tensor) -> Tensor:
        return w.square().sum(1) * self.precision

    def fourth_moment(self, h: Tensor, w: Tensor) -> Tensor:
        return 3 * self.quad(h, w).square()

    def fourth_cumulant_form(self, h: Tensor, w: Tensor) -> Tensor:
        return 2 * self.quad(h, w).square()

    def project(self, w: Tensor) -> Tensor:
        return w

    def spectrum(self, h: Tensor) -> OutputSpectrum:
        r"""Eigenvalues: 1/σ² for :math:`\Lambda`, 2/σ⁴ for :math:`M = (I + P_{swap})/\sigma^4` on symmetric tensors."""
        ones = torch.ones(h.shape[0], dtype=h.dtype, device=h.device)
        lam = self.precision * ones
        m = 2 * self.precision**2 * ones
        return OutputSpectrum(cov_max=lam, cov_min=lam, m_max=m, m_min=m)
