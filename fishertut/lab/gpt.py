r"""The tiny decoder-only transformer (GPT) of the language-model benchmark, the tests and the book.

One model, :class:`TinyGPT`, and two builders: :func:`tiny_gpt` (the benchmark's and the tests' model, every
way of writing attention and normalisation) and :func:`char_gpt` (chapter :doc:`/book/language_model`'s
character-level model: stock ``nn.MultiheadAttention``, a learned positional ``nn.Parameter``, GPT-2's
``N(0, 0.02²)`` embeddings). The model has a token embedding ``token`` and a positional embedding
``position``, ``layers`` pre-norm blocks (causal self-attention, then a GELU or SiLU MLP of width ``4 d``,
each added back to the residual stream), a final norm and a head tied to the token embedding: logits
:math:`h_t = E\,\mathrm{norm}(x_t)`, shape ``(N, T, V)`` (or ``(N, T V)`` with ``flat=True``). The attention can be
written three ways, all computing the same function: ``"mha"`` (``nn.MultiheadAttention`` with a causal
``attn_mask`` and ``is_causal=True``), ``"sdpa"`` (``F.scaled_dot_product_attention(..., is_causal=True)`` inside
the block) and ``"manual"`` (:math:`\mathrm{softmax}(QK^\top/\sqrt{d_h} + \text{mask})V` by hand).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["tiny_gpt", "char_gpt", "TinyGPT", "CausalSelfAttention", "Block", "ATTENTIONS"]

ATTENTIONS = ("mha", "sdpa", "manual")


class CausalSelfAttention(nn.Module):
    """Causal multi-head self-attention, by ``F.scaled_dot_product_attention`` or by hand (module docstring)."""

    def __init__(self, d: int, heads: int, kind: str) -> None:
        super().__init__()
        self.heads, self.kind = heads, kind
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, T, d) -> (N, T, d)``."""
        n, t, d = x.shape
        q, k, v = (z.view(n, t, self.heads, d // self.heads).transpose(1, 2) for z in self.qkv(x).split(d, 2))
        if self.kind == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            y = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, d: int, heads: int, attention: str, norm: str, activation: str) -> None:
        super().__init__()
        make_norm = nn.LayerNorm if norm == "layer" else nn.RMSNorm
        self.norm1, self.norm2 = make_norm(d), make_norm(d)
        self.attention = attention
        if attention == "mha":
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        else:
            self.attn = CausalSelfAttention(d, heads, attention)
        act = nn.GELU() if activation == "gelu" else nn.SiLU()
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), act, nn.Linear(4 * d, d))

    def forward(self, x: Tensor) -> Tensor:
        """``(N, T, d) -> (N, T, d)``."""
        y = self.norm1(x)
        if self.attention == "mha":
            t = x.shape[1]
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            y = self.attn(y, y, y, attn_mask=mask, is_causal=True, need_weights=False)[0]
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class TinyGPT(nn.Module):
    """Decoder-only transformer with a tied head (module docstring); tokens ``(N, T')``, ``T' <= T``, to logits.

    Parameter names: ``token.weight``, ``position`` (a parameter) or ``position.weight`` (an embedding),
    ``blocks.{l}.norm1``/``attn``/``norm2``/``mlp``, ``norm``.
    """

    def __init__(
        self,
        vocab: int,
        context: int,
        d: int,
        heads: int,
        layers: int,
        attention: str = "mha",
        norm: str = "layer",
        activation: str = "gelu",
        positions: str = "embedding",
        flat: bool = False,
    ) -> None:
        super().__init__()
        self.context = context
        self.token = nn.Embedding(vocab, d)
        if positions == "embedding":
            self.position: nn.Module | nn.Parameter = nn.Embedding(context, d)
        else:
            self.position = nn.Parameter(0.02 * torch.randn(context, d))
        self.blocks = nn.ModuleList(Block(d, heads, attention, norm, activation) for _ in range(layers))
        self.norm = nn.LayerNorm(d) if norm == "layer" else nn.RMSNorm(d)
        self.flat = flat

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits ``(N, T, V)``, or ``(N, T V)`` with ``flat``."""
        t = tokens.shape[1]
        if t > self.context:
            raise ValueError(f"tokens has {t} positions, more than the model's context of {self.context}")
        pos = self.position.weight if isinstance(self.position, nn.Embedding) else self.position
        x = self.token(tokens) + pos[:t]
        for block in self.blocks:
            x = block(x)
        logits = self.norm(x) @ self.token.weight.T
        return logits.flatten(1) if self.flat else logits

    @torch.no_grad()
    def generate(self, prompt: Tensor, length: int, generator: torch.Generator | None = None) -> Tensor:
        """``prompt`` ``(L,)`` extended by ``length`` tokens sampled one at a time; returns ``(L + length,)``."""
        if self.flat:
            raise ValueError("generate needs logits (N, T, V): build the model with flat=False")
        ids = prompt.clone()
        for _ in range(length):
            logits = self(ids[-self.context :][None])[0, -1]
            nxt = torch.multinomial(torch.softmax(logits.double(), -1), 1, generator=generator)
            ids = torch.cat([ids, nxt.to(ids.dtype)])
        return ids


def tiny_gpt(
    vocab: int = 32,
    context: int = 16,
    d: int = 32,
    heads: int = 4,
    layers: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    **options: object,
) -> TinyGPT:
    """A seeded :class:`TinyGPT` in eval mode (defaults: the benchmark's 27k-parameter model).

    ``options`` go to :class:`TinyGPT`: ``attention`` (one of :data:`ATTENTIONS`), ``norm`` (``"layer"`` or
    ``"rms"``), ``activation`` (``"gelu"`` or ``"silu"``), ``positions`` (``"embedding"`` or ``"parameter"``),
    ``flat``.
    """
    if options.get("attention", "mha") not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {options['attention']!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyGPT(vocab, context, d, heads, layers, **options)
    return model.to(dtype).eval()


def char_gpt(
    vocab_size: int,
    context: int = 64,
    d_model: int = 64,
    heads: int = 4,
    layers: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> TinyGPT:
    """The language-model chapter's character-level :class:`TinyGPT`, seeded, in eval mode.

    Stock ``nn.MultiheadAttention`` with a causal mask, LayerNorm, a GELU MLP, a learned positional
    ``nn.Parameter``; the token and positional embeddings start at ``N(0, 0.02²)`` like GPT-2's (with the tied
    head, the first logits are then near zero), the rest keeps PyTorch's defaults.
    """
    if d_model % heads:
        raise ValueError(f"d_model ({d_model}) must be a multiple of heads ({heads})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyGPT(vocab_size, context, d_model, heads, layers, positions="parameter")
        nn.init.normal_(model.position, std=0.02)
        nn.init.normal_(model.token.weight, std=0.02)
    return model.to(dtype).eval()
