r"""Every per-class score of a language model's positions, and the LM recipes' diagonals computed from them.

Used by chapter :doc:`/book/language_model`. For one sequence :math:`x` with ``T`` positions and ``V``
classes, :func:`class_scores` takes the gradient of every log-probability
:math:`s_{t,c} = \partial_\theta \log p(c \mid x, t)` with one reverse-mode Jacobian (``T·V`` rows). Every
recipe of the chapter is a function of these rows and of the probabilities :math:`p_{t,c}` (teacher
forcing: each position's input is data), so one Jacobian per sequence gives, with no Monte-Carlo error:

* the exact Fisher :math:`\sum_t\sum_c p_{t,c} s_{t,c}^2` and the exact variances of the per-token
  :math:`\hat I_1 = \sum_t g_t^2` and the per-sequence :math:`\hat I_1 = (\sum_t g_t)^2` (labels
  :math:`y_t \sim p_t`, :math:`g_t = s_{t,y_t}`):
  :math:`V_{\mathrm{tok}} = \sum_t (\mathbb E g_t^4 - I_t^2)`,
  :math:`V_{\mathrm{seq}} = V_{\mathrm{tok}} + 2[(\sum_t I_t)^2 - \sum_t I_t^2]`;
* the fixed-label recipes (data tokens, argmax tokens, the argmax of the last position only), exactly;
* sampled estimates (labels drawn from :math:`p`) without another backward pass.

This is the library's token-level report (:func:`fishertut.variance_report` with positions) restricted to the
first-order quantities, organised so that the sampled recipes reuse its rows; the tests check it against the
library on a small GPT. It materialises ``T·V×P`` numbers per sequence: meant for small models.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev

__all__ = ["TokenScores", "class_scores", "lm_loss", "group_of", "SequenceStats", "sequence_stats"]


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """The mean next-token cross-entropy of ``(N, T, V)`` logits and ``(N, T)`` targets (every token weighs 1)."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@dataclass
class TokenScores:
    """The rows of one sequence: ``probs`` ``(T, V)`` and ``scores[name]`` ``(T, V, *parameter.shape)``."""

    probs: Tensor
    scores: dict[str, Tensor]


def class_scores(model: nn.Module, ids: Tensor) -> TokenScores:
    r"""The gradients :math:`\partial_\theta\log p(c\mid x,t)` of one sequence ``ids`` ``(T,)``, all ``t``, ``c``."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def logp(p: dict[str, Tensor]) -> Tensor:
        return torch.log_softmax(functional_call(model, p, (ids[None],))[0], dim=-1)

    with torch.no_grad():
        probs = torch.softmax(model(ids[None])[0], dim=-1)
    with warnings.catch_warnings():
        # torch.func has no batching rule for the CPU attention backward yet: slower, not wrong
        warnings.filterwarnings("ignore", message="There is a performance drop", category=UserWarning)
        scores = jacrev(logp)(params)
    return TokenScores(probs, scores)


def _release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps the Jacobians' pages otherwise; a no-op elsewhere)."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def group_of(name: str) -> str:
    """The parameter group of a :class:`~fishertut.lab.gpt.TinyGPT` parameter name, for per-group summaries."""
    if name == "token.weight":
        return "embedding (tied head)"
    if name.split(".")[0] == "position":
        return "positions"
    if ".attn." in name:
        return "attention"
    if ".mlp." in name:
        return "MLP"
    return "LayerNorm"


@dataclass
class SequenceStats:
    r"""Per-sequence quantities, each ``{name: (N, *parameter.shape)}``, summed over positions.

    Attributes:
        fisher: :math:`\sum_t I_t`.
        var_tok: :math:`\sum_t V_{1,t}`, the variance of the per-token :math:`\hat I_1` (one label per position).
        var_seq: the variance of the per-sequence :math:`(\sum_t g_t)^2`.
        data: :math:`\sum_t s_{t,y_t}^2` with the data tokens (the empirical Fisher's term).
        argmax: :math:`\sum_t s_{t,\hat y_t}^2` with :math:`\hat y_t = \arg\max_c p_{t,c}`.
        last_argmax: :math:`s_{T,\hat y_T}^2`, the argmax of the last position only.
        sqrt_p_score: :math:`a = \sum_t\sum_c \sqrt{p_{t,c}}\, s_{t,c}`, the gradient of the sequence's
            :math:`\sqrt p`-weighted loss over all classes (not squared; no random signs).
        token_draws: ``(N, S, ...)``: :math:`\sum_t g_t^2` for ``S`` label draws :math:`y_t\sim p_t`.
        sequence_draws: ``(N, S, ...)``: :math:`\sum_t g_t` for the same draws (square it for the per-sequence
            :math:`\hat I_1`; sum over sequences first for GNB).
        positions: ``T``.
    """

    fisher: dict[str, Tensor]
    var_tok: dict[str, Tensor]
    var_seq: dict[str, Tensor]
    data: dict[str, Tensor]
    argmax: dict[str, Tensor]
    last_argmax: dict[str, Tensor]
    sqrt_p_score: dict[str, Tensor]
    token_draws: dict[str, Tensor]
    sequence_draws: dict[str, Tensor]
    positions: int


def sequence_stats(
    model: nn.Module, ids: Tensor, targets: Tensor, draws: int = 1, generator: torch.Generator | None = None
) -> SequenceStats:
    """:class:`SequenceStats` of ``ids`` ``(N, T)`` with data ``targets`` ``(N, T)``, one Jacobian per sequence.

    ``draws`` label sequences per input are drawn from the model with ``generator`` (``(T, draws)`` per input,
    in input order) for the sampled recipes.
    """
    if ids.shape != targets.shape or ids.ndim != 2:
        raise ValueError(f"ids and targets must both be (N, T), got {tuple(ids.shape)} and {tuple(targets.shape)}")
    fields: dict[str, dict[str, list[Tensor]]] = {f: {} for f in SequenceStats.__dataclass_fields__ if f != "positions"}
    steps = torch.arange(ids.shape[1])
    for row, target in zip(ids, targets, strict=True):
        ts = class_scores(model, row)
        p = ts.probs
        top = p.argmax(-1)
        labels = torch.multinomial(p.double(), draws, replacement=True, generator=generator)  # (T, S)
        for name, s in ts.scores.items():
            pv = p.reshape(*p.shape, *([1] * (s.ndim - 2)))
            sq = s.square()
            i_t = (pv * sq).sum(1)  # (T, ...)
            v_t = (pv * sq.square()).sum(1) - i_t.square()
            total = i_t.sum(0)
            values = {
                "fisher": total,
                "var_tok": v_t.sum(0),
                "var_seq": v_t.sum(0) + 2 * (total.square() - i_t.square().sum(0)),
                "data": sq[steps, target].sum(0),
                "argmax": sq[steps, top].sum(0),
                "last_argmax": sq[-1, int(top[-1])].clone(),  # a copy: a view would keep the whole Jacobian
                "sqrt_p_score": (pv.sqrt() * s).sum((0, 1)),
                "token_draws": sq[steps[:, None], labels].sum(0),
                "sequence_draws": s[steps[:, None], labels].sum(0),
            }
            for f, v in values.items():
                fields[f].setdefault(name, []).append(v)
        del ts
        _release_memory()
    stats = SequenceStats(
        **{f: {k: torch.stack(v) for k, v in d.items()} for f, d in fields.items()}, positions=ids.shape[1]
    )
    return stats
