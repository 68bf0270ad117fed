r"""The generic engine: any ``nn.Module`` mapping a batch ``(N, ...)`` to ``(N, C)``, through ``torch.func``.

Outputs with positions ``(N, T, C)`` are seen flattened, ``(N, T·C)`` (:mod:`fishertut.families.positions`).

Per input, :math:`v_i = \partial h/\partial\theta_i` for all parameters comes from one ``jacrev`` (``C``
backward passes), and :math:`u_i = \partial^2 h/\partial\theta_i^2` from a forward-over-forward directional
derivative :math:`\frac{d^2}{ds^2} h(\theta + s e_i)|_{s=0}` per coordinate (``vmap``-ed in chunks of the
basis). That is :math:`O(P)` passes per input: exact for any graph, practical for small models (tens of
thousands of parameters); the layer-wise and graph engines are the fast paths. Parameters that the traced
graph proves piecewise linear (:func:`fishertut.engines.graph.trace.piecewise_linear_parameters`) skip the second
derivatives: their :math:`u` is exactly 0. Memory per batch is
``N × C × P`` for the Jacobian, so batches are sized to a budget.

The model's own forward runs, so hooks, parametrizations (the Fisher is then with respect to the
parameters ``model.named_parameters()`` lists, e.g. ``parametrizations.weight.original``) and shared
parameters are honoured. Modules with ``inplace=True`` run out of place while the engine works.

See chapter :doc:`/book/estimators` (section "What each costs").
"""

from __future__ import annotations

import functools
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..calls import Batch, call, call_args, logits, map_tensors, num_rows, take_rows
from ..errors import UnsupportedModelError
from ..inspection import inplace_disabled, plain_checkpoints
from ..terms import UnitTerms
from .composites import composites
from .graph.trace import Traced, piecewise_linear_parameters
from .second_order import check_second_derivatives, custom_functions, fake_quantize_reason

__all__ = ["GenericEngine"]

# Attention (``scaled_dot_product_attention``, e.g. in ``nn.MultiheadAttention``) runs through PyTorch's
# composite math kernel here: the fused CPU kernel has neither a forward-mode rule nor a double backward.
_ATTENTION_KERNELS = [SDPBackend.MATH]


@contextmanager
def differentiable(model: nn.Module) -> Iterator[None]:
    """The model as ``torch.func`` can differentiate it, while the engine works.

    No in-place operations, checkpoints run plainly, the composites of :mod:`.composites` in place of fused
    kernels, and attention by its plain (math) kernel.
    """
    with inplace_disabled(model), plain_checkpoints(), composites(model), sdpa_kernel(_ATTENTION_KERNELS):
        yield


