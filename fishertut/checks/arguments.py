"""The plain arguments of the public functions, each rule once.

Counts, fractions, labels, ``path``, ``process_group``, ``generator``, the estimator's name, and which
estimators take ``targets``, ``samples_per_input`` and ``minibatch``.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from ..families import ExponentialFamily

__all__ = [
    "PATHS",
    "ESTIMATORS",
    "check_count",
    "check_family",
    "check_fraction",
    "coerce_targets",
    "check_path",
    "check_process_group",
    "check_generator",
    "check_estimator",
    "check_sampling",
]

PATHS = ("auto", "layerwise", "graph", "transformer", "generic")
ESTIMATORS = ("exact", "i1", "i1_sequence", "i2", "hutchinson")


def check_count(value: object, argument: str) -> int:
    """``value`` as a positive ``int``: Python and numpy integers and 0-d integer tensors qualify.

    Raises:
        ValueError: ``value`` is not an integer (booleans and floats included), or is below 1.
    """
    if (
        isinstance(value, Tensor)
        and value.ndim == 0
        and not value.dtype.is_floating_point
        and not value.dtype.is_complex
        and value.dtype != torch.bool
    ):
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{argument} must be a positive integer, got {value!r}")
    return int(value)


def coerce_targets(targets: object, device: torch.device, dtype: torch.dtype) -> Tensor | str | None:
    """``targets`` as the public functions take it: ``None``, ``"data"``, a key name, or a tensor.

    A list, tuple or numpy array becomes a tensor on the model's ``device``; floating values take the
    model's ``dtype`` (Gaussian targets), integers stay integers (class indices). A string other than
    ``"data"`` names the labels' entry of mapping batches (checked against the batches by
    :func:`~fishertut.batches.iterate_batches`).

    Raises:
        TypeError: ``targets`` is of another type, or a sequence that is not numeric.
        ValueError: ``targets`` is an empty string.
    """
    if isinstance(targets, str) and not targets:
        raise ValueError("targets must be None, a tensor of labels, 'data' or the key of the labels, got ''")
    if targets is None or isinstance(targets, (str, Tensor)):
        return targets
    if isinstance(targets, (list, tuple)) or type(targets).__module__ == "numpy":
        try:
            out = torch.as_tensor(targets, device=device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"targets must be a tensor, or a list or numpy array of numbers; could not convert "
                f"the {type(targets).__name__} given: {err}"
            ) from err
        return out.to(dtype) if out.dtype.is_floating_point else out
    raise TypeError(
        f"targets must be None, 'data', a tensor, or a list or numpy array of labels, got {type(targets).__name__}"
    )


def check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    """The generator must be a ``torch.Generator`` on the model's device."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but the model is on {device}")


def check_family(family: object) -> None:
    """``family`` must be a fishertut output family, else ``TypeError``."""
    if not isinstance(family, ExponentialFamily):
        raise TypeError(
            f"family must be a fishertut family such as ft.Categorical() or ft.Gaussian(sigma), "
            f"got {type(family).__name__}"
        )


def check_fraction(value: object, argument: str, upper: float) -> float:
    """``value`` as a ``float`` in ``(0, upper)`` (``upper`` may be ``math.inf``), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < upper):
        bound = "in (0, 1)" if upper == 1 else "a positive finite number"
        raise ValueError(f"{argument} must be {bound}, got {value!r}")
    return float(value)


def check_path(path: object) -> str:
    """``path`` if it names a computation path (``"auto"`` or an engine's name), else ``ValueError``."""
    if not isinstance(path, str) or path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    return path


def check_process_group(process_group: object) -> object:
    """``None`` or a ``torch.distributed`` process group (e.g. ``dist.group.WORLD``), else ``TypeError``."""
    if process_group is None:
        return None
    import torch.distributed as dist

    if not dist.is_available() or not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(
            f"process_group must be None or a torch.distributed process group (e.g. dist.group.WORLD after "
            f"dist.init_process_group), got {type(process_group).__name__}"
        )
    return process_group


def check_estimator(estimator: object, allowed: tuple[str, ...] = ("i1", "i2")) -> str:
    """``estimator`` if it is one of ``allowed``, else ``ValueError`` (the one estimator-name check)."""
    if not isinstance(estimator, str) or estimator not in allowed:
        raise ValueError(f"estimator must be one of {allowed}, got {estimator!r}")
    return estimator


def check_sampling(
    estimator: str, targets: object, samples_per_input: object, minibatch: object = 1
) -> tuple[int, int]:
    """``(samples_per_input, inputs summed before squaring)`` for ``estimator``, or why they do not combine.

    ``minibatch`` sums inputs before squaring for ``"i1"`` (GNB) and ``"hutchinson"``; ``"i2"`` is unchanged by
    it (1 is returned).

    Raises:
        ValueError: ``samples_per_input`` or ``minibatch`` is not a positive integer; ``targets`` with
            ``"exact"`` or ``"hutchinson"``, or with ``samples_per_input > 1``; ``minibatch > 1`` with ``"exact"``.
    """
    samples = check_count(samples_per_input, "samples_per_input")
    size = check_count(minibatch, "minibatch")
    if targets is not None and estimator == "exact":
        raise ValueError("targets are not used by estimator='exact' (it averages over all labels); pass targets=None")
    if targets is not None and estimator == "hutchinson":
        raise ValueError("estimator='hutchinson' draws its own signs; pass targets=None")
    if targets is not None and samples != 1:
        raise ValueError(f"samples_per_input must be 1 when targets are given, got {samples}")
    if size > 1 and estimator == "exact":
        raise ValueError("minibatch applies to sampled estimators; estimator='exact' takes minibatch=1")
    return samples, 1 if estimator == "i2" else size
