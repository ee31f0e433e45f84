"""Positional encodings of graphs, for models that see the graph but not the coordinates."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import to_dense_adj, to_dense_batch


def random_walk_pe(
    edge_index: Tensor, batch: Tensor, num_graphs: int, walk_length: int, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Random-walk structural encoding (Dwivedi et al., ICLR 2022), [N, walk_length].

    Entry k-1 of atom i is the probability that a random walk from i is back at i after k steps,
    ``(D^-1 A)^k [i, i]`` for k = 1..walk_length, computed per structure (dense, one matrix per
    structure of the batch, in ``dtype``). Unlike Laplacian eigenvectors it has no sign or basis ambiguity, so it
    is a plain permutation-equivariant function of the graph. Isolated atoms get zeros.
    """
    if walk_length < 1:
        raise ValueError(f"walk_length must be at least 1, got {walk_length}")
    ones = torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device)
    adjacency = to_dense_adj(edge_index, batch, edge_attr=ones, batch_size=num_graphs)  # [B, M, M]
    degree = adjacency.sum(-1, keepdim=True)
    transition = adjacency / degree.clamp(min=1)
    power = transition
    diagonals = []
    for _ in range(walk_length):
        diagonals.append(torch.diagonal(power, dim1=-2, dim2=-1))
        power = power @ transition
    encoding = torch.stack(diagonals, dim=-1)  # [B, M, walk_length]
    _, mask = to_dense_batch(batch.new_zeros(batch.shape[0], 1), batch, batch_size=num_graphs)
    return encoding[mask]
