"""Spherical Bessel functions, their roots, Legendre polynomials and Y_l^0 against scipy.

Every reference is computed here from scipy (roots by ``brentq`` on
``spherical_jn``), never copied from the implementation. Float64 throughout.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as special
import torch
from scipy.optimize import brentq

from geognn.nn.dimenet import SphericalBasis
from geognn.nn.spherical import legendre, spherical_bessel, spherical_bessel_roots, zonal_harmonics

DTYPE = torch.float64
EPS = float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------- references


def reference_roots(num_orders: int, num_roots: int) -> np.ndarray:
    """First ``num_roots`` positive roots of j_l, l < ``num_orders``: sign changes on a fine grid, then brentq."""
    roots = np.zeros((num_orders, num_roots))
    # roots are about π apart and the K-th root of j_l lies below (K + l/2 + 1) π
    grid = np.arange(0.5, (num_roots + num_orders + 2) * math.pi, 0.01)
    for l in range(num_orders):
        values = special.spherical_jn(l, grid)
        changes = np.flatnonzero(np.sign(values[:-1]) != np.sign(values[1:]))[:num_roots]
        assert len(changes) == num_roots, "grid too short"
        for n, i in enumerate(changes):
            roots[l, n] = brentq(lambda x: special.spherical_jn(l, x), grid[i], grid[i + 1], xtol=1e-300, rtol=4 * EPS)
    return roots


def double_factorial(n: int) -> int:
    return math.prod(range(n, 0, -2)) if n > 0 else 1


def recurrence_error_bound(l: int, x: np.ndarray) -> np.ndarray:
    """Absolute error scale of the upward recurrence: eps × (2l-1)!!/x^(l+1) (the size of y_l), with an eps floor."""
    return EPS * (1.0 + double_factorial(2 * l - 1) / x ** (l + 1))


def envelope(x: np.ndarray, p: int) -> np.ndarray:
    value = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    return np.where(x < 1, value, 0.0)


def reference_radial(edge_len: np.ndarray, roots: np.ndarray, cutoff: float, envelope_exponent: int) -> np.ndarray:
    """sqrt(2/c³)/|j_{l+1}(z_ln)| · j_l(z_ln d/c) · u(d/c) / (d/c), [E, L, K]."""
    l = np.arange(roots.shape[0])[:, None]
    normalizer = math.sqrt(2 / cutoff**3) / np.abs(special.spherical_jn(l + 1, roots))  # [L, K]
    x = edge_len / cutoff
    bessel = special.spherical_jn(l, roots * x[:, None, None])  # [E, L, K]
    return normalizer * bessel * (envelope(x, envelope_exponent + 1) / x)[:, None, None]


def reference_zonal(num_orders: int, cos_angle: np.ndarray) -> np.ndarray:
    theta = np.arccos(cos_angle)
    return np.stack([special.sph_harm_y(l, 0, theta, 0.0).real for l in range(num_orders)], axis=-1)


# --------------------------------------------------------------------------- roots


@pytest.mark.parametrize("num_orders, num_roots", [(7, 6), (10, 12)])
def test_bessel_roots_match_brentq_on_scipy(num_orders, num_roots):
    roots = spherical_bessel_roots(num_orders, num_roots)
    assert roots.shape == (num_orders, num_roots) and roots.dtype == torch.float64
    expected = reference_roots(num_orders, num_roots)
    np.testing.assert_allclose(roots.numpy(), expected, rtol=1e-12, atol=0)


def test_bessel_roots_are_roots_increasing_and_interlaced():
    roots = spherical_bessel_roots(10, 12).numpy()
    assert (np.diff(roots, axis=1) > 0).all(), "roots not strictly increasing along n"
    # z_{l-1,n} < z_{l,n} < z_{l-1,n+1}
    assert (roots[1:, :] > roots[:-1, :]).all()
    assert (roots[1:, :-1] < roots[:-1, 1:]).all()
    # j_l vanishes there, on the scale of its slope times the rounding of z
    orders = np.arange(10)[:, None]
    residual = np.abs(special.spherical_jn(orders, roots))
    slope = np.abs(special.spherical_jn(orders, roots, derivative=True))
    assert (residual <= 8 * EPS * roots * slope + 1e-17).all()
    np.testing.assert_allclose(roots[0], np.arange(1, 13) * math.pi, rtol=1e-15)


def test_bessel_roots_of_a_prefix_agree_and_results_are_private_copies():
    big = spherical_bessel_roots(6, 8)
    small = spherical_bessel_roots(3, 4)
    assert torch.equal(small, big[:3, :4])
    small.zero_()  # the function caches; the caller's tensor must not be the cache
    assert torch.equal(spherical_bessel_roots(3, 4), big[:3, :4])


@pytest.mark.parametrize("num_orders, num_roots", [(0, 3), (3, 0), (-1, 2)])
def test_bessel_roots_reject_empty_sizes(num_orders, num_roots):
    with pytest.raises(ValueError, match="at least one"):
        spherical_bessel_roots(num_orders, num_roots)


# --------------------------------------------------------------------------- j_l


def test_spherical_bessel_matches_scipy_away_from_zero():
    x = torch.linspace(1.0, 40.0, 2001, dtype=DTYPE)
    values = spherical_bessel(7, x)
    assert values.shape == (2001, 7) and values.dtype == DTYPE
    for l in range(7):
        expected = special.spherical_jn(l, x.numpy())
        assert np.abs(values[:, l].numpy() - expected).max() <= 1e-12, f"l={l}"


@pytest.mark.parametrize("x0", [0.1, 0.5, 2.0])
def test_spherical_bessel_small_argument_within_documented_accuracy(x0):
    num_orders = 10
    values = spherical_bessel(num_orders, torch.tensor([x0], dtype=DTYPE))[0].numpy()
    for l in range(num_orders):
        error = abs(values[l] - special.spherical_jn(l, x0))
        assert error <= 4 * recurrence_error_bound(l, np.float64(x0)), f"l={l}, error={error}"
    # j_0 = sin x / x carries no cancellation
    assert values[0] == pytest.approx(special.spherical_jn(0, x0), rel=1e-15)


def test_spherical_bessel_shapes():
    x = torch.rand(3, 5, dtype=DTYPE) + 0.5
    assert spherical_bessel(4, x).shape == (3, 5, 4)
    assert spherical_bessel(2, x).shape == (3, 5, 2)
    one = spherical_bessel(1, x)
    assert one.shape == (3, 5, 1)
    assert torch.allclose(one[..., 0], torch.sin(x) / x, rtol=1e-15, atol=0)


# --------------------------------------------------------------------------- P_l and Y_l^0


def test_legendre_matches_scipy_and_endpoints():
    x = torch.linspace(-1.0, 1.0, 1001, dtype=DTYPE)
    values = legendre(12, x)
    assert values.shape == (1001, 12)
    for l in range(12):
        np.testing.assert_allclose(values[:, l].numpy(), special.eval_legendre(l, x.numpy()), rtol=0, atol=1e-13)
    ends = legendre(12, torch.tensor([1.0, -1.0], dtype=DTYPE))
    signs = torch.tensor([(-1.0) ** l for l in range(12)], dtype=DTYPE)
    assert torch.allclose(ends[0], torch.ones(12, dtype=DTYPE), rtol=0, atol=1e-14)
    assert torch.allclose(ends[1], signs, rtol=0, atol=1e-14)
    assert legendre(3, torch.zeros(2, 4, dtype=DTYPE)).shape == (2, 4, 3)


def test_zonal_harmonics_match_scipy():
    cos_angle = torch.linspace(-1.0, 1.0, 401, dtype=DTYPE)
    values = zonal_harmonics(9, cos_angle)
    assert values.shape == (401, 9) and values.dtype == DTYPE
    np.testing.assert_allclose(values.numpy(), reference_zonal(9, cos_angle.numpy()), rtol=0, atol=1e-13)


def test_zonal_harmonics_are_orthonormal_on_the_sphere():
    num_orders = 10
    nodes, weights = np.polynomial.legendre.leggauss(32)  # exact for degree < 64 in cos θ
    values = zonal_harmonics(num_orders, torch.from_numpy(nodes)).numpy()  # [Q, L]
    gram = 2 * math.pi * (values * weights[:, None]).T @ values  # ∫ dφ ∫ d(cos θ)
    np.testing.assert_allclose(gram, np.eye(num_orders), rtol=0, atol=1e-13)


# --------------------------------------------------------------------------- DimeNet's spherical basis


BASES = [(7, 6, 5.0, 5), (4, 3, 3.5, 2)]  # num_spherical, num_radial, cutoff, envelope_exponent


def float64_basis(num_spherical, num_radial, cutoff, envelope_exponent) -> SphericalBasis:
    return SphericalBasis(num_spherical, num_radial, cutoff, envelope_exponent).double()


@pytest.mark.parametrize("num_spherical, num_radial, cutoff, envelope_exponent", BASES)
def test_spherical_basis_radial_matches_its_formula(num_spherical, num_radial, cutoff, envelope_exponent):
    basis = float64_basis(num_spherical, num_radial, cutoff, envelope_exponent)
    roots = reference_roots(num_spherical, num_radial)
    edge_len = np.linspace(0.16 * cutoff, 1.3 * cutoff, 300)
    got = basis.radial(torch.from_numpy(edge_len))
    assert got.shape == (300, num_spherical, num_radial) and got.dtype == DTYPE
    got = got.numpy()
    expected = reference_radial(edge_len, roots, cutoff, envelope_exponent)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13 * scale)
    assert (got[edge_len >= cutoff] == 0).all()


@pytest.mark.parametrize("num_spherical, num_radial, cutoff, envelope_exponent", BASES)
def test_spherical_basis_radial_short_distances_within_recurrence_accuracy(
    num_spherical, num_radial, cutoff, envelope_exponent
):
    # Short edges put z_ln d/c below l, where the upward recurrence cancels.
    basis = float64_basis(num_spherical, num_radial, cutoff, envelope_exponent)
    roots = reference_roots(num_spherical, num_radial)
    edge_len = np.linspace(0.02 * cutoff, 0.2 * cutoff, 50)
    got = basis.radial(torch.from_numpy(edge_len)).numpy()
    expected = reference_radial(edge_len, roots, cutoff, envelope_exponent)
    x = edge_len / cutoff
    l = np.arange(num_spherical)
    normalizer = math.sqrt(2 / cutoff**3) / np.abs(special.spherical_jn(l[:, None] + 1, roots))
    for order in range(num_spherical):
        argument = roots[order] * x[:, None]  # [E, K]
        bound = 8 * recurrence_error_bound(order, argument) * normalizer[order] * (envelope(x, envelope_exponent + 1) / x)[:, None]
        error = np.abs(got[:, order] - expected[:, order])
        assert (error <= bound + 1e-14 * np.abs(expected[:, order])).all(), f"l={order}"


@pytest.mark.parametrize("num_spherical, num_radial, cutoff, envelope_exponent", BASES)
def test_spherical_basis_forward_layout_is_l_major(num_spherical, num_radial, cutoff, envelope_exponent):
    basis = float64_basis(num_spherical, num_radial, cutoff, envelope_exponent)
    generator = torch.Generator().manual_seed(0)
    edge_len = cutoff * (0.2 + 0.7 * torch.rand(9, dtype=DTYPE, generator=generator))
    idx_kj = torch.randint(0, 9, (23,), generator=generator)
    cos_angle = 2 * torch.rand(23, dtype=DTYPE, generator=generator) - 1
    out = basis(edge_len, cos_angle, idx_kj)
    assert out.shape == (23, num_spherical * num_radial)

    radial = reference_radial(edge_len.numpy(), reference_roots(num_spherical, num_radial), cutoff, envelope_exponent)
    angular = reference_zonal(num_spherical, cos_angle.numpy())
    expected = np.zeros((23, num_spherical * num_radial))
    for l in range(num_spherical):
        for n in range(num_radial):
            expected[:, l * num_radial + n] = radial[idx_kj.numpy(), l, n] * angular[:, l]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-13 * np.abs(expected).max())

    # a few entries by hand: column l * num_radial + n holds (l, n)
    for t, l, n in [(0, 1, 0), (5, 0, num_radial - 1), (17, num_spherical - 1, 1), (22, 2, num_radial - 1)]:
        kj = int(idx_kj[t])
        by_hand = radial[kj, l, n] * special.sph_harm_y(l, 0, math.acos(float(cos_angle[t])), 0.0).real
        assert float(out[t, l * num_radial + n]) == pytest.approx(by_hand, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("num_spherical, num_radial, cutoff, envelope_exponent", BASES)
def test_spherical_basis_vanishes_smoothly_at_the_cutoff(num_spherical, num_radial, cutoff, envelope_exponent):
    basis = float64_basis(num_spherical, num_radial, cutoff, envelope_exponent)

    def radial(d):
        return basis.radial(torch.tensor(d, dtype=DTYPE)).numpy()

    step = 1e-6
    # the slope inside, for scale
    inside = np.linspace(0.3 * cutoff, 0.9 * cutoff, 50)
    bulk_slope = np.abs((radial(inside + step) - radial(inside - step)) / (2 * step)).max()
    assert bulk_slope > 1e-3

    at_cutoff = radial([cutoff, cutoff + 0.1, 2 * cutoff])
    assert (at_cutoff == 0).all()
    # one-sided slope at the cutoff and the slope just inside it: value and first
    # derivative vanish (with u'' = 0 too, the value falls like (c - d)³)
    left_slope = (radial([cutoff]) - radial([cutoff - step])) / step
    assert np.abs(left_slope).max() <= 1e-6 * bulk_slope
    near = cutoff - 1e-3
    near_slope = (radial([near + step]) - radial([near - step])) / (2 * step)
    assert np.abs(near_slope).max() <= 1e-3 * bulk_slope
    assert np.abs(radial([near])).max() <= 1e-6 * np.abs(radial(inside)).max()


def test_basis_constants_stay_float64_through_dtype_changes():
    """model.float() then .double() must not leave float32-rounded roots behind."""
    basis = SphericalBasis(7, 6, 5.0).float().double()
    assert basis.roots.dtype == torch.float64 and basis.normalizer.dtype == torch.float64
    np.testing.assert_allclose(basis.roots.numpy(), reference_roots(7, 6), rtol=1e-12, atol=0)
    d = torch.linspace(1.0, 4.0, 5, dtype=torch.float32)
    assert basis.float().radial(d).dtype == torch.float32
