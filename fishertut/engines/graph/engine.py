r"""The graph engine: exact per-parameter derivative terms for convolutional and residual networks.

The model is traced into a graph of supported operations (:mod:`fishertut.engines.graph.trace`). Per batch:

* **first derivatives** :math:`J = \partial (R h)/\partial\theta` for ``K`` output-space channels :math:`R` come
  from one backward pass that carries the ``K`` cotangents of every input at once (folded into the batch
  axis of each operation); at an affine layer the per-input parameter derivatives are contracted from them
  (for a convolution, with the unfolded input patches; a Linear layer keeps the factored unit form of
  :mod:`fishertut.terms`).
* **diagonal second derivatives** extend the source recursion of :mod:`fishertut.engines.layerwise` to graphs and
  weight sharing. Every curved elementwise activation :math:`e` (input :math:`z_e`) is a source with
  :math:`d_e = \sigma_e''(z_e)\odot g_e`, and at the output :math:`z` of an affine layer

  .. math:: \frac{\partial^2 (r^\top h)}{\partial z^2} = \sum_e A_e^\top\,\mathrm{diag}(d_e)\,A_e,\qquad
            A_e = \partial z_e/\partial z,

  where :math:`A_e` is the total derivative over all paths of the graph (residual additions sum it). As
  :math:`z` is affine in :math:`\theta`,

  .. math:: u_i = \sum_e \sum_k d_{e,k}\Big(\sum_p A_{e,kp}\,\frac{\partial z_p}{\partial\theta_i}\Big)^2,

  a squared per-source-unit parameter derivative: the :math:`A_e` are carried backward like extra channels
  (shared by all curvature channels) and contracted at each layer exactly like the first derivatives. Where
  only elementwise operations separate :math:`z` from :math:`z_e`, :math:`A_e` is diagonal and kept so:
  then :math:`u_i = \sum_p d_{e,p} A_{e,pp}^2 (\partial z_p/\partial\theta_i)^2`, for a convolution a correlation
  of :math:`d_e A_e^2` with the squared input patches, with no per-unit work. Piecewise-linear activations
  add no source, so parameters with no curved operation below them get :math:`u \equiv 0` at no cost.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ...errors import UnsupportedModelError
from ...terms import UnitTerms
from .layers import Affine, Conv, Dense
from .ops import Activation, Add, Reshape
from .tangents import tangent_curvature
from .trace import Graph, Traced, describe, piecewise_linear_parameters, trace

__all__ = ["GraphEngine"]

_CHUNK_ELEMENTS = 1 << 24  # per-source parameter derivatives formed at once
Rep = tuple[str, Tensor]  # ("dense", (N, m, *shape)) or ("diag", (N, *shape)): a Jacobian w.r.t. a node


def _dense(rep: Rep) -> Tensor:
    kind, t = rep
    if kind == "dense":
        return t
    n = t[0].numel()
    return torch.diag_embed(t.reshape(t.shape[0], n)).view(t.shape[0], n, *t.shape[1:])


def _add(a: Rep, b: Rep) -> Rep:
    if a[0] == b[0] == "diag":
        return "diag", a[1] + b[1]
    return "dense", _dense(a) + _dense(b)


class GraphEngine:
    """Per-parameter derivative terms of a traced network; see the module docstring.

    Args:
        model: the network. Raises :class:`UnsupportedModelError` naming the first unsupported node or module.
        tangents: take the second derivatives of a first convolution (no trainable layer above it) forward:
            ``None`` when it has fewer parameters than there are curved units below it, ``True`` always,
            ``False`` never (the results are the same; only the cost differs).
        traced: the model's :func:`~fishertut.engines.graph.trace.trace`, where the caller has it.
    """

    name = "graph"

    def __init__(self, model: nn.Module, tangents: bool | None = None, traced: Traced | None = None) -> None:
        traced = trace(model) if traced is None else traced
        graph = describe(model, traced)
        if isinstance(graph, str):
            raise UnsupportedModelError(self._message(graph))
        self.model = model
        self.graph: Graph = graph
        self.piecewise_linear = piecewise_linear_parameters(model, traced)
        self.numel: list[int] | None = None
        self.tangents = tangents
        self.forward_layers: set[int] = set()  # convolutions whose second derivatives are taken forward
        self.reverse_needed = [n.needs for n in graph.nodes]  # a trainable layer above takes them backward

    @staticmethod
    def _message(reason: str) -> str:
        return f"the graph path cannot take this model: {reason}; use path='generic'"

    @classmethod
    def unsupported_reason(cls, model: nn.Module, traced: Traced | None = None) -> str | None:
        """``None`` if the engine supports ``model``, else a message naming the offending node or module."""
        graph = describe(model, traced)
        return cls._message(graph) if isinstance(graph, str) else None

    def input_reason(self, x: Tensor) -> str | None:
        """``None`` if inputs shaped like ``x`` go through the graph (then sizes are recorded), else why not."""
        try:
            self.check_input(x)
        except UnsupportedModelError as err:
            return str(err)
        except (RuntimeError, TypeError, ValueError, IndexError) as err:
            return self._message(f"inputs of shape {tuple(x.shape)} could not go through the graph: {err}")
        return None

    def check_input(self, x: Tensor) -> None:
        """Run one input through the graph and record every node's size, for :meth:`per_input_elements`.

        Raises :class:`UnsupportedModelError` for a Linear layer that would see a non-2-D input.
        """
        with torch.no_grad():
            _, _, values = self._run(x[:1])
        self.numel = [v.numel() for v in values]
        self._choose_modes()

    def _choose_modes(self) -> None:
        """Choose which first convolutions take their second derivatives forward (see ``tangents``)."""
        nodes = self.graph.nodes
        curved = [e for e, n in enumerate(nodes) if isinstance(n.op, Activation) and n.op.curved]
        self.forward_layers = {
            i
            for i, n in enumerate(nodes)
            if isinstance(n.op, Conv)
            and n.op.params
            and not nodes[n.inputs[0]].needs
            and self.tangents is not False
            and (
                self.tangents
                or sum(getattr(n.op.module, a).numel() for a, _ in n.op.params)
                < sum(self.numel[e] for e in curved if e > i)
            )
        }
        self.reverse_needed = []
        for i, n in enumerate(nodes):
            own = isinstance(n.op, Affine) and bool(n.op.params) and i not in self.forward_layers
            self.reverse_needed.append(own or any(self.reverse_needed[j] for j in n.inputs))

    def _run(self, x: Tensor) -> tuple[Tensor, list[object], list[Tensor]]:
        nodes = self.graph.nodes
        values: list[Tensor] = [x]
        tape: list[object] = [None]
        for node in nodes[1:]:
            xs = tuple(values[j] for j in node.inputs)
            if isinstance(node.op, Dense) and xs[0].ndim != 2:
                raise UnsupportedModelError(
                    self._message(
                        f"{node.name} (Linear) gets inputs with {xs[0].ndim} dims; the graph path needs 2-D inputs "
                        "(N, features) to every Linear layer"
                    )
                )
            out = node.op.forward(*xs)
            if isinstance(node.op, Add) and any(v.shape != out.shape for v in xs):
                raise UnsupportedModelError(
                    self._message(
                        f"{node.name} adds tensors of shapes {[tuple(v.shape) for v in xs]} (broadcasting); the graph "
                        "path needs equal shapes"
                    )
                )
            values.append(out)
            tape.append(node.op.save(xs, out) if node.needs else None)
        return values[self.graph.output], tape, values

    def forward(self, x: Tensor) -> tuple[Tensor, list[object]]:
        """Run the network, keeping what each node's backward needs."""
        h, tape, _ = self._run(x)
        return h, tape

    def _diagonal_region(self, e: int) -> set[int]:
        """Nodes above source ``e`` reached through elementwise operations only (where ``A_e`` stays diagonal)."""
        nodes = self.graph.nodes
        region, stack = set(), [nodes[e].inputs[0]]
        while stack:
            v = stack.pop()
            if v in region:
                continue
            region.add(v)
            if nodes[v].op is not None and (nodes[v].op.elementwise or isinstance(nodes[v].op, Reshape)):
                stack.extend(nodes[v].inputs)
        return region

    def _ancestors(self, e: int) -> set[int]:
        seen, stack = set(), list(self.graph.nodes[e].inputs)
        while stack:
            v = stack.pop()
            if v not in seen:
                seen.add(v)
                stack.extend(self.graph.nodes[v].inputs)
        return seen

    def per_input_elements(self, channels: int, curvature: bool) -> int:
        """Peak number of tensor elements per input in :meth:`backward` (an estimate, to choose a batch size).

        First derivatives: a few ``channels × node size`` tensors and the parameter derivatives. With
        curvature, the dense source Jacobians ``A_e`` (``n_e ×`` the largest node above the source where it is
        not diagonal) dominate.
        """
        if self.numel is None:
            raise RuntimeError("call check_input first")
        nodes, numel = self.graph.nodes, self.numel
        params = max((p.numel() for p in self.model.parameters()), default=1)
        peak = 3 * channels * max(numel) + 2 * channels * params
        if curvature:
            dense = 0
            for e, node in enumerate(nodes):
                if not (isinstance(node.op, Activation) and node.op.curved and nodes[node.inputs[0]].needs):
                    continue
                region, rev = self._diagonal_region(e), self.reverse_needed
                above = [numel[v] for v in self._ancestors(e) if rev[v] and v not in region]
                above += [
                    numel[v]
                    for v in region
                    if rev[v]
                    and nodes[v].op is not None
                    and not nodes[v].op.elementwise
                    and any(rev[i] for i in nodes[v].inputs)
                ]
                dense += numel[e] * max(above, default=0)
            for i in self.forward_layers:
                params = sum(getattr(nodes[i].op.module, a).numel() for a, _ in nodes[i].op.params)
                dense += params * max(numel[i:])
            peak += 3 * dense
        return max(peak, 1)

    def backward(
        self, tape: list[object], channels: Tensor, curvature_channels: Tensor | None = None
    ) -> Iterator[UnitTerms]:
        """Yield :class:`UnitTerms` per trainable parameter group, output side first.

        Args:
            tape: from :meth:`forward`.
            channels: ``(N, K, C)`` output-space directions for the first derivatives.
            curvature_channels: ``(N, K2, C)`` directions for the diagonal second derivatives; ``None`` to skip
                them; the very same tensor as ``channels`` to share the first-derivative pass.
        """
        nodes = self.graph.nodes
        shared = curvature_channels is channels
        k = channels.shape[1]
        want = curvature_channels is not None
        g = channels if not want or shared else torch.cat([channels, curvature_channels], 1)
        cot: dict[int, dict[object, Rep]] = {self.graph.output: {"ch": ("dense", g)}}
        sources: dict[int, Tensor] = {}
        for i in range(len(nodes) - 1, 0, -1):
            reps = cot.pop(i, None)
            node = nodes[i]
            if reps is None or not node.needs:
                continue
            op, saved = node.op, tape[i]
            if isinstance(op, Affine) and op.params:
                forward = i in self.forward_layers and want
                tangent = tangent_curvature(self.graph, tape, i, sources) if forward else None
                yield from self._terms(op, saved, reps, sources, k, curvature_channels, forward, tangent)
            born = None
            if isinstance(op, Activation):
                if want and op.curved and nodes[node.inputs[0]].needs:
                    s1, s2 = op.derivs.pair(saved)
                    ch = reps["ch"][1]
                    sources[i] = (s2.unsqueeze(1) * (ch[:, :k] if shared else ch[:, k:])).flatten(2)
                    if self.reverse_needed[node.inputs[0]]:
                        born = ("diag", torch.ones_like(saved))
                else:
                    s1 = op.derivs.first(saved)
            else:
                s1 = op.scale(saved) if op.elementwise else None
            for j, src in enumerate(node.inputs):
                if not nodes[src].needs:
                    continue
                into = cot.setdefault(src, {})
                new = {
                    key: self._through(op, saved, rep, j, s1)
                    for key, rep in reps.items()
                    if key == "ch" or self.reverse_needed[src]
                }
                if born is not None:
                    new[i] = born
                for key, rep in new.items():
                    into[key] = _add(into[key], rep) if key in into else rep

    @staticmethod
    def _through(op: object, saved: object, rep: Rep, index: int, s1: Tensor | None) -> Rep:
        """Carry one Jacobian from a node's output to its input ``index``."""
        kind, t = rep
        if op.elementwise:
            if s1 is None:
                return rep
            return kind, t * (s1 if kind == "diag" else s1.unsqueeze(1))
        if isinstance(op, Reshape) and kind == "diag":
            return "diag", t.reshape(t.shape[0], *saved[1:])
        return "dense", op.vjp(saved, _dense(rep), index)

    @staticmethod
    def _terms(
        op: Affine,
        saved: object,
        reps: dict[object, Rep],
        sources: dict[int, Tensor],
        k: int,
        curvature_channels: Tensor | None,
        forward: bool = False,
        tangent: Tensor | None = None,
    ) -> Iterator[UnitTerms]:
        """The layer's units, second derivatives from the source Jacobians in ``reps`` or from ``tangent``.

        ``tangent`` (if ``forward``) is :func:`~.tangents.tangent_curvature` for all the layer's units.
        """
        jt = reps["ch"][1][:, :k]
        n = jt.shape[0]
        offset = 0
        for unit in op.units(saved):
            jac = unit.derivative(jt)
            curv = None
            if curvature_channels is not None:
                k2 = curvature_channels.shape[1]
                if forward and tangent is not None:
                    offset += jac.shape[2]
                    yield UnitTerms(jac=jac, curv=tangent[:, :, offset - jac.shape[2] : offset], targets=unit.targets)
                    continue
                if len(reps) == 1:  # no curved operation below: u = 0 exactly (piecewise-linear parameters)
                    yield UnitTerms(
                        jac=jac,
                        curv=jac.new_zeros(()).expand(n, k2, jac.shape[2]),
                        targets=unit.targets,
                        curv_zero=True,
                    )
                    continue
                curv = jac.new_zeros(n, k2, jac.shape[2])
                for key, (kind, t) in reps.items():
                    if key == "ch":
                        continue
                    d = sources[key]
                    if kind == "diag":
                        curv = curv + unit.square_weighted(d.view(n, k2, *t.shape[1:]) * t.square().unsqueeze(1))
                        continue
                    step = max(1, _CHUNK_ELEMENTS // max(1, n * jac.shape[2]))
                    for s in range(0, t.shape[1], step):
                        curv = curv + d[:, :, s : s + step] @ unit.derivative(t[:, s : s + step]).square()
            yield UnitTerms(jac=jac, curv=curv, targets=unit.targets)
