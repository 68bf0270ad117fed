"""Comparison helpers for the tests."""


def assert_dicts_close(actual, expected, rtol=1e-10, atol_scale=1e-12, what=""):
    """Every tensor within ``rtol`` relative to the largest magnitude of its expected tensor."""
    assert set(actual) == set(expected), f"{what}: keys {sorted(actual)} != {sorted(expected)}"
    for k in expected:
        a, e = actual[k], expected[k].to(actual[k].dtype)
        assert a.shape == e.shape, f"{what}[{k}]: shape {tuple(a.shape)} != {tuple(e.shape)}"
        scale = e.abs().max().item()
        err = (a - e).abs().max().item()
        assert err <= rtol * scale + atol_scale, f"{what}[{k}]: max error {err:.3e} vs scale {scale:.3e}"


def mean0(d):
    return {k: v.mean(0) for k, v in d.items()}


def scaled_net(activation="sigmoid", sizes=(4, 5, 3), seed=0, scale=2.0):
    """A float64 MLP with its initial weights scaled: confident, non-uniform outputs and strong curvature."""
    import torch

    from fishertut.lab.models import mlp

    net = mlp(list(sizes), activation, seed=seed, dtype=torch.float64)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return net


def gaussian_inputs(n=12, d=4, seed=1):
    """``(n, d)`` standard normal float64 inputs from a seeded generator."""
    import torch

    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
