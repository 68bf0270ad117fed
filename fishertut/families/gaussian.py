"""Regression with a known noise level (chapter "Regression")."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..checks.values import Checks
from .base import ExponentialFamily, OutputSpectrum

__all__ = ["Gaussian"]


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
            raise ValueError(
                f"targets for Gaussian must have the output's shape (N, D) = {tuple(h.shape)}, "
                f"got {tuple(targets.shape)}"
            )
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
        u = torch.rand(
            (h.shape[0], samples_per_input, h.shape[1]), generator=generator, dtype=torch.float64, device=h.device
        )
        return torch.special.ndtri(u.clamp_min(2.0**-60)).to(h.dtype)

    def sample(self, h: Tensor, samples_per_input: int, generator: torch.Generator | None = None) -> Tensor:
        return h.unsqueeze(1) + self.sigma * self.noise(h, samples_per_input, generator)

    def sample_with_residual(
        self, h: Tensor, samples_per_input: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Labels :math:`y = h + \sigma n` and residuals :math:`\varepsilon = n/\sigma`, formed from the noise.

        :math:`((h + \sigma n) - h)/\sigma^2` would lose the digits of :math:`n` when :math:`\sigma \ll |h|`.
        """
        n = self.noise(h, samples_per_input, generator)
        return h.unsqueeze(1) + self.sigma * n, n / self.sigma

    def log_prob(self, h: Tensor, y: Tensor) -> Tensor:
        d = h.shape[1]
        return -0.5 * (y - h.unsqueeze(1)).square().sum(2) * self.precision - 0.5 * d * math.log(
            2 * math.pi * self.sigma**2
        )

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

    def kurtosis_matrix_max(self, h: Tensor) -> Tensor:
        r""":math:`(m+2)/\sigma^4` for ``m`` output dimensions (chapter "Regression"), the same for every input."""
        return torch.full((h.shape[0],), (h.shape[1] + 2) * self.precision**2, dtype=h.dtype, device=h.device)
