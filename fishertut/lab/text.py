"""A character-level corpus that ships with Python: the documentation topics of ``pydoc_data.topics``.

Used by chapter :doc:`/book/language_model`. The standard library holds about 465 KB of English
documentation of the language (``pydoc_data.topics.topics``, one text per topic: ``"assert"``,
``"assignment"``, ``"class"``, ...), so the chapter needs no download.

* :func:`split_topics`: the topics in two disjoint groups, the statements (topics named after a keyword or a
  statement) and the rest (types, expressions, the data model), for the merging experiment;
* :class:`CharCorpus`: a vocabulary of characters, with :meth:`CharCorpus.encode`/:meth:`CharCorpus.decode`;
* :func:`windows`: ``(inputs, targets)`` of next-character prediction, shaped ``(N, T)`` each.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["topics", "split_topics", "CharCorpus", "windows"]

# Topics that document a statement but are not named after a keyword.
_STATEMENT_TOPICS = frozenset({"assignment", "augassign", "exprlists", "compound", "simple", "function", "exec"})


def topics() -> dict[str, str]:
    """The documentation topics of the running Python, ``{name: text}`` sorted by name."""
    from pydoc_data.topics import topics as raw

    return {name: raw[name] for name in sorted(raw)}


def split_topics(names: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Two disjoint, sorted groups of topic names: statements, and everything else.

    A topic counts as a statement when its name is a Python keyword (``keyword.iskeyword`` or a soft keyword)
    or one of a few statement topics not named after one (``"assignment"``, ``"augassign"``, ...). The split
    depends on the names alone, so it is the same on every run.

    Args:
        names: the topic names; default all of :func:`topics`.

    Returns:
        ``(statements, others)``, each sorted; together they are ``names`` without repeats.
    """
    names = sorted(set(topics() if names is None else names))
    statements = [n for n in names if keyword.iskeyword(n) or keyword.issoftkeyword(n) or n in _STATEMENT_TOPICS]
    chosen = set(statements)
    return statements, [n for n in names if n not in chosen]


@dataclass(frozen=True)
class CharCorpus:
    """A character vocabulary: ``chars[i]`` is the character of token ``i``.

    Build it with :meth:`from_text`; characters outside the vocabulary are refused by :meth:`encode`.
    """

    chars: str

    @classmethod
    def from_text(cls, text: str) -> CharCorpus:
        """The vocabulary of every character in ``text``, in code-point order."""
        if not text:
            raise ValueError("text must be non-empty to build a vocabulary")
        return cls("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        """``V``, the number of characters."""
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        """``(len(text),)`` int64 token ids; ``ValueError`` naming the first character not in the vocabulary."""
        index = {c: i for i, c in enumerate(self.chars)}
        missing = next((c for c in text if c not in index), None)
        if missing is not None:
            raise ValueError(f"text holds {missing!r}, which is not in the vocabulary of {self.size} characters")
        return torch.tensor([index[c] for c in text], dtype=torch.int64)

    def decode(self, ids: Tensor) -> str:
        """The text of ``(L,)`` token ids."""
        return "".join(self.chars[i] for i in ids.tolist())


def windows(ids: Tensor, context: int, stride: int | None = None) -> tuple[Tensor, Tensor]:
    """Next-token windows of a token stream: ``inputs[n, t] = ids[s_n + t]``, ``targets[n, t] = ids[s_n + t + 1]``.

    Windows start at ``s_n = n * stride`` (default ``stride = context``: no overlap) and every window lies
    wholly inside ``ids``.

    Args:
        ids: ``(L,)`` token ids.
        context: ``T``, the positions per window.
        stride: the step between window starts.

    Returns:
        ``(inputs, targets)``, each ``(N, T)`` with ``N = (L - T - 1) // stride + 1``.
    """
    stride = context if stride is None else stride
    if context < 1 or stride < 1:
        raise ValueError(f"context and stride must be >= 1, got {context} and {stride}")
    if ids.ndim != 1 or ids.numel() < context + 1:
        raise ValueError(f"ids must be a 1-d stream of at least {context + 1} tokens, got shape {tuple(ids.shape)}")
    starts = torch.arange(0, ids.numel() - context, stride)
    offsets = torch.arange(context + 1)
    rows = ids[starts[:, None] + offsets]
    return rows[:, :-1], rows[:, 1:]
