r"""The layer-wise engine for ``nn.Sequential`` networks of ``Linear`` layers and elementwise activations.

Backward recursion (chapter "The two estimators", section "What each costs"), for a set of output-space
channels :math:`R` (``K × C`` per input):

* first derivatives :math:`g = \partial (R h)/\partial(\cdot)`: through a Linear layer :math:`g \leftarrow g W`,
  through an activation :math:`g \leftarrow g \odot \sigma'(z)`;
* diagonal second derivatives for curvature channels :math:`R_2`: every curved activation :math:`e` with input
  :math:`z_e` is a *source* :math:`d_e = \sigma_e''(z_e) \odot g_e` (with :math:`g_e` the derivative w.r.t. its
  output), and at a shallower pre-activation :math:`z`

  .. math:: \mathrm{diag}\,\frac{\partial^2 (r^\top h)}{\partial z^2} = \sum_e A_{e}^{\odot 2\top} d_e,
            \qquad A_e = \partial z_e/\partial z,

  because :math:`\partial^2 (r^\top h)/\partial z^2 = \sum_e A_e^\top \mathrm{diag}(d_e) A_e`. The :math:`A_e`
  are shared by all channels and propagated like :math:`g`. The last Linear layer has no source
  below the output, so its :math:`u \equiv 0` exactly; ReLU-type activations add no source.

Nothing of size ``N × C × P`` is formed: per batch, the largest tensors are the :math:`A_e` (``N × n_e × n``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import UnsupportedModelError
from ..inspection import hook_reason, override_reason, parametrization_reason, shared_parameter_reason
from ..terms import UnitTerms
from .activations import SUPPORTED_ACTIVATIONS, ActivationDerivatives, derivatives_for
from .graph.trace import Traced, piecewise_linear_parameters

__all__ = ["LayerwiseEngine"]

_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.AlphaDropout, nn.FeatureAlphaDropout)
SUPPORTED_NAMES = ", ".join(
    ["Linear", "Flatten", "Identity", "Dropout (eval mode)"] + [t.__name__ for t in SUPPORTED_ACTIVATIONS]
)


@dataclass
class _Linear:
    module: nn.Linear
    weight: str | None
    bias: str | None


@dataclass
class _Activation:
    derivs: ActivationDerivatives
    module: nn.Module


@dataclass
class _Flatten:
    module: nn.Flatten


def _leaves(seq: nn.Sequential, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """Every module ``Sequential.forward`` runs, in order: a reused module appears at each use."""
    for name, child in seq._modules.items():
        if type(child) is nn.Sequential:
            yield from _leaves(child, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", child


class LayerwiseEngine:
    """Exact per-unit derivative terms for a supported ``nn.Sequential``; see the module docstring.

    Args:
        model: the network. Raises :class:`UnsupportedModelError` naming the first unsupported module.
        traced: the model's :func:`~fishertut.engines.graph.trace.trace`, where the caller has it.
    """

    name = "layerwise"

    def __init__(self, model: nn.Module, traced: Traced | None = None) -> None:
        reason = self.unsupported_reason(model)
        if reason is not None:
            raise UnsupportedModelError(reason)
        self.model = model
        self.piecewise_linear = piecewise_linear_parameters(model, traced)
        self.steps: list[_Linear | _Activation | _Flatten] = []
        for path, m in _leaves(model):
            if isinstance(m, nn.Linear):
                w, b = m.weight, m.bias
                self.steps.append(
                    _Linear(
                        m,
                        f"{path}.weight" if w.requires_grad else None,
                        f"{path}.bias" if b is not None and b.requires_grad else None,
                    )
                )
            elif isinstance(m, nn.Flatten):
                self.steps.append(_Flatten(m))
            elif not isinstance(m, _PASS_THROUGH):
                self.steps.append(_Activation(derivatives_for(m), m))
        trainable = [i for i, s in enumerate(self.steps) if isinstance(s, _Linear) and (s.weight or s.bias)]
        self.first_trainable = trainable[0] if trainable else len(self.steps)

    @classmethod
    def unsupported_reason(cls, model: nn.Module, traced: Traced | None = None) -> str | None:
        """``None`` if the engine supports ``model``, else a message naming the offending module.

        Beyond its module types, the model must have no forward hooks, no parametrizations and no parameter
        used twice (a shared ``Parameter`` or a ``Linear`` reused): each would change the function or the
        parameters the layer list describes. Reused parameter-free activations are fine. A module is taken
        as a known layer only with its stock ``forward`` (:func:`~fishertut.inspection.overridden_base`).
        ``traced`` is not needed (the layer list is read from the modules).
        """
        if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
            return (
                f"the layer-wise path needs an nn.Sequential (with the standard forward), got "
                f"{type(model).__name__}; use path='generic'"
            )
        for reason in (hook_reason(model), parametrization_reason(model), shared_parameter_reason(model)):
            if reason is not None:
                return f"{reason}, which the layer-wise path cannot honour; use path='generic'"
        linear_params = set()
        for path, m in _leaves(model):
            reason = override_reason(path, m, "layer-wise")
            if reason is not None:
                return f"{reason}; use path='generic'"
            if isinstance(m, nn.Linear):
                linear_params.update(id(p) for p in m.parameters())
                continue
            if isinstance(m, _PASS_THROUGH):
                continue
            if isinstance(m, nn.Flatten):
                if m.start_dim != 1 or m.end_dim != -1:
                    return (
                        f"module '{path}' (Flatten) must flatten dims 1..-1, got start_dim={m.start_dim}, "
                        f"end_dim={m.end_dim}"
                    )
                continue
            if derivatives_for(m) is None:
                return (
                    f"module '{path}' ({type(m).__name__}) is not supported by the layer-wise path; "
                    f"supported: {SUPPORTED_NAMES}"
                )
        for name, p in model.named_parameters():
            if id(p) not in linear_params:
                return f"parameter '{name}' does not belong to a Linear layer"
        return None

    def input_reason(self, x: Tensor) -> str | None:
        """``None`` if every Linear layer would see a 2-D input for inputs shaped like ``x``, else why not."""
        ndim = x.ndim
        for step in self.steps:
            if isinstance(step, _Flatten):
                ndim = 2
            elif isinstance(step, _Linear) and ndim != 2:
                return (
                    f"the layer-wise path needs 2-D inputs (N, features) to every Linear layer; inputs of shape "
                    f"{tuple(x.shape)} reach one with {ndim} dims. Add nn.Flatten() first or use path='generic'"
                )
        return None

    def per_input_elements(self, channels: int, curvature: bool) -> int:
        """Peak number of tensor elements per input in :meth:`backward` (to choose a batch size).

        Without curvature that is a few ``channels × width`` tensors; with it, the source Jacobians
        :math:`A_e` (``n_e × n`` each) and their squares dominate.
        """
        linears = [s.module for s in self.steps if isinstance(s, _Linear)]
        # first derivatives only: the (N, K, width) channel tensors and the stored activations
        peak = 2 * channels * max(m.out_features for m in linears) + 2 * max(m.in_features for m in linears)
        if not curvature:
            return peak
        source_units, width = 0, None
        for i in range(len(self.steps) - 1, self.first_trainable - 1, -1):
            step = self.steps[i]
            if isinstance(step, _Linear):
                peak = max(peak, 2 * source_units * step.module.out_features + 4 * channels * step.module.out_features)
                width = step.module.in_features
                if i != self.first_trainable:
                    peak = max(peak, 2 * source_units * width)
            elif isinstance(step, _Activation) and step.derivs.curved and width is not None:
                source_units += width
        return max(peak, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Run the network, keeping each Linear layer's input and each activation's input."""
        tape = []
        a = x
        for step in self.steps:
            if not isinstance(step, _Flatten):
                tape.append(a)
            # an in-place activation would overwrite the stored input: it gets a copy
            a = step.module(a.clone() if getattr(step.module, "inplace", False) is True else a)
        return a, tape

    def backward(
        self, tape: list[Tensor], channels: Tensor, curvature_channels: Tensor | None = None
    ) -> Iterator[UnitTerms]:
        """Yield one :class:`UnitTerms` per trainable Linear layer, last layer first.

        Args:
            tape: from :meth:`forward`.
            channels: ``(N, K, C)`` output-space directions for the first derivatives.
            curvature_channels: ``(N, K2, C)`` directions for the diagonal second derivatives; ``None`` to skip
                them; the very same tensor as ``channels`` to share the first-derivative pass.
        """
        shared = curvature_channels is channels
        k = channels.shape[1]
        g = channels if curvature_channels is None or shared else torch.cat([channels, curvature_channels], 1)
        want_curv = curvature_channels is not None
        sources: list[_Source] = []
        stored = iter(reversed(tape))
        for i in range(len(self.steps) - 1, self.first_trainable - 1, -1):
            step = self.steps[i]
            if isinstance(step, _Flatten):
                continue
            inp = next(stored)
            if isinstance(step, _Linear):
                weight = step.module.weight
                targets = [(n, a) for n, a in ((step.weight, inp), (step.bias, None)) if n is not None]
                if targets:
                    curv = None
                    if want_curv:
                        curv = g.new_zeros(g.shape[0], curvature_channels.shape[1], weight.shape[0])
                        for src in sources:
                            curv = curv + src.contribution()
                    yield UnitTerms(jac=g[:, :k], curv=curv, targets=targets)
                if i == self.first_trainable:
                    return
                g = g @ weight
                for src in sources:
                    src.through_linear(weight)
            elif isinstance(step, _Activation):
                new = None
                if want_curv and step.derivs.curved:
                    s1, s2 = step.derivs.pair(inp)
                    new = _Source(s2.unsqueeze(1) * (g[:, :k] if shared else g[:, k:]))
                else:
                    s1 = step.derivs.first(inp)
                g = g * s1.unsqueeze(1)
                for src in sources:
                    src.through_activation(s1)
                if new is not None:
                    sources.append(new)


