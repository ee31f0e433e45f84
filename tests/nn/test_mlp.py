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


def test_softplus_is_continuous_where_torch_switches_to_its_linear_branch():
    """softplus and SchNet's shifted softplus equal log(1 + e^x) (Python's float64 math) to one
    ulp on both sides of 20 (torch's default threshold, where its softplus jumps by 2.1e-9) and
    of 40 (ours), so that rounding a rotated input across either point moves nothing."""
    import math

    from geognn.nn.mlp import ShiftedSoftplus, Softplus

    points = [t + k * 1e-13 for t in (20.0, 40.0) for k in range(-50, 51)] + [-30.0, -1.0, 0.0, 3.0, 60.0, 700.0]
    x = torch.tensor(points, dtype=torch.float64)
    reference = torch.tensor([x_ + math.log1p(math.exp(-x_)) if x_ > 0 else math.log1p(math.exp(x_)) for x_ in points],
                             dtype=torch.float64)
    ulp = torch.finfo(torch.float64).eps * reference.abs().clamp(min=1.0)
    assert ((ACTIVATIONS["softplus"]()(x) - reference).abs() <= ulp).all()
    assert isinstance(ACTIVATIONS["softplus"](), Softplus)
    assert ((ShiftedSoftplus()(x) - (reference - math.log(2.0))).abs() <= ulp).all()
    # The derivative is the logistic function on both sides too.
    x.requires_grad_(True)
    (slope,) = torch.autograd.grad(ShiftedSoftplus()(x).sum(), x)
    torch.testing.assert_close(slope, torch.sigmoid(x.detach()), rtol=0, atol=1e-15)
