r"""One pass of an entry point over the data: validation, the engine chosen once, chunks, labels, reductions.

Used by every function of :mod:`fishertut.api`; see chapter "The two estimators" for what the passes compute.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .arguments import check_count, coerce_targets
from .batches import iterate_batches
from .engines import Engine, check_path, select_engine
from .engines.generic import GenericEngine
from .engines.graph.trace import piecewise_linear_parameters
from .errors import UnsupportedModelError
from .families import ExponentialFamily
from .families.positions import Positions, check_normalize, checked_mask_and_labels
from .guards import PROBE_ROWS, check_independent_rows, check_output_kind, run_forward, warn_if_probabilities
from .terms import SumCollector, UnitTerms
from .validation import Checks, check_batch, check_generator, check_model

__all__ = ["Run", "Inputs", "LABEL_SOURCES", "identity_channels", "labels_and_residuals", "all_reduce", "shaped"]

_ELEMENT_BUDGET = 1 << 25
Inputs = Tensor | Iterable
LABEL_SOURCES = ("data", "argmax")


class Run:
    """One pass over the data: validation, engine choice, batching, labels, and per-batch callbacks.

    The engine is chosen once, on the first batch (:func:`fishertut.engines.select_engine`). Its first
    :data:`~fishertut.guards.PROBE_ROWS` rows (at most ``batch_size``) go through the engine as a chunk of their
    own: their outputs give the number of outputs ``C`` (which sizes the later chunks) and feed the first-batch
    guards; no forward pass is spent on learning ``C`` alone.
    """

    def __init__(
        self,
        model: nn.Module,
        family: ExponentialFamily,
        path: str,
        batch_size: int | None,
        generator: torch.Generator | None,
        curvature: bool,
        mask: Tensor | None = None,
        normalize: str = "sequence",
    ) -> None:
        if not isinstance(family, ExponentialFamily):
            raise TypeError(
                f"family must be a fishertut family such as ft.Categorical() or ft.Gaussian(sigma), "
                f"got {type(family).__name__}"
            )
        self.device, self.dtype = check_model(model)
        check_generator(generator, self.device)
        self.batch_size = None if batch_size is None else check_count(batch_size, "batch_size")
        self.model, self.family, self.path = model, family, check_path(path)
        self.curvature = curvature
        self.normalize = check_normalize(normalize)
        if mask is not None and not isinstance(mask, Tensor):
            raise TypeError(f"mask must be None or a boolean tensor (N, *positions), got {type(mask).__name__}")
        self.mask = mask
        self.max_positions = 1
        self.engine: Engine | None = None
        self.num_inputs = 0
        self.shapes = {n: p.shape for n, p in model.named_parameters() if p.requires_grad}
        self.piecewise_linear = piecewise_linear_parameters(model)

    def _forward(self, xb: Tensor, checks: Checks, batch: Tensor) -> tuple[Tensor, object]:
        h, tape = run_forward(self.engine.forward, xb, self.model, self.dtype, batch.shape)
        check_output_kind(h, xb.shape[0], self.dtype, self.family, checks)
        if not checks.eager:
            # a non-finite output is reported at the end of the pass; meanwhile it must not derail the maths
            h = torch.nan_to_num(h, nan=0.0, posinf=0.0, neginf=0.0)
        return h, tape

    def _first_chunk(self, x: Tensor, checks: Checks) -> tuple[Tensor, Tensor, object]:
        self.engine = select_engine(self.model, x, self.path)
        xb = x[: PROBE_ROWS if self.batch_size is None else min(PROBE_ROWS, self.batch_size)]
        h, tape = self._forward(xb, checks, x)
        if h.ndim > 2 and not getattr(self.engine, "flat_outputs", isinstance(self.engine, GenericEngine)):
            # engines meet outputs with positions only flattened, (N, T*C); one that cannot gives way
            if self.path != "auto":
                raise UnsupportedModelError(
                    f"path={self.path!r} takes outputs (N, C); this model's outputs have shape {tuple(h.shape)} "
                    "(positions): use path='auto' or 'generic'"
                )
            self.engine = GenericEngine(self.model)
            h, tape = self._forward(xb, checks, x)
        check_independent_rows(self.model, xb, h)
        layout = Positions(self.family, tuple(h.shape), None, self.normalize, h.dtype, h.device)
        warn_if_probabilities(self.model, layout.rows(h), self.family)
        if self.batch_size is None:
            per_input = self.engine.per_input_elements(2 * h[0].numel(), self.curvature)
            self.batch_size = max(1, min(4096, _ELEMENT_BUDGET // per_input))
        return xb, h, tape

    def batches(self, inputs: Inputs, targets: object) -> Iterable[tuple[Tensor, Tensor, object, object, Positions]]:
        """Yield ``(x, h, tape, y, positions)`` per chunk: outputs flattened to ``(N, K)``, labels, positions.

        The outputs are validated; labels are checked if asked (``y`` is ``"argmax"`` for argmax labels);
        ``positions`` is the chunk's :class:`~fishertut.families.positions.Positions` (mask and weights).

        Value checks (NaN/Inf, label range) are read at once for the first chunk and, for the others,
        collected on the device and read once at the end (no host-device round trip per batch).
        """
        checks = Checks()
        argmax = isinstance(targets, str) and targets == "argmax"
        targets = coerce_targets(None if argmax else targets, self.device, self.dtype)
        offset = 0
        for x, y in iterate_batches(inputs, targets):
            x = check_batch(x, self.device, self.dtype, checks)
            if x.shape[0] == 0:
                continue
            start, labels, mask = 0, None, None
            while start < x.shape[0]:
                if self.engine is None:
                    xb, h, tape = self._first_chunk(x, checks)
                else:
                    xb = x[start : start + self.batch_size]
                    h, tape = self._forward(xb, checks, x)
                whole = (x.shape[0], *h.shape[1:])
                if start == 0:  # the whole batch's labels and mask, against outputs of its shape
                    part = self._mask_rows(offset, x.shape[0])
                    mask, labels = checked_mask_and_labels(self.family, whole, part, y, self.device, self.dtype, checks)
                rows = slice(start, start + xb.shape[0])
                layout = Positions(
                    self.family, tuple(h.shape), None if mask is None else mask[rows], self.normalize, h.dtype, h.device
                )
                self.max_positions = max(self.max_positions, layout.num_positions)
                yb = "argmax" if argmax else None if labels is None else labels[rows]
                start += xb.shape[0]
                self.num_inputs += xb.shape[0]
                yield xb, layout.flat(h), tape, yb, layout
                checks.defer()
            offset += x.shape[0]
        checks.flush()
        if self.mask is not None and offset != self.mask.shape[0]:
            raise ValueError(f"mask has {self.mask.shape[0]} rows but inputs has {offset}")
        if self.num_inputs == 0:
            raise ValueError("inputs is empty: it yielded no rows")

    def _mask_rows(self, offset: int, rows: int) -> Tensor | None:
        """The rows of ``mask`` for a batch of ``rows`` inputs starting at input ``offset``."""
        if self.mask is None:
            return None
        part = self.mask[offset : offset + rows]
        if part.shape[0] != rows:
            raise ValueError(f"mask has {self.mask.shape[0]} rows but inputs has more than that")
        return part

    def units(self, tape: object, channels: Tensor, curvature: Tensor | None) -> Iterable[UnitTerms]:
        """The engine's :class:`~fishertut.terms.UnitTerms` for output-space ``channels`` ``(N, K, C)``."""
        with torch.no_grad():
            yield from self.engine.backward(tape, channels, curvature)


