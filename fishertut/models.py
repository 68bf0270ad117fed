"""Small network builders shared by the chapters, the case study and the tests."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "mlp", "layer_groups"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "softplus": nn.Softplus,
    "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU, "identity": nn.Identity,
}


def mlp(sizes: Sequence[int], activation: str = "sigmoid", *, seed: int | None = 0,
        dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
        flatten: bool = False) -> nn.Sequential:
    """A multilayer perceptron ``Linear -> act -> ... -> Linear`` with a linear last layer (spec 3.1).

    Args:
        sizes: widths ``[d_in, h_1, ..., h_{L-1}, C]``; at least two entries.
        activation: a key of :data:`ACTIVATIONS`.
        seed: seeds PyTorch's default initialisation (``None`` leaves the global generator alone).
        dtype, device: of the parameters.
        flatten: start with ``nn.Flatten()`` (for image batches ``(N, 1, 28, 28)``).

    Returns:
        An ``nn.Sequential`` in eval mode. Its parameters are named ``"<index>.weight"`` / ``"<index>.bias"``.
    """
    sizes = list(sizes)
    if len(sizes) < 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"sizes must list at least two positive integer widths, got {sizes}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    gen_state = None
    if seed is not None:
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
    try:
        layers: list[nn.Module] = [nn.Flatten()] if flatten else []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        model = nn.Sequential(*layers).to(dtype=dtype, device=device)
    finally:
        if gen_state is not None:
            torch.random.set_rng_state(gen_state)
    return model.eval()


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """Trainable parameter names grouped by their module, in order: ``{"layer 1": ["0.weight", "0.bias"], ...}``."""
    groups: dict[str, list[str]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            module = name.rsplit(".", 1)[0] if "." in name else name
            groups.setdefault(module, []).append(name)
    return {f"layer {i + 1}": names for i, names in enumerate(groups.values())}
