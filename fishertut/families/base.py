r"""The interface every output family implements, and the per-input spectrum the bounds use.

See the package docstring of :mod:`fishertut.families` for the notation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from ..checks.values import Checks

__all__ = ["ExponentialFamily", "OutputSpectrum"]


@dataclass(frozen=True)
class OutputSpectrum:
    r"""Per-input extreme eigenvalues that enter the spectral bounds (chapter :doc:`/book/bounds`), ``(N,)``.

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
    """An output distribution whose natural parameter is the network output ``h`` of shape ``(N, C)``.

    Outputs with positions, ``(N, T, C)``, are read per position (:mod:`fishertut.families.positions`); the
    methods below then see one row per (input, position).
    """

    name: str = "family"

    def check_output(self, h: Tensor, checks: Checks | None = None) -> None:
        """Raise ``ValueError`` unless ``h`` is a finite floating tensor ``(N, ...)`` fit for the family.

        ``(N, C)``, or with positions ``(N, T, C)`` (any number of position axes; the classes, or the Gaussian's
        output dimensions, in axis ``class_axis``, default last). The finiteness check goes through ``checks``
        (see :class:`fishertut.checks.values.Checks`) when given.
        """
        if not isinstance(h, Tensor) or not h.is_floating_point():
            raise ValueError(
                f"{self!r}: the model output must be a floating-point tensor, got {type(h).__name__}"
                + (f" of dtype {h.dtype}" if isinstance(h, Tensor) else "")
            )
        axis = self.class_axis
        if h.ndim < 2 or not (-h.ndim < axis < h.ndim) or axis % h.ndim == 0:
            raise ValueError(
                f"{self!r}: the model output must have shape (N, C) = (batch, {self._axis_name}), or (N, T, C) "
                f"with positions, the {self._axis_name} in axis class_axis={axis}; got shape {tuple(h.shape)}"
            )
        if h.shape[axis] < self.min_outputs:
            raise ValueError(
                f"{self!r}: the model output must have at least {self.min_outputs} columns ({self._axis_name}) in "
                f"axis {axis % h.ndim} (class_axis={axis}), got shape {tuple(h.shape)}"
            )
        (checks or Checks()).require(torch.isfinite(h).all(), lambda: f"{self!r}: the model output contains NaN or Inf")

    class_axis: int = -1
    min_outputs: int = 1
    _axis_name: str = "outputs"

    @abstractmethod
    def check_targets(self, targets: Tensor, h: Tensor, checks: Checks | None = None) -> Tensor:
        """Validate data labels for outputs ``h`` and return them shaped ``(N, 1, ...)`` (one label per input)."""

    @abstractmethod
    def sample(self, h: Tensor, samples_per_input: int, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw ``samples_per_input`` labels per input from :math:`p(y|x;\theta)`; shape ``(N, S, ...)``."""

    def sample_with_residual(
        self, h: Tensor, samples_per_input: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
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
        r""":math:`A^\top` ``(N, C, C)`` for a square root :math:`A` of :math:`\Lambda = AA^\top`.

        Then :math:`w^\top\Lambda w = \|A^\top w\|^2`; the notation of :doc:`/book/choosing_an_estimator`, where
        :math:`a_n = A_n^\top v_i(x_n)`.
        """

    def factor_product(self, h: Tensor, w: Tensor) -> Tensor:
        r""":math:`w^\top A^\top` per input and draw: ``h`` ``(M, C)``, ``w`` ``(M, S, C)`` -> ``(M, S, C)``.

        :math:`(w^\top A^\top)_d = \sum_c w_c (A^\top)_{cd}` with the factor of :meth:`covariance_factor`; families
        with a closed form override this so that the ``C × C`` factor is never formed.
        """
        return torch.einsum("msc,mcd->msd", w, self.covariance_factor(h))

    @abstractmethod
    def quad(self, h: Tensor, w: Tensor) -> Tensor:
        r""":math:`w^\top \Lambda w` for ``w`` of shape ``(N, C, n)``; shape ``(N, n)``."""

    @abstractmethod
    def fourth_moment(self, h: Tensor, w: Tensor) -> Tensor:
        r""":math:`K[w^4] = \mathbb E[(\varepsilon^\top w)^4 \mid x]` for ``w`` ``(N, C, n)``; shape ``(N, n)``."""

    def fourth_cumulant_form(self, h: Tensor, w: Tensor) -> Tensor:
        r"""Single-label variance of the squared score, :math:`V_1 = K[w^4] - (w^\top\Lambda w)^2`.

        :eq:`eq-var-v1` in :doc:`/book/conditional_variances`.
        """
        return self.fourth_moment(h, w) - self.quad(h, w) ** 2

    @abstractmethod
    def project(self, w: Tensor) -> Tensor:
        r"""Project ``w`` (N, C, n) onto the subspace on which :math:`\Lambda` and :math:`M` act (:math:`\Pi w`)."""

    @abstractmethod
    def spectrum(self, h: Tensor) -> OutputSpectrum:
        """Per-input extreme eigenvalues used by the bounds."""

    @abstractmethod
    def kurtosis_matrix_max(self, h: Tensor) -> Tensor:
        r""":math:`\lambda_{\max}(\mathrm{mat}\,K)` per input ``(N,)``; :math:`K=\mathbb E[\varepsilon^{\otimes 4}]`.

        The constant of the unprojected, uncentred bound variant (d) of chapter :doc:`/book/bounds`.
        """