def identity_channels(h: Tensor) -> Tensor:
    """One channel per class: the identity ``(N, C, C)`` for outputs ``h`` ``(N, C)``."""
    c = h.shape[1]
    return torch.eye(c, dtype=h.dtype, device=h.device).expand(h.shape[0], c, c)


def labels_and_residuals(
    layout: Positions, h: Tensor, y: Tensor | str | None, samples: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Sampled, given or argmax labels ``(N, S, ...)`` and their residuals per position ``(N, S, T, C)``."""
    if y is None:
        return layout.sample(h, samples, generator)
    if isinstance(y, str):
        return layout.argmax(h)
    return layout.given(h, y)


def all_reduce(collector: SumCollector, num_inputs: int, process_group: object | None) -> int:
    """Sum ``collector`` and the input count over the ranks of ``process_group`` (a no-op for ``None``)."""
    if process_group is None:
        return num_inputs
    import torch.distributed as dist

    keys, flat = collector.flat()
    flat = torch.cat([flat, flat.new_tensor([float(num_inputs)])])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=process_group)
    collector.load_flat(keys, flat[:-1])
    return int(round(flat[-1].item()))


def shaped(
    run: Run, sums: dict[tuple[str, str], Tensor], stat: str, scale: float, dtype: torch.dtype | None = None
) -> dict[str, Tensor]:
    """Per-parameter ``scale * sum`` of one statistic, shaped like the parameters, in ``dtype`` (the model's)."""
    return {n: (sums[(stat, n)] * scale).reshape(shape).to(dtype or run.dtype) for n, shape in run.shapes.items()}
