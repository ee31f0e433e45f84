"""Irreps features and the scalar + vector channels of the other layers: one convention.

Tensor-product layers carry one e3nn irreps tensor ``x`` [N, irreps.dim];
EGNN-style layers carry scalars ``h`` [N, F] and Cartesian vectors ``v``
[N, F_v, 3]. With e3nn >= 0.5 the two agree without any permutation:

* the l = 1 components are ordered (x, y, z): ``Irreps("1o").D_from_matrix(R)``
  equals R, so a ``1o`` feature rotates as a Cartesian vector (older e3nn
  releases ordered them y, z, x);
* an irreps tensor is laid out multiplicity-major: ``"Fx1o"`` is F blocks of
  3, i.e. ``v.reshape(N, 3 F)``.

Hence ``cat([h, v.reshape(N, -1)])`` *is* the ``"Fx0e + F_vx1o"`` tensor.
`join_scalars_vectors` and `split_scalars_vectors` go between the two, and
``tests/nn/test_irreps.py`` guards the convention against e3nn itself.
Pseudovectors (``1e``) are reached with ``vector_parity=1``; features of
l >= 2 stay in the irreps tensor, which the view does not cover.

`wigner_d` is the irreps rotation matrix in float64 to machine precision
(e3nn's ``D_from_matrix`` goes through Euler angles and loses ~1e-7), for
the equivariance tests of these layers.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import Tensor


def join_scalars_vectors(h: Tensor, v: Tensor, vector_parity: int = -1) -> tuple[Tensor, o3.Irreps]:
    """``h`` [N, F] and ``v`` [N, F_v, 3] as one irreps tensor [N, F + 3 F_v] and its irreps ``"Fx0e + F_vx1o"``."""
    if h.dim() != 2 or v.dim() != 3 or v.shape[-1] != 3 or h.shape[0] != v.shape[0]:
        raise ValueError(f"expected h [N, F] and v [N, F_v, 3], got {list(h.shape)} and {list(v.shape)}")
    parity = "o" if vector_parity == -1 else "e"
    irreps = o3.Irreps(f"{h.shape[1]}x0e + {v.shape[1]}x1{parity}")
    return torch.cat([h, v.reshape(v.shape[0], -1)], dim=-1), irreps


def split_scalars_vectors(x: Tensor, irreps, vector_parity: int = -1) -> tuple[Tensor, Tensor]:
    """The ``0e`` channels of ``x`` [N, irreps.dim] as ``h`` [N, F] and its ``1o`` (or ``1e``) channels as ``v`` [N, F_v, 3].

    Channels are taken in the order they appear in ``irreps``; other irreps are left out.
    """
    irreps = o3.Irreps(irreps)
    if x.shape[-1] != irreps.dim:
        raise ValueError(f"x has {x.shape[-1]} components but irreps {irreps} has dimension {irreps.dim}")
    scalars, vectors = [], []
    for (mul, ir), part in zip(irreps, irreps.slices()):
        if ir == o3.Irrep(0, 1):
            scalars.append(x[..., part])
        elif ir == o3.Irrep(1, vector_parity):
            vectors.append(x[..., part].reshape(*x.shape[:-1], mul, 3))
    h = torch.cat(scalars, dim=-1) if scalars else x.new_zeros(*x.shape[:-1], 0)
    v = torch.cat(vectors, dim=-2) if vectors else x.new_zeros(*x.shape[:-1], 0, 3)
    return h, v


def wigner_d(irreps, rotation: Tensor) -> Tensor:
    """The matrix [irreps.dim, irreps.dim] by which ``irreps`` features transform under ``rotation`` (3 x 3, det ±1).

    Same convention as e3nn's ``Irreps.D_from_matrix`` (x -> D x, an improper
    matrix multiplies parity-odd irreps by -1), computed by fitting the
    spherical harmonics of rotated points, exact to float64 rounding.
    """
    irreps = o3.Irreps(irreps)
    rotation = rotation.to(torch.float64)
    det = torch.linalg.det(rotation)
    proper = rotation * det.sign()
    generator = torch.Generator().manual_seed(0)
    blocks = []
    cache: dict[int, Tensor] = {}
    for mul, ir in irreps:
        if ir.l not in cache:
            points = torch.randn(4 * ir.l + 8, 3, dtype=torch.float64, generator=generator)
            before = o3.spherical_harmonics(ir.l, points, normalize=True)  # [M, 2l+1]
            after = o3.spherical_harmonics(ir.l, points @ proper.T, normalize=True)  # Y(R x) = D Y(x)
            cache[ir.l] = torch.linalg.lstsq(before, after).solution.T
        sign = float(ir.p) if det < 0 else 1.0
        blocks.extend([sign * cache[ir.l]] * mul)
    return torch.block_diag(*blocks) if blocks else torch.zeros(0, 0, dtype=torch.float64)
