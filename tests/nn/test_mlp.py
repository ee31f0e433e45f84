"""Shared building blocks: geognn's SiLU is torch's, with a cheaper double backward."""

import torch

from geognn.nn.mlp import ACTIVATIONS, SiLU


def test_silu_equals_torch_to_third_derivative():
    """Values, first, second and third derivatives equal torch's SiLU (float64), checked
    against finite differences too."""
    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(6, 5, dtype=torch.float64, generator=g)).requires_grad_(True)
    ours, theirs = SiLU(), torch.nn.SiLU()
    assert torch.autograd.gradcheck(ours, (x,)) and torch.autograd.gradgradcheck(ours, (x,))

    def derivatives(f):
        y = f(x)
        (d1,) = torch.autograd.grad(y.pow(2).sum(), x, create_graph=True)
        (d2,) = torch.autograd.grad(d1.pow(2).sum(), x, create_graph=True)
        (d3,) = torch.autograd.grad(d2.sum(), x)
        return y, d1, d2, d3

    for a, b in zip(derivatives(ours), derivatives(theirs)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert ACTIVATIONS["silu"] is SiLU and isinstance(SiLU(), torch.nn.SiLU)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_second_moment_gain():
    """relu: E[relu(x)²] = 1/2 exactly, so √2; silu against a large Monte Carlo sample."""
    from geognn.nn.mlp import second_moment_gain

    assert abs(second_moment_gain("relu") - 2**0.5) < 1e-9
    x = torch.randn(4_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(second_moment_gain("silu") - float(torch.nn.functional.silu(x).pow(2).mean()) ** -0.5) < 2e-3
