"""Bond graphs perceived from geometry, for the 2D baselines (and any model that wants bonds).

Two atoms are bonded when their distance is at most ``scale`` times the sum of their
covalent radii (Cordero et al., Dalton Trans. 2008, as tabulated in ``ase.data.covalent_radii``):

    |r_ij| <= scale * (r_cov(z_i) + r_cov(z_j))

``BOND_SCALE = 1.15`` is the default: on every tenth QM9 molecule (13,084) it reproduces the
bonds and hydrogens written in the dataset's SMILES for 99.95% of them, against 99.75% for 1.10
and 98.66% for 1.20 (``benchmarks/bond_graph_qm9.py``, figures in ``benchmarks/README.md``).
The rule is the one Jmol and ASE's ``natural_cutoffs`` use, with a multiplicative tolerance;
it works on any structure, molecules and periodic cells alike, because it runs on top of the
radius graph.

Bond orders (1, 2, 3) come from the bond length alone: the order whose sum of Pyykkö's
covalent radii for single, double and triple bonds is nearest to the distance (Pyykkö &
Atsumi, Chem. Eur. J. 15, 186 and 12770 (2009); Pyykkö, Riedel & Patzschke, Chem. Eur. J.
11, 3511 (2005)). Only B, C, N, O, Si, P and S take multiple bonds here; every other element's
bonds are single. Conjugated (aromatic) bonds land on whichever order is nearer, since a
length between single and double has no integer order.
"""

from __future__ import annotations

from typing import Optional

import torch
from ase.data import covalent_radii
from torch import Tensor

from geognn.graph.edges import edge_vectors, lattice_offsets
from geognn.graph.neighbors import AUTO
from geognn.graph.radius import periodic_radius_graph, radius_graph

BOND_SCALE = 1.15
MAX_BOND_ORDER = 3

# Pyykkö's additive covalent radii in Å for single, double and triple bonds.
_MULTIPLE_BOND_RADII = {
    5: (0.85, 0.78, 0.73),  # B
    6: (0.75, 0.67, 0.60),  # C
    7: (0.71, 0.60, 0.54),  # N
    8: (0.63, 0.57, 0.53),  # O
    14: (1.16, 1.07, 1.02),  # Si
    15: (1.11, 1.02, 0.94),  # P
    16: (1.03, 0.94, 0.95),  # S
}


def _radius_table(device, dtype) -> Tensor:
    return torch.as_tensor(covalent_radii, device=device, dtype=dtype)


def _bond_length_table() -> tuple[Tensor, Tensor]:
    """Per element: reference radii for single, double and triple bonds [Z, 3], and whether the
    element takes multiple bonds [Z] (built once; `bond_orders` moves it to the data's device)."""
    table = torch.zeros(len(covalent_radii), MAX_BOND_ORDER, dtype=torch.float64)
    table[:, 0] = torch.as_tensor(covalent_radii, dtype=torch.float64)  # single bonds: Cordero's radii
    multiple = torch.zeros(len(covalent_radii), dtype=torch.bool)
    for number, radii in _MULTIPLE_BOND_RADII.items():
        table[number] = torch.tensor(radii, dtype=torch.float64)
        multiple[number] = True
    return table, multiple


_BOND_LENGTHS, _MULTIPLE = _bond_length_table()


def bond_graph(
    z: Tensor,
    pos: Tensor,
    batch: Optional[Tensor] = None,
    *,
    scale: float = BOND_SCALE,
    cell: Optional[Tensor] = None,
    pbc: Optional[Tensor] = None,
    backend: str = AUTO,
) -> tuple[Tensor, Optional[Tensor]]:
    """Bonds of a batch of structures: ``(edge_index [2, E], edge_shift [E, 3] or None)``.

    Both directions of every bond are listed, in the radius graph's convention (sender
    ``edge_index[0]``, receiver ``edge_index[1]``). ``cell`` [B, 3, 3] and ``pbc`` [B, 3]
    make the search periodic, and ``edge_shift`` holds each sender's lattice image. ``backend``
    names the neighbour search (`geognn.graph.neighbors`).
    """
    edge_index, edge_shift, _ = bonds_with_lengths(z, pos, batch, scale=scale, cell=cell, pbc=pbc, backend=backend)
    return edge_index, edge_shift


