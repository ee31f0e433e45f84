"""Radius graphs for molecules and periodic cells, backed by torch-cluster.

Both functions return every pair closer than ``r`` (strictly), in both
directions, without self-loops, in the edge convention of
`geognn.data.keys`: ``edge_index[0]`` is the sender j, ``edge_index[1]`` the
receiver i. Edges are sorted by receiver, then sender.

Neighbour limits. torch-cluster silently keeps an arbitrary subset when a
node has more than ``max_num_neighbors`` neighbours. Here the search is
always exact; ``max_num_neighbors=None`` (the default) keeps every
neighbour, and an integer keeps the *nearest* ``max_num_neighbors`` of each
receiver and warns, naming how many edges were dropped.
"""

from __future__ import annotations

import itertools
import warnings

import torch
import torch_cluster
from torch import Tensor

from geognn._checks import check_cell, check_cutoff, check_max_num_neighbors, check_positions, periodic_gram

# On CUDA torch-cluster allocates receivers x max_num_neighbors slots, so the
# exact search starts here and doubles until no receiver is full. On CPU it
# allocates per found neighbour and the cap can simply be the node count.
_CUDA_INITIAL_CAP = 64


def radius_graph(
    pos: Tensor,
    r: float,
    batch: Tensor | None = None,
    max_num_neighbors: int | None = None,
) -> Tensor:
    """All pairs (j, i) with ``|pos[j] - pos[i]| < r`` within the same structure.

    Args:
        pos: [N, 3] positions.
        r: cutoff radius (Å).
        batch: [N] sorted structure index of each atom (PyG's ``Batch.batch``).
        max_num_neighbors: keep at most this many nearest neighbours per
            receiver (warns when any are dropped); ``None`` keeps all.

    Returns:
        edge_index [2, E].
    """
    check_positions(pos)
    r = check_cutoff(r)
    max_num_neighbors = check_max_num_neighbors(max_num_neighbors)
    batch = _check_batch(batch, pos)
    search_pos = pos.detach()

    def search(cap: int) -> Tensor:
        return torch_cluster.radius_graph(
            search_pos, r, batch, loop=False, max_num_neighbors=cap, flow="source_to_target"
        )

    edge_index = _exact(search, pos.shape[0], pos.device)
    sender, receiver = edge_index
    edge_vec = search_pos[sender] - search_pos[receiver]
    edge_index, _ = _sort_and_limit(edge_index, None, edge_vec, pos.shape[0], r, max_num_neighbors)
    return edge_index


def periodic_radius_graph(
    pos: Tensor,
    r: float,
    cell: Tensor,
    pbc: Tensor,
    batch: Tensor | None = None,
    max_num_neighbors: int | None = None,
) -> tuple[Tensor, Tensor]:
    """All pairs (j, i, shift) with ``|pos[j] + shift @ cell - pos[i]| < r``.

    Handles triclinic cells, cutoffs larger than the cell (several images of
    the same neighbour, and an atom's own images), mixed periodicity (vectors
    along non-periodic directions are ignored and may be zero) and atoms
    outside the cell (positions are not wrapped; shifts account for it).

    Args:
        pos: [N, 3] positions.
        r: cutoff radius (Å).
        cell: [B, 3, 3] (or [3, 3]) lattice vectors as rows.
        pbc: [B, 3] (or [3]) periodic directions.
        batch: [N] sorted structure index of each atom.
        max_num_neighbors: as in `radius_graph`.

    Returns:
        edge_index [2, E] and edge_shift [E, 3] (integer-valued, dtype of ``pos``):
        the lattice translation applied to the sender, so that
        ``edge_vec = pos[j] - pos[i] + edge_shift @ cell[batch[j]]``.
    """
    check_positions(pos)
    r = check_cutoff(r)
    max_num_neighbors = check_max_num_neighbors(max_num_neighbors)
    batch = _check_batch(batch, pos)
    cell, pbc = _check_periodic(cell, pbc, batch, pos)

    with torch.no_grad():
        # Search in a reduced basis of the same lattice (reduced = op @ cell, op unimodular), so a
        # strongly sheared cell needs no more images than its reduced form; shifts found in the
        # reduced basis map back as s = s_reduced @ op.
        op = reduction_ops(cell.detach(), pbc)  # [B, 3, 3] long
        reduced = op.double() @ cell.detach().double()
        # Search in float64 on positions wrapped into the cell, so that the
        # number of images per direction follows from the cell alone.
        lattice = reduced * pbc.unsqueeze(-1)  # [B, 3, 3], zero rows off-pbc
        dual = torch.linalg.inv(periodic_gram(reduced, pbc)) @ lattice
        pos64 = pos.detach().double()
        frac = torch.einsum("ni,nki->nk", pos64, dual[batch])
        wrap = torch.floor(frac)  # [N, 3], zero along non-periodic directions
        wrapped = pos64 - torch.einsum("nk,nki->ni", wrap, lattice[batch])

        # Images needed along direction k: planes of the lattice are
        # 1/|dual_k| apart and wrapped fractional coordinates differ by < 1.
        reach = (torch.floor(r * dual.norm(dim=-1)) + 1).long() * pbc  # [B, 3]
        shifts = _shift_grid(reach.amax(0).tolist(), pos.device)  # [K, 3] long
        allowed = (shifts.abs().unsqueeze(0) <= reach.unsqueeze(1)).all(-1)  # [B, K]
        image_atom, image_shift = torch.nonzero(allowed[batch], as_tuple=True)
        image_pos = wrapped[image_atom] + torch.einsum(
            "ek,eki->ei", shifts[image_shift].double(), lattice[batch[image_atom]]
        )

        def search(cap: int) -> Tensor:
            found = torch_cluster.radius(
                image_pos, wrapped, r, batch[image_atom], batch, max_num_neighbors=cap
            )
            return found.flip(0)  # (image, receiver)

        found = _exact(search, image_pos.shape[0], pos.device)
        image, receiver = found
        sender = image_atom[image]
        lattice_shift = shifts[image_shift[image]]
        not_self = (sender != receiver) | lattice_shift.any(-1)
        sender, receiver, lattice_shift = sender[not_self], receiver[not_self], lattice_shift[not_self]
        edge_shift = lattice_shift.double() - wrap[sender] + wrap[receiver]
        edge_shift = torch.bmm(edge_shift.unsqueeze(1), op[batch[sender]].double()).squeeze(1)  # original basis
        edge_vec = image_pos[image[not_self]] - wrapped[receiver]

    edge_index = torch.stack([sender, receiver])
    edge_index, edge_shift = _sort_and_limit(
        edge_index, edge_shift, edge_vec, pos.shape[0], r, max_num_neighbors
    )
    return edge_index, edge_shift.to(pos.dtype)


