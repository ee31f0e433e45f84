"""2D baselines on bond graphs: GCN, GraphSAGE, GAT (v2) and GIN, from PyG's layers.

These models see a molecule as its bond graph (covalent-radius bonds perceived from the
geometry, `geognn.graph.bonds`), never its coordinates: they answer whether 3D geometry pays
for itself over the bond graph, trained on exactly the same data and code as the 3D models.

Every 2D model here shares one layout (`BondGraphModel`):

    h_i^0     = Embedding(z_i) + W_a a_i        a_i: degree, bonded H, total bond order
                                                (`geognn.graph.bond_atom_features`)
    h^(l+1)   = h^l + act(conv_l(h^l, bonds, e))   e_ij: one-hot bond order (1, 2, 3)
    E         = Σ_i MLP(h_i^L)                  (through `EnergyModel`'s readout)

with ``conv_l`` PyG's ``GCNConv`` (Kipf & Welling, ICLR 2017), ``SAGEConv`` (Hamilton et al.,
NeurIPS 2017, mean aggregation), ``GATv2Conv`` (Brody et al., ICLR 2022, with bond features in
the attention) or ``GINEConv`` (Xu et al., ICLR 2019; Hu et al., ICLR 2020, edge features). The
Gilmer et al. MPNN and the GPS graph transformer are in `geognn.models.mpnn` and
`geognn.models.gps`.

Their energy is piecewise constant in the positions (it changes only when a bond appears or
breaks), so they declare ``uses_positions = False`` and refuse forces and stress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv, GCNConv, GINEConv, SAGEConv

from geognn.data import keys
from geognn.graph import BOND_SCALE, bond_atom_features
from geognn.graph.bonds import MAX_BOND_ORDER
from geognn.models.base import AtomGraph, EnergyModel, EnergyModelConfig, check_at_least, check_positive
from geognn.nn.mlp import ACTIVATIONS, MLP, lookup

ATOM_FEATURE_DEGREE = 5  # degrees and hydrogen counts above this share the last one-hot slot
ATOM_FEATURE_DIM = 2 * (ATOM_FEATURE_DEGREE + 1) + 1


@dataclass
class BondGraphConfig(EnergyModelConfig):
    """Fields of every 2D model (``cutoff`` and ``max_num_neighbors`` are not used: the graph is bonds,
    found by a radius search with ``neighbor_backend``).

    Attributes:
        hidden_channels: width of the atom features.
        num_layers: graph convolutions (residual).
        bond_scale: bonds are pairs closer than ``bond_scale`` times the sum of covalent radii.
        atom_features: add the bond-graph atom features (degree, bonded H, bond order sum)
            to the element embedding, as Gilmer et al. (2017) did; False uses the element alone.
        activation: name in `geognn.nn.ACTIVATIONS`.
    """

    hidden_channels: int = 64
    num_layers: int = 4
    bond_scale: float = BOND_SCALE
    atom_features: bool = True
    activation: str = "silu"

    def __post_init__(self):
        super().__post_init__()
        check_at_least(self, 2, "hidden_channels", why="the readout halves it")
        check_at_least(self, 1, "num_layers")
        check_positive(self, "bond_scale")


class BondGraphModel(EnergyModel):
    """Base of the 2D models: embedding, residual convolutions on the bond graph, atom-wise readout.

    A subclass sets ``Config`` and ``name``, implements `make_conv` (one layer), and sets
    ``conv_takes_edge_features`` when its layer is called as ``conv(h, edge_index, edge_features)``.
    """

    Config = BondGraphConfig
    graph_builder = "bonds"
    uses_positions = False
    conv_takes_edge_features: ClassVar[bool] = False

    def __init__(self, config: BondGraphConfig):
        super().__init__(config)
        F = config.hidden_channels
        self.embedding = nn.Embedding(config.max_atomic_number + 1, F)
        self.atom_linear = nn.Linear(ATOM_FEATURE_DIM, F, bias=False) if config.atom_features else None
        self.act = lookup(ACTIVATIONS, config.activation, "activation")()
        self.convs = nn.ModuleList(self.make_conv() for _ in range(config.num_layers))
        self.readout = MLP([F, F // 2, 1], config.activation)

    def graph_options(self) -> dict:
        return {"scale": self.config.bond_scale, "backend": self.config.neighbor_backend}

    def make_conv(self) -> nn.Module:
        raise NotImplementedError

    def convolve(self, conv: nn.Module, h: Tensor, graph: AtomGraph, edge_features: Tensor) -> Tensor:
        if self.conv_takes_edge_features:
            return conv(h, graph.edge_index, edge_features)
        return conv(h, graph.edge_index)

    def node_inputs(self, z: Tensor, graph: AtomGraph) -> Tensor:
        h = self.embedding(z)
        if self.atom_linear is not None:
            features = bond_atom_features(z, graph.edge_index, graph.edge_attr, ATOM_FEATURE_DEGREE)
            h = h + self.atom_linear(features.to(h.dtype))
        return h

    def edge_inputs(self, graph: AtomGraph, dtype: torch.dtype) -> Tensor:
        """One-hot bond order [E, 3]."""
        return nn.functional.one_hot(graph.edge_attr - 1, MAX_BOND_ORDER).to(dtype)

    def atomic_energies(self, z: Tensor, pos: Tensor, graph: AtomGraph) -> dict[str, Tensor]:
        h = self.node_inputs(z, graph)
        edge_features = self.edge_inputs(graph, h.dtype)
        for conv in self.convs:
            h = h + self.act(self.convolve(conv, h, graph, edge_features))
        return {keys.NODE_ENERGY: self.readout(h).squeeze(-1)}


class GCN(BondGraphModel):
    """Graph convolutional network (Kipf & Welling, ICLR 2017): symmetric-normalised neighbour sums."""


    def make_conv(self) -> nn.Module:
        F = self.config.hidden_channels
        return GCNConv(F, F)


class GraphSAGE(BondGraphModel):
    """GraphSAGE (Hamilton et al., NeurIPS 2017): own features plus the mean of the neighbours'."""


    def make_conv(self) -> nn.Module:
        F = self.config.hidden_channels
        return SAGEConv(F, F, aggr="mean")


