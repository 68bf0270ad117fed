"""What the first batch of a call proved about a model, remembered for later calls on the same model state.

Every entry point checks its first batch (:class:`fishertut.passes.Run`): which engine takes the model (a
``torch.fx`` trace and probes), which parameters autograd does not reach, whether an input's output depends on
the other inputs of its batch, whether the outputs look like probabilities and how many outputs an input has;
the engine itself keeps what it learnt (the piecewise-linear parameters, which differentiation mode is exact).
These are facts about the model and the shape of its inputs: a call on the same model in the same state, with
inputs of the same shape, reuses them instead of paying for the probe forwards, the extra backward and the trace
again (for a small transformer they cost several times one forward+backward).

Safety: the memo is keyed weakly on the model (it never keeps a model alive) and, per model, on a
:func:`state_key` that changes whenever anything those facts depend on may have changed: every module's
identity, type, training flag, forward hooks and pre-hooks (and the global ones), and a ``forward`` replaced on
the instance; every parameter's and buffer's identity, shape, dtype, device, ``requires_grad`` and version counter
(bumped by every in-place update, such as an optimizer step or ``load_state_dict``); the inputs' per-row shape,
dtype and device (the keys of a mapping); the ``path`` asked for and the output family's type. Any change
means a new key, so the checks run again in full; at most :data:`ENTRIES` states are remembered per model. The
results themselves never come from the memo: every call computes them from the parameters' current values (an
update through ``.data``, which bumps no version, is read too; only the probabilities warning, a heuristic on
the first outputs' values, is then not re-evaluated).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn.modules import module as _module

from .calls import is_mapping

__all__ = ["ENTRIES", "Findings", "lookup", "remember", "state_key"]

ENTRIES = 8
_MEMO: weakref.WeakKeyDictionary[nn.Module, dict[tuple, Findings]] = weakref.WeakKeyDictionary()


@dataclass
class Findings:
    """What the first batch proved (see the module docstring); filled in as the pass learns it.

    Attributes:
        engine: the chosen engine (after giving way to the generic engine for outputs with positions), if it holds
            the model weakly (the transformer and generic engines do); ``None`` for the others, chosen afresh.
        unused: the trainable parameters the forward never reads.
        rows_checked: whether the independent-rows guard ran (it needs a first chunk of two rows or more).
        probabilities: whether the outputs looked like probabilities (the warning is repeated on every call).
        num_outputs: outputs per input, ``C`` (positions flattened).
    """

    engine: object | None
    unused: frozenset[str]
    rows_checked: bool
    probabilities: bool
    num_outputs: int


def _tensor_key(t: Tensor) -> tuple:
    return (id(t), tuple(t.shape), t.dtype, t.device, t.requires_grad, t._version)


def _input_key(x: object) -> tuple:
    if is_mapping(x):
        return tuple(sorted((k, tuple(v.shape[1:]), v.dtype, v.device) for k, v in x.items()))
    return (tuple(x.shape[1:]), x.dtype, x.device)


def state_key(model: nn.Module, x: object, path: str, family: object) -> tuple:
    """The key of ``model``'s state, the first batch ``x``'s signature, ``path`` and the family's type."""
    modules = tuple(
        (
            id(m),
            type(m),
            m.training,
            tuple(map(id, m._forward_hooks.values())),
            tuple(map(id, m._forward_pre_hooks.values())),
            id(vars(m).get("forward")),
        )
        for m in model.modules()
    )
    tensors = tuple(
        (name, _tensor_key(t))
        for named in (model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False))
        for name, t in named
    )
    hooks = (
        tuple(map(id, _module._global_forward_hooks.values())),
        tuple(map(id, _module._global_forward_pre_hooks.values())),
    )
    return modules, tensors, hooks, _input_key(x), path, type(family)


def lookup(model: nn.Module, key: tuple) -> Findings | None:
    """The findings remembered for ``model`` in the state ``key``, if any."""
    return _MEMO.get(model, {}).get(key)


def remember(model: nn.Module, key: tuple, findings: Findings) -> None:
    """Remember ``findings`` for ``model`` in the state ``key`` (the oldest state is forgotten past :data:`ENTRIES`)."""
    seen = _MEMO.setdefault(model, {})
    if len(seen) >= ENTRIES:
        del seen[next(iter(seen))]
    seen[key] = findings
