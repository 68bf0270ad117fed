"""The one place where an engine is chosen for a model, once, from the first batch of inputs.

Rules, in order: backward hooks are refused on every path (see :mod:`fishertut.inspection`);
``path="generic"`` takes the ``torch.func`` engine; otherwise the layer-wise engine if it can honour the
model and the batch exactly (``path="layerwise"`` raises :class:`~fishertut.UnsupportedModelError` with
the reason if not), else the graph engine (:mod:`fishertut.engines.graph.engine`) if it can (``path="graph"``
tries only it, and raises naming the layer it cannot take), else ``path="auto"`` falls back to the generic
engine.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..calls import is_mapping
from ..errors import UnsupportedModelError
from ..inspection import backward_hook_reason
from .generic import GenericEngine
from .graph.engine import GraphEngine
from .layerwise import LayerwiseEngine
from .second_order import custom_function_reason

__all__ = ["PATHS", "Engine", "check_path", "select_engine"]

PATHS = ("auto", "layerwise", "graph", "generic")
Engine = LayerwiseEngine | GraphEngine | GenericEngine


def check_path(path: object) -> str:
    """``path`` if it names a computation path, else ``ValueError``."""
    if not isinstance(path, str) or path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    return path


def select_engine(model: nn.Module, x: Tensor, path: str) -> Engine:
    """The engine for ``model`` on batches like ``x`` (the first batch), or an exception saying why none fits.

    Raises:
        UnsupportedModelError: the model has backward hooks, or ``path="layerwise"``/``"graph"`` and that
            engine cannot honour the model or inputs shaped like ``x``.
    """
    reason = backward_hook_reason(model)
    if reason is not None:
        raise UnsupportedModelError(reason)
    if check_path(path) == "generic":
        return GenericEngine(model)
    if is_mapping(x):
        if path != "auto":
            raise UnsupportedModelError(
                f"the {path} path takes a tensor of inputs, got a mapping of tensors (keyword arguments); "
                "use path='generic' (or 'auto')"
            )
        return GenericEngine(model)
    for name, kind in (("layerwise", LayerwiseEngine), ("graph", GraphEngine)):
        if path not in ("auto", name):
            continue
        reason = kind.unsupported_reason(model)
        if reason is None:
            engine = kind(model)
            reason = engine.input_reason(x)
            if reason is None and name == "graph":
                reason = custom_function_reason(model, x)
            if reason is None:
                return engine
        if path == name:
            raise UnsupportedModelError(reason)
    return GenericEngine(model)
