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

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn

from .arguments import check_count, coerce_targets
from .batches import iterate_batches
from .families import ExponentialFamily
from .families.positions import Positions, check_normalize, checked_mask_and_labels
from .guards import PROBE_ROWS, check_independent_rows, check_output_kind, run_forward, warn_if_probabilities
from .report import FisherDiagonal
from .validation import Checks, check_batch, check_generator, check_model

__all__ = [
    "ONE_BACKWARD",
    "check_minibatch",
    "one_backward_diagonal",
]

ONE_BACKWARD = ("i1", "i1_sequence", "hutchinson")


def check_minibatch(estimator: str, minibatch: int, targets: object) -> int:
    """The inputs summed before squaring for ``estimator`` (1 for ``"i2"``, which ``minibatch`` leaves as it is).

    Raises:
        ValueError: ``minibatch`` is not a positive integer, or is > 1 with ``"exact"``; ``"hutchinson"`` with
            ``targets``.
    """
    size = check_count(minibatch, "minibatch")
    if size > 1 and estimator == "exact":
        raise ValueError("minibatch applies to sampled estimators; estimator='exact' takes minibatch=1")
    if targets is not None and estimator == "hutchinson":
        raise ValueError("estimator='hutchinson' draws its own signs; pass targets=None")
    return 1 if estimator == "i2" else size


