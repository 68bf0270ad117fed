r"""The families' ``factor_product`` (the Hutchinson channels' :math:`\xi^\top A^\top`) against the factor."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fishertut as ft


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 6), draws=st.integers(1, 4), classes=st.integers(2, 9), seed=st.integers(0, 10_000))
def test_the_categorical_closed_form_is_the_product_with_its_factor(rows, draws, classes, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    h = 3 * torch.randn(rows, classes, generator=gen, dtype=torch.float64)
    w = torch.randn(rows, draws, classes, generator=gen, dtype=torch.float64)
    fam = ft.Categorical()
    expected = torch.einsum("msc,mcd->msd", w, fam.covariance_factor(h))
    torch.testing.assert_close(fam.factor_product(h, w), expected, rtol=0, atol=1e-12)


def test_the_gaussian_uses_the_product_with_its_factor() -> None:
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 2, 3, generator=gen, dtype=torch.float64)
    fam = ft.Gaussian(sigma=0.5)
    expected = torch.einsum("msc,mcd->msd", w, fam.covariance_factor(h))
    torch.testing.assert_close(fam.factor_product(h, w), expected, rtol=0, atol=1e-12)
