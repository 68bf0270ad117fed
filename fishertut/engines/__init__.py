"""The engines behind one interface, :class:`Engine`, and the one place where an engine is chosen for a model.

Four engines, each named once (module, class, ``name`` and the ``path=`` value that forces it):

* ``layerwise`` (:class:`~fishertut.engines.layerwise.LayerwiseEngine`): ``nn.Sequential`` MLPs;
* ``graph`` (:class:`~fishertut.engines.graph.engine.GraphEngine`): convolutional and residual networks traced
  with ``torch.fx``;
* ``transformer`` (:class:`~fishertut.engines.transformer.TransformerEngine`): decoder-only transformers and
  other sequence models built from stock layers, through ``torch.func`` with output-space channel cotangents;
* ``generic`` (:class:`~fishertut.engines.generic.GenericEngine`): any model, through ``torch.func``.

Rules of :func:`select_engine`, in order: backward hooks are refused on every path (see
:mod:`fishertut.inspection`); ``path="generic"`` takes the generic engine; otherwise the layer-wise engine if
it can honour the model and the batch exactly (``path="layerwise"`` raises
:class:`~fishertut.UnsupportedModelError` with the reason if not), else the graph engine if it can
(``path="graph"`` tries only it, and raises naming the layer it cannot take), else the transformer engine for
the sequence models it takes (``path="transformer"`` likewise), else ``path="auto"`` falls back to the generic
engine. The model is traced once per call, and every engine reads that one trace.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from ..calls import is_mapping
from ..checks.arguments import check_path
from ..errors import UnsupportedModelError
from ..inspection import backward_hook_reason
from ..terms import UnitTerms
from .generic import GenericEngine
from .graph.engine import GraphEngine
from .graph.trace import Traced, trace
from .layerwise import LayerwiseEngine
from .second_order import custom_function_reason
from .transformer import TransformerEngine

__all__ = ["ENGINES", "Engine", "select_engine"]


@runtime_checkable
class Engine(Protocol):
    r"""What every engine provides to the pass (:class:`fishertut.passes.Run`).

    Attributes:
        name: the engine's name, also the ``path=`` value that forces it and the results' ``path``.
        piecewise_linear: trainable parameters proven from the traced graph to have :math:`u \equiv 0`.
        flat_outputs: whether the engine takes outputs with positions ``(N, T, C)``, differentiating them
            flattened to ``(N, T·C)`` in memory order (:mod:`fishertut.families.positions` builds the channels);
            the pass gives way to the generic engine for one that does not.
    """

    name: str
    piecewise_linear: frozenset[str]
    flat_outputs: bool

    @classmethod
    def unsupported_reason(cls, model: nn.Module, traced: Traced | None = None) -> str | None:
        """``None`` if the engine can take ``model`` exactly, else a message naming the module it cannot take."""

    def input_reason(self, x: Tensor) -> str | None:
        """``None`` if the engine can take batches shaped like ``x``, else why not."""

    def per_input_elements(self, channels: int, curvature: bool) -> int:
        """Peak tensor elements per input in :meth:`backward`, to size the batches to a memory budget."""

    def forward(self, x: Tensor) -> tuple[Tensor, object]:
        """The outputs ``h`` ``(N, C)`` of the batch ``x`` and the tape :meth:`backward` reads.

        ``h`` is differentiable with respect to the trainable parameters when gradients are enabled (the
        one-backward estimators of :mod:`fishertut.minibatch` differentiate it with autograd).
        """

    def backward(self, tape: object, channels: Tensor, curvature_channels: Tensor | None = None) -> Iterator[UnitTerms]:
        """Per-unit derivative terms (:class:`~fishertut.terms.UnitTerms`) of a batch run by :meth:`forward`.

        First derivatives of the ``(N, K, C)`` output-space ``channels`` and, if asked, the diagonal second
        derivatives of the ``(N, K2, C)`` ``curvature_channels``.
        """


ENGINES: tuple[type[Engine], ...] = (LayerwiseEngine, GraphEngine, TransformerEngine, GenericEngine)


def select_engine(model: nn.Module, x: Tensor, path: str, known: Engine | None = None) -> Engine:
    """The engine for ``model`` on batches like ``x`` (the first batch), or an exception saying why none fits.

    ``known`` is the engine an earlier call chose for this model state and input signature
    (:mod:`fishertut.memo`): after the checks every call makes (``path``, backward hooks, a mapping of inputs)
    it is returned as it is, without tracing or probing the model again.

    Raises:
        ValueError: ``path`` is not ``"auto"`` or an engine's name.
        UnsupportedModelError: the model has backward hooks, or ``path`` names a fast engine (``"layerwise"``,
            ``"graph"``, ``"transformer"``) that cannot honour the model or inputs shaped like ``x``.
    """
    check_path(path)
    reason = backward_hook_reason(model)
    if reason is not None:
        raise UnsupportedModelError(reason)
    if is_mapping(x) and path in ("layerwise", "graph"):
        raise UnsupportedModelError(
            f"the {path} path takes a tensor of inputs, got a mapping of tensors (keyword arguments); "
            "use path='generic' (or 'auto')"
        )
    if known is not None:
        return known
    traced = trace(model)
    for kind in ENGINES:
        if path not in ("auto", kind.name) or (is_mapping(x) and kind is not GenericEngine):
            continue
        reason = kind.unsupported_reason(model, traced)
        if reason is None:
            engine = kind(model, traced=traced)
            reason = engine.input_reason(x)
            if reason is None and kind is GraphEngine:
                reason = custom_function_reason(model, x)
            if reason is None:
                return engine
        if path == kind.name:
            raise UnsupportedModelError(reason)
    raise AssertionError("the generic engine takes every model")  # pragma: no cover