def _minibatches(
    inputs: Iterable | Tensor,
    targets: Tensor | str | None,
    size: int,
    device: torch.device,
    dtype: torch.dtype,
    checks: Checks,
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Regroup the stream into minibatches of ``size`` consecutive inputs (the last one may be smaller)."""
    xs: list[Tensor] = []
    ys: list[Tensor | None] = []
    held = 0

    def joined() -> tuple[Tensor, Tensor | None]:
        x = xs[0] if len(xs) == 1 else torch.cat(xs)
        return x, (None if ys[0] is None else ys[0] if len(ys) == 1 else torch.cat(ys))

    for x, y in iterate_batches(inputs, targets):
        x = check_batch(x, device, dtype, checks)
        start = 0
        while held + x.shape[0] - start >= size:
            take = size - held
            xs.append(x[start : start + take])
            ys.append(None if y is None else y[start : start + take])
            yield joined()
            xs, ys, held, start = [], [], 0, start + take
        if start < x.shape[0]:
            xs.append(x[start:])
            ys.append(None if y is None else y[start:])
            held += x.shape[0] - start
    if held:
        yield joined()


def _checked_output(
    model: nn.Module, x: Tensor, family: ExponentialFamily, checks: Checks, parts: list | None = None
) -> Tensor:
    """The outputs for ``x`` (by chunks of ``parts`` if given), validated: one row per input, fit for the family."""
    h = model(x) if parts is None else torch.cat([model(c) for c in parts])
    check_output_kind(h.detach(), x.shape[0], h.dtype, family, checks)
    return h


def _probe(model: nn.Module, x: Tensor, family: ExponentialFamily, dtype: torch.dtype, checks: Checks) -> None:
    """The checks of the engines' first chunk: the forward pass, the output's kind, independent rows."""
    probe = x[:PROBE_ROWS]
    h, _ = run_forward(lambda t: (model(t), None), probe, model, dtype, x.shape)
    check_output_kind(h, probe.shape[0], dtype, family, checks)
    check_independent_rows(model, probe, h)
    warn_if_probabilities(model, Positions(family, tuple(h.shape), None, "sequence", h.dtype, h.device).rows(h), family)


def _channels(
    layout: Positions,
    estimator: str,
    h: Tensor,
    y: Tensor | None,
    samples: int,
    generator: torch.Generator | None,
) -> Tensor:
    """Channels ``(N, S, K)`` for flat outputs ``h``: Rademacher ones, or the residuals of every position's label."""
    if estimator == "hutchinson":
        return layout.hutchinson_channels(h, samples, generator)
    if y is None:
        eps = layout.sample(h, samples, generator)[1]
    else:
        eps = layout.argmax(h)[1] if isinstance(y, str) else layout.given(h, y)[1]
    return layout.score_channels(eps, per_token=False)


def _layout(
    family: ExponentialFamily,
    estimator: str,
    h: Tensor,
    mask: Tensor | None,
    y: Tensor | None,
    normalize: str,
    checks: Checks,
) -> tuple[Positions, Tensor | None]:
    """The positions of one minibatch's outputs ``h`` (raw shape), with its mask and checked labels."""
    shape = tuple(h.shape)
    if estimator == "i1" and len(shape) > 2:
        raise ValueError(
            "minibatch > 1 sums whole sequences before squaring: for outputs with positions, shape "
            f"{shape}, that is estimator='i1_sequence' (GNB over sequences); 'i1' is per token, minibatch=1"
        )
    mask, labels = checked_mask_and_labels(family, shape, mask, y, h.device, h.dtype, checks)
    return Positions(family, shape, mask, normalize, h.dtype, h.device), labels


def one_backward_diagonal(
    model: nn.Module,
    inputs: Tensor | Iterable,
    family: ExponentialFamily,
    estimator: str,
    minibatch: int,
    samples_per_input: int = 1,
    targets: Tensor | str | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    mask: Tensor | None = None,
    normalize: str = "sequence",
) -> FisherDiagonal:
    r"""GNB or Hutchinson with ``minibatch`` inputs summed before squaring (module docstring), by autograd.

    Labels (or signs) are drawn from ``generator`` once per minibatch, so ``batch_size`` (rows per
    forward/backward call; a minibatch larger than it is split and its gradients summed, at the price of one
    extra forward without gradients) never changes the result.

    Args:
        model: any module mapping ``(N, ...)`` to ``(N, C)`` or ``(N, T, C)`` that autograd can differentiate.
        inputs: a tensor ``(N, ...)`` or an iterable of tensors or ``(x, y)`` pairs.
        family: the output family.
        targets: ``None`` (labels from the model), labels aligned with ``inputs``, ``"data"`` or ``"argmax"``;
            only for ``"i1"``/``"i1_sequence"``, where fixed labels give the squared minibatch sum (biased).
        generator: random source for the labels or signs.
        estimator: ``"i1"``, ``"i1_sequence"`` or ``"hutchinson"``.
        minibatch: inputs per minibatch ``B``.
        samples_per_input: draws ``S`` of labels (or signs) per minibatch.
        batch_size: rows per call; default: the whole minibatch.
        mask: boolean ``(N, *positions)`` for outputs with positions, as in :func:`~fishertut.fisher_diagonal`.
        normalize: ``"sequence"`` or ``"token"``, as in :func:`~fishertut.fisher_diagonal`.
    """
    if estimator not in ONE_BACKWARD:
        raise ValueError(f"minibatch > 1 needs estimator in {ONE_BACKWARD}, got {estimator!r}")
    normalize = check_normalize(normalize)
    if mask is not None and not isinstance(mask, Tensor):
        raise TypeError(f"mask must be None or a boolean tensor (N, *positions), got {type(mask).__name__}")
    size = check_count(minibatch, "minibatch")
    samples = check_count(samples_per_input, "samples_per_input")
    chunk = size if batch_size is None else check_count(batch_size, "batch_size")
    if estimator == "hutchinson" and targets is not None:
        raise ValueError("estimator='hutchinson' draws its own signs; pass targets=None")
    if targets is not None and samples != 1:
        raise ValueError(f"samples_per_input must be 1 when targets are given, got {samples}")
    device, dtype = check_model(model)
    check_generator(generator, device)
    argmax = isinstance(targets, str) and targets == "argmax"
    targets = coerce_targets(None if argmax else targets, device, dtype)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    sums = [torch.zeros(p.shape, dtype=torch.float64, device=device) for _, p in params]
    checks, count = Checks(), 0
    for xb, yb in _minibatches(inputs, targets, size, device, dtype, checks):
        if xb.shape[0] == 0:
            continue
        if count == 0:
            _probe(model, xb, family, dtype, checks)
        rows = None if mask is None else mask[count : count + xb.shape[0]]
        if rows is not None and rows.shape[0] != xb.shape[0]:
            raise ValueError(f"mask has {mask.shape[0]} rows but inputs has more than that")
        parts = xb.split(chunk)
        single = len(parts) == 1
        # one chunk: square each gradient straight into the float64 sums; several: add the chunks' gradients first
        grads = None if single else [[torch.zeros_like(p) for _, p in params] for _ in range(samples)]
        if not single:
            with torch.no_grad():
                h_all = _checked_output(model, xb, family, checks, parts)
            layout, yb = _layout(family, estimator, h_all, rows, yb, normalize, checks)
            yb = "argmax" if argmax else yb
            channels = _channels(layout, estimator, layout.flat(h_all), yb, samples, generator).split(chunk)
        for index, x in enumerate(parts):
            with torch.enable_grad():
                if single:
                    h = _checked_output(model, x, family, checks)
                    layout, yb = _layout(family, estimator, h.detach(), rows, yb, normalize, checks)
                    yb = "argmax" if argmax else yb
                    h = layout.flat(h)
                    chan = _channels(layout, estimator, h.detach(), yb, samples, generator)
                else:
                    h, chan = model(x).reshape(x.shape[0], -1), channels[index]
                for s in range(samples):
                    g = torch.autograd.grad(
                        (chan[:, s] * h).sum(), [p for _, p in params], retain_graph=s < samples - 1, allow_unused=True
                    )
                    for k, gi in enumerate(g):
                        if gi is None:
                            continue
                        if single:
                            sums[k].addcmul_(gi, gi)
                        else:
                            grads[s][k] += gi
        for s in range(0 if single else samples):
            for total, g in zip(sums, grads[s]):
                total.addcmul_(g, g)
        count += xb.shape[0]
        checks.defer()
    checks.flush()
    if count == 0:
        raise ValueError("inputs is empty: it yielded no rows")
    if mask is not None and count != mask.shape[0]:
        raise ValueError(f"mask has {mask.shape[0]} rows but inputs has {count}")
    values = {n: (total / (count * samples)).to(dtype) for (n, _), total in zip(params, sums)}
    return FisherDiagonal(
        values,
        estimator=estimator,
        path="autograd",
        num_inputs=count,
        samples_per_input=samples,
        labels="argmax" if argmax else "given" if targets is not None else "model",
        minibatch=size,
        normalize=normalize,
    )
