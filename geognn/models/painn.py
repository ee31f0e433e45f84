"""PaiNN energy model (Schütt, Unke & Gastegger, ICML 2021): embedding -> (message, update) x L -> readout."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from geognn.data import keys
from geognn.models.base import AtomGraph, EnergyModel, EnergyModelConfig, check_at_least, check_positive
from geognn.nn import MLP, BesselBasis, CosineCutoff
from geognn.nn.painn import VECTOR_NORMS, PaiNNMessage, PaiNNUpdate


@dataclass
class PaiNNConfig(EnergyModelConfig):
    """PaiNN hyperparameters (the paper: 128 channels, 3 layers, 20 radial functions, cutoff 5 Å).

    Attributes:
        hidden_channels: F, width of the scalar and vector channels.
        num_layers: message + update blocks.
        num_radial: sin(nπr/c)/r functions the filters are made from (times the cosine cutoff).
        activation: name in `geognn.nn.ACTIVATIONS`.
        avg_num_neighbors: neighbour sums are divided by this (1: the paper's plain sum).
        vector_norm: how the update block measures its vectors: ``"smooth"``, sqrt(‖V v‖² + 1) − 1,
            smooth where vectors vanish by symmetry (perfect lattice sites), or ``"paper"``,
            sqrt(‖V v‖² + 1e-8), whose energy has a cusp there (wrong phonons and force
            constants); see `geognn.nn.painn`. Checkpoints saved before this option have "paper".
    """

    hidden_channels: int = 64
    num_layers: int = 3
    num_radial: int = 20
    activation: str = "silu"
    avg_num_neighbors: float = 1.0
    vector_norm: str = "smooth"

    def __post_init__(self):
        super().__post_init__()
        if self.vector_norm not in VECTOR_NORMS:
            raise ValueError(f"vector_norm must be one of {', '.join(VECTOR_NORMS)}; got {self.vector_norm!r}")
        check_at_least(self, 2, "hidden_channels", why="the readout halves it")
        check_at_least(self, 1, "num_layers", "num_radial")
        check_positive(self, "avg_num_neighbors")


class PaiNN(EnergyModel):
    """Polarizable atom interaction network predicting energies (forces and stress through the base)."""

    Config = PaiNNConfig

    def __init__(self, config: PaiNNConfig):
        super().__init__(config)
        F = config.hidden_channels
        self.embedding = nn.Embedding(config.max_atomic_number + 1, F)
        self.radial = BesselBasis(config.num_radial, config.cutoff)
        self.cutoff_fn = CosineCutoff(config.cutoff)
        self.messages = nn.ModuleList(
            PaiNNMessage(F, config.num_radial, config.activation, config.avg_num_neighbors)
            for _ in range(config.num_layers)
        )
        self.updates = nn.ModuleList(PaiNNUpdate(F, config.activation, config.vector_norm) for _ in range(config.num_layers))
        self.readout = MLP([F, F // 2, 1], config.activation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.embedding.reset_parameters()
        for module in (*self.messages, *self.updates, self.readout):
            module.reset_parameters()

    def atomic_energies(self, z: Tensor, pos: Tensor, graph: AtomGraph) -> dict[str, Tensor]:
        h = self.embedding(z)  # [N, F]
        v = h.new_zeros(h.shape[0], h.shape[1], 3)  # vectors start at zero (paper, sec. 4)
        edge_radial, edge_cutoff = self.radial(graph.edge_len), self.cutoff_fn(graph.edge_len)
        edge_unit = graph.edge_vec / graph.edge_len.unsqueeze(-1)
        for message, update in zip(self.messages, self.updates):
            dh, dv = message(h, v, graph.edge_index, edge_radial, edge_cutoff, edge_unit)
            h, v = h + dh, v + dv
            dh, dv = update(h, v)
            h, v = h + dh, v + dv
        return {keys.NODE_ENERGY: self.readout(h).squeeze(-1)}
