"""Regression with a known noise level (chapter :doc:`/book/regression`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..checks.values import Checks
from .base import ExponentialFamily, OutputSpectrum

__all__ = ["Gaussian"]


class Gaussian(ExponentialFamily):
    r"""Regression with :math:`y \sim \mathcal N(\mu, \mathrm{diag}(\sigma^2))`, the network predicting :math:`\mu = h`.

    :math:`\varepsilon = (y-\mu)/\sigma^2`, :math:`\Lambda = \mathrm{diag}(1/\sigma^2)`,
    :math:`I(\theta_i|x) = \sum_d v_{i,d}^2/\sigma_d^2`, :math:`K[w^4] = 3(w^\top\Lambda w)^2` (the score
    :math:`\varepsilon^\top w` is normal), :math:`V_1 = 2I^2` and :math:`V_2 = u_i^\top\Lambda u_i`
    (:eq:`eq-reg-closed` in :doc:`/book/regression`; one :math:`\sigma` for every output is the case
    :math:`\Lambda = I/\sigma^2`).

    Args:
        sigma: the known, fixed noise standard deviation (> 0): a number, or one per output as a tensor (or
            list) broadcastable to the output's trailing shape ``(D,)``.

    Raises:
        TypeError: ``sigma`` is not numeric.
        ValueError: ``sigma`` has a non-finite or non-positive entry, or more than one axis.
    """

    name = "gaussian"
    _axis_name = "output dimensions"

    def __init__(self, sigma: float | Tensor = 1.0) -> None:
        if isinstance(sigma, bool) or isinstance(sigma, str):
            raise TypeError(f"Gaussian: sigma must be a positive number or a tensor of them, got {sigma!r}")
        try:
            # Python numbers straight to float64 (as_tensor would round them to float32 first)
            values = torch.as_tensor(sigma, dtype=None if isinstance(sigma, Tensor) else torch.float64).detach().cpu()
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"Gaussian: sigma must be a positive number or a tensor of them, got {type(sigma).__name__}"
            ) from err
        if not (values.dtype.is_floating_point or values.dtype in _INTEGERS):
            raise TypeError(f"Gaussian: sigma must be real numbers, got dtype {values.dtype}")
        values = values.to(torch.float64)
        if values.ndim > 1:
            raise ValueError(
                "Gaussian: sigma must be a number or one value per output (shape (D,)), "
                f"got shape {tuple(values.shape)}"
            )
        if values.numel() == 0 or not bool(torch.isfinite(values).all()) or not bool((values > 0).all()):
            raise ValueError(
                f"Gaussian: sigma must be a finite positive number (or one per output), got {values.tolist()}"
            )
        # one value for every output is kept as a float: the common case stays scalar arithmetic
        self.sigma: float | Tensor = float(values) if values.ndim == 0 else values

    def __repr__(self) -> str:
        if isinstance(self.sigma, float):
            return f"Gaussian(sigma={self.sigma:g})"
        return f"Gaussian(sigma=[{', '.join(f'{s:g}' for s in self.sigma.tolist())}])"

    @property
    def precision(self) -> float | Tensor:
        r""":math:`1/\sigma^2` (a float, or one value per output)."""
        return 1.0 / self.sigma**2

    def _sigma(self, h: Tensor) -> float | Tensor:
        """``sigma`` for outputs ``h`` (N, D): the float, or a ``(D,)`` tensor in ``h``'s dtype and device."""
        if isinstance(self.sigma, float):
            return self.sigma
        if self.sigma.numel() not in (1, h.shape[-1]):
            raise ValueError(
                f"{self!r}: sigma has {self.sigma.numel()} values, but the model has {h.shape[-1]} outputs; "
                f"give one sigma, or one per output"
            )
        return self.sigma.to(dtype=h.dtype, device=h.device).expand(h.shape[-1])

    def _lambda(self, h: Tensor) -> Tensor:
        r"""The diagonal of :math:`\Lambda`, ``(D,)``."""
        return (1.0 / torch.as_tensor(self._sigma(h), dtype=h.dtype, device=h.device) ** 2).expand(h.shape[-1])

    def check_output(self, h: Tensor, checks: Checks | None = None) -> None:
        super().check_output(h, checks)
        self._sigma(h)

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
        return h.unsqueeze(1) + self._sigma(h) * self.noise(h, samples_per_input, generator)

    def sample_with_residual(
        self, h: Tensor, samples_per_input: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Labels :math:`y = h + \sigma n` and residuals :math:`\varepsilon = n/\sigma`, formed from the noise.

        :math:`((h + \sigma n) - h)/\sigma^2` would lose the digits of :math:`n` when :math:`\sigma \ll |h|`.
        """
        n = self.noise(h, samples_per_input, generator)
        sigma = self._sigma(h)
        return h.unsqueeze(1) + sigma * n, n / sigma

    def log_prob(self, h: Tensor, y: Tensor) -> Tensor:
        lam = self._lambda(h)
        return -0.5 * ((y - h.unsqueeze(1)).square() * lam).sum(2) - 0.5 * torch.log(2 * math.pi / lam).sum()

    def residual(self, h: Tensor, y: Tensor) -> Tensor:
        return (y - h.unsqueeze(1)) * self._lambda(h)

    def covariance(self, h: Tensor) -> Tensor:
        return torch.diag(self._lambda(h)).expand(h.shape[0], -1, -1)

    def covariance_factor(self, h: Tensor) -> Tensor:
        return torch.diag(self._lambda(h).sqrt()).expand(h.shape[0], -1, -1)

    def quad(self, h: Tensor, w: Tensor) -> Tensor:
        if isinstance(self.sigma, float):
            return w.square().sum(1) * self.precision
        return (w.square() * self._lambda(h)[:, None]).sum(1)

    def fourth_moment(self, h: Tensor, w: Tensor) -> Tensor:
        return 3 * self.quad(h, w).square()

    def fourth_cumulant_form(self, h: Tensor, w: Tensor) -> Tensor:
        return 2 * self.quad(h, w).square()

    def project(self, w: Tensor) -> Tensor:
        return w

    def spectrum(self, h: Tensor) -> OutputSpectrum:
        r"""Eigenvalues of :math:`\Lambda = \mathrm{diag}(\lambda)` and of :math:`M = \Lambda\otimes\Lambda(I+P)`.

        On the symmetric tensors :math:`M` has the eigenvectors :math:`e_a\otimes e_b + e_b\otimes e_a` with the
        eigenvalues :math:`2\lambda_a\lambda_b`, so its extremes are :math:`2\lambda_{\max}^2` and
        :math:`2\lambda_{\min}^2` (:math:`2/\sigma^4` for one :math:`\sigma`).
        """
        lam = self._lambda(h)
        ones = torch.ones(h.shape[0], dtype=h.dtype, device=h.device)
        top, low = lam.max() * ones, lam.min() * ones
        return OutputSpectrum(cov_max=top, cov_min=low, m_max=2 * top.square(), m_min=2 * low.square())

    def kurtosis_matrix_max(self, h: Tensor) -> Tensor:
        r""":math:`\lambda_{\max}(\mathrm{mat}\,K)`, one ``C × C`` eigenvalue problem.

        :math:`\mathrm{mat}\,K = \mathrm{vec}\Lambda\,\mathrm{vec}\Lambda^\top + \Lambda\otimes\Lambda(I+P)`, P swaps;
        on the diagonal tensors :math:`e_a\otimes e_a` it is :math:`2\,\mathrm{diag}(\lambda^2) + \lambda\lambda^\top`;
        the other symmetric tensors give :math:`2\lambda_a\lambda_b`, no more than that block's largest eigenvalue. One
        :math:`\sigma` for ``m`` outputs: :math:`(m+2)/\sigma^4` (chapter :doc:`/book/regression`).
        """
        lam = self._lambda(h).to(torch.float64)  # no eigensolver in half precision
        top = torch.linalg.eigvalsh(torch.diag(2 * lam.square()) + torch.outer(lam, lam))[-1]
        return top.to(h.dtype).expand(h.shape[0]).clone()


_INTEGERS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
