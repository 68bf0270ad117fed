r"""Many copies of one small network trained at once: the runs of a study stacked along a leading dimension.

Used by the chapter :doc:`/book/downstream`, which trains hundreds of small networks (seeds x Fisher
diagonals x strengths). The parameters of ``R`` copies of one architecture are held as ``{name: (R, *shape)}``
(:func:`stack`), evaluated with :func:`torch.func.vmap` over :func:`torch.func.functional_call`
(:func:`stacked_logits`) and trained by :func:`train_stacked`. Adam acts element by element and the runs'
losses are summed, so each copy follows exactly the path that :func:`fishertut.lab.training.train_classifier`
gives it alone (same seed, same minibatches, same penalty), up to floating-point summation order.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

__all__ = ["stack", "unstack", "stacked_logits", "stacked_ewc_penalty", "train_stacked"]


def stack(models: Sequence[nn.Module]) -> dict[str, Tensor]:
    """The parameters of ``R`` models of one architecture as ``{name: (R, *shape)}`` leaf tensors (copies)."""
    if not models or not all(isinstance(m, nn.Module) for m in models):
        raise TypeError("models must be a non-empty sequence of torch.nn.Module of one architecture")
    shapes = [{n: p.shape for n, p in m.named_parameters()} for m in models]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("models must share one architecture: their parameter names and shapes differ")
    params, _ = stack_module_state(list(models))
    return {n: p.detach().clone() for n, p in params.items()}


def unstack(template: nn.Module, params: Mapping[str, Tensor], run: int) -> nn.Module:
    """A copy of ``template`` (in eval mode) holding the parameters of run ``run`` of a stack."""
    model = copy.deepcopy(template)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name][run])
    return model.eval()


def stacked_logits(template: nn.Module, params: Mapping[str, Tensor], x: Tensor, *, per_run: bool = False) -> Tensor:
    """Outputs ``(R, N, C)`` of every run: ``x`` ``(N, ...)`` shared by all, or with ``per_run`` ``(R, N, ...)``."""

    def call(p: dict[str, Tensor], xs: Tensor) -> Tensor:
        return functional_call(template, p, (xs,))

    return vmap(call, in_dims=(0, 0 if per_run else None))(dict(params), x)


def stacked_ewc_penalty(
    fisher: Mapping[str, Tensor], anchor: Mapping[str, Tensor], strength: Tensor
) -> Callable[[Mapping[str, Tensor]], Tensor]:
    r"""The sum over runs of the EWC penalties :math:`\frac{\lambda_r}2\sum_i F_{r,i}(\theta_{r,i}-\theta^*_{r,i})^2`.

    Args:
        fisher: ``{name: (R, *shape)}``, the Fisher diagonal of each run (non-negative).
        anchor: ``{name: (R, *shape)}``, each run's :math:`\theta^*`.
        strength: ``(R,)``, each run's :math:`\lambda_r`.

    Returns:
        ``penalty(params)``, a scalar differentiable in the stacked parameters.
    """
    weights = {n: 0.5 * strength.reshape(-1, *[1] * (f.ndim - 1)).to(f) * f for n, f in fisher.items()}
    if any(bool((w < 0).any()) for w in weights.values()):
        raise ValueError("fisher and strength must be non-negative (clamp an Î2 estimate first)")
    return lambda params: sum((weights[n] * (params[n] - anchor[n]).square()).sum() for n in weights)


def train_stacked(
    template: nn.Module,
    params: dict[str, Tensor],
    x: Tensor,
    y: Tensor,
    seeds: Sequence[int],
    *,
    epochs: int = 1,
    batch_size: int = 128,
    lr: float = 1e-3,
    penalty: Callable[[Mapping[str, Tensor]], Tensor] | None = None,
) -> dict[str, Tensor]:
    """Train every run of a stack on ``(x, y)`` with Adam and the softmax cross-entropy, in place.

    Run ``r`` sees the minibatches that ``train_classifier(..., seed=seeds[r])`` would draw (a CPU generator
    seeded with ``seeds[r]``, one permutation per epoch) and minimises its mean minibatch loss plus its share of
    ``penalty`` (a sum over runs, such as :func:`stacked_ewc_penalty`).

    Args:
        template: the architecture (its own parameters are not used).
        params: ``{name: (R, *shape)}`` from :func:`stack`; updated in place and returned.
        x: inputs ``(N, ...)``, shared by the runs.
        y: class labels ``(N,)``.
        seeds: ``R`` seeds of the minibatch order.
        epochs: passes over the data.
        batch_size: inputs per step.
        lr: Adam's learning rate.
        penalty: ``penalty(params)``, a scalar added to the summed losses.
    """
    runs = next(iter(params.values())).shape[0]
    if len(seeds) != runs:
        raise ValueError(f"seeds must give one seed per run: {runs} runs, got {len(seeds)} seeds")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x and y must have the same, non-zero number of rows, got {x.shape[0]} and {y.shape[0]}")
    gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    leaves = [p.requires_grad_(True) for p in params.values()]
    opt = torch.optim.Adam(leaves, lr=lr)
    n = x.shape[0]
    for _ in range(epochs):
        orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(x.device)
        for s in range(0, n, batch_size):
            idx = orders[:, s : s + batch_size]  # (R, B)
            logits = stacked_logits(template, params, x[idx], per_run=True)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), y[idx].flatten(), reduction="sum") / idx.shape[1]
            if penalty is not None:
                loss = loss + penalty(params)
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p in leaves:
        p.requires_grad_(False)
    return params
