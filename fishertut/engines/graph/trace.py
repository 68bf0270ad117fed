r"""A network as a graph of supported operations, traced with ``torch.fx``, and its piecewise-linear parameters.

:func:`describe` turns a model into a :class:`Graph` of :class:`~fishertut.engines.graph.ops.NodeOp` (in topological
order) for the graph engine, or returns why it cannot: an operation outside the supported set, a module
called twice, an in-place operation, hooks, parametrizations, training-mode batch norm, a parameter read
outside its layer.

**Piecewise-linear detection.** A parameter :math:`\theta_i` of an affine layer (Linear, convolution,
eval-mode batch norm) enters its output :math:`z` affinely. If every operation between :math:`z` and the
network output is piecewise linear (ReLU, leaky ReLU, max pooling, average pooling, linear and convolution
layers, eval-mode batch norm, flatten and unflatten, dropout in eval mode, additions), then :math:`h` is
piecewise affine in :math:`\theta_i` and :math:`u_i = \partial^2 h/\partial\theta_i^2 = 0` wherever it is defined
(almost everywhere), so :math:`V_2 = 0` and the single-label term of Î2 is the exact :math:`I(\theta_i|x)`.
:func:`piecewise_linear_parameters` reads this from the traced graph, never from numbers; anything it
cannot classify counts as curved, so the set it returns is proven, not guessed.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from ...inspection import (
    backward_hook_reason,
    hook_reason,
    overridden_base,
    override_reason,
    parametrization_reason,
    shared_parameter_reason,
)
from ..activations import SUPPORTED_ACTIVATIONS, derivatives_for
from .layers import Affine, Conv, Dense, Norm
from .ops import Activation, Add, Identity, LinearMap, MaxPool, NodeOp, Reshape

__all__ = ["Graph", "GraphNode", "Traced", "trace", "describe", "piecewise_linear_parameters", "SUPPORTED_LAYERS"]

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_FUNCTIONS = {
    torch.relu: nn.ReLU,
    F.relu: nn.ReLU,
    torch.tanh: nn.Tanh,
    F.tanh: nn.Tanh,
    torch.sigmoid: nn.Sigmoid,
    F.sigmoid: nn.Sigmoid,
}
_METHODS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
SUPPORTED_LAYERS = ", ".join(
    [
        "Linear (2-D inputs)",
        "Conv1d",
        "Conv2d",
        "BatchNorm1d/2d (eval)",
        "MaxPool1d/2d",
        "AvgPool1d/2d",
        "AdaptiveAvgPool1d/2d",
        "Flatten",
        "Unflatten (of a non-batch axis)",
        "Dropout (eval)",
        "Identity",
        "additions",
    ]
    + [t.__name__ for t in SUPPORTED_ACTIVATIONS]
)


class _Unsupported(Exception):
    pass


@dataclass
class GraphNode:
    """One operation: ``inputs`` index earlier nodes; ``needs`` marks nodes at or below a trainable parameter."""

    name: str
    op: NodeOp | None
    inputs: tuple[int, ...]
    needs: bool = False


@dataclass
class Graph:
    """Nodes in topological order (node 0 is the input) and the index of the output node."""

    nodes: list[GraphNode]
    output: int
    parameters: list[str] = field(default_factory=list)


def _conv_padding(m: nn.Conv1d | nn.Conv2d) -> tuple[int, ...]:
    if m.padding_mode != "zeros":
        raise _Unsupported(f"padding_mode={m.padding_mode!r} (only 'zeros')")
    if m.padding == "valid":
        return (0,) * len(m.kernel_size)
    if m.padding == "same":
        total = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]
        if any(t % 2 for t in total):
            raise _Unsupported("padding='same' with an even effective kernel (asymmetric padding)")
        return tuple(t // 2 for t in total)
    return tuple(m.padding)


def _module_op(m: nn.Module, path: str) -> NodeOp:
    if getattr(m, "inplace", False):
        raise _Unsupported("in-place operation (inplace=True)")
    reason = override_reason(None, m, "graph")
    if reason is not None:
        raise _Unsupported(reason)
    if isinstance(m, nn.Linear):
        return Dense(m, path)
    if type(m) in (nn.Conv1d, nn.Conv2d):
        return Conv(m, path, _conv_padding(m))
    if type(m) in (nn.BatchNorm1d, nn.BatchNorm2d):
        if m.training:
            raise _Unsupported("batch norm in training mode (call model.eval())")
        if m.running_mean is None:
            raise _Unsupported("batch norm without running statistics (track_running_stats=False)")
        return Norm(m, path)
    if type(m) in (nn.MaxPool1d, nn.MaxPool2d) and not m.return_indices:
        return MaxPool(m)
    if type(m) in _POOLS:
        return LinearMap(m)
    if type(m) is nn.Flatten:
        if m.start_dim == 0 or (m.end_dim >= 0 and m.end_dim < m.start_dim):
            raise _Unsupported(f"Flatten must keep the batch axis, got start_dim={m.start_dim}")
        return Reshape(m)
    if type(m) is nn.Unflatten:
        if not isinstance(m.dim, int) or m.dim < 1:
            raise _Unsupported(f"Unflatten must split a non-batch axis given by a positive dim, got dim={m.dim!r}")
        return Reshape(m)
    if type(m) in _DROPOUT or type(m) is nn.Identity:
        if m.training and not isinstance(m, nn.Identity):
            raise _Unsupported("dropout in training mode (call model.eval())")
        return Identity()
    derivs = derivatives_for(m)
    if derivs is None:
        raise _Unsupported(f"{type(m).__name__} is not supported; supported: {SUPPORTED_LAYERS}")
    return Activation(m, derivs)


def _combine(node: fx.Node) -> Callable[..., torch.Tensor]:
    """``node.target`` applied to the node inputs given in order, with the constant arguments in place."""
    template, target = node.args, node.target

    def combine(*xs: torch.Tensor) -> torch.Tensor:
        it = iter(xs)
        return target(*[next(it) if isinstance(a, fx.Node) else a for a in template])

    return combine


def _node_op(node: fx.Node, modules: dict[str, nn.Module]) -> NodeOp:
    args = [a for a in node.args if isinstance(a, fx.Node)]
    if node.op == "call_module":
        return _module_op(modules[node.target], node.target)
    if node.op == "call_function" and node.target in (operator.add, torch.add):
        if (
            node.kwargs
            or len(node.args) != 2
            or not args
            or not all(isinstance(a, (fx.Node, int, float)) for a in node.args)
        ):
            raise _Unsupported("addition must be `a + b` of tensors or a tensor and a number")
        return Add(_combine(node))
    act = (
        _FUNCTIONS.get(node.target)
        if node.op == "call_function"
        else (_METHODS.get(node.target) if node.op == "call_method" else None)
    )
    if act is not None and len(node.args) == 1 and not node.kwargs.get("inplace", False):
        module = act()
        return Activation(module, derivatives_for(module))
    flatten = (node.op == "call_function" and node.target is torch.flatten) or (
        node.op == "call_method" and node.target == "flatten"
    )
    if flatten and len(args) == 1:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        if isinstance(start, int) and isinstance(end, int) and start >= 1 and (end < 0 or end >= start):
            return Reshape(lambda x: torch.flatten(x, start, end))
    raise _Unsupported(
        f"operation {node.op} {getattr(node.target, '__name__', node.target)!r} is not supported; "
        f"supported: {SUPPORTED_LAYERS}"
    )


def _model_reason(model: nn.Module) -> str | None:
    """Hooks, parametrizations and shared parameters change what the traced graph computes: refuse them."""
    for reason in (
        hook_reason(model),
        backward_hook_reason(model),
        parametrization_reason(model),
        shared_parameter_reason(model),
    ):
        if reason is not None:
            return reason
    return None


class _LayerLeaves(fx.Tracer):
    """``torch.fx``'s tracer, also keeping whole a module that overrides the ``forward`` of a PyTorch layer.

    Such a module (a user's ``Linear`` subclass, ``torch.ao.nn.qat.Linear``) then shows as one node, which
    :func:`describe` refuses by name and :func:`piecewise_linear_parameters` counts as curved; no engine mistakes
    it for the layer it derives from.
    """

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return super().is_leaf_module(m, qualname) or overridden_base(m) is not None


@dataclass(frozen=True)
class Traced:
    """A model traced once per call: the ``torch.fx`` graph module, or why the model has none."""

    module: fx.GraphModule | None
    reason: str | None


def trace(model: nn.Module) -> Traced:
    """Trace ``model`` (once per call: every reader of the graph takes this :class:`Traced`)."""
    reason = _model_reason(model)
    if reason is not None:
        return Traced(None, reason)
    try:
        graph = _LayerLeaves().trace(model)
    except Exception as err:  # any tracing failure: the structure is not a static graph
        return Traced(None, f"torch.fx could not trace {type(model).__name__}: {type(err).__name__}: {err}")
    return Traced(fx.GraphModule(model, graph, type(model).__name__), None)


def describe(model: nn.Module, traced: Traced | None = None) -> Graph | str:
    """The :class:`Graph` of ``model``, or a message naming the first node or module the engine cannot take.

    ``traced`` is the model's :func:`trace` where the caller has it.
    """
    traced = trace(model) if traced is None else traced
    if traced.module is None:
        return traced.reason
    gm = traced.module
    modules = dict(gm.named_modules())
    nodes: list[GraphNode] = []
    index: dict[fx.Node, int] = {}
    called: set[str] = set()
    output = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if nodes:
                return f"the model takes more than one input ('{node.name}')"
            index[node] = 0
            nodes.append(GraphNode("input", None, ()))
            continue
        if node.op == "output":
            if not isinstance(node.args[0], fx.Node):
                return "the model must return a single tensor"
            output = index[node.args[0]]
            continue
        where = f"module '{node.target}'" if node.op == "call_module" else f"node '{node.name}'"
        if node.op == "call_module":
            reason = override_reason(node.target, modules[node.target], "graph")
            if reason is not None:
                return reason
            if node.target in called:
                return f"{where} is called more than once (a reused module)"
            called.add(node.target)
        try:
            op = _node_op(node, modules) if node.op != "get_attr" else None
        except _Unsupported as err:
            return f"{where}: {err}"
        if op is None:
            return f"{where} reads the attribute '{node.target}' outside a supported layer"
        inputs = tuple(index[a] for a in node.args if isinstance(a, fx.Node))
        index[node] = len(nodes)
        needs = bool(op.params) or any(nodes[i].needs for i in inputs)
        nodes.append(GraphNode(where, op, inputs, needs))
    owned = [full for n in nodes if n.op is not None for _, full in n.op.params]
    for name, p in model.named_parameters():
        if p.requires_grad and name not in owned:
            return f"parameter '{name}' is not used by a supported layer (Linear, Conv1d/2d, BatchNorm)"
    return Graph(nodes, output, owned)


def piecewise_linear_parameters(model: nn.Module, traced: Traced | None = None) -> frozenset[str]:
    r"""Trainable parameters proven (from the traced graph) to have :math:`u \equiv 0`; see the module docstring.

    Conservative: a model that cannot be traced, with hooks or parametrizations, proves nothing; a module
    called twice or whose parameters are also read directly proves nothing for its parameters; any operation
    outside the piecewise-linear set counts as curved.
    """
    traced = trace(model) if traced is None else traced
    if traced.module is None:
        return frozenset()
    gm = traced.module
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    read = [n.target for n in gm.graph.nodes if n.op == "get_attr"]
    curved_below: dict[fx.Node, bool] = {}
    for node in reversed(gm.graph.nodes):
        below = any(curved_below[u] for u in node.users)
        if node.op in ("call_module", "call_function", "call_method"):
            try:
                op = _node_op(node, modules)
                below = below or not op.piecewise_linear
            except _Unsupported:
                below = True
        elif node.op == "get_attr":
            below = True
        curved_below[node] = below
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    proven = set()
    for node in gm.graph.nodes:
        if node.op != "call_module" or calls[node.target] != 1 or any(curved_below[u] for u in node.users):
            continue
        if any(r == node.target or r.startswith(f"{node.target}.") for r in read):
            continue
        try:
            op = _module_op(modules[node.target], node.target)
        except _Unsupported:
            continue
        if isinstance(op, Affine):
            proven.update(full for _, full in op.params)
    return frozenset(proven)
