"""A GPS graph transformer (Rampášek et al., NeurIPS 2022) on bond graphs, from PyG's ``GPSConv``.

Each layer adds local message passing on the bonds (GINE with bond features) and global
multi-head attention over all atoms of the structure, each with a residual and batch norm, then
an MLP. Atoms carry a random-walk structural encoding (`geognn.graph.random_walk_pe`, Dwivedi
et al., ICLR 2022) added to the element embedding, since attention alone does not know the
graph:

    h_i^0    = Embedding(z_i) + W_a a_i + W_p RWPE_i
    h^(l+1)  = GPSConv_l(h^l, bonds, e)
    E        = Σ_i MLP(h_i^L)

Global attention couples every atom of a structure with every other, so its energy is not a
sum over separate molecules (``size_extensive = False``); batch norm makes training depend on
the batch, while evaluation (running statistics) does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from torch_geometric.nn import GINEConv, GPSConv

from geognn.data import keys
from geognn.graph import random_walk_pe
from geognn.graph.bonds import MAX_BOND_ORDER
from geognn.models.base import AtomGraph, check_at_least
from geognn.models.bond_graph import BondGraphConfig, BondGraphModel, check_heads
from geognn.nn.mlp import MLP


@dataclass
class GPSConfig(BondGraphConfig):
    """GPS hyperparameters.

    Attributes:
        heads: attention heads (``hidden_channels`` must divide by it).
        walk_length: steps of the random-walk encoding.
        dropout: dropout inside each GPS layer (0 in evaluation).
    """

    heads: int = 4
    walk_length: int = 16
    dropout: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        check_heads(self.hidden_channels, self.heads)
        check_at_least(self, 1, "walk_length")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"{type(self).__name__}.dropout = {self.dropout!r} is out of range: it must be in [0, 1)")


class GPS(BondGraphModel):
    """GPS: GINE message passing plus global attention per layer, random-walk encodings."""

    Config = GPSConfig
    size_extensive = False

    def __init__(self, config: GPSConfig):
        super().__init__(config)
        self.pe_linear = nn.Linear(config.walk_length, config.hidden_channels, bias=False)

    def make_conv(self) -> nn.Module:
        F = self.config.hidden_channels
        local = GINEConv(MLP([F, F, F], "relu"), train_eps=True, edge_dim=MAX_BOND_ORDER)
        return GPSConv(F, local, heads=self.config.heads, dropout=self.config.dropout, attn_type="multihead")

    def atomic_energies(self, z: Tensor, pos: Tensor, graph: AtomGraph) -> dict[str, Tensor]:
        h = self.node_inputs(z, graph)
        encoding = random_walk_pe(graph.edge_index, graph.batch, graph.num_graphs, self.config.walk_length, h.dtype)
        h = h + self.pe_linear(encoding)
        edge_features = self.edge_inputs(graph, h.dtype)
        for conv in self.convs:
            h = conv(h, graph.edge_index, graph.batch, edge_attr=edge_features)
        return {keys.NODE_ENERGY: self.readout(h).squeeze(-1)}
