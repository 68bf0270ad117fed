r"""Exponential-family output models :math:`p(y|x;\theta) = \pi(y)\exp(t(y)^\top h - F(h))`.

Every quantity of the book reduces, for one input :math:`x`, to three objects of the output
distribution (the paper's Section 1; chapters :doc:`/book/exponential_family` and :doc:`/book/conditional_variances`):

* the *score residual* :math:`\varepsilon = \partial \log p(y|x)/\partial h`, so that the score of a
  parameter is :math:`\varepsilon^\top v_i` with :math:`v_i = \partial h/\partial\theta_i`;
* its covariance :math:`\Lambda = \mathrm{Cov}(\varepsilon) = -\partial^2 \log p/\partial h^2`, which does not
  depend on :math:`y` for both families here, so that :math:`I(\theta_i|x) = v_i^\top\Lambda v_i`;
* its fourth moment :math:`K[w^4] = \mathbb{E}[(\varepsilon^\top w)^4]`.

Categorical family: :math:`h` are logits, :math:`\varepsilon = e_y - p`, :math:`\Lambda = \mathrm{diag}(p)-pp^\top`.
For the Gaussian family the network predicts the mean :math:`\mu = h` of :math:`\mathcal N(\mu, \sigma^2 I)`, so
:math:`\varepsilon = (y-\mu)/\sigma^2` and :math:`\Lambda = I/\sigma^2` (chapter :doc:`/book/regression`).

Vectors ``w`` in output space are batched as ``(N, C, n)``: input, output coordinate, and any number ``n``
of directions (one per parameter or per unit). Reductions run over the output axis ``C`` (dim 1).
"""

from __future__ import annotations

from .base import ExponentialFamily, OutputSpectrum
from .categorical import Categorical
from .gaussian import Gaussian

__all__ = ["ExponentialFamily", "Categorical", "Gaussian", "OutputSpectrum"]
