r"""Public entry points.

:func:`fisher_diagonal`, :func:`variance_report`, :func:`per_input_statistics`, :func:`estimator_terms`.

Each streams over the batches of ``inputs``, runs one engine per batch (layer-wise for supported
``nn.Sequential`` MLPs, the graph engine for supported convolutional and residual networks, ``torch.func``
otherwise) and reduces unit statistics (see :mod:`fishertut.terms`). Parameters that the traced graph proves
piecewise linear (:func:`fishertut.engines.graph.trace.piecewise_linear_parameters`) have :math:`u \equiv 0`: no engine
computes their second derivatives, and every result lists them in ``piecewise_linear``.

==============  ======================================================  ======  =========================
statistic       unit value per input (``J`` = first, ``G`` = second       degree  used by
                derivatives of the outputs, per class)
==============  ======================================================  ======  =========================
``fisher``      :math:`J^\top\Lambda J`                                    2       exact, report
``i1``          :math:`\sum_s (\varepsilon_s^\top J)^2`                   2       Î1
``i2``          :math:`\sum_s (J^\top\Lambda J - \varepsilon_s^\top G)`   2       Î2
``fisher_sq``   :math:`(J^\top\Lambda J)^2`                               4       ``var_x``
``var_i1``      :math:`K[J^4] - (J^\top\Lambda J)^2`                      4       report
``var_i2``      :math:`G^\top\Lambda G`                                   4       report
``v1_*``        :math:`\lambda(M)\,\|\Pi J\|^4`                           4       bounds
``v2_*``        :math:`\lambda(\Lambda)\,\|\Pi G\|^2`                     4       bounds
==============  ======================================================  ======  =========================

See chapters "The two estimators" (what each estimator computes) and "The variances of the two estimators".
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .checks.arguments import ESTIMATORS, check_estimator, check_sampling
from .families import ExponentialFamily
from .families.statistics import conditional_statistics
from .minibatch import one_backward_diagonal
from .passes import Inputs, Run, identity_channels, labels_and_residuals, shaped
from .report import Bounds, ConditionalStatistics, EstimatorTerms, FisherDiagonal, VarianceReport
from .terms import PerInputCollector, SumCollector

__all__ = ["fisher_diagonal", "variance_report", "per_input_statistics", "estimator_terms"]


def fisher_diagonal(
    model: nn.Module,
    inputs: Inputs,
    family: ExponentialFamily,
    estimator: str = "exact",
    targets: Tensor | str | None = None,
    samples_per_input: int = 1,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    path: str = "auto",
    process_group: object | None = None,
    minibatch: int = 1,
    mask: Tensor | str | None = None,
    normalize: str = "sequence",
) -> FisherDiagonal:
    r"""Diagonal of the Fisher information matrix, exactly or by one of the estimators.

    * ``"exact"``: :math:`\frac1N\sum_n v_i^\top \Lambda(x_n) v_i`
      (:eq:`eq-expfam-diag` in :doc:`/book/exponential_family`);
    * ``"i1"``: :math:`\frac1{NS}\sum_{n,s} (\partial_{\theta_i}\log p(y_{ns}|x_n))^2`;
    * ``"i2"``: :math:`\frac1{NS}\sum_{n,s} -\partial^2_{\theta_i}\log p(y_{ns}|x_n)
      = \frac1{NS}\sum_{n,s} (v_i^\top\Lambda v_i - \varepsilon_{ns}^\top u_i)`
      (:eq:`eq-est-diag` in :doc:`/book/estimators`);
    * ``"hutchinson"``: :math:`\frac1{NS}\sum_{n,s} (\xi_{ns}^\top A_n^\top v_i)^2`, :math:`A_nA_n^\top = \Lambda(x_n)`.

    **Outputs with positions** ``(N, T, C)`` (:mod:`fishertut.families.positions`; classes in the family's
    ``class_axis``, default last as in a language model's ``(N, T, V)``; ``Categorical(class_axis=1)`` reads
    PyTorch's cross-entropy layout ``(N, C, d1, ...)``): independent outputs per position given the input. An
    input's Fisher sums its unmasked positions; ``normalize="token"`` divides it by its count :math:`T_n` of
    them (with equal counts the two differ by the factor :math:`T`). One label is drawn per position: ``"i1"``
    is per token, :math:`\sum_t g_{n,t}^2`; ``"i1_sequence"`` per sequence, :math:`(\sum_t g_{n,t})^2`, the
    squared gradient of the summed loss (larger variance, ``var_i1_sequence``); the same without positions.

    ``minibatch=B > 1`` sums ``B`` inputs before squaring, for ``"i1"`` (GNB) and ``"hutchinson"``: one backward
    pass per minibatch, any model (:mod:`fishertut.minibatch`); ``"i2"`` is unchanged by it. With positions,
    GNB over sequences is ``"i1_sequence"`` with ``minibatch=B``.

    Labels :math:`y_{ns}` are drawn from the model, ``samples_per_input`` per input, from ``generator``,
    unless ``targets`` gives them; with data labels ``"i1"`` is the empirical Fisher (chapter
    :doc:`/book/empirical_fisher`); ``targets="argmax"`` takes the most probable class at every position. Both
    are biased by design and random in nothing: :meth:`VarianceReport.bias` gives their exact error against the
    exact Fisher.

    Frozen parameters (``requires_grad=False``) are left out: they are constants of the model, and only
    trainable ones get an entry. Hooks, parametrizations (results keyed by ``model.named_parameters()``, e.g.
    ``0.parametrizations.weight.original``), shared parameters and in-place activations are honoured, on
    the generic engine where the layer-wise one cannot; backward hooks are refused.

    Args:
        model: maps a batch ``(N, ...)`` to logits (categorical) or means (Gaussian) ``h`` of shape ``(N, C)``
            or, with positions, ``(N, T, C)`` (classes in the family's ``class_axis``, default last), each row
            depending on its own input only; in eval mode if it has dropout or batch norm.
        inputs: a tensor ``(N, ...)`` or an iterable of tensors or ``(x, y)`` pairs (e.g. a ``DataLoader``);
            one ``(x, y)`` batch is ``[(x, y)]``, not the bare tuple. A batch may also be a mapping of tensors
            sharing the batch axis, passed to ``forward`` by keyword (Hugging Face style); an output with a
            ``logits`` key or attribute is read as the logits (:mod:`fishertut.calls`).
        family: :class:`~fishertut.Categorical` or :class:`~fishertut.Gaussian`.
        estimator: ``"exact"``, ``"i1"``, ``"i1_sequence"``, ``"i2"`` or ``"hutchinson"``.
        targets: ``None`` (labels from the model), labels aligned with the rows of ``inputs`` in iteration
            order (a tensor, list or numpy array; not with a shuffling ``DataLoader``), ``"data"`` for the
            ``y`` of ``(x, y)`` batches, the key of the labels in mapping batches (e.g. ``"labels"``, not
            passed to ``forward``), or ``"argmax"``. Not allowed with ``"exact"``. With positions, class
            indices ``(N, T)`` (the output's shape without the class axis); the ignore index ``-100`` masks
            its position.
        samples_per_input: labels drawn per input (must be 1 with ``targets``).
        generator: random source for the labels (on the model's device), for reproducibility. The labels of
            an input do not depend on how the inputs are batched, on the engine, or on the function.
        batch_size: rows per engine call; default: sized to a fixed memory budget.
        path: ``"auto"`` (the layer-wise engine for the MLPs it takes, else the graph engine for the
            convolutional and residual networks it takes, else generic), or ``"layerwise"``, ``"graph"``,
            ``"generic"`` to force one (a forced fast path raises :class:`UnsupportedModelError` naming the layer
            it cannot take).
        process_group: a ``torch.distributed`` group whose ranks each hold part of the inputs; the sums are
            all-reduced so every rank returns the result over all inputs.
        minibatch: inputs summed before squaring (a statistical choice; ``batch_size`` only sets memory).
        mask: boolean ``(N, T)`` (the output's shape without the class axis), ``True`` where a position counts:
            padded positions are dropped from every sum. Only for outputs with positions. With a mapping of
            inputs (Hugging Face style), the key of the entry that holds it, e.g. ``mask="attention_mask"``: a
            boolean or 0/1 integer tensor ``(N, T)``, still passed to ``forward``.
        normalize: ``"sequence"`` (default: each input's Fisher sums its unmasked positions) or ``"token"``
            (divided by the input's number of unmasked positions).

    Returns:
        :class:`FisherDiagonal`: ``{parameter name: tensor shaped like the parameter}``, in the model's dtype.
    """
    check_estimator(estimator, ESTIMATORS)
    samples, size = check_sampling(estimator, targets, samples_per_input, minibatch)
    run = Run(model, family, path, batch_size, generator, estimator == "i2", process_group, mask, normalize)
    if size > 1:
        return one_backward_diagonal(run, inputs, estimator, size, samples, targets, generator)
    col = SumCollector()
    for _, h, tape, y, layout in run.batches(inputs, targets):
        cov = layout.covariance_channels(h) if estimator in ("exact", "i2") else None
        if estimator == "exact":
            for t in run.units(tape, cov, None):
                col.add([("fisher", t.jac.square().sum(1), 2)], t)
            continue
        if estimator == "hutchinson":
            chans = layout.hutchinson_channels(h, samples, generator)
        else:
            eps = labels_and_residuals(layout, h, y, samples, generator)[1]
            chans = layout.score_channels(eps, per_token=estimator == "i1")
        if estimator == "i2":
            # only the sum over labels of the label noise enters: one curvature channel r = sum_s c_t eps_s
            for t in run.units(tape, cov, layout.curvature_channels(eps)):
                i2 = samples * t.jac.square().sum(1)
                col.add([("i2", i2 if t.curv_zero else i2 - t.curv[:, 0], 2)], t)
            continue
        for t in run.units(tape, chans, None):
            col.add([("i1", t.jac.square().sum(1), 2)], t)
    n = run.reduce(col)
    stat = {"exact": "fisher", "hutchinson": "i1", "i1_sequence": "i1"}.get(estimator, estimator)
    per = 1 if estimator == "exact" else samples
    values = shaped(run, col.sums, stat, 1.0 / (n * per))
    labels = (
        None
        if estimator == "exact"
        else "model"
        if targets is None
        else "argmax"
        if isinstance(targets, str) and targets == "argmax"
        else "given"
    )
    return FisherDiagonal(
        values,
        estimator=estimator,
        path=run.engine.name,
        num_inputs=n,
        samples_per_input=per,
        labels=labels,
        piecewise_linear=run.piecewise_linear,
        normalize=run.normalize,
        unused=run.unused_in(values),
    )


def _conditional_pass(run: Run, inputs: Inputs, col: SumCollector | PerInputCollector, with_square: bool) -> None:
    """One pass over ``inputs`` adding the report's unit statistics (per class, with curvature) to ``col``."""
    for _, h, tape, _, layout in run.batches(inputs, None):
        eye = identity_channels(h)
        for t in run.units(tape, eye, eye):
            col.add(conditional_statistics(layout, h, t.jac, t.curv, t.curv_zero, with_square), t)


def variance_report(
    model: nn.Module,
    inputs: Inputs,
    family: ExponentialFamily,
    batch_size: int | None = None,
    path: str = "auto",
    process_group: object | None = None,
    mask: Tensor | str | None = None,
    normalize: str = "sequence",
) -> VarianceReport:
    r"""Exact FIM diagonal with the exact conditional variances of Î1 and Î2, the input term and the bounds.

    No Monte Carlo: for each input the variance over labels is a finite sum over classes (categorical) or a
    closed form (Gaussian): :math:`V_1 = K[v_i^4] - I(\theta_i|x)^2`, :math:`V_2 = u_i^\top\Lambda u_i`
    (:eq:`eq-var-v1` in :doc:`/book/conditional_variances`).
    With positions (:mod:`fishertut.families.positions`) each is summed over the unmasked positions, and
    ``var_i1_sequence`` adds the cross-position terms of the per-sequence Î1.
    See :class:`VarianceReport` for the fields and :class:`Bounds` for the bound variant. Frozen parameters
    (``requires_grad=False``) are left out. Half-precision models work; their output-space spectra are
    computed in float32.

    Args:
        model: as in :func:`fisher_diagonal`.
        inputs: as in :func:`fisher_diagonal`.
        family: as in :func:`fisher_diagonal`.
        batch_size: as in :func:`fisher_diagonal`.
        path: as in :func:`fisher_diagonal`.
        process_group: as in :func:`fisher_diagonal`.
        mask: as in :func:`fisher_diagonal`.
        normalize: as in :func:`fisher_diagonal`; the variances are those of the estimators so normalised.
    """
    run = Run(model, family, path, batch_size, None, True, process_group, mask, normalize)
    col = SumCollector(float64_stats=frozenset({"fisher", "fisher_sq", "var_hutchinson", "var_i1_sequence"}))
    _conditional_pass(run, inputs, col, with_square=True)
    n = run.reduce(col)

    def get(stat: str) -> dict[str, Tensor]:
        return shaped(run, col.sums, stat, 1.0 / n)

    # var_x = E[I^2] - E[I]^2 cancels: form it from the float64 sums, then cast
    fisher64, fisher_sq64 = (shaped(run, col.sums, s, 1.0 / n, torch.float64) for s in ("fisher", "fisher_sq"))
    var_x = {k: (fisher_sq64[k] - fisher64[k].square()).clamp_min(0).to(run.dtype) for k in fisher64}
    fisher = get("fisher")
    bounds = Bounds(get("v1_lower"), get("v1_upper"), get("v2_lower"), get("v2_upper"))
    return VarianceReport(
        fisher=fisher,
        var_i1=get("var_i1"),
        var_i2=get("var_i2"),
        var_x=var_x,
        bounds=bounds,
        num_inputs=n,
        path=run.engine.name,
        family=family,
        var_hutchinson=get("var_hutchinson"),
        piecewise_linear=run.piecewise_linear,
        var_i1_sequence=get("var_i1_sequence"),
        max_positions=run.max_positions,
        normalize=run.normalize,
        unused=run.unused_in(fisher),
    )


def per_input_statistics(
    model: nn.Module,
    inputs: Inputs,
    family: ExponentialFamily,
    batch_size: int | None = None,
    path: str = "auto",
    mask: Tensor | str | None = None,
    normalize: str = "sequence",
) -> ConditionalStatistics:
    r"""Per-input :math:`I(\theta_i|x_n)`, :math:`V_1`, :math:`V_2` and bounds, each ``(N, *parameter.shape)``.

    Materialises ``N × P`` values: meant for small models or few inputs (plots of per-input behaviour).
    Frozen parameters (``requires_grad=False``) are left out. Arguments as in :func:`variance_report`.
    """
    run = Run(model, family, path, batch_size, None, True, mask=mask, normalize=normalize)
    col = PerInputCollector()
    _conditional_pass(run, inputs, col, with_square=False)
    parts = col.result()

    def get(stat: str) -> dict[str, Tensor]:
        return {n: parts[(stat, n)].reshape(-1, *shape).to(run.dtype) for n, shape in run.shapes.items()}

    fisher = get("fisher")
    return ConditionalStatistics(
        fisher=fisher,
        var_i1=get("var_i1"),
        var_i2=get("var_i2"),
        bounds=Bounds(get("v1_lower"), get("v1_upper"), get("v2_lower"), get("v2_upper")),
        path=run.engine.name,
        var_hutchinson=get("var_hutchinson"),
        piecewise_linear=run.piecewise_linear,
        var_i1_sequence=get("var_i1_sequence"),
        unused=run.unused_in(fisher),
        num_outputs=run.num_outputs,
    )


def estimator_terms(
    model: nn.Module,
    inputs: Inputs,
    family: ExponentialFamily,
    samples_per_input: int = 1,
    generator: torch.Generator | None = None,
    targets: Tensor | str | None = None,
    batch_size: int | None = None,
    path: str = "auto",
    mask: Tensor | str | None = None,
    normalize: str = "sequence",
) -> EstimatorTerms:
    r"""Single-pair terms of Î1 and Î2 for the same labels, each ``(N, S, *parameter.shape)``.

    ``i1``: :math:`(\varepsilon^\top v_i)^2`; ``i2``: :math:`v_i^\top\Lambda v_i - \varepsilon^\top u_i`
    (:eq:`eq-est-diag` in :doc:`/book/estimators`).
    Their means over ``(n, s)`` equal :func:`fisher_diagonal` with ``"i1"``/``"i2"`` and the same generator.
    Materialises ``N × S × P`` values: meant for small models or few inputs (Monte-Carlo experiments).
    Frozen parameters (``requires_grad=False``) are left out. Arguments as in :func:`fisher_diagonal`.
    """
    samples, _ = check_sampling("i2", targets, samples_per_input)
    run = Run(model, family, path, batch_size, generator, True, mask=mask, normalize=normalize)
    col = PerInputCollector()
    labels = []
    for _, h, tape, y, layout in run.batches(inputs, targets):
        y, eps = labels_and_residuals(layout, h, y, samples, generator)
        labels.append(y)
        root = layout.weights.to(h.dtype).sqrt()[:, None, :, None]
        for t in run.units(tape, identity_channels(h), layout.curvature_channels(eps, summed=False)):
            jr = layout.from_model(t.jac)
            per_row = layout.family.quad(layout.rows(h), jr).reshape(h.shape[0], layout.num_positions, -1)
            fisher = (layout.weights.to(h.dtype)[:, :, None] * per_row).sum(1, keepdim=True)
            jr = jr.reshape(h.shape[0], layout.num_positions, *jr.shape[1:])
            scores = torch.einsum("nstc,ntcp->nstp", eps * root, jr)  # sqrt(c_t) times the per-position score
            col.add(
                [
                    ("i1", scores.square().sum(2), 2),
                    ("i1_sequence", scores.sum(2).square(), 2),
                    ("i2", fisher - t.curv, 2),
                ],
                t,
            )
    parts = col.result()
    n = run.num_inputs

    def get(stat: str) -> dict[str, Tensor]:
        return {k: parts[(stat, k)].reshape(n, samples, *shape).to(run.dtype) for k, shape in run.shapes.items()}

    i1 = get("i1")
    return EstimatorTerms(
        i1=i1,
        i2=get("i2"),
        i1_sequence=get("i1_sequence"),
        labels=torch.cat(labels, 0),
        path=run.engine.name,
        piecewise_linear=run.piecewise_linear,
        unused=run.unused_in(i1),
    )
