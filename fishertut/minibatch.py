r"""Estimators that sum ``B`` inputs before squaring: GNB (Î1 with ``minibatch=B``) and output-space Hutchinson.

Notation, per input :math:`x_n` and parameter :math:`\theta_i`: :math:`J_n = \partial h/\partial\theta` (C × P),
:math:`\Lambda_n = \mathrm{Cov}(t\mid x_n)` and the square root :math:`A_n = S_n^\top` of the family's
:meth:`~fishertut.ExponentialFamily.covariance_factor` (:math:`A_nA_n^\top = \Lambda_n`; categorical
:math:`A = \mathrm{diag}(\sqrt p) - p\sqrt p^\top`, Gaussian :math:`A = I/\sigma`), and
:math:`a_n = A_n^\top J_{n,i}`, so that :math:`I(\theta_i\mid x_n) = \|a_n\|^2`.

Both estimators take, per minibatch :math:`b` of :math:`B` consecutive inputs and per draw, one gradient of
:math:`\sum_{n\in b} r_n^\top h_n` with a detached output-space *channel* :math:`r_n`:

* ``"i1"`` (GNB, Sophia): :math:`r_n = \varepsilon_n`, the score residual of a label drawn from the model, so
  the gradient is :math:`B\bar g`, the summed sampled-label score;
* ``"hutchinson"``: :math:`r_n = A_n\xi_n` with Rademacher :math:`\xi_n\in\{\pm1\}^C`, so the gradient is
  :math:`G_{b,i} = \sum_{n\in b}\xi_n^\top a_n`.

The estimate is :math:`\frac1{NS}\sum_{s}\sum_b G_{b,i,s}^2`: the mean over minibatches of
:math:`G_b^2/B` (= :math:`B\bar g^2` for GNB) when every minibatch has ``B`` inputs; a last, smaller minibatch
keeps it unbiased. Both are unbiased for the mean Fisher over the inputs. One minibatch's term has variance

.. math::

   \mathrm{Var}(G_b^2) = \sum_{n\in b} V_n + 2\Big[\big(\textstyle\sum_{n\in b} I_n\big)^2
   - \textstyle\sum_{n\in b} I_n^2\Big],

with :math:`V_n = V_1(\theta_i\mid x_n)` for GNB and :math:`V_n = 2(\|a_n\|^4 - \sum_k a_{n,k}^4)` (Rademacher,
for this :math:`A_n`) for Hutchinson: :func:`hutchinson_unit_variance`. The Hutchinson term's relative standard
deviation is at most :math:`\sqrt 2` whatever ``B``.

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
from .calls import call, cat_rows, check_inputs, num_rows, split_rows, take_rows
from .families import ExponentialFamily
from .guards import PROBE_ROWS, check_independent_rows, check_output_kind, run_forward, warn_if_probabilities
from .report import FisherDiagonal
from .validation import Checks, check_generator, check_model

__all__ = [
    "ONE_BACKWARD",
    "check_minibatch",
    "hutchinson_channels",
    "hutchinson_unit_variance",
    "one_backward_diagonal",
]

ONE_BACKWARD = ("i1", "hutchinson")


def hutchinson_channels(
    family: ExponentialFamily, h: Tensor, samples: int, generator: torch.Generator | None
) -> Tensor:
    r"""Channels :math:`r = A\xi`, Rademacher :math:`\xi`, shape ``(N, S, C)``, so that :math:`r^\top J = \xi^\top a`.

    ``A`` is the transpose of :meth:`~fishertut.ExponentialFamily.covariance_factor`. One draw of
    ``(N, S, C)`` signs from ``generator`` per call.
    """
    n, c = h.shape
    xi = torch.randint(0, 2, (n, samples, c), generator=generator, device=h.device).to(h.dtype) * 2 - 1
    return xi @ family.covariance_factor(h)


def hutchinson_unit_variance(family: ExponentialFamily, h: Tensor, jac: Tensor) -> Tensor:
    r"""Per-input variance of one Rademacher Hutchinson term, :math:`2(\|a\|^4 - \sum_k a_k^4)`, in float64.

    Args:
        family: the output family.
        h: outputs ``(N, C)``.
        jac: directions ``(N, C, n)`` (one per unit or parameter).

    Returns:
        ``(N, n)`` float64, formed as :math:`2\sum_{k\ne l} a_k^2 a_l^2 \ge 0` with :math:`a = S\,J`.
    """
    a2 = (family.covariance_factor(h) @ jac).to(torch.float64).square()
    return 2 * (a2.sum(1).square() - a2.square().sum(1))


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
        x = xs[0] if len(xs) == 1 else cat_rows(xs)
        return x, (None if ys[0] is None else ys[0] if len(ys) == 1 else torch.cat(ys))

    for x, y in iterate_batches(inputs, targets):
        x = check_inputs(x, device, dtype, checks)
        rows, start = num_rows(x), 0
        while held + rows - start >= size:
            take = size - held
            xs.append(take_rows(x, start, start + take))
            ys.append(None if y is None else y[start : start + take])
            yield joined()
            xs, ys, held, start = [], [], 0, start + take
        if start < rows:
            xs.append(take_rows(x, start, rows))
            ys.append(None if y is None else y[start:])
            held += rows - start
    if held:
        yield joined()


def _checked_output(
    model: nn.Module, x: Tensor, family: ExponentialFamily, checks: Checks, parts: list | None = None
) -> Tensor:
    """The outputs for ``x`` (by chunks of ``parts`` if given), validated: one row per input, fit for the family."""
    h = call(model, x) if parts is None else torch.cat([call(model, c) for c, _ in parts])
    check_output_kind(h, num_rows(x), getattr(h, "dtype", None), family, checks)
    return h


def _probe(model: nn.Module, x: Tensor, family: ExponentialFamily, dtype: torch.dtype, checks: Checks) -> None:
    """The checks of the engines' first chunk: the forward pass, the output's kind, independent rows."""
    probe = take_rows(x, 0, PROBE_ROWS)
    h, _ = run_forward(lambda t: (call(model, t), None), probe, model, dtype, getattr(x, "shape", None))
    check_output_kind(h, num_rows(probe), dtype, family, checks)
    check_independent_rows(model, probe, h)
    warn_if_probabilities(model, h, family)


def _channels(
    family: ExponentialFamily,
    estimator: str,
    h: Tensor,
    y: Tensor | None,
    samples: int,
    generator: torch.Generator | None,
    checks: Checks,
) -> Tensor:
    if estimator == "hutchinson":
        return hutchinson_channels(family, h, samples, generator)
    if y is None:
        return family.sample_with_residual(h, samples, generator)[1]
    return family.residual(h, family.check_targets(y, h, checks))


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
) -> FisherDiagonal:
    r"""GNB or Hutchinson with ``minibatch`` inputs summed before squaring (module docstring), by autograd.

    Labels (or signs) are drawn from ``generator`` once per minibatch, so ``batch_size`` (rows per
    forward/backward call; a minibatch larger than it is split and its gradients summed, at the price of one
    extra forward without gradients) never changes the result.

    Args:
        model: any module mapping ``(N, ...)`` to ``(N, C)`` that autograd can differentiate.
        inputs: a tensor ``(N, ...)`` or an iterable of tensors or ``(x, y)`` pairs.
        family: the output family.
        targets: ``None`` (labels from the model), labels aligned with ``inputs``, or ``"data"``; only for
            ``"i1"``, where data labels give the squared data-label minibatch sum (biased).
        generator: random source for the labels or signs.
        estimator: ``"i1"`` or ``"hutchinson"``.
        minibatch: inputs per minibatch ``B``.
        samples_per_input: draws ``S`` of labels (or signs) per minibatch.
        batch_size: rows per call; default: the whole minibatch.
    """
    if estimator not in ONE_BACKWARD:
        raise ValueError(f"minibatch > 1 needs estimator 'i1' or 'hutchinson', got {estimator!r}")
    size = check_count(minibatch, "minibatch")
    samples = check_count(samples_per_input, "samples_per_input")
    chunk = size if batch_size is None else check_count(batch_size, "batch_size")
    if estimator == "hutchinson" and targets is not None:
        raise ValueError("estimator='hutchinson' draws its own signs; pass targets=None")
    if targets is not None and samples != 1:
        raise ValueError(f"samples_per_input must be 1 when targets are given, got {samples}")
    device, dtype = check_model(model)
    check_generator(generator, device)
    targets = coerce_targets(targets, device, dtype)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    sums = [torch.zeros(p.shape, dtype=torch.float64, device=device) for _, p in params]
    checks, count = Checks(), 0
    for xb, yb in _minibatches(inputs, targets, size, device, dtype, checks):
        if num_rows(xb) == 0:
            continue
        if count == 0:
            _probe(model, xb, family, dtype, checks)
        parts = list(zip(split_rows(xb, chunk), (None,) * num_rows(xb) if yb is None else yb.split(chunk)))
        single = len(parts) == 1
        # one chunk: square each gradient straight into the float64 sums; several: add the chunks' gradients first
        grads = None if single else [[torch.zeros_like(p) for _, p in params] for _ in range(samples)]
        if not single:
            with torch.no_grad():
                h_all = _checked_output(model, xb, family, checks, parts)
            channels = _channels(family, estimator, h_all, yb, samples, generator, checks).split(chunk)
        for index, (x, _) in enumerate(parts):
            with torch.enable_grad():
                if single:
                    h = _checked_output(model, x, family, checks)
                    chan = _channels(family, estimator, h.detach(), yb, samples, generator, checks)
                else:
                    h, chan = call(model, x), channels[index]
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
        count += num_rows(xb)
        checks.defer()
    checks.flush()
    if count == 0:
        raise ValueError("inputs is empty: it yielded no rows")
    values = {n: (total / (count * samples)).to(dtype) for (n, _), total in zip(params, sums)}
    return FisherDiagonal(
        values,
        estimator=estimator,
        path="autograd",
        num_inputs=count,
        samples_per_input=samples,
        labels="given" if targets is not None else "model",
        minibatch=size,
    )
