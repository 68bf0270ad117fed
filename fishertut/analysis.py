r"""Helpers shared by the theory chapters (bounds, input/label variance, empirical Fisher, practical guide).

* :func:`mnist_network`: the small sigmoid MNIST classifier the theory chapters study.
* :func:`group_values`, :func:`layer_summary`, :func:`recommend_estimator`: pool per-parameter dicts
  (a :class:`~fishertut.VarianceReport`) into per-layer tables.
* :func:`bound_variants`: the library's spectral bounds next to the unprojected ("paper-style") variant (a)
  and the exact-:math:`I` split (d) of spec 4.2, per input.
* :func:`class_table`, :func:`simulate_estimates`: for a categorical output, every single-pair term of
  :math:`\hat I_1` and :math:`\hat I_2` for every (input, class), and cheap Monte-Carlo repetitions of the
  estimators built from it.
* :func:`empirical_variance`: a variance estimated from repetitions, with its standard error.
* :func:`combine_by_group`: one estimate per parameter group, each from its chosen estimator.

Pooling within a group (unresolved in the paper, spec 10.9; our choice, the same as
:mod:`fishertut.casestudy`): a group's Fisher information and variances are the means of its parameters'
values, its standard deviation the square root of the mean variance, and a bound's log-ratio
:math:`\log_{10}(\overline{\text{bound}}/\overline{V_k})` compares pooled means.

See the chapters "Bounds", "Input and label variance", "The empirical Fisher" and "A practical guide".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .api import estimator_terms, per_input_statistics
from .families import Categorical, ExponentialFamily, Gaussian
from .report import Bounds, ConditionalStatistics, VarianceReport

__all__ = [
    "TrainedNetwork", "mnist_network", "default_groups", "group_values", "layer_summary", "recommend_estimator",
    "BoundVariants", "bound_variants", "kurtosis_matrix_max", "ClassTable", "class_table", "simulate_estimates", "empirical_variance",
    "combine_by_group",
]

Groups = Mapping[str, Sequence[str]]


# --------------------------------------------------------------------------------------------------
# The network of the theory chapters
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainedNetwork:
    """A trained classifier with its data (on the model's device and dtype).

    Attributes:
        model: the network, in eval mode.
        data: :class:`~fishertut.data.MNIST` with images in the model's dtype, on its device.
        losses: mean training loss of each epoch.
        test_accuracy: accuracy on ``data.test_x``.
    """

    model: nn.Module
    data: Any
    losses: list[float]
    test_accuracy: float


def mnist_network(sizes: Sequence[int] = (784, 32, 16, 10), activation: str = "sigmoid", *, epochs: int = 5,
                  lr: float = 3e-3, batch_size: int = 128, seed: int = 0, dtype: torch.dtype = torch.float64,
                  device: torch.device | str | None = None, data: Any = None) -> TrainedNetwork:
    """The small MNIST MLP of the theory chapters, trained with Adam on ``data.train_x``.

    ``ft.models.mlp(sizes, activation, seed=seed)`` trained by :func:`~fishertut.training.train_classifier`
    for ``epochs`` epochs; the same arguments give the same network, so chapters can share it.

    Args:
        sizes: widths ``[784, h_1, ..., 10]``.
        activation: a key of :data:`fishertut.models.ACTIVATIONS`.
        epochs, lr, batch_size, seed: of the training loop (``seed`` also seeds the initialisation).
        dtype: of the network and the returned images.
        device: default CUDA when available, else the CPU.
        data: :class:`~fishertut.data.MNIST`; default :func:`~fishertut.data.load_mnist`.

    Returns:
        :class:`TrainedNetwork`.
    """
    from .data import MNIST, load_mnist
    from .models import mlp
    from .training import train_classifier

    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    data = data if data is not None else load_mnist()
    data = MNIST(data.train_x.to(device=device, dtype=dtype), data.train_y.to(device),
                 data.test_x.to(device=device, dtype=dtype), data.test_y.to(device), data.source)
    model = mlp(list(sizes), activation, seed=seed, dtype=dtype, device=device)
    losses = train_classifier(model, data.train_x, data.train_y, epochs=epochs, batch_size=batch_size, lr=lr,
                              seed=seed)
    with torch.no_grad():
        accuracy = float((model(data.test_x).argmax(1) == data.test_y).double().mean())
    return TrainedNetwork(model=model, data=data, losses=losses, test_accuracy=accuracy)


# --------------------------------------------------------------------------------------------------
# Pooling per parameter group
# --------------------------------------------------------------------------------------------------


def default_groups(names: Sequence[str]) -> dict[str, list[str]]:
    """Group parameter names by module, numbered in order: ``{"layer 1": ["0.weight", "0.bias"], ...}``.

    The same rule as :func:`fishertut.models.layer_groups`, from the names alone.
    """
    modules: dict[str, list[str]] = {}
    for name in names:
        modules.setdefault(name.rsplit(".", 1)[0] if "." in name else name, []).append(name)
    return {f"layer {i + 1}": ns for i, ns in enumerate(modules.values())}


def group_values(values: Mapping[str, Tensor], names: Sequence[str], leading: int = 0) -> Tensor:
    """Concatenate the parameters ``names`` of a per-parameter dict into one float64 CPU tensor.

    Args:
        values: ``{name: tensor}`` with ``leading`` batch dimensions before the parameter's shape, e.g.
            ``leading=0`` for a report (``(*shape)``), ``1`` for per-input statistics (``(N, *shape)``),
            ``2`` for estimator terms (``(N, S, *shape)``).
        names: the parameters of the group, in order.
        leading: number of leading dimensions kept.

    Returns:
        ``(*leading dims, P_group)``.
    """
    parts = [values[n].detach().double().cpu() for n in names]
    return torch.cat([p.reshape(*p.shape[:leading], -1) for p in parts], dim=leading)


def _log10_ratio(num: float, den: float) -> float:
    if num == 0 and den == 0:
        return math.nan
    if den == 0:
        return math.inf
    if num == 0:
        return -math.inf
    return math.log10(num / den)


def layer_summary(report: VarianceReport, groups: Groups | None = None) -> Any:
    r"""Per-group means of a :class:`~fishertut.VarianceReport`: Fisher, variances, standard deviations, bounds.

    Columns (one row per group; means over the group's parameters, see the module docstring):

    * ``num_params``; ``fisher`` (:math:`\overline{\mathcal I}`); ``var_x``; ``var_i1``, ``var_i2``
      (:math:`\overline{V_k}`, one label per input);
    * ``sd_i1``, ``sd_i2`` (:math:`\sqrt{\overline{V_k}}`) and ``rel_sd_i1``, ``rel_sd_i2``
      (:math:`\sqrt{\overline{V_k}}/\overline{\mathcal I}`);
    * ``v1_lower``, ``v1_upper``, ``v2_lower``, ``v2_upper``: the means of the bounds (:class:`~fishertut.Bounds`);
    * ``log10_v1_upper``, ``log10_v2_upper``: :math:`\log_{10}(\overline{\text{upper}}/\overline{V_k})`, and
      ``log10_v1_lower``, ``log10_v2_lower``: :math:`\log_{10}(\overline{V_k}/\overline{\text{lower}})`; 0 when
      the bound is tight, ``inf`` for a zero lower bound, ``nan`` where bound and variance are both 0.

    Args:
        report: from :func:`~fishertut.variance_report`.
        groups: ``{group: [parameter names]}``; default :func:`default_groups` of the report's parameters
            (use :func:`fishertut.models.layer_groups` for a model).

    Returns:
        ``pandas.DataFrame`` indexed by group name.
    """
    import pandas as pd

    groups = default_groups(list(report.fisher)) if groups is None else groups
    b = report.bounds
    stats = {"fisher": report.fisher, "var_x": report.var_x, "var_i1": report.var_i1, "var_i2": report.var_i2,
             "v1_lower": b.v1_lower, "v1_upper": b.v1_upper, "v2_lower": b.v2_lower, "v2_upper": b.v2_upper}
    rows = {}
    for group, names in groups.items():
        row: dict[str, float] = {k: float(group_values(v, names).mean()) for k, v in stats.items()}
        row = {"num_params": int(group_values(report.fisher, names).numel()), **row}
        for k in ("1", "2"):
            var = row[f"var_i{k}"]
            row[f"sd_i{k}"] = math.sqrt(var)
            row[f"rel_sd_i{k}"] = math.sqrt(var) / row["fisher"] if row["fisher"] > 0 else math.nan
            row[f"log10_v{k}_upper"] = _log10_ratio(row[f"v{k}_upper"], var)
            row[f"log10_v{k}_lower"] = _log10_ratio(var, row[f"v{k}_lower"])
        rows[group] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def recommend_estimator(report: VarianceReport, groups: Groups | None = None, *, epsilon: float = 0.1,
                        delta: float = 0.05, samples_per_input: int = 1) -> Any:
    r"""Which estimator to use for each parameter group, and how many inputs it needs (spec 4.5-4.7).

    Both estimators are unbiased and share the input term, so for ``N`` inputs and ``S`` labels each the
    group's total mean squared error is :math:`\sum_i(\mathrm{var\_x}_i + \mathrm{var\_ik}_i/S)/N`. The
    recommendation is the estimator with the smaller :math:`\sum_i \mathrm{var\_ik}_i` over the group
    (``"i2"`` on ties). A last layer, where :math:`V_2 \equiv 0` (spec 4.4), always gets ``"i2"``.

    Columns (one row per group):

    * ``num_params``, ``fisher`` (mean), ``rel_sd_i1``, ``rel_sd_i2``: as in :func:`layer_summary`;
    * ``x_share_i1``, ``x_share_i2``: :math:`\overline{\mathrm{var\_x}}/(\overline{\mathrm{var\_x}} + \overline{V_k}/S)`,
      the share of one estimator term's variance that comes from the inputs;
    * ``frac_i2_better``: fraction of the group's parameters (with non-zero variance) where
      :math:`V_2 < V_1`;
    * ``recommended``: ``"i1"`` or ``"i2"``; ``n_i1``, ``n_i2``, ``n``: the median over the group's
      parameters with non-zero Fisher information of the Chebyshev sample size
      :meth:`~fishertut.VarianceReport.sample_size` for a relative error ``epsilon`` with probability
      ``1 - delta`` (``n`` for the recommended estimator); ``n_q90``: its 90% quantile.

    Args:
        report: from :func:`~fishertut.variance_report`.
        groups: as in :func:`layer_summary`.
        epsilon, delta: relative error and failure probability of the sample size.
        samples_per_input: labels per input :math:`S`.

    Returns:
        ``pandas.DataFrame`` indexed by group name.
    """
    import pandas as pd

    groups = default_groups(list(report.fisher)) if groups is None else groups
    sizes = {k: report.sample_size(epsilon, delta, estimator=k, samples_per_input=samples_per_input)
             for k in ("i1", "i2")}
    summary = layer_summary(report, groups)
    rows = {}
    for group, names in groups.items():
        fisher = group_values(report.fisher, names)
        var = {k: group_values(report.conditional_variance(k), names) for k in ("i1", "i2")}
        var_x = float(group_values(report.var_x, names).mean())
        live = (var["i1"] + var["i2"]) > 0
        rec = "i2" if float(var["i2"].sum()) <= float(var["i1"].sum()) else "i1"
        informative = fisher > 0
        n = {k: group_values(sizes[k], names)[informative].numpy() for k in ("i1", "i2")}
        median = {k: float(np.median(v)) if v.size else 1.0 for k, v in n.items()}
        row = {
            "num_params": int(fisher.numel()),
            "fisher": float(fisher.mean()),
            "rel_sd_i1": float(summary.loc[group, "rel_sd_i1"]),
            "rel_sd_i2": float(summary.loc[group, "rel_sd_i2"]),
        }
        for k in ("i1", "i2"):
            cond = float(var[k].mean()) / samples_per_input
            row[f"x_share_{k}"] = var_x / (var_x + cond) if var_x + cond > 0 else math.nan
        row["frac_i2_better"] = (float((var["i2"][live] < var["i1"][live]).double().mean())
                                 if bool(live.any()) else math.nan)
        row["recommended"] = rec
        row["n_i1"], row["n_i2"] = median["i1"], median["i2"]
        row["n"] = median[rec]
        row["n_q90"] = float(np.quantile(n[rec], 0.9)) if n[rec].size else 1.0
        rows[group] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def combine_by_group(estimates: Mapping[str, Mapping[str, Tensor]], choice: Mapping[str, str],
                     groups: Groups) -> dict[str, Tensor]:
    """One diagonal-FIM estimate with each group taken from its chosen estimator.

    Args:
        estimates: ``{estimator: {parameter name: tensor}}``, e.g. ``{"i1": fisher_diagonal(..., "i1"), ...}``.
        choice: ``{group: estimator}``, e.g. ``recommend_estimator(report, groups)["recommended"]``.
        groups: ``{group: [parameter names]}``.

    Returns:
        ``{parameter name: tensor}`` over all the groups' parameters.
    """
    out = {}
    for group, names in groups.items():
        est = choice[group]
        if est not in estimates:
            raise KeyError(f"group {group!r} wants estimator {est!r}, which is not among {sorted(estimates)}")
        for n in names:
            out[n] = estimates[est][n]
    return out


# --------------------------------------------------------------------------------------------------
# Bound variants
# --------------------------------------------------------------------------------------------------


@dataclass
class BoundVariants:
    r"""Per-input spectral bounds of :math:`V_1` and :math:`V_2` in several variants (spec 4.2); dicts of ``(N, *shape)``.

    Attributes:
        statistics: the library's :func:`~fishertut.per_input_statistics` (true :math:`I, V_1, V_2` and the
            projected bounds the library reports, :class:`~fishertut.Bounds`).
        unprojected: variant (a) without the projection:
            :math:`\|v_i\|^4\lambda_{\min/\max}(M)` and :math:`\|u_i\|^2\lambda_{\min/\max}(\Lambda)` with the
            eigenvalues over the whole output space (the lower bounds are 0 for a categorical output).
        v1_upper_split: variant (d), :math:`\lambda_{\max}(\mathrm{mat}\,K)\,\|v_i\|^4 - I(\theta_i|x)^2`.
        v1_upper_split_projected: variant (d) with :math:`\Pi v_i` in place of :math:`v_i`.
        v_norm_sq, u_norm_sq: :math:`\|v_i\|^2` and :math:`\|u_i\|^2`.
    """

    statistics: ConditionalStatistics
    unprojected: Bounds
    v1_upper_split: dict[str, Tensor]
    v1_upper_split_projected: dict[str, Tensor]
    v_norm_sq: dict[str, Tensor]
    u_norm_sq: dict[str, Tensor]


def kurtosis_matrix_max(family: ExponentialFamily, h: Tensor) -> Tensor:
    r""":math:`\lambda_{\max}(\mathrm{mat}\,K)` per input, ``(N,)``, :math:`K = \mathbb E[\varepsilon^{\otimes 4}]` (spec 4.2 (d)).

    Categorical: :math:`\mathrm{mat}\,K = \sum_c p_c m_c m_c^\top` with :math:`m_c = \mathrm{vec}(\varepsilon_c\varepsilon_c^\top)`,
    whose non-zero eigenvalues are those of the ``C × C`` Gram matrix
    :math:`\sqrt{p_cp_d}\,(\varepsilon_c^\top\varepsilon_d)^2`. Gaussian: :math:`(m+2)/\sigma^4` (spec 5).
    """
    if isinstance(family, Categorical):
        gram = family.residual_gram(h)
        sq = family.probabilities(h).sqrt()
        return torch.linalg.eigvalsh(sq.unsqueeze(2) * gram * sq.unsqueeze(1))[:, -1]
    if isinstance(family, Gaussian):
        return torch.full((h.shape[0],), (h.shape[1] + 2) * family.precision**2, dtype=h.dtype, device=h.device)
    raise NotImplementedError(f"kurtosis_matrix_max is implemented for Categorical and Gaussian, not {family!r}")


def bound_variants(model: nn.Module, inputs: Tensor, family: ExponentialFamily,
                   batch_size: int | None = None) -> BoundVariants:
    r"""The library's projected bounds, the unprojected variant (a) and variant (d), per input (spec 4.2).

    The norms come from the library itself: with the unit-variance Gaussian family,
    :math:`I(\theta_i|x) = \|v_i\|^2` and :math:`V_2 = \|u_i\|^2`, and the single-pair term of Î1 at the
    label :math:`y = h + \mathbf 1` (residual :math:`\varepsilon = \mathbf 1`) is :math:`(\mathbf 1^\top v_i)^2`; for the
    categorical family the projected norm is :math:`\|\Pi v_i\|^2 = \|v_i\|^2 - (\mathbf 1^\top v_i)^2/C`.

    Args:
        model: as in :func:`~fishertut.per_input_statistics` (small models: ``N × P`` values per statistic).
        inputs: a tensor ``(N, ...)``.
        family: :class:`~fishertut.Categorical` or :class:`~fishertut.Gaussian`.
        batch_size: passed on.

    Returns:
        :class:`BoundVariants`.
    """
    stats = per_input_statistics(model, inputs, family, batch_size=batch_size)
    norms = per_input_statistics(model, inputs, Gaussian(1.0), batch_size=batch_size)
    with torch.no_grad():
        h = model(inputs)
    spec = family.spectrum(h)
    m = h.shape[1]
    cov_eig = torch.linalg.eigvalsh(family.covariance(h))
    m_min_full = torch.zeros_like(spec.m_max) if m >= 2 else spec.m_max
    # the categorical Λ has the null vector 1: its smallest eigenvalue is exactly 0
    lam_min = torch.zeros_like(spec.m_max) if isinstance(family, Categorical) else cov_eig[:, 0].clamp_min(0)
    k_max = kurtosis_matrix_max(family, h)

    def per_input(scale: Tensor, values: Tensor) -> Tensor:
        return scale.reshape(-1, *([1] * (values.ndim - 1))) * values

    v4 = {k: v.square() for k, v in norms.fisher.items()}
    u2 = norms.var_i2
    unprojected = Bounds(
        v1_lower={k: per_input(m_min_full, v) for k, v in v4.items()},
        v1_upper={k: per_input(spec.m_max, v) for k, v in v4.items()},
        v2_lower={k: per_input(lam_min, v) for k, v in u2.items()},
        v2_upper={k: per_input(cov_eig[:, -1], v) for k, v in u2.items()},
    )
    split = {k: per_input(k_max, v) - stats.fisher[k].square() for k, v in v4.items()}
    if isinstance(family, Categorical):
        ones = estimator_terms(model, inputs, Gaussian(1.0), targets=h + 1, batch_size=batch_size).i1
        pv4 = {k: (v - ones[k][:, 0] / m).clamp_min(0).square() for k, v in norms.fisher.items()}
    else:
        pv4 = v4
    split_projected = {k: per_input(k_max, v) - stats.fisher[k].square() for k, v in pv4.items()}
    return BoundVariants(statistics=stats, unprojected=unprojected, v1_upper_split=split,
                         v1_upper_split_projected=split_projected, v_norm_sq=norms.fisher, u_norm_sq=u2)


# --------------------------------------------------------------------------------------------------
# Exact per-class terms and Monte-Carlo repetitions (categorical outputs)
# --------------------------------------------------------------------------------------------------


@dataclass
class ClassTable:
    r"""Single-pair terms of both estimators for every input and every class (categorical output).

    Attributes:
        probs: ``(N, C)`` class probabilities :math:`p_c(x_n)`.
        i1: ``{name: (N, C, *shape)}``, :math:`(\partial_{\theta_i}\log p(c|x_n))^2`.
        i2: ``{name: (N, C, *shape)}``, :math:`-\partial^2_{\theta_i}\log p(c|x_n)`.
    """

    probs: Tensor
    i1: dict[str, Tensor]
    i2: dict[str, Tensor]

    def terms(self, estimator: str) -> dict[str, Tensor]:
        """``i1`` or ``i2``."""
        if estimator not in ("i1", "i2"):
            raise ValueError(f"estimator must be 'i1' or 'i2', got {estimator!r}")
        return self.i1 if estimator == "i1" else self.i2

    def select(self, keep: Mapping[str, Tensor]) -> ClassTable:
        """A table restricted to some entries: ``keep`` maps parameter names to flat indices into the parameter.

        The result's tensors are ``(N, C, len(indices))``; parameters not in ``keep`` are dropped. Use it to
        follow a subset of the parameters in :func:`simulate_estimates` at a fraction of the cost.
        """
        pick = lambda terms: {n: terms[n].reshape(*terms[n].shape[:2], -1)[:, :, i.to(terms[n].device)]  # noqa: E731
                              for n, i in keep.items()}
        return ClassTable(probs=self.probs, i1=pick(self.i1), i2=pick(self.i2))

    def estimate(self, estimator: str, indices: Tensor, labels: Tensor) -> dict[str, Tensor]:
        r"""The estimator's value for inputs ``indices`` ``(n,)`` with labels ``labels`` ``(n, S)``.

        Equals :func:`~fishertut.fisher_diagonal` on ``inputs[indices]`` with those labels.
        """
        labels = labels.reshape(indices.shape[0], -1)
        rows = indices.unsqueeze(1).expand_as(labels)
        return {k: v[rows, labels].mean(dim=(0, 1)) for k, v in self.terms(estimator).items()}


def class_table(model: nn.Module, inputs: Tensor, family: Categorical, batch_size: int | None = None) -> ClassTable:
    r"""Every single-pair term of Î1 and Î2 for each input and class, from :func:`~fishertut.estimator_terms`.

    One call per class ``c`` with the labels all set to ``c``. Memory: ``2 × N × C × P`` values.
    Since :math:`\mathbb E_y[\cdot] = \sum_c p_c(\cdot)`, the table gives :math:`I(\theta_i|x_n)`, :math:`V_1`, :math:`V_2`
    as weighted sums (the tests check that) and any Monte-Carlo repetition of the estimators as a weighted
    sum of its rows (:func:`simulate_estimates`).

    Args:
        model: the network; its output must be ``(N, C)`` logits.
        inputs: ``(N, ...)``.
        family: :class:`~fishertut.Categorical`.
        batch_size: passed on.
    """
    if not isinstance(family, Categorical):
        raise TypeError(f"class_table needs a Categorical family, got {family!r}")
    with torch.no_grad():
        h = model(inputs)
    n, c = h.shape
    probs = family.probabilities(h)
    parts: dict[str, list[dict[str, Tensor]]] = {"i1": [], "i2": []}
    for cls in range(c):
        labels = torch.full((n,), cls, dtype=torch.int64, device=h.device)
        tm = estimator_terms(model, inputs, family, targets=labels, batch_size=batch_size)
        parts["i1"].append(tm.i1)
        parts["i2"].append(tm.i2)
    stack = lambda ps: {k: torch.cat([p[k] for p in ps], dim=1) for k in ps[0]}  # noqa: E731
    return ClassTable(probs=probs, i1=stack(parts["i1"]), i2=stack(parts["i2"]))


def simulate_estimates(table: ClassTable, estimator: str, num_inputs: int, samples_per_input: int = 1,
                       repetitions: int = 1000, generator: torch.Generator | None = None,
                       max_rows: int = 1 << 20) -> dict[str, Tensor]:
    r"""Independent repetitions of Î1 or Î2 with inputs drawn from the table's inputs and labels from the model.

    Each repetition draws ``num_inputs`` inputs uniformly with replacement from the table's ``N`` inputs and
    ``samples_per_input`` labels :math:`y\sim p(y|x)` for each, and returns the estimator (the mean of the
    single-pair terms), exactly what :func:`~fishertut.fisher_diagonal` returns for those inputs and labels
    (:meth:`ClassTable.estimate`). The estimate is linear in the counts :math:`w_{nc}` of the
    (input, class) pairs drawn, so all repetitions are one matrix product ``counts @ terms``.

    Args:
        table: from :func:`class_table`.
        estimator: ``"i1"`` or ``"i2"``.
        num_inputs: inputs per repetition.
        samples_per_input: labels per input.
        repetitions: number of independent repetitions ``R``.
        generator: random source (on the table's device).
        max_rows: at most this many (repetition, input) rows are drawn at once (memory).

    Returns:
        ``{name: (R, *shape)}`` estimates.
    """
    terms = table.terms(estimator)
    probs = table.probs
    n_pool, c = probs.shape
    device = probs.device
    reps_per_chunk = max(1, max_rows // max(1, num_inputs))
    counts = []
    for start in range(0, repetitions, reps_per_chunk):
        r = min(reps_per_chunk, repetitions - start)
        idx = torch.randint(0, n_pool, (r, num_inputs), generator=generator, device=device)
        labels = torch.multinomial(probs[idx.reshape(-1)], samples_per_input, replacement=True,
                                   generator=generator).reshape(r, -1)
        cell = (idx.unsqueeze(2) * c + labels.reshape(r, num_inputs, samples_per_input)).reshape(r, -1)
        w = torch.zeros(r, n_pool * c, dtype=probs.dtype, device=device)
        w.scatter_add_(1, cell, torch.ones_like(cell, dtype=probs.dtype))
        counts.append(w)
    w = torch.cat(counts) / (num_inputs * samples_per_input)
    return {k: (w @ v.reshape(n_pool * c, -1)).reshape(repetitions, *v.shape[2:]) for k, v in terms.items()}


def empirical_variance(samples: Tensor, mean: Tensor | None = None, dim: int = 0) -> tuple[Tensor, Tensor]:
    r"""Variance of repeated estimates along ``dim``, and the standard error of that variance estimate.

    With the true ``mean`` :math:`\mu` known, the estimate is :math:`\hat\sigma^2 = \frac1R\sum_r (X_r-\mu)^2`,
    an average of ``R`` i.i.d. values :math:`(X_r-\mu)^2`, so its standard error is their standard deviation
    over :math:`\sqrt R`. Otherwise it is the unbiased sample variance :math:`s^2`, with
    :math:`\mathrm{Var}(s^2) = \frac1R\big(\mu_4 - \frac{R-3}{R-1}\sigma^4\big)`, :math:`\mu_4` the fourth central
    moment (plug-in estimates of :math:`\mu_4` and :math:`\sigma^2`).

    Args:
        samples: repetitions along ``dim`` (at least 2; 4 without ``mean``).
        mean: the known expectation, broadcastable to ``samples`` with ``dim`` removed; ``None`` if unknown.
        dim: the repetition axis.

    Returns:
        ``(variance, standard error)``, each ``samples`` without ``dim``.
    """
    r = samples.shape[dim]
    if mean is not None:
        sq = (samples - mean.unsqueeze(dim)).square()
        if r < 2:
            raise ValueError(f"need at least 2 repetitions, got {r}")
        return sq.mean(dim), sq.std(dim) / math.sqrt(r)
    if r < 4:
        raise ValueError(f"need at least 4 repetitions without a known mean, got {r}")
    centred = samples - samples.mean(dim, keepdim=True)
    var = centred.square().sum(dim) / (r - 1)
    m4 = centred.pow(4).mean(dim)
    sigma2 = centred.square().mean(dim)
    var_of_var = (m4 - (r - 3) / (r - 1) * sigma2.square()) / r
    return var, var_of_var.clamp_min(0).sqrt()
