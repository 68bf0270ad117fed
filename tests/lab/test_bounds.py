"""Tests of ``fishertut.lab.bounds``: brute-force ``torch.func`` derivatives and dense moment tensors."""

from __future__ import annotations

import torch
from torch.func import functional_call, hessian, jacrev

import fishertut as ft
from fishertut.lab import bounds, models
from helpers import gaussian_inputs, scaled_net

DT = torch.float64


def _net(activation: str = "sigmoid", sizes=(4, 5, 3), seed: int = 0) -> torch.nn.Sequential:
    return scaled_net(activation, sizes, seed)


def _inputs(n: int = 12, d: int = 4, seed: int = 1) -> torch.Tensor:
    return gaussian_inputs(n, d, seed)


def _brute_derivatives(net: torch.nn.Module, x: torch.Tensor) -> tuple[dict, dict]:
    """v[name]: (N, C, P_name) and u[name]: (N, C, P_name) by torch.func."""
    params = {n: p.detach() for n, p in net.named_parameters()}
    f = lambda prm, xi: functional_call(net, prm, (xi[None],))[0]  # noqa: E731
    v = {n: [] for n in params}
    u = {n: [] for n in params}
    for xi in x:
        jac = jacrev(f)(params, xi)
        hes = hessian(f)(params, xi)
        for n, p in params.items():
            c = jac[n].shape[0]
            v[n].append(jac[n].reshape(c, -1))
            u[n].append(torch.diagonal(hes[n][n].reshape(c, p.numel(), p.numel()), dim1=1, dim2=2))
    return {n: torch.stack(t) for n, t in v.items()}, {n: torch.stack(t) for n, t in u.items()}


def _dense_categorical(h: torch.Tensor) -> dict[str, torch.Tensor]:
    p = torch.softmax(h, 1)
    n, c = p.shape
    eps = torch.eye(c, dtype=DT) - p[:, None, :]  # (N, y, C)
    mat_k = torch.einsum("ny,nya,nyb,nyc,nyd->nabcd", p, eps, eps, eps, eps).reshape(n, c * c, c * c)
    lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    m = mat_k - lam.reshape(n, -1, 1) * lam.reshape(n, 1, -1)
    return {
        "p": p,
        "lam": lam,
        "k_max": torch.linalg.eigvalsh(mat_k)[:, -1],
        "m_max": torch.linalg.eigvalsh(m)[:, -1],
        "lam_max": torch.linalg.eigvalsh(lam)[:, -1],
    }


def test_bound_variants_categorical_against_brute_force() -> None:
    net, x, fam = _net("tanh", sizes=(3, 4, 4)), _inputs(8, 3), ft.Categorical()
    bv = bounds.bound_variants(net, x, fam)
    v, u = _brute_derivatives(net, x)
    with torch.no_grad():
        dense = _dense_categorical(net(x))
    p = dense["p"]
    for name in v:
        shape = (len(x), *dict(net.named_parameters())[name].shape)
        vv, uu = v[name], u[name]  # (N, C, P)
        v2, u2 = vv.square().sum(1), uu.square().sum(1)
        torch.testing.assert_close(bv.v_norm_sq[name].reshape(len(x), -1), v2)
        torch.testing.assert_close(bv.u_norm_sq[name].reshape(len(x), -1), u2)
        fisher = (p[:, :, None] * (vv - (p[:, :, None] * vv).sum(1, keepdim=True)).square()).sum(1)
        torch.testing.assert_close(bv.statistics.fisher[name].reshape(len(x), -1), fisher)
        ub = bv.unprojected
        torch.testing.assert_close(ub.v1_upper[name].reshape(len(x), -1), dense["m_max"][:, None] * v2.square())
        torch.testing.assert_close(ub.v2_upper[name].reshape(len(x), -1), dense["lam_max"][:, None] * u2)
        assert float(ub.v1_lower[name].abs().max()) == 0 and float(ub.v2_lower[name].abs().max()) == 0
        split = dense["k_max"][:, None] * v2.square() - fisher.square()
        torch.testing.assert_close(bv.v1_upper_split[name].reshape(len(x), -1), split)
        pv = vv - vv.mean(1, keepdim=True)
        split_p = dense["k_max"][:, None] * pv.square().sum(1).square() - fisher.square()
        torch.testing.assert_close(
            bv.v1_upper_split_projected[name].reshape(len(x), -1), split_p, rtol=1e-7, atol=1e-12
        )
        # every variant holds, and projecting never loosens
        true1, true2 = bv.statistics.var_i1[name], bv.statistics.var_i2[name]
        tol = 1e-10
        for upper in (
            ub.v1_upper[name],
            bv.v1_upper_split[name],
            bv.v1_upper_split_projected[name],
            bv.statistics.bounds.v1_upper[name],
        ):
            assert bool((true1 <= upper + tol).all())
        assert bool((true2 <= ub.v2_upper[name] + tol).all())
        assert bool((bv.statistics.bounds.v1_upper[name] <= ub.v1_upper[name] + tol).all())
        assert bool((bv.statistics.bounds.v2_upper[name] <= ub.v2_upper[name] + tol).all())
        assert bv.statistics.fisher[name].shape == shape


