"""Value checks on tensors that may live on an accelerator, read once per pass."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["Checks"]


class Checks:
    """Value checks on tensors that may live on an accelerator.

    Eager checks read the flag at once (one device-to-host copy each). Once :meth:`defer` has been called,
    later flags are only collected on the device and read together by :meth:`flush`, so the streaming loops
    make no host-device round trip per batch; a failure is still raised, at the end of the pass.
    """

    def __init__(self) -> None:
        self.eager = True
        self.pending: list[tuple[Tensor, Callable[[], str]]] = []

    def require(self, ok: Tensor, message: Callable[[], str]) -> None:
        """Raise ``ValueError(message())`` unless the 0-d boolean tensor ``ok`` is true (now or at :meth:`flush`)."""
        if self.eager:
            if not bool(ok):
                raise ValueError(message())
        else:
            self.pending.append((ok, message))

    def defer(self) -> None:
        """Collect the flags of later checks instead of reading them one by one."""
        self.eager = False

    def flush(self) -> None:
        """Read the collected flags (one transfer) and raise for the first failed check."""
        if not self.pending:
            return
        flags = torch.stack([ok for ok, _ in self.pending]).cpu()
        failed = [msg for (_, msg), ok in zip(self.pending, flags.tolist()) if not ok]
        self.pending.clear()
        if failed:
            raise ValueError(failed[0]())
