"""Edge vectors and lengths, differentiable in positions and cell."""

from __future__ import annotations

import torch
from torch import Tensor


def lattice_offsets(edge_index: Tensor, edge_shift: Tensor, cell: Tensor, batch: Tensor | None = None) -> Tensor:
    """Cartesian translation of each sender's image, ``edge_shift @ cell[batch[j]]``, [E, 3].

    Differentiable in ``cell`` (stress flows through it).
    """
    if cell.dim() == 2:
        cell = cell.unsqueeze(0)
    sender = edge_index[0]
    structure = sender.new_zeros(sender.shape) if batch is None else batch[sender]
    return torch.bmm(edge_shift.to(cell.dtype).unsqueeze(1), cell[structure]).squeeze(1)


def edge_vectors(pos: Tensor, edge_index: Tensor, edge_offset: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``edge_vec = pos[j] - pos[i] (+ edge_offset)`` [E, 3] and ``edge_len`` [E].

    ``edge_offset`` comes from `lattice_offsets` for periodic graphs.
    Gradients flow to ``pos`` (and through ``edge_offset`` to the cell).
    """
    sender, receiver = edge_index
    edge_vec = pos[sender] - pos[receiver]
    if edge_offset is not None:
        edge_vec = edge_vec + edge_offset
    return edge_vec, torch.linalg.vector_norm(edge_vec, dim=-1)