def test_bound_variants_gaussian_are_exact() -> None:
    net, x = _net("tanh", sizes=(3, 4, 2)), _inputs(6, 3)
    fam = ft.Gaussian(sigma=0.5)
    bv = bounds.bound_variants(net, x, fam)
    st = bv.statistics
    for name in st.fisher:
        # M = (I + P_swap)/σ⁴: 2/σ⁴ on symmetric tensors, so ‖v‖⁴ λ_max(M) = 2 I² = V1; λ(Λ) = 1/σ²
        torch.testing.assert_close(bv.unprojected.v1_upper[name], st.var_i1[name])
        torch.testing.assert_close(bv.unprojected.v2_upper[name], st.var_i2[name])
        torch.testing.assert_close(bv.unprojected.v2_lower[name], st.var_i2[name])
        assert float(bv.unprojected.v1_lower[name].abs().max()) == 0  # antisymmetric directions (m = 2)
        # (d): λ_max(mat K) = (m + 2)/σ⁴ = 4/σ⁴, so (d) = 4 I² - I² = 3 I²
        torch.testing.assert_close(bv.v1_upper_split[name], 3 * st.fisher[name].square())


def test_kurtosis_matrix_max_against_dense() -> None:
    h = 1.5 * torch.randn(20, 5, generator=torch.Generator().manual_seed(3), dtype=DT)
    torch.testing.assert_close(ft.Categorical().kurtosis_matrix_max(h), _dense_categorical(h)["k_max"])
    sigma, m = 0.7, 3
    eye = torch.eye(m, dtype=DT)
    k = (
        torch.einsum("ab,cd->abcd", eye, eye)
        + torch.einsum("ac,bd->abcd", eye, eye)
        + torch.einsum("ad,bc->abcd", eye, eye)
    ) / sigma**4
    dense = torch.linalg.eigvalsh(k.reshape(m * m, m * m))[-1]
    out = ft.Gaussian(sigma).kurtosis_matrix_max(torch.zeros(4, m, dtype=DT))
    torch.testing.assert_close(out, dense.expand(4))


def test_bound_variants_binary_at_one_half() -> None:
    """At p = 1/2, M = 0 and V1 = 0: variant (d), projected, must be 0 too (not -I²)."""
    net = models.mlp([3, 4, 2], "tanh", seed=0, dtype=DT)
    with torch.no_grad():
        net[2].weight[1].copy_(net[2].weight[0])
        net[2].bias[1].copy_(net[2].bias[0])
    bv = bounds.bound_variants(net, _inputs(5, 3), ft.Categorical())
    for name, v1 in bv.statistics.var_i1.items():
        scale = float(bv.statistics.fisher[name].abs().max()) ** 2 + 1e-300
        assert float(v1.abs().max()) <= 1e-12 * scale
        assert float(bv.v1_upper_split_projected[name].abs().max()) <= 1e-12 * scale
    # the last layer has Fisher information (hidden layers move both logits alike: Πv = 0)
    assert float(bv.statistics.fisher["2.weight"].min()) >= 0 and float(bv.statistics.fisher["2.bias"].min()) > 0
