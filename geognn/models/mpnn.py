"""The message passing neural network of Gilmer et al. (ICML 2017) on bond graphs.

The paper's best QM9 variant, built from PyG's layers:

    h_i^0      = Embedding(z_i) + W_a a_i                       (element and bond-graph atom features)
    m_i^(t+1)  = Σ_j A(e_ij) h_j^t                              edge network: ``NNConv``, A(e) an MLP
                                                                giving a [F, F] matrix per bond
    h_i^(t+1)  = GRU(m_i^(t+1), h_i^t)                          the same weights at every step
    E          = MLP(Set2Set({h_i^T}))                          a structure-level readout

Edge features e_ij are the bond order (one-hot, from the bond length, `geognn.graph.bonds`) and
the bond's length in Å, as in the paper's QM9 runs (bond type and distance). The Set2Set readout
(Vinyals et al., ICLR 2016) attends over all atoms of a structure, so the model returns the
structure's energy itself rather than per-atom energies, and its energy is not a sum over
atoms: two molecules far apart do not add up (``size_extensive = False``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn import NNConv, Set2Set

from geognn.data import keys
from geognn.graph.bonds import MAX_BOND_ORDER
from geognn.models.base import AtomGraph, check_at_least
from geognn.models.bond_graph import BondGraphConfig, BondGraphModel
from geognn.nn.mlp import MLP, lookup

MPNN_AGGREGATIONS = ("add", "mean")


@dataclass
class MPNNConfig(BondGraphConfig):
    """MPNN hyperparameters (``num_layers`` is the number of message passing steps T).

    Attributes:
        edge_hidden: hidden width of the edge network that maps e_ij to a matrix.
        aggr: "add" (the paper's sum of messages) or "mean".
        set2set_steps: processing steps of the Set2Set readout (the paper: M = 3 … 12).
    """

    num_layers: int = 3
    edge_hidden: int = 128
    aggr: str = "add"
    set2set_steps: int = 3

    def __post_init__(self):
        super().__post_init__()
        check_at_least(self, 1, "edge_hidden", "set2set_steps")


class MPNN(BondGraphModel):
    """Gilmer et al.'s edge-network MPNN with GRU updates and a Set2Set readout."""

    Config = MPNNConfig
    size_extensive = False

    def __init__(self, config: MPNNConfig):
        lookup({a: a for a in MPNN_AGGREGATIONS}, config.aggr, "aggr")
        super().__init__(config)
        F = config.hidden_channels
        edge_network = MLP([MAX_BOND_ORDER + 1, config.edge_hidden, F * F], "relu")
        self.message = NNConv(F, F, edge_network, aggr=config.aggr)
        self.gru = nn.GRU(F, F)
        self.set2set = Set2Set(F, processing_steps=config.set2set_steps)
        self.readout = MLP([2 * F, F, 1], config.activation)

    def make_conv(self) -> nn.Module:
        return nn.Identity()  # the message function is shared by all steps (self.message)

    def edge_inputs(self, graph: AtomGraph, dtype: torch.dtype) -> Tensor:
        """One-hot bond order and the bond length in Å, [E, 4]."""
        order = super().edge_inputs(graph, dtype)
        return torch.cat([order, graph.edge_len.detach().to(dtype).unsqueeze(-1)], dim=-1)

    def atomic_energies(self, z: Tensor, pos: Tensor, graph: AtomGraph) -> dict[str, Tensor]:
        h = self.node_inputs(z, graph)
        edge_features = self.edge_inputs(graph, h.dtype)
        hidden = h.unsqueeze(0)
        for _ in range(self.config.num_layers):
            m = self.act(self.message(h, graph.edge_index, edge_features))
            h, hidden = self.gru(m.unsqueeze(0), hidden)
            h = h.squeeze(0)
        pooled = self.set2set(h, graph.batch, dim_size=graph.num_graphs)  # [B, 2F]
        return {keys.ENERGY: self.readout(pooled).squeeze(-1)}
