"""Softmax classification (chapter :doc:`/book/classification`)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..checks.values import Checks
from .base import ExponentialFamily, OutputSpectrum

__all__ = ["Categorical"]


class Categorical(ExponentialFamily):
    r"""Softmax classification: :math:`t(y) = e_y`, :math:`F(h) = \log\sum_c e^{h_c}`, :math:`p = \mathrm{softmax}(h)`.

    The model output ``h`` are logits of shape ``(N, C)`` with ``C >= 2``; labels are class indices.
    Outputs with positions, such as a language model's ``(N, T, V)``, are independent categoricals per
    position given the input (teacher forcing); the Fisher of an input sums its unmasked positions
    (:mod:`fishertut.families.positions`).
    Class sums are exact: :math:`I = \sum_c p_c (w_c - \bar w)^2` and :math:`K[w^4] = \sum_c p_c (w_c-\bar w)^4`
    with :math:`\bar w = p^\top w` (:eq:`eq-cls-diag` in :doc:`/book/classification`).

    Args:
        class_axis: the output axis that holds the classes. Default ``-1``, the last: the language-model layout
            ``(N, T, V)``. ``class_axis=1`` reads PyTorch's cross-entropy layout ``(N, C, d_1, ...)``.

    Example: ``Categorical()`` for logits ``(N, T, V)``; ``Categorical(class_axis=1)`` for ``(N, C, H, W)``.
    """

    name = "categorical"
    min_outputs = 2
    _axis_name = "classes"

    def __init__(self, class_axis: int = -1) -> None:
        if isinstance(class_axis, bool) or not isinstance(class_axis, int) or class_axis == 0:
            raise ValueError(
                f"Categorical: class_axis must be a non-zero integer (axis 0 is the batch), got {class_axis!r}"
            )
        self.class_axis = class_axis

    def __repr__(self) -> str:
        return "Categorical()" if self.class_axis == -1 else f"Categorical(class_axis={self.class_axis})"

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
                lambda: (
                    f"targets must be class indices in [0, {c}), got values in "
                    f"[{int(targets.min())}, {int(targets.max())}]"
                ),
            )
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
        r""":math:`A^\top = \mathrm{diag}(\sqrt p)(I - \mathbf 1 p^\top)`.

        So :math:`(A^\top w)_c = \sqrt{p_c}(w_c - \bar w)`, with :math:`A = \mathrm{diag}(\sqrt p) - p\sqrt p^\top`.
        """
        p = self.probabilities(h)
        eye = torch.eye(h.shape[1], dtype=h.dtype, device=h.device)
        return p.sqrt().unsqueeze(2) * (eye - p.unsqueeze(1))

    def factor_product(self, h: Tensor, w: Tensor) -> Tensor:
        r""":math:`(w^\top A^\top)_d = \sqrt{p_d}\,w_d - p_d\sum_c\sqrt{p_c}\,w_c`, without the ``C × C`` factor.

        ``h`` ``(M, C)``, ``w`` ``(M, S, C)`` -> ``(M, S, C)``; the same numbers as the base class's product with
        :meth:`covariance_factor`.
        """
        p = self.probabilities(h).unsqueeze(1)
        root = p.sqrt()
        return root * w - p * (root * w).sum(-1, keepdim=True)

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
        r""":math:`V_1 = \mathrm{Var}_{y\sim p}((w_y - \bar w)^2) = \sum_c p_c ((w_c-\bar w)^2 - I)^2`.

        :eq:`eq-cls-diag` in :doc:`/book/classification`.

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
        r"""Eigenvalues of :math:`\Lambda = \mathrm{diag}(p)-pp^\top` and of :math:`M`.

        :eq:`eq-cls-spectrum` in :doc:`/book/classification`.

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

    def kurtosis_matrix_max(self, h: Tensor) -> Tensor:
        r"""Categorical: :math:`\mathrm{mat}\,K = \sum_c p_c m_c m_c^\top`, :math:`m_c = \varepsilon_c^{\otimes 2}`.

        Its non-zero eigenvalues are those of the ``C × C`` Gram matrix
        :math:`\sqrt{p_cp_d}\,(\varepsilon_c^\top\varepsilon_d)^2`, so one ``C × C`` eigenvalue problem per input.
        """
        gram = self.residual_gram(h)
        sq = self.probabilities(h).sqrt()
        return torch.linalg.eigvalsh(sq.unsqueeze(2) * gram * sq.unsqueeze(1))[:, -1]