def _load_forward_ad_decompositions() -> None:
    """Import torch's forward-mode AD decompositions now, without the deprecation warning they raise.

    The first ``jvp`` (here, or ``torch.func.hessian`` anywhere) imports
    ``torch._decomp.decompositions_for_jvp``, which compiles its rules with ``torch.jit.script`` and so
    emits torch's own ``FutureWarning: torch.jit.script is deprecated`` once. It concerns torch's internals,
    not the caller's code, so it is ignored for this import only; every other warning still surfaces.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"`torch\.jit\.script` is (deprecated|not supported in Python)",
            category=FutureWarning,
            module=r"torch\.jit\._script",
        )
        import torch._decomp.decompositions_for_jvp  # noqa: F401


_load_forward_ad_decompositions()


class GenericEngine:
    """Per-parameter derivative terms through ``torch.func``; each parameter entry is one unit.

    Args:
        model: any module whose forward maps a batch to ``(N, C)`` and treats inputs independently.
        chunk_size: at most this many basis vectors per ``vmap`` call for the second derivatives.
        element_budget: and at most this many perturbed parameter entries (inputs × chunk × entries) per call.
        traced: the model's :func:`~fishertut.engines.graph.trace.trace`, where the caller has it.
    """

    name = "generic"
    flat_outputs = True

    def __init__(
        self, model: nn.Module, chunk_size: int = 512, element_budget: int = 1 << 23, traced: Traced | None = None
    ) -> None:
        self._model = weakref.ref(model)
        self.chunk_size = chunk_size
        self.element_budget = element_budget
        self.forward_mode = True
        self._mode_checked = False
        self.loop_inputs = False
        self.params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        self.aliases = _aliases(model, self.params)
        self._traced = traced

    @property
    def model(self) -> nn.Module:
        """The model, held weakly: :mod:`fishertut.memo` may keep the engine without keeping the model alive."""
        return self._model()

    @functools.cached_property
    def piecewise_linear(self) -> frozenset[str]:
        r"""Parameters with :math:`u \equiv 0` (the model is traced when first asked, unless a trace was given)."""
        return piecewise_linear_parameters(self.model, self._traced)

    @classmethod
    def unsupported_reason(cls, model: nn.Module, traced: Traced | None = None) -> str | None:
        """Always ``None``: the engine differentiates the model's own forward (failures surface in :meth:`backward`)."""
        return None

    def input_reason(self, x: Tensor) -> str | None:
        """Always ``None``: the model's own forward decides which inputs it takes."""
        return None

    def per_input_elements(self, channels: int, curvature: bool) -> int:
        """Peak number of tensor elements per input (the Jacobian, and the second derivatives if asked)."""
        numel = sum(p.numel() for p in self.params.values())
        return max(1, (2 if curvature else 1) * (channels + 1) * numel)

    def _output(self, params: dict[str, Tensor], x: Batch) -> Tensor:
        """The outputs ``(C,)`` of one input ``x`` (a tensor or a mapping of tensors, without the batch axis)."""
        state = {alias: params[name] for alias, name in self.aliases.items()}
        args, kwargs = call_args(self.model, map_tensors(x, lambda t: t.unsqueeze(0)))
        # outputs with positions (1, T, C) are flattened: the engine sees (K,) per input, K = T * C
        return logits(functional_call(self.model, state, args, kwargs, tie_weights=False)).reshape(-1)

    def forward(self, x: Batch) -> tuple[Tensor, Batch]:
        """The outputs ``h`` of the batch and the tape (the batch itself)."""
        with inplace_disabled(self.model), plain_checkpoints():
            return call(self.model, x), x

    def _over_inputs(self, f: Callable[[Batch], object], x: Batch) -> object:
        """``f`` of each input of the batch ``x``, stacked: ``vmap``, or a loop where ``vmap`` cannot run the model.

        Some models branch in Python on their inputs (Hugging Face attention masks: "is every position
        valid?"), which ``vmap`` over the inputs of a batch cannot do; on one input at a time it runs.
        """
        if not self.loop_inputs:
            try:
                return vmap(f)(x)
            except RuntimeError as err:
                if "vmap" not in str(err):
                    raise
                self.loop_inputs = True
        outs = [f(map_tensors(x, lambda t, i=i: t[i])) for i in range(num_rows(x))]
        if isinstance(outs[0], dict):
            return {k: torch.stack([o[k] for o in outs]) for k in outs[0]}
        return torch.stack(outs)

    def _choose_mode(self, xi: Tensor) -> None:
        r"""Check the second derivatives along one random direction; use forward mode only where it is right.

        For a seeded random direction :math:`e` over all parameters and the input ``xi`` ``(1, ...)``, compares
        :math:`\frac{d^2}{ds^2}h(\theta+se)` from two nested ``jvp`` with :math:`e^\top\nabla_\theta(J e)` from two
        nested ``jacrev``, for every output. A fused kernel with a wrong second-order forward-mode rule (PyTorch's
        LayerNorm and instance norm have one) makes them differ at O(1), not by rounding; then the engine uses
        reverse mode for every parameter. A model with a custom ``autograd.Function`` has second derivatives
        nobody derived: both modes are checked against a finite difference of first derivatives
        (:mod:`fishertut.engines.second_order`), and the model is refused if neither agrees.
        """
        gen = torch.Generator().manual_seed(0)
        e = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for n, p in self.params.items()}

        def out(ps: dict[str, Tensor]) -> Tensor:
            return self._output(ps, map_tensors(xi, lambda t: t[0]))

        def along(ps: dict[str, Tensor]) -> Tensor:
            jac = jacrev(out)(ps)
            return sum((jac[n] * e[n]).reshape(jac[n].shape[0], -1).sum(1) for n in ps)

        with torch.enable_grad():
            functions = custom_functions(call(self.model, xi))
        hess = jacrev(along)(self.params)
        modes = {"reverse": sum((hess[n] * e[n]).reshape(hess[n].shape[0], -1).sum(1) for n in hess)}
        try:
            modes["forward"] = jvp(lambda ps: jvp(out, (ps,), (e,))[1], (self.params,), (e,))[1]
        except NotImplementedError:
            self.forward_mode = False
            if not functions:
                return
        if functions:
            self.forward_mode = "forward" in check_second_derivatives(along, self.params, e, modes, functions)
            return
        first, forward, reverse = along(self.params), modes["forward"], modes["reverse"]
        scale = max(float(t.detach().abs().max()) for t in (forward, reverse, first))
        tol = 10 * torch.finfo(forward.dtype).eps ** 0.5 * max(scale, torch.finfo(forward.dtype).tiny)
        self.forward_mode = bool((forward - reverse).detach().abs().max() <= tol)

    def _second_derivatives(self, name: str, x: Tensor) -> Tensor:
        r""":math:`\partial^2 h/\partial\theta_i^2` for every entry ``i`` of parameter ``name``: ``(N, C, numel)``.

        Forward-over-forward by default; reverse-over-reverse (:math:`e_i^\top \nabla(J e_i)`) for models with
        an operator that has no forward-mode rule (PyTorch raises ``NotImplementedError``, e.g. SiLU).
        """
        p = self.params[name]

        def out(w: Tensor, xi: Tensor) -> Tensor:
            return self._output({**self.params, name: w}, xi)

        def forward_forward(xi: Tensor, e: Tensor) -> Tensor:
            return jvp(lambda w: jvp(lambda q: out(q, xi), (w,), (e,))[1], (p,), (e,))[1]

        def reverse_reverse(xi: Tensor, e: Tensor) -> Tensor:
            def directional(w: Tensor) -> Tensor:
                jac = jacrev(out)(w, xi)
                return (jac * e).reshape(jac.shape[0], -1).sum(1)

            hess = jacrev(directional)(p) * e
            return hess.reshape(hess.shape[0], -1).sum(1)

        eye = torch.eye(p.numel(), dtype=p.dtype, device=p.device)
        # each vmapped call evaluates len(x) * chunk perturbed copies of this parameter
        chunk = max(1, min(self.chunk_size, self.element_budget // (num_rows(x) * p.numel())))
        for along in (forward_forward, reverse_reverse) if self.forward_mode else (reverse_reverse,):

            def per_input(x: Batch, basis: Tensor, along=along) -> Tensor:
                return self._over_inputs(lambda xi: vmap(along, in_dims=(None, 0))(xi, basis), x)

            try:
                chunks = [per_input(x, eye[s : s + chunk].reshape(-1, *p.shape)) for s in range(0, p.numel(), chunk)]
            except NotImplementedError:
                self.forward_mode = False
                continue
            return torch.cat(chunks, 1).transpose(1, 2)
        raise RuntimeError("no differentiation mode could compute the second derivatives")

    def backward(self, tape: Tensor, channels: Tensor, curvature_channels: Tensor | None = None) -> Iterator[UnitTerms]:
        """Yield one :class:`UnitTerms` per trainable parameter (see ``LayerwiseEngine.backward``).

        Raises:
            UnsupportedModelError: ``torch.func`` cannot differentiate the model's forward (for example an
                in-place operation written inside ``forward``); the original error is chained.
        """
        x = tape
        reason = None if curvature_channels is None else fake_quantize_reason(self.model)
        if reason is not None:
            raise UnsupportedModelError(reason)
        try:
            with differentiable(self.model):
                jac = self._over_inputs(lambda xi: jacrev(self._output)(self.params, xi), x)
                if curvature_channels is not None and not self._mode_checked:
                    self._mode_checked = True
                    self._choose_mode(take_rows(x, 0, 1))
                # (N, C, numel), 0-d parameters too
                projected = ((n, channels @ jac[n].reshape(*jac[n].shape[:2], -1)) for n in self.params)
                yield from self._unit_terms(projected, x, curvature_channels)
        except RuntimeError as err:
            raise UnsupportedModelError(_failure(self.model, err)) from err

    def _unit_terms(
        self, projected: Iterable[tuple[str, Tensor]], x: Batch, curvature_channels: Tensor | None
    ) -> Iterator[UnitTerms]:
        """One :class:`UnitTerms` per parameter from its channel derivatives ``(N, K, numel)``, with curvature.

        Second derivatives are zero, not computed, for the parameters proven piecewise linear.
        """
        for name, j in projected:
            curv, zero = None, curvature_channels is not None and name in self.piecewise_linear
            if zero:
                curv = j.new_zeros(()).expand(j.shape[0], curvature_channels.shape[1], j.shape[2])
            elif curvature_channels is not None:
                curv = curvature_channels @ self._second_derivatives(name, x)
            yield UnitTerms(jac=j, curv=curv, targets=[(name, None)], curv_zero=zero)


_INPLACE = ("inplace", "in-place", "modified by an inplace", "a leaf variable that requires grad")


def _failure(model: nn.Module, err: RuntimeError) -> str:
    """Why ``torch.func`` failed on ``model``, naming in-place operations only where the error is about them."""
    text = str(err)
    cause = (
        "an in-place operation on a tensor inside forward (write it out of place, e.g. x = x + y)"
        if any(k in text.lower() for k in _INPLACE)
        else "an operation inside forward that torch.func cannot batch over the inputs or differentiate per input"
    )
    return (
        f"the generic path could not differentiate {type(model).__name__} per input with torch.func "
        f"(vmap over the batch, jacrev): {cause}: {type(err).__name__}: {text}"
    )


def _aliases(model: nn.Module, params: dict[str, Tensor]) -> dict[str, str]:
    """``{name of a (module, attribute) slot: name of the trainable parameter it holds}``.

    A parameter shared by two modules must be substituted in both slots, but a module used twice has one
    slot: naming it twice (as ``named_parameters(remove_duplicate=False)`` would) makes ``functional_call``
    save and restore it twice and leaves a wrapped tensor in the user's model.
    """
    canonical = {id(p): n for n, p in model.named_parameters() if n in params}
    out = {}
    for prefix, module in model.named_modules():
        for attr, p in module._parameters.items():
            if p is not None and id(p) in canonical:
                out[f"{prefix}.{attr}" if prefix else attr] = canonical[id(p)]
    return out
