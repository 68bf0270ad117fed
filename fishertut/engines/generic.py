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

See chapter "The two estimators" (section "What each costs").
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..errors import UnsupportedModelError
from ..inspection import inplace_disabled
from ..terms import UnitTerms
from .composites import composites
from .graph.trace import piecewise_linear_parameters

__all__ = ["GenericEngine"]

# Attention (``scaled_dot_product_attention``, e.g. in ``nn.MultiheadAttention``) runs through PyTorch's
# composite math kernel here: the fused CPU kernel has neither a forward-mode rule nor a double backward.
_ATTENTION_KERNELS = [SDPBackend.MATH]


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
    """

    name = "generic"

    def __init__(self, model: nn.Module, chunk_size: int = 512, element_budget: int = 1 << 23) -> None:
        self.model = model
        self.chunk_size = chunk_size
        self.element_budget = element_budget
        self.forward_mode = True
        self._mode_checked = False
        self.params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        self.aliases = _aliases(model, self.params)
        self.piecewise_linear = piecewise_linear_parameters(model)

    def per_input_elements(self, channels: int, curvature: bool) -> int:
        """Peak number of tensor elements per input (the Jacobian, and the second derivatives if asked)."""
        numel = sum(p.numel() for p in self.params.values())
        return max(1, (2 if curvature else 1) * (channels + 1) * numel)

    def _output(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        state = {alias: params[name] for alias, name in self.aliases.items()}
        # outputs with positions (1, T, C) are flattened: the engine sees (K,) per input, K = T * C
        return functional_call(self.model, state, (x.unsqueeze(0),), tie_weights=False).reshape(-1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The outputs ``h`` of the batch and the tape (the batch itself)."""
        with inplace_disabled(self.model):
            return self.model(x), x

    def _forward_mode_agrees(self, xi: Tensor) -> bool:
        r"""Whether forward-over-forward gives the reverse-mode second derivative along one random direction.

        For a seeded random direction :math:`e` over all parameters and the input ``xi`` ``(1, ...)``, compares
        :math:`\frac{d^2}{ds^2}h(\theta+se)` from two nested ``jvp`` with :math:`e^\top\nabla_\theta(J e)` from two
        nested ``jacrev``, for every output. A fused kernel with a wrong second-order forward-mode rule (PyTorch's
        LayerNorm and instance norm have one) makes them differ at O(1), not by rounding; then the engine uses
        reverse mode for every parameter.
        """
        gen = torch.Generator().manual_seed(0)
        e = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for n, p in self.params.items()}

        def out(ps: dict[str, Tensor]) -> Tensor:
            return self._output(ps, xi[0])

        def along(ps: dict[str, Tensor]) -> Tensor:
            jac = jacrev(out)(ps)
            return sum((jac[n] * e[n]).flatten(1).sum(1) for n in ps)

        first = along(self.params)
        forward = jvp(lambda ps: jvp(out, (ps,), (e,))[1], (self.params,), (e,))[1]
        hess = jacrev(along)(self.params)
        reverse = sum((hess[n] * e[n]).flatten(1).sum(1) for n in hess)
        scale = max(float(t.detach().abs().max()) for t in (forward, reverse, first))
        tol = 10 * torch.finfo(forward.dtype).eps ** 0.5 * max(scale, torch.finfo(forward.dtype).tiny)
        return bool((forward - reverse).detach().abs().max() <= tol)

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
                return (jac * e).flatten(1).sum(1)

            return (jacrev(directional)(p) * e).flatten(1).sum(1)

        eye = torch.eye(p.numel(), dtype=p.dtype, device=p.device)
        # each vmapped call evaluates len(x) * chunk perturbed copies of this parameter
        chunk = max(1, min(self.chunk_size, self.element_budget // (x.shape[0] * p.numel())))
        for along in (forward_forward, reverse_reverse) if self.forward_mode else (reverse_reverse,):
            per_input = vmap(vmap(along, in_dims=(None, 0)), in_dims=(0, None))
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
        try:
            with inplace_disabled(self.model), composites(self.model), sdpa_kernel(_ATTENTION_KERNELS):
                jac = vmap(jacrev(self._output), in_dims=(None, 0))(self.params, x)
                if curvature_channels is not None and self.forward_mode and not self._mode_checked:
                    self._mode_checked = True
                    try:
                        self.forward_mode = self._forward_mode_agrees(x[:1])
                    except NotImplementedError:
                        self.forward_mode = False
                for name in self.params:
                    j = jac[name].flatten(2)
                    curv, zero = None, curvature_channels is not None and name in self.piecewise_linear
                    if zero:
                        curv = j.new_zeros(()).expand(j.shape[0], curvature_channels.shape[1], j.shape[2])
                    elif curvature_channels is not None:
                        curv = curvature_channels @ self._second_derivatives(name, x)
                    yield UnitTerms(jac=channels @ j, curv=curv, targets=[(name, None)], curv_zero=zero)
        except RuntimeError as err:
            raise UnsupportedModelError(
                f"the generic path could not differentiate {type(self.model).__name__} with torch.func "
                f"(vmap/jacrev); in-place operations on tensors inside forward are a common cause: {err}"
            ) from err


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
