"""The tiny causal character-level GPT of chapter :doc:`/book/language_model`, built from stock modules.

:class:`CharGPT` maps ``(N, T)`` token ids to ``(N, T, V)`` next-token logits: a token embedding and a learned
positional embedding, pre-LayerNorm blocks of causal ``nn.MultiheadAttention`` and a GELU MLP with residual
additions, a final LayerNorm, and an output head tied to the token embedding (``logits = h Eᵀ``). Every
layer is a stock PyTorch module, so the model is a client a language-model user would write.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Block", "CharGPT", "char_gpt"]


class Block(nn.Module):
    """One pre-LN transformer block: ``h + attn(ln1(h))``, then ``h + mlp(ln2(h))``; ``(N, T, d) -> (N, T, d)``."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, h: Tensor, causal: Tensor) -> Tensor:
        """``h`` ``(N, T, d)``; ``causal`` ``(T, T)`` boolean, True where position ``t`` may not see ``s``."""
        a = self.ln1(h)
        h = h + self.attn(a, a, a, attn_mask=causal, need_weights=False)[0]
        return h + self.mlp(self.ln2(h))


class CharGPT(nn.Module):
    """A causal GPT over ``V`` characters with context ``T``: ``(N, T') -> (N, T', V)`` logits for ``T' <= T``."""

    def __init__(self, vocab_size: int, context: int, d_model: int, heads: int, layers: int) -> None:
        super().__init__()
        self.context = context
        self.token = nn.Embedding(vocab_size, d_model)
        self.position = nn.Parameter(torch.zeros(context, d_model))
        self.blocks = nn.ModuleList(Block(d_model, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        causal = torch.triu(torch.ones(context, context, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, ids: Tensor) -> Tensor:
        """Logits ``(N, T', V)`` of the next token at each position of ``ids`` ``(N, T')``."""
        t = ids.shape[1]
        if t > self.context:
            raise ValueError(f"ids has {t} positions, more than the model's context of {self.context}")
        h = self.token(ids) + self.position[:t]
        mask = self.causal[:t, :t]
        for block in self.blocks:
            h = block(h, mask)
        return self.ln_f(h) @ self.token.weight.T

    @torch.no_grad()
    def generate(self, prompt: Tensor, length: int, generator: torch.Generator | None = None) -> Tensor:
        """``prompt`` ``(L,)`` extended by ``length`` tokens sampled one at a time; returns ``(L + length,)``."""
        ids = prompt.clone()
        for _ in range(length):
            logits = self(ids[-self.context :][None])[0, -1]
            nxt = torch.multinomial(torch.softmax(logits.double(), -1), 1, generator=generator)
            ids = torch.cat([ids, nxt.to(ids.dtype)])
        return ids


def char_gpt(
    vocab_size: int,
    context: int = 64,
    d_model: int = 64,
    heads: int = 4,
    layers: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> CharGPT:
    """A :class:`CharGPT` initialised under ``seed`` (the global generator restored), in eval mode.

    The token and positional embeddings start at ``N(0, 0.02²)`` like GPT-2's (with the tied head, the first
    logits are then near zero); the rest keeps PyTorch's defaults.
    """
    if d_model % heads:
        raise ValueError(f"d_model ({d_model}) must be a multiple of heads ({heads})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CharGPT(vocab_size, context, d_model, heads, layers)
        nn.init.normal_(model.position, std=0.02)
        nn.init.normal_(model.token.weight, std=0.02)
    return model.to(dtype).eval()