class _Source:
    r"""One curvature source :math:`e` below the current point.

    It is :math:`d_e` ``(N, K2, n_e)`` and :math:`A_e = M\,\mathrm{diag}(c)`, kept as a matrix :math:`M` (``None``
    for the identity; ``(1, n_e, n)``
    when shared by all inputs, else ``(N, n_e, n)``) and a lazy column scale :math:`c` ``(N, n)`` (``None`` for
    ones), so that an activation costs nothing and :math:`d_e A_e^{\odot 2} = (d_e M^{\odot 2}) \odot c^2`.
    """

    def __init__(self, d: Tensor) -> None:
        self.d = d
        self.matrix: Tensor | None = None
        self.scale: Tensor | None = None

    def contribution(self) -> Tensor:
        r""":math:`d_e A_e^{\odot 2}`, shape ``(N, K2, n)``: this source's part of the diagonal second derivative."""
        if self.matrix is None:
            out = self.d
        elif self.matrix.shape[0] == 1:
            n, k2, n_e = self.d.shape
            out = (self.d.reshape(n * k2, n_e) @ self.matrix[0].square()).reshape(n, k2, -1)
        else:
            out = self.d @ self.matrix.square()
        return out if self.scale is None else out * self.scale.square().unsqueeze(1)

    def through_activation(self, s1: Tensor) -> None:
        r""":math:`A_e \leftarrow A_e\,\mathrm{diag}(\sigma'(z))`."""
        self.scale = s1 if self.scale is None else self.scale * s1

    def through_linear(self, weight: Tensor) -> None:
        r""":math:`A_e \leftarrow A_e W`."""
        if self.matrix is None:
            self.matrix = weight.unsqueeze(0) if self.scale is None else self.scale.unsqueeze(2) * weight
        else:
            m = self.matrix if self.scale is None else self.matrix * self.scale.unsqueeze(1)
            self.matrix = m @ weight
        self.scale = None