@dataclass
class GATConfig(BondGraphConfig):
    """Attributes: heads: attention heads, concatenated (``hidden_channels`` must divide by it)."""

    heads: int = 4

    def __post_init__(self):
        super().__post_init__()
        check_heads(self.hidden_channels, self.heads)


def check_heads(hidden_channels: int, heads: int) -> None:
    """Attention heads split the channels evenly."""
    if heads < 1:
        raise ValueError(f"heads = {heads} is out of range: it must be an integer >= 1")
    if hidden_channels % heads:
        raise ValueError(f"hidden_channels ({hidden_channels}) must be a multiple of heads ({heads})")


class GAT(BondGraphModel):
    """Graph attention, GATv2 (Brody et al., ICLR 2022), with the bond order in the attention scores."""

    Config = GATConfig
    conv_takes_edge_features = True

    def make_conv(self) -> nn.Module:
        F, heads = self.config.hidden_channels, self.config.heads
        return GATv2Conv(F, F // heads, heads=heads, edge_dim=MAX_BOND_ORDER)


class GIN(BondGraphModel):
    """Graph isomorphism network with edge features, GINE (Xu et al., ICLR 2019; Hu et al., ICLR 2020):
    ``MLP((1 + eps) h_i + Σ_j relu(h_j + W e_ij))``, as expressive as the 1-WL test."""

    conv_takes_edge_features = True

    def make_conv(self) -> nn.Module:
        F = self.config.hidden_channels
        return GINEConv(MLP([F, F, F], self.config.activation), train_eps=True, edge_dim=MAX_BOND_ORDER)
