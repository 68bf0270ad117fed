r"""Estimators that sum ``B`` inputs before squaring: GNB (Î1 with ``minibatch=B``) and output-space Hutchinson.

Notation, per input :math:`x_n` and parameter :math:`\theta_i`: :math:`J_n = \partial h/\partial\theta` (C × P),
:math:`\Lambda_n = \mathrm{Cov}(t\mid x_n)` and the square root :math:`A_n = S_n^\top` of the family's
:meth:`~fishertut.ExponentialFamily.covariance_factor` (:math:`A_nA_n^\top = \Lambda_n`; categorical
:math:`A = \mathrm{diag}(\sqrt p) - p\sqrt p^\top`, Gaussian :math:`A = I/\sigma`), and
:math:`a_n = A_n^\top J_{n,i}`, so that :math:`I(\theta_i\mid x_n) = \|a_n\|^2`.

Both estimators take, per minibatch :math:`b` of :math:`B` consecutive inputs and per draw, one gradient of
:math:`\sum_{n\in b} r_n^\top h_n` with a detached output-space *channel* :math:`r_n`:

* ``"i1"`` (GNB, Sophia): :math:`r_n = \varepsilon_n`, the score residual of a label drawn from the model, so
  the gradient is :math:`B\bar g`, the summed sampled-label score. For outputs with positions this is
  ``"i1_sequence"`` (one label per position, every token's score summed; :math:`I_n`, :math:`V_n` are then the
  per-sequence values of :mod:`fishertut.families.positions`), and ``"i1"`` is refused there;
* ``"hutchinson"``: :math:`r_n = A_n\xi_n` with Rademacher :math:`\xi_n\in\{\pm1\}^C`, so the gradient is
  :math:`G_{b,i} = \sum_{n\in b}\xi_n^\top a_n`.

The estimate is :math:`\frac1{NS}\sum_{s}\sum_b G_{b,i,s}^2`: the mean over minibatches of
:math:`G_b^2/B` (= :math:`B\bar g^2` for GNB) when every minibatch has ``B`` inputs; a last, smaller minibatch
keeps it unbiased. Both are unbiased for the mean Fisher over the inputs. One minibatch's term has variance

.. math::

   \mathrm{Var}(G_b^2) = \sum_{n\in b} V_n + 2\Big[\big(\textstyle\sum_{n\in b} I_n\big)^2
   - \textstyle\sum_{n\in b} I_n^2\Big],

with :math:`V_n = V_1(\theta_i\mid x_n)` for GNB and :math:`V_n = 2(\|a_n\|^4 - \sum_k a_{n,k}^4)` (Rademacher,
for this :math:`A_n`) for Hutchinson (``var_hutchinson`` of :func:`~fishertut.variance_report`). The
Hutchinson term's relative standard deviation is at most :math:`\sqrt 2` whatever ``B``.

Cost (``S`` draws, ``N`` inputs): one forward and ``S`` ordinary backward passes per minibatch, parameter-sized
memory, no per-sample gradients, on any model autograd can differentiate. With ``minibatch=1`` the same
estimators go through the engines of :mod:`fishertut.api`, which form per-input squares without a backward
pass per input.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .calls import num_rows, split_rows
from .checks.batches import check_output_kind
from .checks.values import Checks
from .families.positions import Positions, checked_mask_and_labels
from .passes import Inputs, Run, shaped
from .report import FisherDiagonal
from .terms import SumCollector

__all__ = ["ONE_BACKWARD", "one_backward_diagonal"]

ONE_BACKWARD = ("i1", "i1_sequence", "hutchinson")


def _channels(layout: Positions, estimator: str, h: Tensor, y: Tensor | str | None, samples: int, generator) -> Tensor:
    """Channels ``(N, S, K)`` for flat outputs ``h``: Rademacher ones, or the residuals of every position's label."""
    if estimator == "hutchinson":
        return layout.hutchinson_channels(h, samples, generator)
    if y is None:
        eps = layout.sample(h, samples, generator)[1]
    else:
        eps = layout.argmax(h)[1] if isinstance(y, str) else layout.given(h, y)[1]
    return layout.score_channels(eps, per_token=False)


def _layout(
    run: Run, estimator: str, h: Tensor, mask: Tensor | None, y: Tensor | str | None, checks: Checks
) -> tuple[Positions, Tensor | str | None]:
    """The positions of one minibatch's outputs ``h`` (raw shape), with its mask and checked labels."""
    shape = tuple(h.shape)
    if estimator == "i1" and len(shape) > 2:
        raise ValueError(
            "minibatch > 1 sums whole sequences before squaring: for outputs with positions, shape "
            f"{shape}, that is estimator='i1_sequence' (GNB over sequences); 'i1' is per token, minibatch=1"
        )
    given = None if isinstance(y, str) else y
    mask, labels = checked_mask_and_labels(run.family, shape, mask, given, h.device, h.dtype, checks)
    return Positions(run.family, shape, mask, run.normalize, h.dtype, h.device), y if isinstance(y, str) else labels


