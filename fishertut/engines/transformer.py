r"""The transformer engine: exact derivative terms of decoder-only transformers, by channel cotangents.

For a batch of sequences and ``K`` output-space channels :math:`R_n` (``(N, K, C)``, ``C`` the number of
outputs per sequence, e.g. ``T·V`` logits; any family's channels: the covariance factor for the exact Fisher,
sampled residuals for Î1, one residual per position for the per-token Î1), the first derivatives
:math:`J = \partial (R_n h_n)/\partial\theta` are ``K`` vector-Jacobian products per sequence: one reverse pass
of the model's own forward whose cotangent carries the channels in a batch axis (``torch.func.vjp`` under
``vmap``, over channels and sequences). That costs ``K`` backward passes per sequence, and never forms the
``C × P`` Jacobian that :class:`~fishertut.engines.generic.GenericEngine` builds before contracting it with the
channels: the per-sequence Î1 costs one backward pass per sequence and label draw, whatever ``C``.

The diagonal second derivatives :math:`u_i = \partial^2 h/\partial\theta_i^2` are the generic engine's
forward-over-forward directional derivatives (all ``C`` outputs per direction), in chunks sized to a memory
budget. Whether forward mode is right for the model is checked once against reverse mode, on a random output
combination (a scalar, so the check costs two backward passes instead of a ``C × C × P`` Hessian).

The engine takes the model only if every leaf module is one of :data:`LEAVES`, of exactly that type, with its
stock ``forward`` and no hooks or parametrizations, and the model has an ``nn.Embedding`` or
``nn.MultiheadAttention`` (a sequence model): token and positional embeddings (a positional
``nn.Parameter`` too), LayerNorm, RMSNorm, ``nn.MultiheadAttention`` (with ``attn_mask`` or ``is_causal``),
``F.scaled_dot_product_attention`` or a hand-written masked softmax attention in the user's own modules, GELU
and SiLU MLPs, residual additions, position-wise Linear layers and a head tied to the embedding. The user's
container modules run their own ``forward`` (that is where attention and residuals are written).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.func import jvp, vjp, vmap

from ..errors import UnsupportedModelError
from ..inspection import hook_reason, parametrization_reason
from ..terms import UnitTerms
from .generic import GenericEngine, _aliases, differentiable
from .graph.trace import Traced
from .second_order import custom_functions

__all__ = ["TransformerEngine", "LEAVES", "BATCH_CHANNELS"]

LEAVES: tuple[type[nn.Module], ...] = (
    nn.Embedding,
    nn.LayerNorm,
    nn.RMSNorm,
    nn.MultiheadAttention,
    nn.Linear,
    nn.GELU,
    nn.SiLU,
    nn.ReLU,
    nn.Tanh,
    nn.Identity,
    nn.Dropout,
    nn.Flatten,
)
_SEQUENCE_MODULES = (nn.Embedding, nn.MultiheadAttention)
BATCH_CHANNELS = 128
_PROBED: weakref.WeakKeyDictionary[nn.Module, dict[tuple, str | None]] = weakref.WeakKeyDictionary()


def _message(reason: str) -> str:
    return f"the transformer path cannot take this model: {reason}; use path='generic'"


def _walk(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """``(path, module)`` for every module, not descending into ``nn.MultiheadAttention`` (its parts are its own)."""
    yield prefix.rstrip("."), module
    if not isinstance(module, nn.MultiheadAttention):
        for name, child in module._modules.items():
            if child is not None:
                yield from _walk(child, f"{prefix}{name}.")


def _leaf_reason(model: nn.Module) -> str | None:
    """A message naming the first module the engine does not take, else ``None``."""
    sequence = False
    for path, m in _walk(model):
        label = f"module '{path}' ({type(m).__name__})" if path else f"the model ({type(m).__name__})"
        if "forward" in vars(m):
            return f"{label} has its forward replaced on the instance"
        if m._modules and not isinstance(m, nn.MultiheadAttention):
            continue  # the user's container: its own forward runs
        if type(m) not in LEAVES:
            names = ", ".join(t.__name__ for t in LEAVES)
            return f"{label} is not one of the layers it takes ({names})"
        if isinstance(m, nn.Dropout) and m.training and m.p > 0:
            return f"{label} is in training mode (random outputs); call model.eval()"
        sequence = sequence or isinstance(m, _SEQUENCE_MODULES)
    if not sequence:
        return "it has no nn.Embedding or nn.MultiheadAttention (it is not a sequence model)"
    return None


class TransformerEngine(GenericEngine):
    """Channel cotangents through the model's own forward; see the module docstring.

    Args:
        model: a sequence model built from :data:`LEAVES` (module docstring).
        chunk_size, element_budget: as for :class:`~fishertut.engines.generic.GenericEngine` (second derivatives).
        traced: the model's :func:`~fishertut.engines.graph.trace.trace`, where the caller has it.
        channel_budget: at most this many channel-parameter derivatives (sequences × channels × parameters)
            formed at once; the first derivatives of a batch are computed in groups of sequences that fit.
    """

    name = "transformer"
    flat_outputs = True

    def __init__(
        self,
        model: nn.Module,
        chunk_size: int = 512,
        element_budget: int = 1 << 23,
        channel_budget: int = 1 << 26,
        traced: Traced | None = None,
    ) -> None:
        reason = self.unsupported_reason(model)
        if reason is not None:
            raise UnsupportedModelError(reason)
        self._model = weakref.ref(model)
        self.chunk_size, self.element_budget, self.channel_budget = chunk_size, element_budget, channel_budget
        self.forward_mode, self._mode_checked, self.loop_inputs = True, False, False
        self.params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        self.aliases = _aliases(model, self.params)
        self._traced = traced

    @classmethod
    def unsupported_reason(cls, model: nn.Module, traced: Traced | None = None) -> str | None:
        """``None`` if the engine takes ``model``, else a message naming the offending module."""
        reason = hook_reason(model) or parametrization_reason(model) or _leaf_reason(model)
        return None if reason is None else _message(reason)

    def input_reason(self, x: Tensor) -> str | None:
        """``None`` if one vector-Jacobian product of the first input goes through ``torch.func``, else why not.

        The answer is remembered per model, input shape (after the batch axis), dtype and device, so that
        repeated calls on one model do not pay for the probe again.
        """
        key = (tuple(x.shape[1:]), x.dtype, x.device, tuple((n, p.dtype, p.device) for n, p in self.params.items()))
        seen = _PROBED.setdefault(self.model, {})
        if key not in seen:
            seen[key] = self._probe(x)
        return seen[key]

    def _probe(self, x: Tensor) -> str | None:
        try:
            with differentiable(self.model):
                h, pullback = vjp(lambda p: self._output(p, x[0]), self.params)
                pullback(torch.ones_like(h))
        except (RuntimeError, TypeError, ValueError, IndexError, NotImplementedError) as err:
            return _message(f"inputs of shape {tuple(x.shape)} could not go through torch.func (vjp): {err}")
        with torch.enable_grad():
            functions = custom_functions(self.model(x[:1]))
        if functions:  # second derivatives nobody derived: the generic engine checks them
            return _message(f"it calls the custom autograd.Function {', '.join(functions)}")
        return None

    def per_input_elements(self, channels: int, curvature: bool) -> int:
        """Elements per input that size the batches: the derivatives of up to :data:`BATCH_CHANNELS` channels.

        The channel derivatives of a batch, ``N × K × P``, are returned at once; with more channels than
        :data:`BATCH_CHANNELS` (the exact diagonal and the report have ``K = C``) a batch takes ``K /
        BATCH_CHANNELS`` times the budget, and the engine forms them in groups of ``channel_budget``. With
        curvature, every output's second derivatives of one parameter tensor are added.
        """
        numel = sum(p.numel() for p in self.params.values())
        largest = max(p.numel() for p in self.params.values())
        return max(1, min(channels, BATCH_CHANNELS) * numel + (channels * largest if curvature else 0))

    def _forward_mode_agrees(self, xi: Tensor) -> bool:
        r"""Forward-over-forward against reverse-over-reverse for :math:`w^\top h` along a random direction ``e``.

        :math:`w^\top \frac{d^2}{ds^2} h(\theta+se)` from two nested ``jvp`` against :math:`e^\top\nabla_\theta
        (e^\top\nabla_\theta w^\top h)` from two nested ``vjp``, with seeded random ``w`` and ``e``; a kernel with a
        wrong second-order forward rule makes them differ at O(1) (see the generic engine).
        """
        gen = torch.Generator().manual_seed(0)
        e = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for n, p in self.params.items()}
        h = self._output(self.params, xi[0])
        w = torch.randn(h.shape, generator=gen, dtype=h.dtype).to(h.device)

        def scalar(ps: dict[str, Tensor]) -> Tensor:
            return (self._output(ps, xi[0]) * w).sum()

        def along(ps: dict[str, Tensor]) -> Tensor:
            _, pull = vjp(scalar, ps)
            g = pull(torch.ones((), dtype=h.dtype, device=h.device))[0]
            return sum((g[n] * e[n]).sum() for n in ps)

        _, pull = vjp(along, self.params)
        hess = pull(torch.ones((), dtype=h.dtype, device=h.device))[0]
        reverse = sum((hess[n] * e[n]).sum() for n in hess)
        forward = (jvp(lambda ps: jvp(scalar, (ps,), (e,))[1], (self.params,), (e,))[1]).sum()
        scale = max(float(reverse.abs()), float(forward.abs()), float(along(self.params).abs()))
        tol = 10 * torch.finfo(h.dtype).eps ** 0.5 * max(scale, torch.finfo(h.dtype).tiny)
        return bool((forward - reverse).abs() <= tol)

    def _output(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """The outputs of one input, flattened to ``(C,)`` (the channels' layout)."""
        return super()._output(params, x).reshape(-1)

    def _channel_derivatives(self, x: Tensor, cotangents: Tensor) -> dict[str, Tensor]:
        """``{name: (N, K, numel)}``: the ``K`` vector-Jacobian products of each sequence, in groups that fit."""

        def one(xi: Tensor, ri: Tensor) -> dict[str, Tensor]:
            _, pullback = vjp(lambda p: self._output(p, xi), self.params)
            if ri.shape[0] == 1:  # one channel (a per-sequence score): no inner vmap level over channels
                return {n: g.unsqueeze(0) for n, g in pullback(ri[0])[0].items()}
            return vmap(pullback)(ri)[0]

        numel = sum(p.numel() for p in self.params.values())
        group = max(1, self.channel_budget // max(1, cotangents.shape[1] * numel))
        parts = [vmap(one)(x[s : s + group], cotangents[s : s + group]) for s in range(0, x.shape[0], group)]
        return {n: torch.cat([p[n] for p in parts]).flatten(2) for n in self.params}

    def backward(self, tape: Tensor, channels: Tensor, curvature_channels: Tensor | None = None) -> Iterator[UnitTerms]:
        """Yield one :class:`UnitTerms` per trainable parameter (see ``LayerwiseEngine.backward``).

        ``channels`` ``(N, K, C)`` are cotangents of the model's outputs ``(N, ...)`` flattened to ``(N, C)``.

        Raises:
            UnsupportedModelError: ``torch.func`` cannot differentiate the model's forward; the error is chained.
        """
        x = tape
        try:
            with differentiable(self.model):
                jac = self._channel_derivatives(x, channels)
                if curvature_channels is not None and self.forward_mode and not self._mode_checked:
                    self._mode_checked = True
                    try:
                        self.forward_mode = self._forward_mode_agrees(x[:1])
                    except NotImplementedError:
                        self.forward_mode = False
                yield from self._unit_terms(jac.items(), x, curvature_channels)
        except RuntimeError as err:
            raise UnsupportedModelError(
                f"the transformer path could not differentiate {type(self.model).__name__} with torch.func "
                f"(vmap/vjp); in-place operations on tensors inside forward are a common cause: {err}"
            ) from err
