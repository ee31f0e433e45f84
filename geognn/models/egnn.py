"""EGNN energy model: embedding -> EGNN layers -> per-atom readout."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from geognn.data import keys
from geognn.models.base import AtomGraph, EnergyModel, EnergyModelConfig, check_at_least, check_positive
from geognn.nn import ENVELOPES, MLP, RADIAL_BASES, EGNNLayer
from geognn.nn.mlp import lookup


@dataclass
class EGNNConfig(EnergyModelConfig):
    """EGNN hyperparameters (defaults: a small model, ~127k parameters, for any element up to Z=100).

    Attributes:
        hidden_channels: width F of the scalar features and messages.
        num_layers: number of `EGNNLayer` steps.
        vector_channels: F_v, number of equivariant vector channels (0: plain EGNN).
        num_radial: size of the radial basis fed as edge attributes (0: only |x_ij|²).
        radial_basis: name in `geognn.nn.RADIAL_BASES`.
        envelope: name in `geognn.nn.ENVELOPES`; multiplies every message so the
            energy is smooth as atoms cross the cutoff.
        update_coords: update positions between layers (EGNN eq. 4).
        normalize_coords: normalised position update, x_ij / (|x_ij| + 1).
        attention: gate messages by a learned sigmoid (EGNN's edge inference).
        activation: name in `geognn.nn.ACTIVATIONS`.
        avg_num_neighbors: messages are divided by this (set it from the data).
    """

    hidden_channels: int = 64
    num_layers: int = 4
    vector_channels: int = 0
    num_radial: int = 8
    radial_basis: str = "bessel"
    envelope: str = "polynomial"
    update_coords: bool = True
    normalize_coords: bool = True
    attention: bool = False
    activation: str = "silu"
    avg_num_neighbors: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        check_at_least(self, 2, "hidden_channels", why="the readout halves it")
        check_at_least(self, 1, "num_layers")
        check_at_least(self, 0, "vector_channels", "num_radial")
        check_positive(self, "avg_num_neighbors")


class EGNN(EnergyModel):
    """E(n)-equivariant GNN (Satorras et al. 2021) predicting energies.

    ``model(data, compute_forces=True)`` also returns forces; ``pos_updated``
    holds the coordinates after the last layer.
    """

    Config = EGNNConfig

    def __init__(self, config: EGNNConfig):
        super().__init__(config)
        F = config.hidden_channels
        self.vector_channels = config.vector_channels  # for TorchScript, which does not see the config
        self.embedding = nn.Embedding(config.max_atomic_number + 1, F)
        self.radial_basis = (
            lookup(RADIAL_BASES, config.radial_basis, "radial basis")(config.num_radial, config.cutoff)
            if config.num_radial
            else None
        )
        self.envelope = lookup(ENVELOPES, config.envelope, "envelope")(config.cutoff)
        self.layers = nn.ModuleList(
            EGNNLayer(
                F,
                edge_channels=config.num_radial,
                vector_channels=config.vector_channels,
                update_coords=config.update_coords,
                normalize=config.normalize_coords,
                attention=config.attention,
                activation=config.activation,
                avg_num_neighbors=config.avg_num_neighbors,
            )
            for _ in range(config.num_layers)
        )
        self.readout = MLP([F, F // 2, 1], config.activation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.embedding.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()
        self.readout.reset_parameters()

    def atomic_energies(self, z: Tensor, pos: Tensor, graph: AtomGraph) -> dict[str, Tensor]:
        h = self.embedding(z)  # [N, F]
        v = pos.new_zeros(pos.shape[0], self.vector_channels, 3) if self.vector_channels > 0 else None
        edge_attr = self.radial_basis(graph.edge_len) if self.radial_basis is not None else None
        edge_weight = self.envelope(graph.edge_len)
        for layer in self.layers:
            h, pos, v = layer(h, pos, graph.edge_index, v, edge_attr, edge_weight, graph.edge_offset)
        return {keys.NODE_ENERGY: self.readout(h).squeeze(-1), keys.UPDATED_POSITIONS: pos}
