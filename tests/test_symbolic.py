"""SymPy derivations of :mod:`fishertut.lab.symbolic` against the torch families and brute-force enumeration."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch

import fishertut as ft
from fishertut.lab import symbolic as fs

RNG = np.random.default_rng(0)


def _rand(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape)


@pytest.mark.parametrize("num_classes", [2, 3, 4])
def test_categorical_mean_and_covariance_match_library(num_classes: int) -> None:
    fam = fs.categorical(num_classes)
    h = _rand(6, num_classes)
    mean = fs.lambdify([fam.h], fam.mean())(h)[..., 0]
    cov = fs.lambdify([fam.h], fam.covariance())(h)
    th = torch.tensor(h)
    np.testing.assert_allclose(mean, ft.Categorical().probabilities(th).numpy(), rtol=1e-12)
    np.testing.assert_allclose(cov, ft.Categorical().covariance(th).numpy(), atol=1e-14)


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5])
def test_gaussian_mean_and_covariance_match_library(sigma: float) -> None:
    fam = fs.gaussian(3)
    h = _rand(5, 3)
    mean = fs.lambdify([fam.h, fam.sigma], fam.mean())(h, sigma)[..., 0]
    cov = fs.lambdify([fam.h, fam.sigma], fam.covariance())(h, sigma)
    assert cov.shape == (5, 3, 3)
    # t(y) = y / sigma^2 has mean mu / sigma^2 and covariance I / sigma^2 (= Cov of the score residual).
    np.testing.assert_allclose(mean, h / sigma**2, rtol=1e-12)
    np.testing.assert_allclose(cov, ft.Gaussian(sigma).covariance(torch.tensor(h)).numpy(), rtol=1e-12)


def test_cumulant_tensor_orders() -> None:
    fam = fs.categorical(3)
    assert fam.cumulant(1).shape == (3,)
    assert fam.cumulant(4).shape == (3, 3, 3, 3)
    k2 = sp.Matrix(fam.cumulant(2).tolist())
    assert (k2 - fam.covariance()).applyfunc(sp.simplify) == sp.zeros(3, 3)


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_categorical_conditional_variances_match_library(num_classes: int) -> None:
    fam = fs.categorical(num_classes)
    v, u = fs.vector("v", num_classes, real=True), fs.vector("u", num_classes, real=True)
    fisher, v1, v2 = fs.conditional_variances(fam, v, u)
    h, vv, uu = _rand(7, num_classes), _rand(7, num_classes), _rand(7, num_classes)
    th, tv, tu = (torch.tensor(a) for a in (h, vv, uu))
    lib = ft.Categorical()
    np.testing.assert_allclose(fs.lambdify([fam.h, v], fisher)(h, vv), lib.quad(th, tv[..., None])[:, 0], rtol=1e-10)
    np.testing.assert_allclose(
        fs.lambdify([fam.h, v], v1)(h, vv), lib.fourth_cumulant_form(th, tv[..., None])[:, 0], rtol=1e-9
    )
    np.testing.assert_allclose(fs.lambdify([fam.h, u], v2)(h, uu), lib.quad(th, tu[..., None])[:, 0], rtol=1e-10)


def test_gaussian_conditional_variances_closed_form() -> None:
    fam = fs.gaussian(3)
    v, u = fs.vector("v", 3, real=True), fs.vector("u", 3, real=True)
    fisher, v1, v2 = fs.conditional_variances(fam, v, u)
    s = fam.sigma
    assert sp.simplify(fisher - (v.T * v)[0] / s**2) == 0
    assert sp.simplify(v1 - 2 * fisher**2) == 0
    assert sp.simplify(v2 - (u.T * u)[0] / s**2) == 0


def test_cumulant_form_equals_class_sum_symbolically() -> None:
    fam = fs.categorical(3)
    v, u = fs.vector("v", 3, real=True), fs.vector("u", 3, real=True)
    _, v1, v2 = fs.conditional_variances(fam, v, u)
    subs, q = fs.positive_parameterization(fam)
    p = [qc / sum(q) for qc in q]
    vbar, ubar = sum(a * b for a, b in zip(p, v)), sum(a * b for a, b in zip(p, u))
    fisher = sum(pc * (vc - vbar) ** 2 for pc, vc in zip(p, v))
    closed_v1 = sum(pc * (vc - vbar) ** 4 for pc, vc in zip(p, v)) - fisher**2
    closed_v2 = sum(pc * (uc - ubar) ** 2 for pc, uc in zip(p, u))
    assert sp.cancel(sp.together(v1.subs(subs) - closed_v1)) == 0
    assert sp.cancel(sp.together(v2.subs(subs) - closed_v2)) == 0


@pytest.mark.parametrize("num_classes", [2, 3])
def test_fourth_moment_explicit_equals_enumeration(num_classes: int) -> None:
    p = fs.vector("p", num_classes, positive=True)
    simplex = {p[-1]: 1 - sum(p[:-1])}
    diff = (fs.categorical_fourth_moment(p) - fs.categorical_fourth_moment_enumerated(p)).subs(simplex)
    assert all(sp.expand(entry) == 0 for entry in sp.flatten(diff.tolist()))


def test_fourth_moment_matches_library_numerically() -> None:
    c = 4
    p = fs.vector("p", c, positive=True)
    w = fs.vector("w", c, real=True)
    k4 = fs.contract(fs.categorical_fourth_moment(p), w)
    h, ww = _rand(9, c), _rand(9, c)
    th = torch.tensor(h)
    probs = ft.Categorical().probabilities(th).numpy()
    lib = ft.Categorical().fourth_moment(th, torch.tensor(ww)[..., None])[:, 0].numpy()
    np.testing.assert_allclose(fs.lambdify([p, w], k4)(probs, ww), lib, rtol=1e-10)


def test_contract_rank_two_is_quadratic_form() -> None:
    a = sp.Array([[1, 2], [3, 4]])
    x = sp.symbols("x1:3")
    assert sp.expand(fs.contract(a, x) - (x[0] ** 2 + 5 * x[0] * x[1] + 4 * x[1] ** 2)) == 0


def test_lambdify_shapes() -> None:
    fam = fs.gaussian(2)
    f = fs.lambdify([fam.h, fam.sigma], fam.covariance())
    assert f(np.zeros((4, 2)), 1.0).shape == (4, 2, 2)
    assert f(np.zeros(2), 1.0).shape == (2, 2)
    g = fs.lambdify([fam.h, fam.sigma], fam.F)
    assert g(np.ones((3, 2)), np.full(3, 2.0)).shape == (3,)
    np.testing.assert_allclose(g(np.ones((3, 2)), np.full(3, 2.0)), np.full(3, 2 / 8))
