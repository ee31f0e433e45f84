"""Input checks shared by the data and graph entry points.

Each raises a ValueError that names the problem and how to fix it, at the
boundary where bad input enters, rather than deep inside a kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Periodic cells whose vectors span less than this fraction of the volume of
# a box with the same edge lengths are treated as degenerate.
MIN_RELATIVE_VOLUME = 1e-8


def check_positions(pos: Tensor, where: str = "positions") -> None:
    if pos.dim() != 2 or pos.shape[-1] != 3:
        raise ValueError(f"{where} must have shape [N, 3], got {list(pos.shape)}")
    if pos.shape[0] == 0:
        raise ValueError(f"{where}: the structure is empty (0 atoms); pass at least one atom")
    if not pos.is_floating_point():
        raise TypeError(f"{where} must be a floating-point tensor, got {pos.dtype}")
    finite = torch.isfinite(pos).all(dim=-1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten()[:5].tolist()
        raise ValueError(
            f"{where} contain NaN or inf (atoms {bad}); "
            "check the structure or the step that produced it"
        )


def check_cutoff(r: float) -> None:
    if not (isinstance(r, (int, float)) and r == r and r > 0 and r != float("inf")):
        raise ValueError(f"the cutoff radius must be a positive finite number, got {r!r}")


def check_cell(cell: Tensor, pbc: Tensor) -> None:
    """`cell` [B, 3, 3] rows are lattice vectors; `pbc` [B, 3] bool.

    Periodic directions need finite, non-zero, linearly independent vectors;
    non-periodic directions are ignored (they may be zero, as in ASE).
    """
    if cell.dim() != 3 or cell.shape[-2:] != (3, 3):
        raise ValueError(f"cell must have shape [B, 3, 3], got {list(cell.shape)}")
    if pbc.shape != cell.shape[:2]:
        raise ValueError(f"pbc must have shape {list(cell.shape[:2])}, got {list(pbc.shape)}")
    periodic = pbc.bool()
    if not bool(torch.isfinite(cell[periodic]).all()):
        raise ValueError("the periodic cell vectors contain NaN or inf")
    relative = periodic_relative_volume(cell, periodic)
    bad = torch.nonzero(relative < MIN_RELATIVE_VOLUME).flatten()
    if bad.numel():
        b = int(bad[0])
        raise ValueError(
            f"structure {b} has pbc={periodic[b].tolist()} but its periodic cell vectors "
            f"{cell[b][periodic[b]].tolist()} are zero or linearly dependent (zero volume); "
            "give a cell with independent vectors along the periodic directions, or set pbc=False"
        )


def periodic_relative_volume(cell: Tensor, periodic: Tensor) -> Tensor:
    """Volume spanned by the periodic vectors over the product of their lengths, [B].

    1 for orthogonal vectors, 0 for dependent or zero ones, 1 for structures
    with no periodic direction. Non-periodic rows are replaced by unit rows in
    the Gram matrix, so the determinant is that of the periodic sub-lattice.
    """
    gram = periodic_gram(cell.detach().double(), periodic)
    diag = gram.diagonal(dim1=-2, dim2=-1)
    return torch.linalg.det(gram).clamp(min=0).sqrt() / diag.prod(-1).sqrt().clamp(min=1e-300)


def periodic_gram(cell: Tensor, periodic: Tensor) -> Tensor:
    """Gram matrix of the periodic vectors, padded with the identity, [B, 3, 3]."""
    masked = cell * periodic.unsqueeze(-1)
    gram = masked @ masked.transpose(-1, -2)
    eye = torch.eye(3, dtype=cell.dtype, device=cell.device)
    return gram + torch.diag_embed((~periodic).to(cell.dtype)) * eye
