"""The message-passing base shared by geognn's layers.

A layer carries invariant scalar channels ``h`` [N, F] and equivariant
Cartesian vector channels ``v`` [N, F_v, 3] (and, for EGNN, positions). In
the MPNN vocabulary (Gilmer et al. 2017) one step is

    m_ij = message(h_i, h_j, geometry_ij)      per edge j -> i
    m_i  = aggregate({m_ij : j in N(i)})       per receiver
    h_i' = update(m_i, h_i, ...)               per node

`ScalarVectorMessagePassing` keeps those three methods visible, as in PyG,
and lets ``message`` return a tuple (scalar, vector, ... messages; ``None``
for a channel a layer does not use), each summed over receivers and divided
by ``avg_num_neighbors`` so that deep stacks keep their scale.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing


class ScalarVectorMessagePassing(MessagePassing):
    """`MessagePassing` whose messages are tuples of per-edge tensors [E, ...]."""

    def __init__(self, avg_num_neighbors: float = 1.0):
        # node_dim=0: node features may be [N, F] or [N, F, 3].
        super().__init__(aggr="add", node_dim=0, flow="source_to_target")
        if not avg_num_neighbors > 0:
            raise ValueError(f"avg_num_neighbors must be positive, got {avg_num_neighbors}")
        self.register_buffer("avg_num_neighbors", torch.tensor(float(avg_num_neighbors)))

    # PyG's repr drops the hyperparameters that extra_repr lists.
    __repr__ = torch.nn.Module.__repr__

    def aggregate(
        self,
        inputs: tuple[Optional[Tensor], ...],
        index: Tensor,
        ptr: Optional[Tensor] = None,
        dim_size: Optional[int] = None,
    ) -> tuple[Optional[Tensor], ...]:
        # index_add_ (sum over receivers): its backward is an index_select, cheaper than the
        # gather of a broadcast index that scatter_add needs, under double backward too.
        if dim_size is None:
            dim_size = int(index.max()) + 1 if index.numel() else 0
        return tuple(
            None
            if message is None
            else message.new_zeros((dim_size, *message.shape[1:])).index_add_(0, index, message) / self.avg_num_neighbors
            for message in inputs
        )