def one_backward_diagonal(
    run: Run,
    inputs: Inputs,
    estimator: str,
    minibatch: int,
    samples: int = 1,
    targets: object = None,
    generator: torch.Generator | None = None,
) -> FisherDiagonal:
    r"""GNB or Hutchinson with ``minibatch`` inputs summed before squaring (module docstring), by autograd.

    The pass ``run`` (:class:`~fishertut.passes.Run`) validates, chooses the engine, guards the first
    minibatch and all-reduces the sums; autograd differentiates the engine's forward. Labels (or signs) are
    drawn from ``generator`` once per minibatch, so ``batch_size`` (rows per forward/backward call; a
    minibatch larger than it is split and its gradients summed, at the price of one extra forward without
    gradients) never changes the result.

    Args:
        run: the pass, built from the caller's arguments.
        inputs: a tensor ``(N, ...)`` or an iterable of tensors or ``(x, y)`` pairs.
        estimator: ``"i1"``, ``"i1_sequence"`` or ``"hutchinson"``.
        minibatch: inputs per minibatch ``B``.
        samples: draws ``S`` of labels (or signs) per minibatch.
        targets: ``None`` (labels from the model), labels aligned with ``inputs``, ``"data"`` or ``"argmax"``;
            only for ``"i1"``/``"i1_sequence"``, where fixed labels give the squared minibatch sum (biased).
        generator: random source for the labels or signs.
    """
    if estimator not in ONE_BACKWARD:
        raise ValueError(f"minibatch > 1 needs estimator in {ONE_BACKWARD}, got {estimator!r}")
    family, checks = run.family, run.checks
    params = list(run.params.items())
    sums = [torch.zeros(p.shape, dtype=torch.float64, device=run.device) for _, p in params]
    for xb, yb, mask in run.minibatches(inputs, targets, minibatch):
        chunk = num_rows(xb) if run.batch_size is None else run.batch_size
        parts = split_rows(xb, chunk)
        single = len(parts) == 1
        # one chunk: square each gradient straight into the float64 sums; several: add the chunks' gradients first
        grads = None if single else [[torch.zeros_like(p) for _, p in params] for _ in range(samples)]
        if not single:
            with torch.no_grad():
                h_all = torch.cat([run.output(c) for c in parts])
            check_output_kind(h_all, num_rows(xb), run.dtype, family, checks)
            layout, labels = _layout(run, estimator, h_all, mask, yb, checks)
            channels = _channels(layout, estimator, layout.flat(h_all), labels, samples, generator).split(chunk)
        for index, x in enumerate(parts):
            with torch.enable_grad():
                h = run.output(x)
                if single:
                    check_output_kind(h.detach(), num_rows(x), run.dtype, family, checks)
                    layout, labels = _layout(run, estimator, h.detach(), mask, yb, checks)
                    chan = _channels(layout, estimator, layout.flat(h.detach()), labels, samples, generator)
                else:
                    chan = channels[index]
                h = h.reshape(num_rows(x), -1)
                for s in range(samples):
                    g = torch.autograd.grad(
                        (chan[:, s] * h).sum(), [p for _, p in params], retain_graph=s < samples - 1, allow_unused=True
                    )
                    for k, gi in enumerate(g):
                        if gi is None:  # a parameter the forward does not use (the pass proved it)
                            continue
                        if single:
                            sums[k].addcmul_(gi, gi)
                        else:
                            grads[s][k] += gi
        for s in range(0 if single else samples):
            for total, g in zip(sums, grads[s]):
                total.addcmul_(g, g)
    col = SumCollector()
    col.sums = {("i1", n): total for (n, _), total in zip(params, sums)}
    count = run.reduce(col)
    values = shaped(run, col.sums, "i1", 1.0 / (count * samples))
    return FisherDiagonal(
        values,
        estimator=estimator,
        path=run.engine.name,
        num_inputs=count,
        samples_per_input=samples,
        labels="argmax"
        if isinstance(targets, str) and targets == "argmax"
        else "model"
        if targets is None
        else "given",
        minibatch=minibatch,
        piecewise_linear=run.piecewise_linear,
        unused=run.unused_in(values),
        normalize=run.normalize,
    )
