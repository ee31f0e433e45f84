"""The message-passing base shared by geognn's layers.

A layer carries invariant scalar channels ``h`` [N, F] and equivariant
Cartesian vector channels ``v`` [N, F_v, 3] (and, for EGNN, positions). In
the MPNN vocabulary (Gilmer et al. 2017) one step is

    m_ij = message(h_i, h_j, geometry_ij)      per edge j -> i
    m_i  = aggregate({m_ij : j in N(i)})       per receiver
    h_i' = update(m_i, h_i, ...)               per node

`ScalarVectorMessagePassing` keeps those three methods visible, as in PyG,
and lets ``message`` return a list of per-edge tensors (scalar, vector, ...
messages: the channels the layer uses), each summed over receivers and divided
by ``avg_num_neighbors`` so that deep stacks keep their scale. A list (not a
tuple of any length) keeps the layers scriptable by TorchScript, which
`geognn.export` needs.

The layers call the three steps themselves (gather the senders' rows with
``index_select``, ``message``, ``aggregate`` onto the receivers, ``update``)
rather than through PyG's ``propagate``: its scripted form carries branches
for sparse adjacency types that reference torch-scatter/torch-sparse
operators, which an exported model must not need where it is loaded.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing


class ScalarVectorMessagePassing(MessagePassing):
    """`MessagePassing` whose messages are lists of per-edge tensors [E, ...]."""

    def __init__(self, avg_num_neighbors: float = 1.0):
        # node_dim=0: node features may be [N, F] or [N, F, 3].
        super().__init__(aggr="add", node_dim=0, flow="source_to_target")
        if not avg_num_neighbors > 0:
            raise ValueError(f"avg_num_neighbors must be positive, got {avg_num_neighbors}")
        self.register_buffer("avg_num_neighbors", torch.tensor(float(avg_num_neighbors)))

    # PyG's repr drops the hyperparameters that extra_repr lists.
    __repr__ = torch.nn.Module.__repr__
    # PyG's aggregation module (unused: `aggregate` below replaces it) would otherwise be compiled into
    # an exported model, with its references to torch-scatter's operators.
    __jit_ignored_attributes__ = ["aggr_module"]

    def aggregate(
        self,
        inputs: List[Tensor],
        index: Tensor,
        ptr: Optional[Tensor] = None,
        dim_size: Optional[int] = None,
    ) -> List[Tensor]:
        # index_add_ (sum over receivers): its backward is an index_select, cheaper than the
        # gather of a broadcast index that scatter_add needs, under double backward too.
        size = dim_size if dim_size is not None else (int(index.max()) + 1 if index.numel() > 0 else 0)
        out: List[Tensor] = []
        for message in inputs:
            shape = list(message.shape)
            shape[0] = size
            out.append(message.new_zeros(shape).index_add_(0, index, message) / self.avg_num_neighbors)
        return out
