r"""The MNIST case studies: a 4-layer MLP (the paper's Figure 2 and appendix figures) or a LeNet, through training.

After every epoch (and once before training), on a fixed evaluation set :math:`x_1..x_N` of test digits,
:func:`run_case_study` records for each layer of the network (``network="mlp"``: four dense layers;
``network="lenet"``: two convolutions and two dense layers, :func:`~fishertut.lab.models.lenet`), with the
layer's weights, its biases, and both together as parameter groups:

* the mean Fisher information :math:`\mathcal I(\theta_i)` over the group;
* the conditional variances :math:`\frac1N\sum_n V_k(\theta_i|x_n)` of the single-label terms of Î1 and Î2,
  their spectral lower and upper bounds (:class:`~fishertut.Bounds`) and the input term ``var_x``
  (chapter :doc:`/book/input_and_label_variance`), each averaged over the group;
* the empirical Fisher (Î1 with the data labels, chapter :doc:`/book/empirical_fisher`);
* a Monte-Carlo check: Î1 and Î2 from ``mc_inputs`` inputs drawn with replacement from the evaluation set
  and ``mc_samples`` model labels each, with the standard errors of
  :meth:`~fishertut.VarianceReport.estimator_variance`.

**Pooling** (the paper does not say how it pools; our choice, shared with :func:`fishertut.pooling.layer_summary`,
which computes these columns): a group's Fisher information and variances are the means of its parameters'
values, its standard deviation the square root of the mean variance (a root mean square of the
parameters' standard deviations), and the log-ratio of a bound to the true variance is
:math:`\log_{10}(\overline{\text{bound}}/\overline{V_k})` of the pooled means. Every per-parameter bound holds
(for every input), so the pooled upper ratios are :math:`\ge 0` too; ``bounds_hold`` records the
per-parameter check. The pooled Monte-Carlo standard error ``mc_*_se`` is the mean of the parameters'
standard errors, an upper bound on the standard error of the pooled mean (triangle inequality: the
parameters' estimates are correlated through shared inputs and labels), and ``mc_*_rms_z`` the root mean
square over the group of the standardised errors
:math:`z_i = (\hat{\mathcal I}_k(\theta_i) - \mathcal I(\theta_i))/\mathrm{se}_i`; each :math:`z_i^2` has expectation
exactly 1.

Each row also says the layer's kind (``"conv"`` or ``"dense"``), the engine that computed it (``path``) and
whether all of the group's parameters are proven piecewise linear from the traced graph (``piecewise_linear``:
then :math:`u \equiv 0`, :math:`V_2 = 0` and the single-label Î2 equals the Fisher information of the input).

See chapters :doc:`/book/mnist_case_study` and :doc:`/book/cnn_case_study` of the book.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..api import fisher_diagonal, variance_report
from ..families import Categorical
from ..groups import flatten, layer_groups
from ..pooling import layer_summary
from ..report import VarianceReport
from .bounds import bounds_hold
from .data import MNIST, balanced_subset, load_mnist
from .models import default_device, lenet, mlp
from .training import train_classifier

__all__ = ["DEFAULT_WIDTHS", "NETWORKS", "COLUMNS", "CaseStudy", "run_case_study"]

#: Widths of our 4-layer network (the paper does not give them): 4 Linear layers, 3 hidden.
DEFAULT_WIDTHS: tuple[int, ...] = (784, 128, 64, 32, 10)

#: The networks :func:`run_case_study` can train: ``"mlp"`` (:func:`~fishertut.lab.models.mlp` of ``widths``) and
#: ``"lenet"`` (:func:`~fishertut.lab.models.lenet`, on the flat digits).
NETWORKS: tuple[str, ...] = ("mlp", "lenet")

#: Columns of :attr:`CaseStudy.table`, one row per (activation, epoch, layer, group). The pooled statistics
#: are those of :func:`fishertut.pooling.layer_summary`; ``network`` is a key of :data:`NETWORKS`, ``kind``
#: the layer's kind (``"conv"``, ``"dense"``, or the module's class name in lower case), ``path`` the engine of
#: the variance report (:attr:`fishertut.VarianceReport.path`) and ``piecewise_linear`` whether every parameter
#: of the group is in :attr:`fishertut.VarianceReport.piecewise_linear`.
COLUMNS: tuple[str, ...] = (
    "activation",
    "network",
    "epoch",
    "layer",
    "kind",
    "group",
    "path",
    "piecewise_linear",
    "num_params",
    "fisher",
    "var_x",
    "var_i1",
    "var_i2",
    "v1_lower",
    "v1_upper",
    "v2_lower",
    "v2_upper",
    "sd_i1",
    "sd_i2",
    "rel_sd_i1",
    "rel_sd_i2",
    "sd_i1_lower",
    "sd_i1_upper",
    "sd_i2_lower",
    "sd_i2_upper",
    "log10_v1_upper",
    "log10_v2_upper",
    "log10_v1_lower",
    "log10_v2_lower",
    "bounds_hold",
    "empirical_fisher",
    "mc_i1",
    "mc_i2",
    "mc_i1_se",
    "mc_i2_se",
    "mc_i1_rms_z",
    "mc_i2_rms_z",
    "mc_i1_max_z",
    "mc_i2_max_z",
    "train_loss",
    "test_accuracy",
)

_BOUND_RTOL = 1e-9


@dataclass
class CaseStudy:
    """Result of :func:`run_case_study`.

    Attributes:
        table: ``pandas.DataFrame`` with the :data:`COLUMNS`, one row per (activation, epoch, layer, group);
            ``group`` is ``"weight"``, ``"bias"`` or ``"layer"`` (both together); epoch 0 is the initial network.
        model: the trained network (eval mode).
        report: the :class:`~fishertut.VarianceReport` of the last epoch, per parameter.
        monte_carlo: the last epoch's Monte-Carlo estimates ``{"i1": ..., "i2": ...}`` (dicts of tensors).
        settings: everything needed to rerun it (network, widths, activation, epochs, optimiser, sizes, seed,
            device, dtype, data source).
        seconds: wall-clock time of the run.
    """

    table: Any
    model: nn.Module
    report: VarianceReport
    monte_carlo: dict[str, dict[str, Tensor]]
    settings: dict[str, Any]
    seconds: float = 0.0
    eval_x: Tensor | None = field(default=None, repr=False)
    eval_y: Tensor | None = field(default=None, repr=False)


def _kind(module: nn.Module) -> str:
    """``"conv"`` for a convolution, ``"dense"`` for a linear layer, else the class name in lower case."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return "conv"
    if isinstance(module, nn.Linear):
        return "dense"
    return type(module).__name__.lower()


