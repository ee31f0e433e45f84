"""From `ase.Atoms` to a PyG `Data` in geognn's conventions (see `keys`)."""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

from geognn._checks import check_cell, check_positions, resolve_dtype
from geognn.data import keys

MAX_ATOMIC_NUMBER = 118


def atoms_to_data(atoms, dtype: torch.dtype | None = None) -> Data:
    """Convert one `ase.Atoms` to a `Data` with ``z``, ``pos`` and, if periodic, ``cell`` and ``pbc``.

    Positions stay as given (Å, not wrapped). ``cell`` [1, 3, 3] and ``pbc``
    [1, 3] are stored only when some direction is periodic, so that PyG's
    `Batch` stacks them into [B, 3, 3] and [B, 3]. Targets are not read here;
    the dataset loaders attach them.

    Args:
        atoms: an `ase.Atoms`.
        dtype: floating dtype of ``pos`` and ``cell``; default
            ``torch.get_default_dtype()``. Use ``torch.float64`` with a
            ``model.double()`` for exact checks.

    Raises:
        ValueError: empty structure, NaN/inf positions, atomic numbers
            outside 1..118, or a periodic direction with a degenerate cell.
    """
    dtype = resolve_dtype(dtype)
    numbers = np.asarray(atoms.get_atomic_numbers())
    bad = (numbers < 1) | (numbers > MAX_ATOMIC_NUMBER)
    if bad.any():
        raise ValueError(
            f"atomic numbers must lie in 1..{MAX_ATOMIC_NUMBER}; got {sorted(set(numbers[bad].tolist()))} "
            "(0 is ASE's placeholder 'X' atom; remove such atoms)"
        )
    pos = torch.as_tensor(np.asarray(atoms.get_positions()), dtype=dtype)
    check_positions(pos, where=f"positions of {atoms.get_chemical_formula() or 'the structure'}")
    data = Data(**{keys.ATOMIC_NUMBERS: torch.as_tensor(numbers, dtype=torch.long), keys.POSITIONS: pos})
    pbc = torch.as_tensor(np.asarray(atoms.get_pbc()), dtype=torch.bool).reshape(1, 3)
    if bool(pbc.any()):
        cell = torch.as_tensor(np.asarray(atoms.get_cell()[:]), dtype=dtype).reshape(1, 3, 3)
        check_cell(cell, pbc)
        data[keys.CELL] = cell
        data[keys.PBC] = pbc
    return data
