r"""Outputs with positions: ``(N, T, C)`` logits or means read as independent outputs per position.

A model output of shape ``(N, d_1, ..., C, ..., d_k)`` (the family's ``class_axis`` holds the classes, or the
Gaussian's output dimensions; every other non-batch axis is a *position*) is read, under teacher forcing, as
independent per-position distributions given the input: :math:`p(y_n|x_n) = \prod_t p(y_{n,t}|h_{n,t})`. An
``(N, C)`` output is the case of one position. Per parameter :math:`\theta_i` and input :math:`x_n`, with
:math:`I_{n,t}`, :math:`V_{1,n,t}`, :math:`V_{2,n,t}` the paper's single-output quantities at position ``t``
and :math:`c_{n,t}` the position weights (0 where masked; 1, or :math:`1/T_n` with ``normalize="token"`` and
:math:`T_n` unmasked positions):

* Fisher of the input: :math:`I_n = \sum_t c_{n,t} I_{n,t}` (the cross terms of the score vanish);
* per-token Î1, :math:`\sum_t c_t g_t^2` (``"i1"``): variance :math:`\sum_t c_t^2 V_{1,t}`;
* per-sequence Î1, :math:`(\sum_t \sqrt{c_t} g_t)^2` (``"i1_sequence"``): variance
  :math:`\sum_t c_t^2 V_{1,t} + 2[(\sum_t c_t I_t)^2 - \sum_t c_t^2 I_t^2]`, since independent zero-mean
  :math:`a_t` have
  :math:`\mathbb E(\sum_t a_t)^4 = \sum_t \mathbb E a_t^4 + 3\sum_{t\ne s}\mathbb E a_t^2\,\mathbb E a_s^2`:
  the cross-position terms vanish in expectation but not in variance;
* Î2, :math:`-\sum_t c_t\,\partial^2_{\theta_i}\log p(y_t|x)`: variance :math:`\sum_t c_t^2 V_{2,t}`.

The two normalisations: ``"sequence"`` gives the Fisher of the joint distribution of an input's labels,
``"token"`` that divided by :math:`T_n`, the mean Fisher per token of the input. When every input has the
same count :math:`T`, the token-normalised Fisher is the sequence one divided by :math:`T` (variances by
:math:`T^2`); with unequal counts the token normalisation gives each input the same total weight, so the
positions of short inputs weigh more. Two models' Fishers (e.g. merging weights) compare only under one
normalisation.

Engines never see the positions: they differentiate the flattened output ``(N, K)``, ``K = T·C``, in the
model's memory order, along output-space *channels* ``(N, k, K)`` that :class:`Positions` builds (block
diagonal over positions, weighted by :math:`\sqrt{c_t}`), and :class:`Positions` reads their derivatives back
per position. The entry points of :mod:`fishertut.api` take ``mask`` and ``normalize``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["NORMALIZATIONS", "IGNORE_INDEX", "Positions", "check_normalize"]

NORMALIZATIONS = ("sequence", "token")
IGNORE_INDEX = -100


def check_normalize(normalize: object) -> str:
    """``normalize`` if it is ``"sequence"`` or ``"token"``, else ``ValueError``."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    return normalize


def _axis_hint(shape: tuple[int, ...], got: tuple[int, ...], argument: str, axis: int) -> str:
    """A sentence naming the class axis under which ``got`` would fit outputs of ``shape``, if one exists."""
    fits = [a for a in range(1, len(shape)) if a != axis and (shape[0], *shape[1:a], *shape[a + 1 :]) == got]
    if not fits:
        return ""
    a = fits[0]
    alt = -1 if a == len(shape) - 1 else a
    return f"; {argument} fits class_axis={alt} (classes in axis {a}): pass that to the family"


