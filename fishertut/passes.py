r"""One pass of an entry point over the data: validation, the engine chosen once, chunks, labels, reductions.

Used by every function of :mod:`fishertut.api`; see chapter "The two estimators" for what the passes compute.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .arguments import check_count, coerce_targets
from .batches import iterate_batches
from .calls import check_inputs, num_rows, take_rows
from .engines import Engine, check_path, select_engine
from .engines.graph.trace import piecewise_linear_parameters
from .families import ExponentialFamily
from .guards import PROBE_ROWS, check_independent_rows, check_output_kind, run_forward, warn_if_probabilities
from .terms import SumCollector, UnitTerms
from .validation import Checks, check_generator, check_model

__all__ = ["Run", "Inputs", "identity_channels", "labels_and_residuals", "all_reduce", "shaped"]

_ELEMENT_BUDGET = 1 << 25
Inputs = Tensor | Iterable


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
        self.engine: Engine | None = None
        self.num_inputs = 0
        self.shapes = {n: p.shape for n, p in model.named_parameters() if p.requires_grad}
        self.piecewise_linear = piecewise_linear_parameters(model)

    def _forward(self, xb: Tensor, checks: Checks, batch: Tensor) -> tuple[Tensor, object]:
        h, tape = run_forward(self.engine.forward, xb, self.model, self.dtype, getattr(batch, "shape", None))
        check_output_kind(h, num_rows(xb), self.dtype, self.family, checks)
        if not checks.eager:
            # a non-finite output is reported at the end of the pass; meanwhile it must not derail the maths
            h = torch.nan_to_num(h, nan=0.0, posinf=0.0, neginf=0.0)
        return h, tape

    def _first_chunk(self, x: Tensor, checks: Checks) -> tuple[Tensor, Tensor, object]:
        self.engine = select_engine(self.model, x, self.path)
        xb = take_rows(x, 0, PROBE_ROWS if self.batch_size is None else min(PROBE_ROWS, self.batch_size))
        h, tape = self._forward(xb, checks, x)
        check_independent_rows(self.model, xb, h)
        warn_if_probabilities(self.model, h, self.family)
        if self.batch_size is None:
            per_input = self.engine.per_input_elements(2 * h.shape[1], self.curvature)
            self.batch_size = max(1, min(4096, _ELEMENT_BUDGET // per_input))
        return xb, h, tape

    def batches(self, inputs: Inputs, targets: object) -> Iterable[tuple[Tensor, Tensor, object, object]]:
        """Yield ``(x, h, tape, y)`` per chunk, with validated outputs and (if asked) checked labels.

        Value checks (NaN/Inf, label range) are read at once for the first chunk and, for the others,
        collected on the device and read once at the end (no host-device round trip per batch).
        """
        checks = Checks()
        targets = coerce_targets(targets, self.device, self.dtype)
        for x, y in iterate_batches(inputs, targets):
            x = check_inputs(x, self.device, self.dtype, checks)
            rows = num_rows(x)
            if rows == 0:
                continue
            start, labels = 0, None
            while start < rows:
                if self.engine is None:
                    xb, h, tape = self._first_chunk(x, checks)
                else:
                    xb = take_rows(x, start, start + self.batch_size)
                    h, tape = self._forward(xb, checks, x)
                if y is not None and labels is None:  # the whole batch's labels, against outputs of its shape
                    labels = self.family.check_targets(y, h.new_zeros(()).expand(rows, h.shape[1]), checks)
                yb = None if labels is None else labels[start : start + num_rows(xb)]
                start += num_rows(xb)
                self.num_inputs += num_rows(xb)
                yield xb, h, tape, yb
                checks.defer()
        checks.flush()
        if self.num_inputs == 0:
            raise ValueError("inputs is empty: it yielded no rows")

    def units(self, tape: object, channels: Tensor, curvature: Tensor | None) -> Iterable[UnitTerms]:
        """The engine's :class:`~fishertut.terms.UnitTerms` for output-space ``channels`` ``(N, K, C)``."""
        with torch.no_grad():
            yield from self.engine.backward(tape, channels, curvature)


def identity_channels(h: Tensor) -> Tensor:
    """One channel per class: the identity ``(N, C, C)`` for outputs ``h`` ``(N, C)``."""
    c = h.shape[1]
    return torch.eye(c, dtype=h.dtype, device=h.device).expand(h.shape[0], c, c)


def labels_and_residuals(
    run: Run, h: Tensor, y: Tensor | None, samples: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Given or sampled labels ``(N, S, ...)`` and their residuals ``(N, S, C)``."""
    if y is None:
        return run.family.sample_with_residual(h, samples, generator)
    return y, run.family.residual(h, y)


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
