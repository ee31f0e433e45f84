import math

import pytest
import torch

from geognn.nn import ENVELOPES, RADIAL_BASES, BesselBasis, GaussianBasis, PolynomialEnvelope

CUTOFF = 4.0


@pytest.mark.parametrize("name", sorted(ENVELOPES))
def test_envelopes_vanish_smoothly_at_the_cutoff(name):
    envelope = ENVELOPES[name](CUTOFF).double()
    r = torch.tensor([CUTOFF - 1e-7, CUTOFF, CUTOFF + 0.5], dtype=torch.float64, requires_grad=True)
    value = envelope(r)
    (slope,) = torch.autograd.grad(value.sum(), r)
    value = value.detach()
    assert float(value[0]) < 1e-10 and float(value[1]) == 0.0 and float(value[2]) == 0.0
    assert float(slope.abs().max()) < 1e-6
    inside = envelope(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert float(inside[0]) == pytest.approx(1.0) and 0.0 < float(inside[1]) < 1.0


def test_polynomial_envelope_second_derivative_vanishes():
    envelope = PolynomialEnvelope(CUTOFF, exponent=5).double()
    r = torch.tensor([CUTOFF - 1e-9], dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(envelope(r).sum(), r, create_graph=True)
    (curvature,) = torch.autograd.grad(slope.sum(), r)
    assert abs(float(curvature)) < 1e-6


def test_bessel_basis_matches_its_formula():
    basis = BesselBasis(5, CUTOFF).double()
    r = torch.tensor([0.7, 2.3], dtype=torch.float64)
    n = torch.arange(1, 6, dtype=torch.float64)
    expected = math.sqrt(2 / CUTOFF) * torch.sin(n * math.pi * r[:, None] / CUTOFF) / r[:, None]
    assert torch.allclose(basis(r), expected)


def test_gaussian_basis_peaks_at_its_centres():
    basis = GaussianBasis(9, CUTOFF).double()
    out = basis(basis.centers)
    assert torch.equal(out.argmax(-1), torch.arange(9))


@pytest.mark.parametrize("name", sorted(RADIAL_BASES))
def test_bases_have_constants_as_buffers_and_reset(name):
    basis = RADIAL_BASES[name](6, CUTOFF)
    assert "cutoff" in dict(basis.named_buffers())
    out = basis(torch.tensor([1.5]))
    grid = {"bessel": "frequencies", "gaussian": "centers"}[name]
    with torch.no_grad():
        getattr(basis, grid).mul_(2.0)
    basis.reset_parameters()
    assert torch.allclose(basis(torch.tensor([1.5])), out)
    assert f"cutoff={CUTOFF}" in repr(basis)


def test_trainable_bessel_frequencies_are_parameters():
    assert [name for name, _ in BesselBasis(4, CUTOFF, trainable=True).named_parameters()] == ["frequencies"]