def _summarise(
    model: nn.Module,
    report: VarianceReport,
    empirical: dict[str, Tensor],
    monte_carlo: dict[str, dict[str, Tensor]],
    mc_variance: dict[str, dict[str, Tensor]],
) -> list[dict[str, Any]]:
    """One row per (layer, group): :func:`fishertut.pooling.layer_summary` plus bounds, eFIM and Monte Carlo."""
    groups: dict[str, list[str]] = {}
    where: dict[str, tuple[int, str]] = {}
    kinds: dict[int, str] = {}
    for li, names in enumerate(layer_groups(model).values(), start=1):
        kinds[li] = _kind(model.get_submodule(names[0].rsplit(".", 1)[0])) if "." in names[0] else "parameter"
        members = {
            "weight": [n for n in names if n.endswith("weight")],
            "bias": [n for n in names if n.endswith("bias")],
            "layer": list(names),
        }
        for group, ns in members.items():
            if ns:
                key = f"layer {li} {group}"
                groups[key], where[key] = ns, (li, group)
    summary = layer_summary(report, groups)
    b = report.bounds
    bounds = {"1": (report.var_i1, b.v1_lower, b.v1_upper), "2": (report.var_i2, b.v2_lower, b.v2_upper)}
    rows = []
    for key, ns in groups.items():
        li, group = where[key]
        row: dict[str, Any] = {"layer": li, "kind": kinds[li], "group": group, **summary.loc[key].to_dict()}
        row["path"] = report.path
        row["piecewise_linear"] = all(n in report.piecewise_linear for n in ns)
        row["num_params"] = int(row["num_params"])
        hold = True
        for k, (var, lo, up) in bounds.items():
            row[f"sd_i{k}_lower"] = math.sqrt(row[f"v{k}_lower"])
            row[f"sd_i{k}_upper"] = math.sqrt(row[f"v{k}_upper"])
            hold = hold and bounds_hold(flatten(lo, ns), flatten(var, ns), flatten(up, ns), _BOUND_RTOL)
        row["bounds_hold"] = hold
        exact = flatten(report.fisher, ns)
        row["empirical_fisher"] = float(flatten(empirical, ns).mean())
        for k in ("i1", "i2"):
            est = flatten(monte_carlo[k], ns)
            se = flatten(mc_variance[k], ns).clamp_min(0).sqrt()
            err = est - exact
            live = se > 0
            # A parameter with zero variance (a unit dead on every input) must be estimated exactly.
            if not bool(live.all()):
                scale = float(exact.abs().max()) or 1.0
                if float(err[~live].abs().max()) > 1e-9 * scale:
                    raise RuntimeError(f"{key}: a zero-variance {k} estimate differs from the exact value")
            z = err[live] / se[live]
            row[f"mc_{k}"] = float(est.mean())
            row[f"mc_{k}_se"] = float(se.mean())
            row[f"mc_{k}_rms_z"] = float(z.square().mean().sqrt()) if z.numel() else 0.0
            row[f"mc_{k}_max_z"] = float(z.abs().max()) if z.numel() else 0.0
        rows.append(row)
    return rows


