r"""Forward-mode second derivatives for the first convolution of a graph (used by the graph engine).

For an affine layer :math:`L` with few parameters below many curved units (the first convolution of a CNN:
hundreds of parameters, thousands of activation units), the per-source-unit derivatives
:math:`J_{e,k i} = \partial z_{e,k}/\partial\theta_i` of the source recursion are cheaper forward than backward:
one tangent per parameter, :math:`T = \partial z_L/\partial\theta` ``(N, P, *shape)``, is pushed through the
graph with each operation's Jacobian (activations scale it by :math:`\sigma'`, max pooling gathers it at the
arg-max positions, convolutions and Linear layers apply their weights without bias, additions sum it), and at
every curved activation :math:`e` its input's tangent gives

.. math:: u_i \mathrel{+}= \sum_k d_{e,k}\, J_{e,ki}^2 ,

the same sum as the backward recursion, over all paths at once. This needs no trainable parameter above
:math:`L` (the backward then carries no source Jacobians above the layer at all).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .layers import Conv, Dense, Norm
from .ops import Activation, Add, Identity, LinearMap, MaxPool, NodeOp, Reshape, fold
from .trace import Graph

__all__ = ["conv_tangent", "tangent_curvature"]


def conv_tangent(op: Conv, saved: object) -> Tensor:
    r""":math:`\partial z/\partial\theta` ``(N, P, O, *L)`` for the trainable weight then bias of a convolution."""
    x, out_shape = saved
    patches = op.patches(x)  # (N, G, I, L)
    n, _, i, length = patches.shape
    o = out_shape[1]
    per_group = o // op.module.groups
    parts = []
    channel = torch.arange(o, device=x.device)
    if op.name("weight") is not None:
        t = patches.new_zeros(n, o, i, o, length)
        t[:, channel, :, channel, :] = patches[:, channel // per_group].transpose(0, 1)
        parts.append(t.view(n, o * i, o, length))
    if op.name("bias") is not None:
        t = patches.new_zeros(n, o, o, length)
        t[:, channel, channel, :] = 1
        parts.append(t)
    return torch.cat(parts, 1).view(n, -1, *out_shape[1:])


def _jvp(op: NodeOp, saved: object, t: Tensor) -> Tensor:
    """Tangents ``(N, P, *in)`` at a node's input to ``(N, P, *out)``."""
    n, p = t.shape[:2]
    if isinstance(op, Activation):
        return t * op.derivs.first(saved).unsqueeze(1)
    if isinstance(op, Norm):
        return t * saved[1].unsqueeze(1)
    if isinstance(op, Identity):
        return t
    if isinstance(op, MaxPool):
        _, idx, out_shape = saved
        c = t.shape[2]
        return t.flatten(3).gather(3, idx.unsqueeze(1).expand(n, p, c, idx.shape[-1])).view(n, p, *out_shape[1:])
    if isinstance(op, Dense):
        return t @ op.module.weight.T
    if isinstance(op, Conv):
        m = op.module
        conv = F.conv1d if op.dim == 1 else F.conv2d
        out = conv(fold(t), m.weight, None, m.stride, op.padding, m.dilation, m.groups)
        return out.view(n, p, *out.shape[1:])
    if isinstance(op, (Reshape, LinearMap)):
        out = op.fn(fold(t))
        return out.view(n, p, *out.shape[1:])
    raise TypeError(f"no tangent rule for {type(op).__name__}")


def tangent_curvature(graph: Graph, tape: list[object], layer: int, sources: dict[int, Tensor]) -> Tensor | None:
    r""":math:`\sum_e \sum_k d_{e,k} J_{e,k\cdot}^2` ``(N, K2, P)`` for the parameters of convolution ``layer``.

    The sum runs over the curved activations ``sources`` (``{node: d_e (N, K2, n_e)}``) below the layer;
    ``None`` if there is none.
    """
    below = [e for e in sources if e > layer]
    if not below:
        return None
    nodes, last = graph.nodes, max(below)
    uses = {i: sum(i in nodes[v].inputs for v in range(layer + 1, last + 1)) for i in range(layer, last + 1)}
    tangents = {layer: conv_tangent(graph.nodes[layer].op, tape[layer])}
    total = None
    for v in range(layer + 1, last + 1):
        ins = [i for i in nodes[v].inputs if i in tangents]
        if not ins:
            continue
        if v in sources:
            j = tangents[ins[0]].flatten(2)
            part = sources[v] @ j.square().transpose(1, 2)
            total = part if total is None else total + part
        op = nodes[v].op
        tangents[v] = sum(tangents[i] for i in ins) if isinstance(op, Add) else _jvp(op, tape[v], tangents[ins[0]])
        for i in set(ins):  # free a tangent once every node that reads it is done
            uses[i] -= 1
            if uses[i] == 0:
                del tangents[i]
    return total
