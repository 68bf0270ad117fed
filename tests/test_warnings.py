"""Upstream warnings are silenced narrowly: the known one is gone, any other warning still surfaces."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with every warning turned into an error."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


def test_forward_mode_ad_after_import_does_not_warn() -> None:
    """The `torch.jit.script is deprecated` FutureWarning of torch's own from its forward-AD rules is not shown."""
    result = _run(
        """
        import torch
        import fishertut as ft
        from torch.func import hessian

        model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
        ft.variance_report(model, torch.randn(4, 2), ft.Categorical(), path="generic")
        print(float(hessian(lambda x: (x**3).sum())(torch.ones(2)).trace()))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "12.0"


def test_other_warnings_still_surface() -> None:
    """The filter is scoped to one import: a FutureWarning from elsewhere, even torch.jit's, is raised."""
    result = _run(
        """
        import warnings
        import torch
        import fishertut

        torch.jit.script(lambda x: x + 1)
        """
    )
    assert result.returncode != 0
    assert "FutureWarning" in result.stderr and "torch.jit.script" in result.stderr
