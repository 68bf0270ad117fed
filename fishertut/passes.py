r"""One pass of an entry point over the data: validation, the engine chosen once, chunks, labels, reductions.

Every estimator goes through it: the functions of :mod:`fishertut.api` (chunks of the engines' own size), the
one-backward estimators of :mod:`fishertut.minibatch` (minibatches of consecutive inputs) and, through them,
:func:`fishertut.estimate`. See chapter :doc:`/book/estimators` for what the passes compute.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from .batches import iterate_batches
from .calls import cat_rows, mask_entry, num_rows, take_rows
from .checks.arguments import (
    check_count,
    check_family,
    check_generator,
    check_path,
    check_process_group,
    coerce_targets,
)
from .checks.batches import (
    PROBE_ROWS,
    check_independent_rows,
    check_inputs,
    check_output_kind,
    run_forward,
    warn_if_probabilities,
)
from .checks.models import check_model, unreached_parameters
from .checks.values import Checks
from .engines import Engine, select_engine
from .engines.generic import GenericEngine
from .errors import UnsupportedModelError
from .families import ExponentialFamily
from .families.positions import Positions, check_normalize, checked_mask_and_labels
from .memo import Findings, lookup, remember, state_key
from .terms import SumCollector, UnitTerms

__all__ = ["Run", "Inputs", "identity_channels", "labels_and_residuals", "shaped"]

_ELEMENT_BUDGET = 1 << 25
Inputs = Tensor | Iterable


class Run:
    """One pass over the data: validation, engine choice, batching, labels, guards and the all-reduce.

    The engine is chosen once, on the first batch (:func:`fishertut.engines.select_engine`). Its first
    :data:`~fishertut.checks.batches.PROBE_ROWS` rows (at most ``batch_size``) go through the engine as a chunk
    of their own: their outputs give the number of outputs ``C`` (which sizes the later chunks) and feed the
    first-batch guards (independent rows, probabilities, parameters autograd does not reach); no forward pass
    is spent on learning ``C`` alone. What they prove is remembered per model state (:mod:`fishertut.memo`): a
    later call on the same model, unchanged, with inputs of the same shape, skips the probe chunk, the trace and
    the guards' extra passes.

    Args:
        model, family, path, batch_size, generator, process_group: as the public functions take them.
        curvature: whether the engines will be asked for second derivatives (sizes the chunks).
        mask, normalize: as the public functions take them (:mod:`fishertut.families.positions`); a ``str``
            mask names the entry of each mapping batch that holds it (:func:`fishertut.calls.mask_entry`).
    """

    def __init__(
        self,
        model: nn.Module,
        family: ExponentialFamily,
        path: str = "auto",
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
        curvature: bool = False,
        process_group: object | None = None,
        mask: Tensor | str | None = None,
        normalize: str = "sequence",
    ) -> None:
        check_family(family)
        self.device, self.dtype = check_model(model)
        check_generator(generator, self.device)
        self.batch_size = None if batch_size is None else check_count(batch_size, "batch_size")
        self.model, self.family, self.path = model, family, check_path(path)
        self.process_group = check_process_group(process_group)
        self.curvature = curvature
        self.engine: Engine | None = None
        self.checks = Checks()
        self.num_inputs = 0
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.shapes = {n: p.shape for n, p in self.params.items()}
        self.unused: frozenset[str] = frozenset()
        self.num_outputs = 0
        self.normalize = check_normalize(normalize)
        if mask is not None and not isinstance(mask, (Tensor, str)):
            raise TypeError(
                "mask must be None, a boolean tensor (N, *positions) or the key of a mapping of inputs that holds "
                f"it, got {type(mask).__name__}"
            )
        self.mask, self.mask_key = (None, mask) if isinstance(mask, str) else (mask, None)
        self.max_positions = 1
        self._rows_checked = False
        self.findings: Findings | None = None

    def unused_in(self, values: dict[str, Tensor]) -> frozenset[str]:
        """The parameters the probe rows never read whose ``values`` are all 0.

        A parameter the model reads only for other inputs (a routed expert, say) is not listed.
        """
        return frozenset(n for n in self.unused if not bool(values[n].any()))

    @property
    def piecewise_linear(self) -> frozenset[str]:
        """The chosen engine's parameters proven piecewise linear (empty before the first batch)."""
        return frozenset() if self.engine is None else self.engine.piecewise_linear

    def output(self, x: Tensor) -> Tensor:
        """The engine's outputs for ``x``, differentiable when gradients are enabled (errors as in the pass)."""
        return run_forward(self.engine.forward, x, self.model, self.dtype, grad=torch.is_grad_enabled())[0]

    def _forward(self, xb: Tensor, batch: Tensor, first: bool = False) -> tuple[Tensor, object]:
        shape = getattr(batch, "shape", None)
        h, tape = run_forward(self.engine.forward, xb, self.model, self.dtype, shape, grad=first)
        check_output_kind(h, num_rows(xb), self.dtype, self.family, self.checks)
        if first:  # the first chunk's outputs also show which parameters autograd reaches
            self.unused = unreached_parameters(h, self.params, lambda: self.output(xb))
            h = h.detach()
        if not self.checks.eager:
            # a non-finite output is reported at the end of the pass; meanwhile it must not derail the maths
            h = torch.nan_to_num(h, nan=0.0, posinf=0.0, neginf=0.0)
        return h, tape

    def _guard_rows(self, xb: Tensor, h: Tensor) -> None:
        """Independent rows, checked once on the first chunk with two rows or more."""
        if not self._rows_checked and num_rows(xb) >= 2:
            check_independent_rows(self.output, take_rows(xb, 0, PROBE_ROWS), h[:PROBE_ROWS])
            self._rows_checked = True
            if self.findings is not None:
                self.findings.rows_checked = True

    def _first_chunk(self, x: Tensor, size_chunks: bool = True) -> tuple[Tensor, Tensor, object] | None:
        """Choose the engine and guard the first batch ``x``: its probe chunk ``(x, h, tape)``, or ``None``.

        ``None`` when the findings for this model state and input signature are remembered: then no probe runs.
        """
        key = state_key(self.model, x, self.path, self.family)
        found = lookup(self.model, key)
        if found is not None and not found.rows_checked and num_rows(x) >= 2:
            found = None  # the remembered call never had two rows to compare: probe this batch
        if found is not None and found.engine is not None:
            self.engine = select_engine(self.model, x, self.path, known=found.engine)
        else:
            self.engine = select_engine(self.model, x, self.path)
        if found is not None:
            self.findings = found
            self.unused, self._rows_checked, self.num_outputs = found.unused, found.rows_checked, found.num_outputs
            warn_if_probabilities(self.model, None, self.family, found.probabilities)
            self._size_chunks(size_chunks)
            return None
        xb = take_rows(x, 0, PROBE_ROWS if self.batch_size is None else min(PROBE_ROWS, self.batch_size))
        h, tape = self._forward(xb, x, first=True)
        if h.ndim > 2 and not self.engine.flat_outputs:
            # engines meet outputs with positions only flattened, (N, T*C); one that cannot gives way
            if self.path != "auto":
                raise UnsupportedModelError(
                    f"path={self.path!r} takes outputs (N, C); this model's outputs have shape {tuple(h.shape)} "
                    "(positions): use path='auto' or 'generic'"
                )
            self.engine = GenericEngine(self.model)
            h, tape = self._forward(xb, x, first=True)
        self.num_outputs = h[0].numel()
        self._guard_rows(xb, h)
        layout = Positions(self.family, tuple(h.shape), None, self.normalize, h.dtype, h.device)
        looked = warn_if_probabilities(self.model, layout.rows(h), self.family)
        weak = isinstance(self.engine, GenericEngine)  # the transformer engine too: both hold the model weakly
        kept = self.engine if weak else None
        self.findings = Findings(kept, self.unused, self._rows_checked, looked, self.num_outputs)
        remember(self.model, key, self.findings)
        self._size_chunks(size_chunks)
        return xb, h, tape

    def _size_chunks(self, size_chunks: bool) -> None:
        if self.batch_size is None and size_chunks:
            per_input = self.engine.per_input_elements(2 * self.num_outputs, self.curvature)
            self.batch_size = max(1, min(4096, _ELEMENT_BUDGET // per_input))

    def batches(self, inputs: Inputs, targets: object) -> Iterable[tuple[Tensor, Tensor, object, object, Positions]]:
        """Yield ``(x, h, tape, y, positions)`` per chunk: outputs flattened to ``(N, K)``, labels, positions.

        The outputs are validated; labels are checked if asked (``y`` is ``"argmax"`` for argmax labels);
        ``positions`` is the chunk's :class:`~fishertut.families.positions.Positions` (mask and weights).
        Value checks (NaN/Inf, label range) are read at once for the first chunk and, for the others,
        collected on the device and read once at the end (no host-device round trip per batch).
        """
        checks = self.checks
        argmax = isinstance(targets, str) and targets == "argmax"
        targets = coerce_targets(None if argmax else targets, self.device, self.dtype)
        offset = 0
        for x, y in iterate_batches(inputs, targets):
            x = check_inputs(x, self.device, self.dtype, checks)
            rows = num_rows(x)
            if rows == 0:
                continue
            start, labels, mask = 0, None, None
            while start < rows:
                probe = self._first_chunk(x) if self.engine is None else None
                if probe is not None:
                    xb, h, tape = probe
                else:
                    xb = take_rows(x, start, start + self.batch_size)
                    h, tape = self._forward(xb, x)
                    self._guard_rows(xb, h)
                if start == 0:  # the whole batch's labels and mask, against outputs of its shape
                    whole = (rows, *h.shape[1:])
                    part = self.mask_rows(offset, x)
                    mask, labels = checked_mask_and_labels(self.family, whole, part, y, self.device, self.dtype, checks)
                span = slice(start, start + num_rows(xb))
                layout = Positions(
                    self.family, tuple(h.shape), None if mask is None else mask[span], self.normalize, h.dtype, h.device
                )
                self.max_positions = max(self.max_positions, layout.num_positions)
                yb = "argmax" if argmax else None if labels is None else labels[span]
                start += num_rows(xb)
                self.num_inputs += num_rows(xb)
                yield xb, layout.flat(h), tape, yb, layout
                checks.defer()
            offset += rows
        self._finish()

    def minibatches(
        self, inputs: Inputs, targets: object, size: int
    ) -> Iterator[tuple[Tensor, Tensor | str | None, Tensor | None]]:
        """Yield ``(x, y, mask)`` minibatches of ``size`` consecutive inputs (the last may be smaller), validated.

        The first minibatch chooses the engine and passes the first-batch guards, as in :meth:`batches`;
        ``batch_size`` (if given) stays the caller's to apply. ``y`` is ``"argmax"`` for argmax labels; ``mask``
        the minibatch's rows of the mask (unchecked: the caller checks it against the outputs).
        """
        checks = self.checks
        argmax = isinstance(targets, str) and targets == "argmax"
        targets = coerce_targets(None if argmax else targets, self.device, self.dtype)
        for x, y in _regroup(
            iterate_batches(inputs, targets), size, lambda x: check_inputs(x, self.device, self.dtype, checks)
        ):
            if self.engine is None:
                self._first_chunk(x, size_chunks=False)
            mask = self.mask_rows(self.num_inputs, x)
            self.num_inputs += num_rows(x)
            yield x, "argmax" if argmax else y, mask
            checks.defer()
        self._finish()

    def mask_rows(self, offset: int, x: Inputs) -> Tensor | None:
        """The rows of ``mask`` for the batch ``x`` starting at input ``offset`` (its entry, for a key)."""
        if self.mask_key is not None:
            return mask_entry(x, self.mask_key)
        if self.mask is None:
            return None
        rows = num_rows(x)
        part = self.mask[offset : offset + rows]
        if part.shape[0] != rows:
            raise ValueError(f"mask has {self.mask.shape[0]} rows but inputs has more than that")
        return part

    def _finish(self) -> None:
        self.checks.flush()
        if self.num_inputs == 0:
            raise ValueError("inputs is empty: it yielded no rows")
        if self.mask is not None and self.num_inputs != self.mask.shape[0]:
            raise ValueError(f"mask has {self.mask.shape[0]} rows but inputs has {self.num_inputs}")

    def units(self, tape: object, channels: Tensor, curvature: Tensor | None) -> Iterable[UnitTerms]:
        """The engine's :class:`~fishertut.terms.UnitTerms` for output-space ``channels`` ``(N, K, C)``."""
        with torch.no_grad():
            yield from self.engine.backward(tape, channels, curvature)

    def reduce(self, collector: SumCollector) -> int:
        """Sum ``collector`` and the input count over the ranks of ``process_group`` (a no-op for ``None``)."""
        if self.process_group is None:
            return self.num_inputs
        import torch.distributed as dist

        keys, flat = collector.flat()
        flat = torch.cat([flat, flat.new_tensor([float(self.num_inputs)])])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.process_group)
        collector.load_flat(keys, flat[:-1])
        return int(round(flat[-1].item()))


def _regroup(
    batches: Iterable[tuple[object, Tensor | None]], size: int, check: Callable[[object], Tensor]
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Regroup checked, non-empty batches into minibatches of ``size`` consecutive inputs (the last may be smaller)."""
    xs: list[Tensor] = []
    ys: list[Tensor | None] = []
    held = 0

    def joined() -> tuple[Tensor, Tensor | None]:
        x = xs[0] if len(xs) == 1 else cat_rows(xs)
        return x, (None if ys[0] is None else ys[0] if len(ys) == 1 else torch.cat(ys))

    for x, y in batches:
        x = check(x)
        rows, start = num_rows(x), 0
        while held + rows - start >= size:
            take = size - held
            xs.append(take_rows(x, start, start + take))
            ys.append(None if y is None else y[start : start + take])
            yield joined()
            xs, ys, held, start = [], [], 0, start + take
        if start < rows:
            xs.append(take_rows(x, start, rows))
            ys.append(None if y is None else y[start:])
            held += rows - start
    if held:
        yield joined()


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


def shaped(
    run: Run, sums: dict[tuple[str, str], Tensor], stat: str, scale: float, dtype: torch.dtype | None = None
) -> dict[str, Tensor]:
    """Per-parameter ``scale * sum`` of one statistic, shaped like the parameters, in ``dtype`` (the model's)."""
    return {n: (sums[(stat, n)] * scale).reshape(shape).to(dtype or run.dtype) for n, shape in run.shapes.items()}