class Positions:
    """The per-position layout of one batch of outputs, with its position weights :math:`c_{n,t}`.

    Args:
        family: the output family (its ``class_axis`` says which axis holds the classes).
        shape: the model's output shape ``(N, ...)`` for this batch.
        mask: boolean ``(N, *positions)`` (``True`` = counted) or ``None`` (every position counts).
        normalize: ``"sequence"`` (sum over positions) or ``"token"`` (divided by each input's count).
        dtype: dtype of the weights (the model's).
        device: where the weights live without a mask (the outputs' device).
    """

    def __init__(self, family, shape: tuple[int, ...], mask: Tensor | None, normalize: str, dtype, device=None) -> None:
        self.family = family
        self.shape = tuple(shape)
        self.axis = family.class_axis % len(shape)
        self.classes = shape[self.axis]
        self.position_shape = tuple(shape[1 : self.axis] + shape[self.axis + 1 :])
        self.num_positions = math.prod(self.position_shape)
        n = shape[0]
        if mask is None:
            mask = torch.ones((n, self.num_positions), dtype=torch.bool, device=device)
        self.mask = mask.reshape(n, self.num_positions)
        weights = self.mask.to(dtype)
        if normalize == "token":
            weights = weights / self.mask.sum(1, keepdim=True).clamp_min(1).to(dtype)
        self.weights = weights  # c, (N, T)

    # ---- argument checks (whole batches) -------------------------------------------------------------
    @staticmethod
    def check_mask(family, mask: Tensor, shape: tuple[int, ...], device: torch.device) -> Tensor:
        """Validate a boolean mask ``(N, *positions)`` for outputs of ``shape``; naming ``mask`` on failure."""
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise TypeError(f"mask must be a boolean tensor (N, *positions), True where a position counts; got {got}")
        axis = family.class_axis % len(shape)
        want = (shape[0], *shape[1:axis], *shape[axis + 1 :])
        if len(want) == 1:
            raise ValueError(
                f"mask is for outputs with positions (N, T, C); the model's outputs have shape {shape}, "
                "one output per input: pass mask=None"
            )
        if tuple(mask.shape) != want:
            raise ValueError(
                f"mask must have shape (N, *positions) = {want} for outputs of shape {shape} with the "
                f"classes in axis {axis} (class_axis={family.class_axis}), got {tuple(mask.shape)}"
                + _axis_hint(shape, tuple(mask.shape), "mask", axis)
            )
        if mask.device != device:
            raise ValueError(f"mask is on {mask.device} but the model output is on {device}")
        return mask

    @staticmethod
    def target_shape(family, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of data labels for outputs of ``shape``: class indices per position, or the means' shape."""
        if family.name != "categorical":
            return tuple(shape)
        axis = family.class_axis % len(shape)
        return (shape[0], *shape[1:axis], *shape[axis + 1 :])

    @staticmethod
    def check_targets_shape(family, targets: Tensor, shape: tuple[int, ...]) -> None:
        """Refuse labels whose shape does not fit outputs of ``shape`` (naming the class axis that would fit)."""
        want = Positions.target_shape(family, shape)
        if len(shape) > 2 and isinstance(targets, Tensor) and tuple(targets.shape) != want:
            axis = family.class_axis % len(shape)
            raise ValueError(
                f"targets must have shape {want} for outputs of shape {shape} with the classes in axis {axis} "
                f"(class_axis={family.class_axis}), got {tuple(targets.shape)}"
                + _axis_hint(shape, tuple(targets.shape), "targets", axis)
            )

    # ---- layouts ----------------------------------------------------------------------------------------
    def flat(self, h: Tensor) -> Tensor:
        """The output as the engines see it, ``(N, K)`` in the model's memory order."""
        return h.reshape(h.shape[0], -1)

    def rows(self, h: Tensor) -> Tensor:
        """One row per (input, position): ``(N·T, C)`` from the flat or raw output."""
        raw = h.reshape(h.shape[0], *self.shape[1:])
        return raw.movedim(self.axis, -1).reshape(-1, self.classes)

    def to_model(self, channels: Tensor) -> Tensor:
        """Channels ``(N, k, T, C)`` (per position, classes last) to the model's flat order ``(N, k, K)``."""
        n, k = channels.shape[:2]
        full = channels.reshape(n, k, *self.position_shape, -1)
        return full.movedim(-1, self.axis + 1).reshape(n, k, -1)

    def from_model(self, w: Tensor) -> Tensor:
        """Directions ``(N, K, m)`` in the model's order to ``(N·T, C, m)``, one row per (input, position)."""
        n, m = w.shape[0], w.shape[-1]
        full = w.reshape(n, *self.shape[1:], m).movedim(self.axis, -2)
        return full.reshape(n * self.num_positions, self.classes, m)

    def _blocks(self, per_row: Tensor) -> Tensor:
        """``(N, T, k, C)`` channels of each position to block-diagonal ``(N, T·k, T, C)``."""
        n, t, k, c = per_row.shape
        eye = torch.eye(t, dtype=per_row.dtype, device=per_row.device)
        return (per_row.unsqueeze(3) * eye[None, :, None, :, None]).reshape(n, t * k, t, c)

    def _root_weights(self, like: Tensor) -> Tensor:
        return self.weights.to(device=like.device, dtype=like.dtype).sqrt()

    # ---- channels -----------------------------------------------------------------------------------
    def covariance_channels(self, h: Tensor) -> Tensor:
        r"""Block-diagonal :math:`\sqrt{c_t}\,S_t` ``(N, T·C, K)``: their Jacobian's squared norm is :math:`I_n`."""
        s = self.family.covariance_factor(self.rows(h))
        s = s.reshape(h.shape[0], self.num_positions, self.classes, self.classes)
        return self.to_model(self._blocks(s * self._root_weights(s)[:, :, None, None]))

    def sample(self, h: Tensor, samples: int, generator) -> tuple[Tensor, Tensor]:
        """Labels ``(N, S, ...)`` drawn per position (input by input) and residuals ``(N, S, T, C)``."""
        y, eps = self.family.sample_with_residual(self.rows(h), samples, generator)
        return self._labels(y, h.shape[0], samples), self._per_input(eps, h.shape[0])

    def _per_input(self, eps: Tensor, n: int) -> Tensor:
        """Residuals ``(N·T, S, C)`` to ``(N, S, T, C)``."""
        return eps.reshape(n, self.num_positions, eps.shape[1], self.classes).transpose(1, 2)

    def _labels(self, y: Tensor, n: int, samples: int) -> Tensor:
        if self.num_positions == 1 and len(self.shape) == 2:
            return y.reshape(n, *y.shape[1:])
        y = y.reshape(n, self.num_positions, samples, *y.shape[2:]).transpose(1, 2)
        if y.ndim == 3:
            return y.reshape(n, samples, *self.position_shape)
        full = y.reshape(n, samples, *self.position_shape, -1)
        return full.movedim(-1, self.axis + 1)

    def given(self, h: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Data labels (``targets``, shaped as :meth:`target_shape`) as labels ``(N, 1, ...)`` and residuals."""
        n = h.shape[0]
        if self.family.name == "categorical":
            rows = y.reshape(n * self.num_positions, 1).clamp(0, self.classes - 1)
        else:
            rows = self.rows(y).unsqueeze(1)
        return y.unsqueeze(1), self._per_input(self.family.residual(self.rows(h), rows), n)

    def argmax(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """The most probable class per position as labels ``(N, 1, ...)`` and their residuals."""
        y = self.rows(h).argmax(1)
        eps = self._per_input(self.family.residual(self.rows(h), y.unsqueeze(1)), h.shape[0])
        return self._labels(y.unsqueeze(1), h.shape[0], 1), eps

    def score_channels(self, eps: Tensor, per_token: bool) -> Tensor:
        r"""Channels of sampled scores, per token ``(N, S·T, K)`` or per sequence ``(N, S, K)``.

        Per token, each :math:`\sqrt{c_t}\varepsilon_t` alone (one squared score per position); per sequence,
        :math:`\sqrt{c_t}\varepsilon_t` at every position at once (the gradient of the summed log-likelihood).
        """
        eps = eps * self._root_weights(eps)[:, None, :, None]
        if not per_token:
            return self.to_model(eps)
        n, s, t, c = eps.shape
        return self.to_model(
            self._blocks(eps.transpose(1, 2)).reshape(n, t, s, t, c).transpose(1, 2).reshape(n, -1, t, c)
        )

    def curvature_channels(self, eps: Tensor, summed: bool = True) -> Tensor:
        r"""The label noise that enters Î2: :math:`c_t\varepsilon_{s,t}` per draw ``(N, S, K)``, or summed."""
        w = self.weights.to(device=eps.device, dtype=eps.dtype)
        eps = eps * w[:, None, :, None]
        return self.to_model(eps.sum(1, keepdim=True) if summed else eps)

    def hutchinson_channels(self, h: Tensor, samples: int, generator) -> Tensor:
        r"""Channels :math:`\sum_t\sqrt{c_t}\,\xi_t^\top S_t` ``(N, S, K)``; Rademacher :math:`\xi`, input by input."""
        n, t, c = h.shape[0], self.num_positions, self.classes
        xi = torch.randint(0, 2, (n, samples, t * c), generator=generator, device=h.device).to(h.dtype) * 2 - 1
        xi = xi.reshape(n, samples, t, c).transpose(1, 2).reshape(n * t, samples, c)
        a = self.family.factor_product(self.rows(h), xi).reshape(n, t, samples, c).transpose(1, 2)
        return self.to_model(a * self._root_weights(a)[:, None, :, None])


def check_position_targets(family, targets: Tensor, shape: tuple[int, ...], checks) -> tuple[Tensor, Tensor | None]:
    """Validate data labels of a whole batch of outputs with positions; return them and their mask.

    Categorical labels are class indices ``(N, *positions)`` in ``[0, C)`` or the ignore index ``-100``, which
    masks its position (the second return value; ``None`` for the Gaussian, whose labels have the outputs' shape).
    """
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a tensor, got {type(targets).__name__}")
    Positions.check_targets_shape(family, targets, shape)
    if family.name != "categorical":
        flat = targets.reshape(shape[0], -1)
        family.check_targets(flat, flat, checks)
        return targets, None
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise ValueError(f"targets for Categorical must be integer class indices, got dtype {targets.dtype}")
    c = shape[family.class_axis % len(shape)]
    keep = targets != IGNORE_INDEX
    if targets.numel():
        checks.require(
            ((targets >= 0) & (targets < c) | ~keep).all(),
            lambda: (
                f"targets must be class indices in [0, {c}) or the ignore index {IGNORE_INDEX}, got values in "
                f"[{int(targets.min())}, {int(targets.max())}]"
            ),
        )
    return targets.long(), keep


def checked_mask_and_labels(
    family, shape: tuple[int, ...], mask: Tensor | None, targets: object, device: torch.device, dtype, checks
) -> tuple[Tensor | None, Tensor | None]:
    """The mask and data labels of one whole batch of outputs of ``shape``, validated.

    ``mask`` is the batch's rows of the user's mask (or ``None``); ``targets`` its labels (or ``None``). The
    ignore index of categorical labels joins the mask. Labels come back shaped like the per-position labels
    (``(N, *positions)`` categorical, the outputs' shape Gaussian; ``(N,)`` or ``(N, D)`` without positions).
    """
    if mask is not None:
        mask = Positions.check_mask(family, mask, shape, device)
    if targets is None:
        return mask, None
    if len(shape) == 2:
        zeros = torch.zeros((), dtype=dtype, device=device).expand(shape)
        return mask, family.check_targets(targets, zeros, checks).squeeze(1)
    if isinstance(targets, Tensor) and targets.device != device:
        raise ValueError(f"targets are on {targets.device} but the model output is on {device}")
    labels, keep = check_position_targets(family, targets, shape, checks)
    if keep is not None:
        mask = keep if mask is None else mask & keep
    return mask, labels
