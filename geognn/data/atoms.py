"""From `ase.Atoms` to a PyG `Data` in geognn's conventions (see `keys`)."""

from __future__ import annotations

import numpy as np
import torch
from ase.data import chemical_symbols
from torch_geometric.data import Data

from geognn._checks import check_cell, check_positions, resolve_dtype
from geognn.data import keys

MAX_ATOMIC_NUMBER = 118

# Two atoms closer than this (Å) are one point counted twice: a duplicated line in a file, a
# structure pasted onto itself, an MD run that blew up. Such a pair has no direction, and the
# models' energies and forces come out NaN (SchNet's, which reads lengths only, a finite guess).
# 1e-4 Å is 5,000 times shorter than any bond (H2: 0.74 Å), so no real structure is refused, and
# longer than the float32 spacing of coordinates below 1,000 Å (6e-5 Å at 1,000), so no pair that
# passes can become one point when a float32 model rounds its positions.
COINCIDENT_DISTANCE = 1e-4

# Structures of up to this many atoms are checked by comparing every pair at once (NumPy: 0.04 ms
# for a 7-atom molecule, 0.3 ms for 64 atoms); larger ones through the neighbour search of the
# models' graphs, whose fixed cost (0.4 ms for a molecule, 1 ms for a cell, 2 cores) would be
# several times that of the conversion itself for small molecules and cells, the bulk of dataset
# frames and of calculator calls.
_DENSE_ATOMS = 64

# Radius of that neighbour search. Any radius >= COINCIDENT_DISTANCE finds the pairs; vesin's
# cell lists are cheapest near 1 Å (a 7-atom molecule: 0.1 ms at 1 Å, 10 ms at 1e-4 Å, where the
# cell grid reaches its cap; an 8,000-atom crystal: 17 ms, a twentieth of its 5 Å graph), and
# within 1 Å a sane structure holds at most its O-H and N-H bonds.
_SEARCH_RADIUS = 1.0


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
            outside 1..118, a periodic direction with a degenerate cell, or
            two atoms (or an atom and a periodic image of another) closer
            than `COINCIDENT_DISTANCE` (1e-4 Å), named in the message.
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
    check_coincident_atoms(pos, data.get(keys.CELL), data.get(keys.PBC), numbers,
                           where=atoms.get_chemical_formula())
    return data


def check_coincident_atoms(pos: torch.Tensor, cell: torch.Tensor | None = None, pbc: torch.Tensor | None = None,
                           numbers=None, where: str = "the structure") -> None:
    """Raise ValueError naming two atoms closer than `COINCIDENT_DISTANCE`, periodic images included.

    ``pos`` [N, 3] in the dtype the model will see (distances are measured in float64 on those
    values); ``cell`` [1, 3, 3] and ``pbc`` [1, 3] for periodic structures, None for molecules;
    ``numbers`` [N] name the elements in the message. Never an O(N²) step for large structures:
    up to `_DENSE_ATOMS` atoms every pair is compared, beyond that the pairs come from the
    neighbour search of the models' graphs (`geognn.graph`, cell lists in O(N)).
    """

    def atom(k: int) -> str:
        return f"{k}" if numbers is None else f"{k} ({chemical_symbols[int(numbers[k])]})"

    advice = (f"geognn refuses atoms closer than {COINCIDENT_DISTANCE:g} Å: such a pair has no direction and "
              "gives NaN energies and forces. Remove the duplicates (ase.geometry.get_duplicate_atoms(atoms, "
              f"cutoff={COINCIDENT_DISTANCE:g}, delete=True)) or check the file or the step that produced "
              "the structure")
    pos64 = pos.detach().cpu().double().numpy()
    periodic = cell is not None
    if periodic:
        cell64 = cell.detach().cpu().double().numpy().reshape(3, 3)
        flags = pbc.detach().cpu().numpy().reshape(3)
        lengths = np.linalg.norm(cell64, axis=-1)
        short = np.flatnonzero(flags & (lengths < COINCIDENT_DISTANCE))
        if short.size:  # every atom lies on its own image (and a neighbour search would not end)
            k = int(short[0])
            raise ValueError(f"{where}: periodic cell vector {k} is {lengths[k]:.1e} Å long, so atom "
                             f"{atom(0)} coincides with its own periodic image; {advice}")
    if len(pos64) <= _DENSE_ATOMS:
        receiver, sender, shift, distance = _close_pairs_dense(pos64, cell64 if periodic else None,
                                                               flags if periodic else None)
    else:
        receiver, sender, shift, distance = _close_pairs_searched(pos, cell, pbc)
    if not receiver.size:
        return
    i, j = int(receiver[0]), int(sender[0])
    apart = f"{distance[0]:.1e} Å apart"
    s = [int(x) for x in shift[0]]
    if i == j:
        pair = f"atom {atom(i)} coincides with its own periodic image shifted by {s} cell vectors ({apart})"
    elif not any(s):
        place = ", ".join(f"{x:.4f}" for x in pos64[i])
        pair = f"atoms {atom(i)} and {atom(j)} are at the same position ({place}; {apart})"
    else:
        pair = (f"atoms {atom(i)} and {atom(j)} coincide through the periodic cell: atom {j} shifted by {s} "
                f"cell vectors lies on atom {i} ({apart})")
    # An atom on its own image is found twice (shifts s and -s), other pairs once.
    loops = int((receiver == sender).sum())
    others = receiver.size - loops + loops // 2 - 1
    more = f" ({others} more such pair{'s' if others > 1 else ''})" if others > 0 else ""
    raise ValueError(f"{where}: {pair}{more}; {advice}")


