"""Input checks shared by the data and graph entry points.

Each raises a ValueError that names the problem and how to fix it, at the
boundary where bad input enters, rather than deep inside a kernel.
"""

from __future__ import annotations

import math
import numbers
import operator

import torch
from torch import Tensor

# Periodic cells whose vectors span less than this fraction of the volume of
# a box with the same edge lengths are treated as degenerate.
MIN_RELATIVE_VOLUME = 1e-8


# The floating dtypes models run in, by the names recipes and calculators use.
FLOAT_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype: torch.dtype | None) -> torch.dtype:
    """A floating dtype: ``dtype``, or ``torch.get_default_dtype()`` when None."""
    dtype = dtype or torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    return dtype


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` (or None): CUDA when torch sees a GPU, else CPU; a CUDA device torch cannot see raises."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device ({err}); use 'cpu', 'cuda', 'cuda:1' or 'auto'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for but this torch sees no CUDA device; use 'cpu'")
    return device


def check_positions(pos: Tensor, where: str = "positions") -> None:
    if pos.dim() != 2 or pos.shape[-1] != 3:
        raise ValueError(f"{where} must have shape [N, 3], got {list(pos.shape)}")
    if pos.shape[0] == 0:
        raise ValueError(f"{where}: the structure is empty (0 atoms); pass at least one atom")
    if not pos.is_floating_point():
        raise TypeError(f"{where} must be a floating-point tensor, got {pos.dtype}")
    # One reduction in the common case: a sum is finite unless an entry is NaN or inf (or it overflows).
    if math.isfinite(float(pos.detach().sum())):
        return
    finite = torch.isfinite(pos).all(dim=-1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten()[:5].tolist()
        raise ValueError(
            f"{where} contain NaN or inf (atoms {bad}); "
            "check the structure or the step that produced it"
        )


def check_cutoff(r) -> float:
    """The cutoff as a float; accepts Python, numpy and 0-d torch numbers."""
    is_number = isinstance(r, numbers.Real) and not isinstance(r, bool)
    is_scalar_tensor = isinstance(r, torch.Tensor) and r.numel() == 1 and r.is_floating_point()
    value = float(r) if is_number or is_scalar_tensor else float("nan")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"the cutoff radius must be a positive finite number, got {r!r}")
    return value


def check_max_num_neighbors(limit) -> int | None:
    """None, or a positive integer (Python or numpy)."""
    if limit is None:
        return None
    try:
        value = operator.index(limit)
    except TypeError:
        value = 0
    if isinstance(limit, bool) or value < 1:
        raise ValueError(f"max_num_neighbors must be a positive integer or None, got {limit!r}")
    return value


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
    # Non-periodic rows are ignored but still enter shift @ cell (as 0 * x),
    # where NaN or inf would poison the edge vectors.
    if not bool(torch.isfinite(cell).all()):
        raise ValueError("the cell contains NaN or inf; use zeros for vectors along non-periodic directions")
    relative = periodic_relative_volume(cell, periodic)
    bad = torch.nonzero(~(relative >= MIN_RELATIVE_VOLUME)).flatten()
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
