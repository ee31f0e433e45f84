"""Spherical Bessel functions, their roots, and Legendre polynomials, in plain torch.

DimeNet's 2D spherical basis (`geognn.nn.dimenet.SphericalBasis`) needs
j_l(z_ln x) with z_ln the n-th positive root of j_l, and Y_l^0(α). The
reference implementations derive closed forms with sympy at construction; here
the functions are recurrences evaluated directly, and the roots are found by
bisection, so nothing symbolic runs at import or construction time.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor


def spherical_bessel(num_orders: int, x: Tensor) -> Tensor:
    """j_0(x) .. j_{num_orders-1}(x), stacked on a new last dimension, for x > 0.

    Upward recurrence j_{l+1} = (2l+1)/x j_l - j_{l-1} from j_0 = sin x / x and
    j_1 = sin x / x² - cos x / x. For x < l it loses relative accuracy, as the
    closed forms do: the absolute error is below eps × (2l-1)!! / x^(l+1)
    (float64, l = 6: below 1e-12 for x ≥ 1). Evaluate in float64 where the
    small values matter (`SphericalBasis` does).
    """
    _check_orders(num_orders)
    sin, cos = torch.sin(x), torch.cos(x)
    orders = [sin / x]
    if num_orders > 1:
        orders.append(sin / x**2 - cos / x)
    for l in range(1, num_orders - 1):
        orders.append((2 * l + 1) / x * orders[l] - orders[l - 1])
    return torch.stack(orders, dim=-1)


def _check_orders(num_orders: int) -> None:
    if num_orders < 1:
        raise ValueError(f"need at least one order, got {num_orders}")


@functools.lru_cache(maxsize=None)
def _roots(num_orders: int, num_roots: int) -> Tensor:
    # Roots of j_l interlace with those of j_{l-1} (and of j_0 lie at n π):
    # each root of j_l is bracketed by two consecutive roots of j_{l-1}.
    # Bisection to the last bit in float64.
    roots = torch.zeros(num_orders, num_roots, dtype=torch.float64)
    previous = torch.arange(1, num_roots + num_orders, dtype=torch.float64) * math.pi
    roots[0] = previous[:num_roots]
    for l in range(1, num_orders):
        low, high = previous[:-1].clone(), previous[1:].clone()
        sign_low = torch.sign(spherical_bessel(l + 1, low)[:, l])
        for _ in range(200):
            mid = 0.5 * (low + high)
            if bool(((mid == low) | (mid == high)).all()):
                break
            same = torch.sign(spherical_bessel(l + 1, mid)[:, l]) == sign_low
            low, high = torch.where(same, mid, low), torch.where(same, high, mid)
        previous = 0.5 * (low + high)
        roots[l] = previous[:num_roots]
    return roots


def spherical_bessel_roots(num_orders: int, num_roots: int) -> Tensor:
    """z_ln, the first ``num_roots`` positive roots of j_l for l < ``num_orders``, [L, K] float64."""
    if num_orders < 1 or num_roots < 1:
        raise ValueError(f"need at least one order and one root, got {num_orders} and {num_roots}")
    return _roots(num_orders, num_roots).clone()


def legendre(num_orders: int, x: Tensor) -> Tensor:
    """P_0(x) .. P_{num_orders-1}(x) on a new last dimension (Bonnet's recurrence, stable on [-1, 1])."""
    _check_orders(num_orders)
    orders = [torch.ones_like(x)]
    if num_orders > 1:
        orders.append(x)
    for l in range(1, num_orders - 1):
        orders.append(((2 * l + 1) * x * orders[l] - l * orders[l - 1]) / (l + 1))
    return torch.stack(orders, dim=-1)


def zonal_harmonics(num_orders: int, cos_angle: Tensor) -> Tensor:
    """Real spherical harmonics Y_l^0 = sqrt((2l+1)/4π) P_l(cos α), [..., num_orders]."""
    _check_orders(num_orders)
    norm = torch.sqrt((2 * torch.arange(num_orders, dtype=cos_angle.dtype, device=cos_angle.device) + 1) / (4 * math.pi))
    return legendre(num_orders, cos_angle) * norm


__all__ = ["spherical_bessel", "spherical_bessel_roots", "legendre", "zonal_harmonics"]