def bonds_with_lengths(
    z: Tensor,
    pos: Tensor,
    batch: Optional[Tensor] = None,
    *,
    scale: float = BOND_SCALE,
    cell: Optional[Tensor] = None,
    pbc: Optional[Tensor] = None,
    backend: str = AUTO,
) -> tuple[Tensor, Optional[Tensor], Tensor]:
    """`bond_graph` plus the length of each bond [E] (detached), which the search measures anyway."""
    if not scale > 0:
        raise ValueError(f"bond scale must be positive, got {scale}")
    if z.shape != pos.shape[:1]:
        raise ValueError(f"z must have shape [{pos.shape[0]}], got {list(z.shape)}")
    if z.numel() and (int(z.min()) < 1 or int(z.max()) >= len(covalent_radii)):
        raise ValueError(f"atomic numbers must be in 1..{len(covalent_radii) - 1}, got {z.min()}..{z.max()}")
    with torch.no_grad():
        pos = pos.detach()
        radii = _radius_table(pos.device, pos.dtype)[z]
        cutoff = 2.0 * scale * float(radii.max()) if z.numel() else 1.0
        edge_shift = edge_offset = None
        if cell is None:
            edge_index = radius_graph(pos, cutoff, batch, max_num_neighbors=None, backend=backend)
        else:
            if pbc is None:
                raise ValueError("a bond graph with a 'cell' needs 'pbc' too")
            edge_index, edge_shift = periodic_radius_graph(pos, cutoff, cell.detach(), pbc, batch, backend=backend)
            edge_offset = lattice_offsets(edge_index, edge_shift, cell.detach(), batch)
        _, length = edge_vectors(pos, edge_index, edge_offset)
        bonded = length <= scale * (radii[edge_index[0]] + radii[edge_index[1]])
    return edge_index[:, bonded], None if edge_shift is None else edge_shift[bonded], length[bonded]


def bond_orders(z: Tensor, edge_index: Tensor, edge_len: Tensor) -> Tensor:
    """Bond order 1, 2 or 3 of each bond [E] (long), from its length (see the module docstring)."""
    table = _BOND_LENGTHS.to(device=edge_len.device, dtype=edge_len.dtype)
    multiple = _MULTIPLE.to(edge_len.device)
    zi, zj = z[edge_index[1]], z[edge_index[0]]
    reference = table[zi] + table[zj]  # [E, 3]
    mismatch = (edge_len.detach().unsqueeze(-1) - reference).abs()
    allowed = (multiple[zi] & multiple[zj]).unsqueeze(-1) | (torch.arange(MAX_BOND_ORDER, device=z.device) == 0)
    mismatch = mismatch.masked_fill(~allowed, float("inf"))
    return mismatch.argmin(dim=-1) + 1


def bond_atom_features(z: Tensor, edge_index: Tensor, edge_order: Tensor, max_degree: int = 5) -> Tensor:
    """Atom features read off the bond graph, [N, 2 * (max_degree + 1) + 1] float.

    One-hot degree (number of bonded neighbours, capped at ``max_degree``), one-hot number of
    bonded hydrogens (capped likewise), and the atom's total bond order (the valence it uses,
    divided by 4). These are the graph-derivable atom features of Gilmer et al. (2017, table 1:
    number of hydrogens, and hybridization through degree and valence); the element itself is
    embedded by the model.
    """
    num_atoms = z.shape[0]
    receiver, sender = edge_index[1], edge_index[0]
    degree = torch.zeros(num_atoms, dtype=torch.long, device=z.device).index_add_(
        0, receiver, torch.ones_like(receiver)
    )
    hydrogens = torch.zeros(num_atoms, dtype=torch.long, device=z.device).index_add_(
        0, receiver, (z[sender] == 1).long()
    )
    valence = torch.zeros(num_atoms, dtype=torch.float, device=z.device).index_add_(
        0, receiver, edge_order.float()
    )
    width = max_degree + 1
    return torch.cat(
        [
            torch.nn.functional.one_hot(degree.clamp(max=max_degree), width).float(),
            torch.nn.functional.one_hot(hydrogens.clamp(max=max_degree), width).float(),
            (valence / 4.0).unsqueeze(-1),
        ],
        dim=-1,
    )