def _close_pairs_dense(pos: np.ndarray, cell: np.ndarray | None, pbc: np.ndarray | None):
    """Every pair compared: (receiver i, sender j > i, shift [K, 3], distance) of those closer than
    `COINCIDENT_DISTANCE`.

    For a pair (j, i) the shift is minus the nearest integers to their fractional separation:
    if some image ``pos[j] + s @ cell`` lies within ε of ``pos[i]``, the fractional separation
    is ``-s`` to within ε over the spacing of lattice planes, so rounding finds that ``s``.
    """
    delta = pos[None, :, :] - pos[:, None, :]  # [N, N, 3]: pos[j] - pos[i], receiver i along rows
    shift = np.zeros_like(delta)
    if cell is not None:
        lattice = cell * pbc[:, None]  # non-periodic rows never shift
        dual = np.linalg.inv(lattice @ lattice.T + np.diag(~pbc)) @ lattice  # zero rows off-pbc
        shift = -np.rint(delta @ dual.T)
        delta = delta + shift @ lattice
    distance = np.linalg.norm(delta, axis=-1)
    receiver, sender = np.nonzero(np.triu(distance < COINCIDENT_DISTANCE, k=1))  # row-major: lowest pair first
    return receiver, sender, shift[receiver, sender], distance[receiver, sender]


def _close_pairs_searched(pos: torch.Tensor, cell: torch.Tensor | None, pbc: torch.Tensor | None):
    """As `_close_pairs_dense` (with j >= i: an atom may lie on its own image), from a neighbour search."""
    # geognn.graph imports geognn.data.keys: imported here, as geognn.data.stats does.
    from geognn.graph import edge_vectors, lattice_offsets, periodic_radius_graph, radius_graph

    if cell is None:
        edge_index, edge_shift, offset = radius_graph(pos, _SEARCH_RADIUS), None, None
    else:
        edge_index, edge_shift = periodic_radius_graph(pos, _SEARCH_RADIUS, cell, pbc)
        edge_shift = edge_shift.double()
        offset = lattice_offsets(edge_index, edge_shift, cell.detach().double())
    _, edge_len = edge_vectors(pos.detach().double(), edge_index, offset)
    # Each pair is found in both directions; edges come sorted by receiver, then sender, so the
    # first kept is the pair of lowest indices.
    close = torch.nonzero((edge_len < COINCIDENT_DISTANCE) & (edge_index[0] >= edge_index[1])).flatten()
    shift = torch.zeros(close.numel(), 3) if edge_shift is None else edge_shift[close]
    return (edge_index[1, close].cpu().numpy(), edge_index[0, close].cpu().numpy(), shift.cpu().numpy(),
            edge_len[close].cpu().numpy())
