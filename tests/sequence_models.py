"""Tiny language models in plain torch for the sequence tests: a causal GPT, a GRU LM and an LSTM LM.

Each maps token ids ``(N, T)`` to logits ``(N, T, V)`` (or ``(N, V, T)`` with ``classes_first``), in float64.
The recurrent cells are written out with ``nn.Linear`` gates (the same equations as ``nn.GRU``/``nn.LSTM``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class CausalSelfAttention(nn.Module):
    """Hand-written causal attention: ``q @ k.T``, a causal mask, ``softmax``, ``@ v``, output projection."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.reshape(n, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(n, t, d))


class TinyGPT(nn.Module):
    """Token and learned position embeddings, one pre-LN block (attention, GELU MLP), final LayerNorm, head."""

    def __init__(self, vocab: int = 4, positions: int = 3, d: int = 4, heads: int = 2, classes_first: bool = False):
        super().__init__()
        self.classes_first = classes_first
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.5 * torch.randn(positions, d))
        self.ln1, self.ln2, self.lnf = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, heads)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.head = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos[: ids.shape[1]]
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        logits = self.head(self.lnf(x))
        return logits.transpose(1, 2) if self.classes_first else logits


class GRULM(nn.Module):
    """Embedding, a GRU written out with Linear gates, a Linear head."""

    def __init__(self, vocab: int = 4, d: int = 3, hidden: int = 4) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.x2h = nn.Linear(d, 3 * hidden)
        self.h2h = nn.Linear(hidden, 3 * hidden)
        self.head = nn.Linear(hidden, vocab)
        self.hidden = hidden

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        h = x.new_zeros(ids.shape[0], self.hidden)
        out = []
        for t in range(ids.shape[1]):
            xr, xz, xn = self.x2h(x[:, t]).chunk(3, dim=1)
            hr, hz, hn = self.h2h(h).chunk(3, dim=1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            h = (1 - z) * torch.tanh(xn + r * hn) + z * h
            out.append(self.head(h))
        return torch.stack(out, 1)


class LSTMLM(nn.Module):
    """Embedding, an LSTM written out with Linear gates, a Linear head."""

    def __init__(self, vocab: int = 4, d: int = 3, hidden: int = 3) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.gates = nn.Linear(d + hidden, 4 * hidden)
        self.head = nn.Linear(hidden, vocab)
        self.hidden = hidden

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        h = x.new_zeros(ids.shape[0], self.hidden)
        c = torch.zeros_like(h)
        out = []
        for t in range(ids.shape[1]):
            i, f, g, o = self.gates(torch.cat([x[:, t], h], 1)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            out.append(self.head(h))
        return torch.stack(out, 1)


class GaussianSeq(nn.Module):
    """Means ``(N, T, D)`` from inputs ``(N, T, F)``: a position-wise tanh MLP plus a causal running mean."""

    def __init__(self, features: int = 2, hidden: int = 3, dims: int = 2) -> None:
        super().__init__()
        self.inp = nn.Linear(features, hidden)
        self.out = nn.Linear(hidden, dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.tanh(self.inp(x))
        steps = torch.arange(1, x.shape[1] + 1, dtype=x.dtype, device=x.device)
        return self.out(z.cumsum(1) / steps[None, :, None])


def build(kind: str, seed: int = 0, **kwargs) -> nn.Module:
    """A seeded float64 model in eval mode: ``"gpt"``, ``"gru"``, ``"lstm"`` or ``"gauss"``."""
    torch.manual_seed(seed)
    model = {"gpt": TinyGPT, "gru": GRULM, "lstm": LSTMLM, "gauss": GaussianSeq}[kind](**kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    return model.double().eval()


def left_padded(n: int, t: int, vocab: int, pads: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(n, t)`` with ``pads[i]`` pad tokens (id 0) on the left of row ``i``, and the boolean mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, t), generator=g)
    mask = torch.arange(t)[None, :] >= torch.tensor(pads)[:, None]
    return ids.masked_fill(~mask, 0), mask
