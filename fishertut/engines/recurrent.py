r"""``nn.RNN``, ``nn.GRU`` and ``nn.LSTM`` as their recurrences in elementary operations (generic engine).

PyTorch runs these modules through fused kernels (``torch._VF.rnn_tanh``, ``gru``, ``lstm``) that
``torch.func`` cannot ``vmap`` over the inputs of a batch. :func:`recurrent` computes the same function, with
the module's own weights, one time step at a time (PyTorch's documented equations, gates in its order):

* RNN: :math:`h_t = \phi(W_{ih}x_t + b_{ih} + W_{hh}h_{t-1} + b_{hh})`, :math:`\phi` = tanh or ReLU;
* GRU: :math:`r, z = \sigma(\cdot)`, :math:`n = \tanh(W_{in}x_t + b_{in} + r\odot(W_{hn}h_{t-1} + b_{hn}))`,
  :math:`h_t = (1-z)\odot n + z\odot h_{t-1}`;
* LSTM: :math:`i, f, o = \sigma(\cdot)`, :math:`g = \tanh(\cdot)`, :math:`c_t = f\odot c_{t-1} + i\odot g`,
  :math:`h_t = o\odot\tanh(c_t)`, projected by :math:`W_{hr}` when ``proj_size > 0``.

Any ``num_layers``, ``batch_first`` either way, bidirectional (the reverse direction reads the sequence
backwards; the layer's output concatenates both), an initial state or zeros, batched or unbatched input.
Dropout between layers is the identity in eval mode; in training mode it is random, and refused.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from ..errors import UnsupportedModelError

__all__ = ["recurrent", "RECURRENT"]

RECURRENT = (nn.RNN, nn.GRU, nn.LSTM)


def _cell(m: nn.RNNBase, sfx: str, x: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """One time step of direction/layer ``sfx`` (e.g. ``_l0_reverse``): inputs ``x`` (N, in), state ``h``, ``c``."""
    gates = nn.functional.linear(x, getattr(m, "weight_ih" + sfx), getattr(m, "bias_ih" + sfx, None))
    hidden = nn.functional.linear(h, getattr(m, "weight_hh" + sfx), getattr(m, "bias_hh" + sfx, None))
    if isinstance(m, nn.GRU):
        xr, xz, xn = gates.chunk(3, -1)
        hr, hz, hn = hidden.chunk(3, -1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * n + z * h, None
    if isinstance(m, nn.LSTM):
        i, f, g, o = (gates + hidden).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        if m.proj_size > 0:
            h = nn.functional.linear(h, getattr(m, "weight_hr" + sfx))
        return h, c
    pre = gates + hidden
    return (torch.tanh(pre) if m.nonlinearity == "tanh" else torch.relu(pre)), None


def recurrent(m: nn.RNNBase, x: Tensor, hx: Tensor | tuple[Tensor, Tensor] | None = None):
    """What ``m(x, hx)`` returns (``output, h_n`` or ``output, (h_n, c_n)``), from elementary operations.

    Raises:
        UnsupportedModelError: a ``PackedSequence`` input, or dropout between layers in training mode.
    """
    name = type(m).__name__
    if isinstance(x, PackedSequence):
        raise UnsupportedModelError(
            f"{name} received a PackedSequence; the generic engine runs recurrent modules on padded tensors "
            "(batch_first or not): pass the padded batch and, if needed, select each row's last valid step"
        )
    if m.training and m.dropout > 0 and m.num_layers > 1:
        raise UnsupportedModelError(
            f"{name} has dropout={m.dropout} in training mode, so it is random; call model.eval()"
        )
    lstm = isinstance(m, nn.LSTM)
    batched = x.dim() == 3
    if not batched:
        x = x.unsqueeze(1)
        hx = None if hx is None else tuple(t.unsqueeze(1) for t in hx) if lstm else hx.unsqueeze(1)
    elif m.batch_first:
        x = x.transpose(0, 1)
    dirs = 2 if m.bidirectional else 1
    out_size = m.proj_size if lstm and m.proj_size > 0 else m.hidden_size
    if hx is None:
        h0 = x.new_zeros(m.num_layers * dirs, x.shape[1], out_size)
        c0 = x.new_zeros(m.num_layers * dirs, x.shape[1], m.hidden_size) if lstm else None
    else:
        h0, c0 = hx if lstm else (hx, None)
    layer_input, h_n, c_n = x, [], []
    for layer in range(m.num_layers):
        outputs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            h, c = h0[layer * dirs + d], (c0[layer * dirs + d] if lstm else None)
            steps = range(x.shape[0] - 1, -1, -1) if d else range(x.shape[0])
            seq: list[Tensor] = [h] * x.shape[0]
            for t in steps:
                h, c = _cell(m, sfx, layer_input[t], h, c)
                seq[t] = h
            outputs.append(torch.stack(seq))
            h_n.append(h)
            c_n.append(c)
        layer_input = torch.cat(outputs, -1) if dirs == 2 else outputs[0]
    output, state = layer_input, torch.stack(h_n)
    cell = torch.stack(c_n) if lstm else None
    if not batched:
        output, state = output.squeeze(1), state.squeeze(1)
        cell = None if cell is None else cell.squeeze(1)
    elif m.batch_first:
        output = output.transpose(0, 1)
    return output, ((state, cell) if lstm else state)