def reduction_ops(cell: Tensor, pbc: Tensor) -> Tensor:
    """Unimodular integer matrices [B, 3, 3] with ``op @ cell`` a Minkowski-reduced basis.

    Only periodic directions are reduced (ASE's `minkowski_reduce`); rows of non-periodic
    directions stay as they are. Structures without periodic directions get the identity.
    """
    from ase.geometry.minkowski_reduction import minkowski_reduce

    cells, flags = cell.double().cpu().numpy(), pbc.cpu().numpy()
    ops = []
    for one_cell, one_pbc in zip(cells, flags):
        if one_pbc.any():
            ops.append(torch.from_numpy(minkowski_reduce(one_cell, pbc=one_pbc)[1].astype("int64")))
        else:
            ops.append(torch.eye(3, dtype=torch.long))
    return torch.stack(ops).to(cell.device)


def _check_batch(batch: Tensor | None, pos: Tensor) -> Tensor:
    if batch is None:
        return torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
    if batch.shape != pos.shape[:1]:
        raise ValueError(f"batch must have shape [{pos.shape[0]}], got {list(batch.shape)}")
    if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError(
            "batch must be sorted (atoms of each structure contiguous), as PyG's Batch makes it"
        )
    return batch


def _check_periodic(cell: Tensor, pbc: Tensor, batch: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
    if cell.dim() == 2:
        cell = cell.unsqueeze(0)
    pbc = torch.as_tensor(pbc, device=pos.device).bool()
    if pbc.dim() == 1:
        pbc = pbc.unsqueeze(0).expand(cell.shape[0], 3)
    check_cell(cell, pbc)
    num_graphs = int(batch[-1]) + 1
    if cell.shape[0] != num_graphs:
        raise ValueError(
            f"cell has {cell.shape[0]} structures but batch numbers {num_graphs}; "
            "give one [3, 3] cell per structure"
        )
    return cell, pbc


def _shift_grid(reach: list[int], device: torch.device) -> Tensor:
    """All integer vectors s with |s_k| <= reach[k], the zero shift first, [K, 3]."""
    ranges = [[0] + [s for n in range(1, m + 1) for s in (n, -n)] for m in reach]
    return torch.tensor(list(itertools.product(*ranges)), dtype=torch.long, device=device)


def _exact(search, num_sources: int, device: torch.device) -> Tensor:
    """Run ``search(cap)`` -> (sender-like, receiver) pairs with a cap no receiver reaches."""
    if device.type == "cpu":
        return search(max(num_sources, 1))
    cap = _CUDA_INITIAL_CAP
    while True:
        found = search(cap)
        if found.shape[1] == 0 or int(torch.bincount(found[1]).max()) < cap:
            return found
        cap *= 2


def _sort_and_limit(
    edge_index: Tensor,
    edge_shift: Tensor | None,
    edge_vec: Tensor,
    num_nodes: int,
    r: float,
    max_num_neighbors: int | None,
) -> tuple[Tensor, Tensor | None]:
    """Sort edges by (receiver, sender); keep the nearest ``max_num_neighbors`` per receiver."""
    sender, receiver = edge_index
    if max_num_neighbors is not None:
        degree = torch.bincount(receiver, minlength=num_nodes)
        if edge_index.shape[1] and int(degree.max()) > max_num_neighbors:
            by_length = torch.argsort(edge_vec.pow(2).sum(-1), stable=True)
            by_receiver = by_length[torch.argsort(receiver[by_length], stable=True)]
            start = torch.cumsum(degree, 0) - degree
            rank = torch.arange(by_receiver.numel(), device=receiver.device) - start[receiver[by_receiver]]
            keep = by_receiver[rank < max_num_neighbors]
            over = int((degree > max_num_neighbors).sum())
            warnings.warn(
                f"{over} atoms have more than max_num_neighbors={max_num_neighbors} neighbours "
                f"within r={r}; kept the nearest {max_num_neighbors} of each and dropped "
                f"{sender.numel() - keep.numel()} edges. Pass a larger max_num_neighbors, "
                "or None to keep every neighbour.",
                stacklevel=3,
            )
            sender, receiver = sender[keep], receiver[keep]
            edge_shift = None if edge_shift is None else edge_shift[keep]
    order = torch.argsort(receiver * num_nodes + sender, stable=True)
    edge_index = torch.stack([sender[order], receiver[order]])
    return edge_index, (None if edge_shift is None else edge_shift[order])
