"""SchNet energy model (Schütt et al., J. Chem. Phys. 2018): embedding -> interactions -> atom-wise readout."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from geognn.data import keys
from geognn.models.base import AtomGraph, EnergyModel, EnergyModelConfig, check_at_least, check_positive
from geognn.nn import CosineCutoff, GaussianBasis
from geognn.nn.mlp import ShiftedSoftplus
from geognn.nn.schnet import SchNetInteraction


@dataclass
class SchNetConfig(EnergyModelConfig):
    """SchNet hyperparameters, named as in PyG's ``SchNet`` (defaults: a small model).

    Attributes:
        hidden_channels: width of the atom features.
        num_filters: width of the continuous filters.
        num_interactions: number of interaction blocks (residual updates).
        num_gaussians: Gaussians of the distance expansion, evenly from 0 to the cutoff.
        avg_num_neighbors: neighbour sums are divided by this (1: SchNet's and PyG's plain sum).
    """

    hidden_channels: int = 64
    num_filters: int = 64
    num_interactions: int = 3
    num_gaussians: int = 25
    avg_num_neighbors: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        check_at_least(self, 2, "hidden_channels", why="the readout halves it")
        check_at_least(self, 1, "num_filters", "num_interactions", "num_gaussians")
        check_positive(self, "avg_num_neighbors")


class SchNet(EnergyModel):
    """SchNet predicting energies; forces and stress by autograd through the `EnergyModel` base.

    ``SchNet.from_pyg(model)`` turns a PyG ``torch_geometric.nn.models.SchNet``
    (energy setting: no dipole, no mean/std/atomref) into this model with the
    same weights and energies.
    """

    Config = SchNetConfig
    depth_option = "num_interactions"

    def __init__(self, config: SchNetConfig):
        super().__init__(config)
        F = config.hidden_channels
        self.embedding = nn.Embedding(config.max_atomic_number + 1, F)
        self.rbf = GaussianBasis(config.num_gaussians, config.cutoff)
        self.cutoff_fn = CosineCutoff(config.cutoff)
        self.interactions = nn.ModuleList(
            SchNetInteraction(F, config.num_filters, config.num_gaussians, config.avg_num_neighbors)
            for _ in range(config.num_interactions)
        )
        self.readout = nn.Sequential(nn.Linear(F, F // 2), ShiftedSoftplus(), nn.Linear(F // 2, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.embedding.reset_parameters()
        for interaction in self.interactions:
            interaction.reset_parameters()
        for linear in (self.readout[0], self.readout[2]):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def atomic_energies(self, z: Tensor, pos: Tensor, graph: AtomGraph) -> dict[str, Tensor]:
        h = self.embedding(z)  # [N, F]
        edge_rbf, edge_cutoff = self.rbf(graph.edge_len), self.cutoff_fn(graph.edge_len)
        for interaction in self.interactions:
            h = h + interaction(h, graph.edge_index, edge_rbf, edge_cutoff)
        return {keys.NODE_ENERGY: self.readout(h).squeeze(-1)}

    @classmethod
    def from_pyg(cls, model: nn.Module) -> "SchNet":
        """A PyG ``SchNet`` (energy setting) as a geognn model with its weights and basis constants."""
        from torch_geometric.nn.models import SchNet as PyGSchNet

        if not isinstance(model, PyGSchNet):
            raise TypeError(f"SchNet.from_pyg takes a torch_geometric SchNet, got {type(model).__name__}")
        if model.dipole or model.mean is not None or model.std is not None or model.atomref is not None:
            raise ValueError("SchNet.from_pyg supports PyG's energy setting only (no dipole, mean/std or atomref); "
                             "geognn's scale, shift and element references live in the EnergyModel base")
        from torch_geometric.nn.aggr import SumAggregation

        if getattr(model, "scale", None) is not None or not isinstance(model.readout, SumAggregation):
            raise ValueError("SchNet.from_pyg needs PyG's sum readout without scale")
        config = SchNetConfig(hidden_channels=model.hidden_channels, num_filters=model.num_filters,
                              num_interactions=model.num_interactions, num_gaussians=model.num_gaussians,
                              cutoff=float(model.cutoff), max_atomic_number=model.embedding.num_embeddings - 1)
        dtype = next(model.parameters()).dtype
        ours = cls(config).to(dtype)
        with torch.no_grad():
            ours.embedding.weight.copy_(model.embedding.weight)
            # PyG's Gaussian centres, as built (float32 linspace unless built in float64); the width
            # cutoff / (num_gaussians - 1) is the same up to that rounding.
            ours.rbf.centers.copy_(model.distance_expansion.offset)
            for mine, theirs in zip(ours.interactions, model.interactions):
                pairs = [(mine.filter[0], theirs.mlp[0]), (mine.filter[2], theirs.mlp[2]),
                         (mine.lin_1, theirs.conv.lin1), (mine.lin_2, theirs.conv.lin2), (mine.lin_3, theirs.lin)]
                for a, b in pairs:
                    a.weight.copy_(b.weight)
                    if a.bias is not None:
                        a.bias.copy_(b.bias)
            ours.readout[0].weight.copy_(model.lin1.weight)
            ours.readout[0].bias.copy_(model.lin1.bias)
            ours.readout[2].weight.copy_(model.lin2.weight)
            ours.readout[2].bias.copy_(model.lin2.bias)
        return ours
