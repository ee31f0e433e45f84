"""Triplets k→j→i: the edge list of the line graph, for DimeNet-style angles.

In DimeNet the message on edge j→i is updated from the messages on every edge
k→j that arrives at j, weighted through the angle ∠kji. Each such pair of
edges is a *triplet*; the pairs are the edges of the line graph (nodes =
edges of the molecular graph). With the convention of `geognn.data.keys`
(``edge_index[0]`` the sender, ``edge_index[1]`` the receiver)::

    idx_kj, idx_ji = triplets(edge_index, num_nodes, edge_shift)   # [T], [T]
    edge_index[1, idx_kj] == edge_index[0, idx_ji]                 # both are j
    # edge_vec[idx_kj] = x_k - x_j and -edge_vec[idx_ji] = x_i - x_j: the
    # angle between them is ∠kji.

The pair whose path goes back to where it came from (k is i itself) carries
no angle and is left out.
"""

from __future__ import annotations

import operator
from typing import Optional

import torch
from torch import Tensor


def triplets(edge_index: Tensor, num_nodes: int, edge_shift: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Index pairs (idx_kj, idx_ji) [T] of all edge pairs k→j→i that do not go back where they came from.

    For every edge e_ji (sender j, receiver i) and every edge e_kj arriving at
    j (sender k, receiver j) there is one entry, except the back-tracking pair.
    Periodic graphs: in i's frame atom j sits at image ``s_ji`` and atom k at
    ``s_ji + s_kj``, so k is i itself iff ``k == i`` and
    ``edge_shift[kj] + edge_shift[ji] == 0``. k may be the same atom as i in
    another image (small cells, cutoffs beyond the cell); such triplets are
    kept, unlike with PyG's ``idx_i != idx_k``. Without ``edge_shift``
    (molecules) the pair is dropped exactly when ``k == i``.

    Edges may come in any order. The output is sorted by ``idx_ji`` and, within
    one ``idx_ji``, by ``idx_kj``, so aggregation over ``idx_ji`` can assume
    sorted indices (segment reductions, CSR pointers from a ``bincount``).

    Args:
        edge_index: [2, E] long, (sender, receiver).
        num_nodes: number of nodes N; every index must be below it.
        edge_shift: [E, 3] integer lattice translation of each sender's image
            (float holding integers, or long), for periodic graphs.

    Returns:
        idx_kj [T] long, idx_ji [T] long, on the device of ``edge_index``.
    """
    if not torch.jit.is_scripting():  # compiled (geognn.export), the graph comes checked from the engine
        num_nodes = _check(edge_index, num_nodes, edge_shift)
    sender, receiver = edge_index[0], edge_index[1]  # indexing: TorchScript cannot unpack a tensor
    num_edges = edge_index.shape[1]
    device = edge_index.device
    if num_edges == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty.clone()

    # The edges arriving at each j must be one contiguous slice; radius graphs
    # already come sorted by receiver, so only other inputs pay for a sort.
    if bool((receiver[1:] >= receiver[:-1]).all()):
        by_receiver = None
    else:
        # stable: inside each slice the edge ids stay ascending, which makes
        # the output sorted by idx_kj within each idx_ji for any input order
        by_receiver = torch.argsort(receiver, stable=True)
    in_degree = torch.bincount(receiver, minlength=num_nodes)
    slice_start = torch.cumsum(in_degree, 0) - in_degree  # [N]

    # every edge j→i pairs with each of the in_degree[j] edges arriving at j
    candidates = in_degree[sender]  # [E]
    total = int(candidates.sum())
    idx_ji = torch.repeat_interleave(torch.arange(num_edges, device=device), candidates, output_size=total)
    # position inside idx_ji's run, moved to the start of j's slice
    run_start = torch.cumsum(candidates, 0) - candidates
    slot = torch.arange(total, device=device) + torch.repeat_interleave(
        slice_start[sender] - run_start, candidates, output_size=total
    )
    idx_kj = slot if by_receiver is None else by_receiver[slot]

    back = sender[idx_kj] == receiver[idx_ji]
    if edge_shift is not None:
        back &= (edge_shift[idx_kj] + edge_shift[idx_ji] == 0).all(-1)
    keep = ~back
    return idx_kj[keep], idx_ji[keep]


def _check(edge_index: Tensor, num_nodes: int, edge_shift: Optional[Tensor]) -> int:
    """Raise ValueError on malformed input; return ``num_nodes`` as a Python int."""
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        shape = list(edge_index.shape) if isinstance(edge_index, Tensor) else type(edge_index).__name__
        raise ValueError(f"edge_index must be a [2, E] tensor of (sender, receiver), got {shape}")
    if edge_index.dtype != torch.long:
        raise ValueError(f"edge_index must be torch.long, got {edge_index.dtype}; convert with .long()")
    try:
        count = operator.index(num_nodes)
    except TypeError:
        count = None
    if count is None or isinstance(num_nodes, bool) or count < 0:
        raise ValueError(f"num_nodes must be a non-negative int, got {num_nodes!r}")
    num_nodes = count
    if edge_index.shape[1]:
        low, high = torch.aminmax(edge_index)
        low, high = int(low), int(high)
        if low < 0 or high >= num_nodes:
            raise ValueError(
                f"edge_index holds node indices in [{low}, {high}] but num_nodes={num_nodes}; "
                "indices must lie in [0, num_nodes)"
            )
    if edge_shift is None:
        return num_nodes
    if not isinstance(edge_shift, Tensor) or edge_shift.shape != (edge_index.shape[1], 3):
        shape = list(edge_shift.shape) if isinstance(edge_shift, Tensor) else type(edge_shift).__name__
        raise ValueError(f"edge_shift must have shape [E, 3] = [{edge_index.shape[1]}, 3], got {shape}")
    if edge_shift.dtype == torch.bool or edge_shift.is_complex():
        raise ValueError(f"edge_shift must hold integer lattice shifts (float or long), got {edge_shift.dtype}")
    if edge_shift.device != edge_index.device:
        raise ValueError(
            f"edge_shift is on {edge_shift.device} but edge_index on {edge_index.device}; move both to one device"
        )
    return num_nodes