def run_case_study(
    activation: str = "sigmoid",
    widths: Sequence[int] = DEFAULT_WIDTHS,
    epochs: int = 20,
    eval_inputs: int | tuple[Tensor, Tensor] = 1000,
    *,
    data: MNIST | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = False,
    lr: float = 3e-3,
    batch_size: int = 64,
    dtype: torch.dtype = torch.float64,
    mc_inputs: int | None = None,
    mc_samples: int = 1,
    network: str = "mlp",
) -> CaseStudy:
    r"""Train a network on MNIST and track, per layer and epoch, the FIM, the variances of Î1 and Î2 and their bounds.

    The network is ``ft.lab.models.mlp(widths, activation, seed=seed)`` (``network="mlp"``) or
    ``ft.lab.models.lenet(activation, seed=seed)`` (``network="lenet"``; it takes the flat digits), with a
    linear last layer and softmax output, trained with Adam (``lr``, ``batch_size``, seeded shuffling) on
    ``data.train_x``. Before training and after every epoch the statistics of the module docstring are computed
    on the evaluation set.

    Args:
        activation: a key of :data:`fishertut.lab.models.ACTIVATIONS` (the paper: ``"sigmoid"``).
        widths: ``[784, h_1, ..., 10]`` of the MLP; the paper has 4 Linear layers (widths not known). Not used
            by the LeNet.
        epochs: training epochs (the paper: 20).
        eval_inputs: the number of test digits to evaluate on (a class-balanced, seeded subset of
            ``data.test_x``), or an ``(x, y)`` pair of inputs and labels.
        data: :class:`~fishertut.lab.data.MNIST`; default :func:`~fishertut.lab.data.load_mnist`.
        device: default CUDA when available, else the CPU.
        seed: seeds the initialisation, the shuffling, the evaluation subset and the Monte-Carlo labels.
        progress: show a ``tqdm`` progress bar over the epochs.
        lr: Adam's learning rate (:func:`~fishertut.lab.training.train_classifier`).
        batch_size: of the training loop.
        dtype: of the network and all computations (float64 keeps the exact checks tight).
        mc_inputs: inputs per Monte-Carlo estimate, drawn with replacement from the evaluation set
            (default: the evaluation set's size).
        mc_samples: model labels per Monte-Carlo input.
        network: a key of :data:`NETWORKS`.

    Returns:
        :class:`CaseStudy`; its ``table`` is a ``pandas.DataFrame`` with the :data:`COLUMNS`.
    """
    import pandas as pd

    if network not in NETWORKS:
        raise ValueError(f"network must be one of {list(NETWORKS)}, got {network!r}")
    start = time.perf_counter()
    device = torch.device(device) if device is not None else default_device()
    data = load_mnist(dtype=dtype, device=device) if data is None else data.to(dtype, device)
    train_x, train_y, test_x, test_y = data.train_x, data.train_y, data.test_x, data.test_y
    if isinstance(eval_inputs, int):
        idx = balanced_subset(data.test_y, eval_inputs, seed).to(device)
        eval_x, eval_y = test_x[idx], test_y[idx]
    else:
        eval_x, eval_y = eval_inputs
        eval_x, eval_y = eval_x.to(device=device, dtype=dtype), eval_y.to(device)
    n_eval = eval_x.shape[0]
    mc_inputs = n_eval if mc_inputs is None else mc_inputs
    fam = Categorical()
    if network == "mlp":
        net = mlp(list(widths), activation, seed=seed, dtype=dtype, device=device)
    else:
        net = lenet(activation, seed=seed, dtype=dtype, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    rows: list[dict[str, Any]] = []
    last: dict[str, Any] = {}

    def evaluate(epoch: int, model: nn.Module, train_loss: float) -> None:
        report = variance_report(model, eval_x, fam)
        empirical = fisher_diagonal(model, eval_x, fam, "i1", targets=eval_y)
        pick = torch.randint(0, n_eval, (mc_inputs,), generator=gen, device=device)
        xs = eval_x[pick]
        mc = {k: fisher_diagonal(model, xs, fam, k, samples_per_input=mc_samples, generator=gen) for k in ("i1", "i2")}
        mc_var = {
            k: report.estimator_variance(k, num_inputs=mc_inputs, samples_per_input=mc_samples) for k in ("i1", "i2")
        }
        with torch.no_grad():
            acc = float((model(test_x).argmax(1) == test_y).double().mean())
        for row in _summarise(model, report, empirical, mc, mc_var):
            row.update(activation=activation, network=network, epoch=epoch, train_loss=train_loss, test_accuracy=acc)
            rows.append(row)
        last.update(report=report, mc=mc)

    def on_epoch_end(epoch: int, model: nn.Module) -> None:
        with torch.no_grad():
            train_loss = float(nn.functional.cross_entropy(model(train_x), train_y))
        evaluate(epoch, model, train_loss)

    on_epoch_end(0, net)
    losses = train_classifier(
        net,
        train_x,
        train_y,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        progress=progress,
        on_epoch_end=on_epoch_end,
    )
    table = pd.DataFrame(rows)[list(COLUMNS)]
    settings = {
        "network": network,
        "activation": activation,
        **({"widths": list(widths)} if network == "mlp" else {}),
        "epochs": epochs,
        "optimizer": "Adam",
        "lr": lr,
        "batch_size": batch_size,
        "eval_inputs": n_eval,
        "mc_inputs": mc_inputs,
        "mc_samples": mc_samples,
        "seed": seed,
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "data": data.source,
        "train_inputs": int(train_x.shape[0]),
        "epoch_mean_losses": losses,
    }
    return CaseStudy(
        table=table,
        model=net,
        report=last["report"],
        monte_carlo=last["mc"],
        settings=settings,
        seconds=time.perf_counter() - start,
        eval_x=eval_x,
        eval_y=eval_y,
    )
