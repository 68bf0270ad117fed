r"""Second derivatives the engines did not derive themselves: find them, and check them once per call.

A custom ``torch.autograd.Function`` supplies its own ``backward`` (and perhaps ``jvp``); the engines
differentiate through it, but whether that rule is right a second time (what :math:`u_i`, Î2 and
:math:`V_2` use) is the Function's author's promise: a ``backward`` that saves its output detached, say, is
exact once and silently gives :math:`u = 0` twice.

:func:`custom_functions` lists the Functions one forward pass records in the autograd graph.
:func:`check_second_derivatives` compares, along one seeded random direction :math:`e` over all parameters,
the second derivative :math:`e^\top\nabla_\theta^2 h\,e` computed by each mode the generic engine may use with a
central finite difference of first derivatives,

.. math:: \frac{J(\theta + \delta e)e - J(\theta - \delta e)e}{2\delta},

at two step sizes :math:`\delta` (a kink of a piecewise-linear activation within :math:`\delta` spoils one of
them, not both). A correct rule agrees to the finite difference's error (:math:`O(\delta^2)` truncation and
:math:`O(\epsilon/\delta)` rounding); a wrong one misses whole terms and differs at :math:`O(1)`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..calls import call, take_rows
from ..errors import UnsupportedModelError

__all__ = ["custom_functions", "custom_function_reason", "check_second_derivatives", "fake_quantize_reason"]

Params = dict[str, Tensor]


def fake_quantize_reason(model: nn.Module) -> str | None:
    """Why second derivatives through the model are undefined (fake quantisation), or ``None``.

    A quantisation-aware module rounds its weights or activations to a grid: the function is piecewise
    constant in them, and its gradient is the straight-through surrogate. That surrogate's derivative is not
    a second derivative of anything, so Î2, :math:`u_i` and the variances that use them have no exact value.
    """
    from torch.ao.quantization import FakeQuantizeBase

    for name, module in model.named_modules():
        if isinstance(module, FakeQuantizeBase):
            return (
                f"module '{name}' ({type(module).__name__}) fake-quantises its input: the model is piecewise "
                "constant there and its gradient a straight-through surrogate, so second derivatives (Î2 and the "
                "variances) are undefined; use estimator 'exact', 'i1' or 'hutchinson', which need first "
                "derivatives only"
            )
    return None


def custom_functions(output: Tensor) -> list[str]:
    """Names of the custom ``autograd.Function`` classes in the autograd graph behind ``output``, sorted."""
    names, seen = set(), set()
    stack = [output.grad_fn] if isinstance(output, Tensor) and output.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            cls = getattr(node, "_forward_cls", type(node))
            names.add(f"{cls.__module__}.{cls.__qualname__}")
        stack.extend(nxt for nxt, _ in node.next_functions)
    return sorted(names)


def custom_function_reason(model: nn.Module, x: Tensor) -> str | None:
    """Why a fast path cannot take ``model``: it calls custom Functions (on the first row of ``x``), else ``None``.

    The graph engine differentiates the traced forward of a Function, not the Function's own ``backward``.
    """
    with torch.enable_grad():
        out = call(model, take_rows(x, 0, 1))
    functions = custom_functions(out)
    if not functions:
        return None
    return (
        f"the model calls the custom autograd.Function {', '.join(functions)}, whose backward the fast paths "
        "do not use (they differentiate the operations of its forward); use path='generic' (or 'auto')"
    )


def _shifted(params: Params, e: Params, step: float) -> Params:
    return {n: p + step * e[n] for n, p in params.items()}


def check_second_derivatives(
    along: Callable[[Params], Tensor],
    params: Params,
    e: Params,
    modes: dict[str, Tensor],
    functions: list[str],
) -> list[str]:
    r"""The modes whose second derivative along ``e`` matches the finite difference of ``along``.

    Args:
        along: :math:`\theta \mapsto J(\theta)e`, the first directional derivative of the outputs ``(C,)``.
        params: the parameters :math:`\theta`.
        e: the direction, shaped like ``params``.
        modes: ``{mode name: second derivative along e (C,)}`` computed by the engine's modes.
        functions: the custom Functions of the model, for the message.

    Raises:
        UnsupportedModelError: no mode agrees: the message names the Functions and the largest discrepancy.
    """
    dtype = next(iter(params.values())).dtype
    eps = torch.finfo(dtype).eps
    base = along(params).detach()
    scale = max([float(base.abs().max())] + [float(v.abs().max()) for v in modes.values()])
    scale = max(scale, torch.finfo(dtype).tiny)
    tol = 10 * eps ** (1 / 3) * scale
    diffs = [
        (along(_shifted(params, e, step)) - along(_shifted(params, e, -step))).detach() / (2 * step)
        for step in (eps ** (1 / 3), eps ** (1 / 3) / 4)
    ]
    errors = {m: min(float((v.detach() - d).abs().max()) for d in diffs) for m, v in modes.items()}
    agree = [m for m, err in errors.items() if err <= tol]
    if not agree:
        raise UnsupportedModelError(
            f"the model calls the custom autograd.Function {', '.join(functions)}, and its second derivatives "
            f"disagree with a finite difference of its first derivatives (along a random direction, by "
            f"{min(errors.values()):.3g} against a scale of {scale:.3g}): its backward is right once but not "
            "twice differentiable (e.g. it saves a tensor detached, or uses non-differentiable operations). "
            "The second derivatives (estimator='i2', variance_report, per_input_statistics, estimator_terms) "
            "would be wrong; make backward differentiable (ctx.save_for_backward of the input or output, "
            "torch operations only) or use fisher_diagonal with estimator 'exact', 'i1' or 'hutchinson'"
        )
    return agree
