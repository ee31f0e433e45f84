"""NequIP (Batzner et al., Nat. Commun. 2022): e3nn tensor-product convolutions predicting energies.

species one-hot -> linear to scalars -> num_layers x (TensorProductConv -> gate) -> linear
readout of the scalars -> per-atom energy. As in the nequip package (0.19): hidden
layers carry every l <= l_max, the last one only scalars; the first layer has no
self-connection (so an isolated atom's energy is its species' alone); optional
residual adds between layers of equal irreps. Scale, shift and per-element reference
energies come from the `EnergyModel` base.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from e3nn import o3
from torch import Tensor

from geognn.data import keys
from geognn.models.base import (AtomGraph, EnergyModel, EnergyModelConfig, check_at_least, check_positive, element_index,
                                element_rows, species_of)
from geognn.nn import EquivariantGate, SphericalEdgeEmbedding, TensorProductConv


def hidden_irreps(num_features: int, l_max: int, parity: bool) -> o3.Irreps:
    """``num_features`` channels of every l <= l_max: both parities (NequIP's ``parity: true``) or (-1)^l only."""
    parities = (1, -1) if parity else None
    return o3.Irreps([(num_features, (l, p)) for l in range(l_max + 1) for p in (parities or ((-1) ** l,))])


@dataclass
class NequIPConfig(EnergyModelConfig):
    """NequIP hyperparameters (defaults: a small model).

    Attributes:
        l_max: highest rotation order of features and edge harmonics (1-3).
        num_features: channels per irrep in the hidden features.
        num_layers: convolution + gate blocks.
        parity: True keeps both parities of every l (NequIP's default, O(3));
            False keeps only (-1)^l (fewer paths, still O(3)-equivariant).
        num_radial: Bessel functions of the edge length.
        radial_mlp: hidden sizes of the bias-free MLP that gives each edge its path weights.
        envelope_exponent: p of the polynomial cutoff envelope (NequIP: 6).
        avg_num_neighbors: neighbour sums are divided by this (set it from the data).
        atomic_numbers: the elements the model knows (one-hot species); None
            takes every element up to ``max_atomic_number``. Listing the
            dataset's elements keeps the self-connection small, as NequIP does.
        resnet: add each block's input to its output when their irreps agree
            (off in the nequip package; its self-connection already carries x_i).
        bessel_trainable: train the Bessel frequencies (nequip: off).
        node_attr: what the self-connection multiplies x_i with: "embedding"
            (the learned species embedding, num_features scalars, as the nequip
            package 0.19 does) or "one_hot" (the species one-hot of the paper).
    """

    l_max: int = 1
    num_features: int = 16
    num_layers: int = 3
    parity: bool = True
    num_radial: int = 8
    radial_mlp: tuple = (64,)
    envelope_exponent: int = 6
    avg_num_neighbors: float = 1.0
    atomic_numbers: Optional[tuple] = None
    resnet: bool = False
    bessel_trainable: bool = False
    node_attr: str = "embedding"

    def __post_init__(self):
        super().__post_init__()
        check_at_least(self, 0, "l_max")
        check_at_least(self, 1, "num_features", "num_layers", "num_radial", "envelope_exponent")
        if not all(isinstance(width, int) and width >= 1 for width in self.radial_mlp):
            raise ValueError(f"{type(self).__name__}.radial_mlp = {self.radial_mlp!r} is out of range: "
                             "its hidden sizes must be integers >= 1")
        check_positive(self, "avg_num_neighbors")


class NequIP(EnergyModel):
    """NequIP architecture on geognn's path; ``build_model("nequip", l_max=2, ...)``."""

    Config = NequIPConfig

    def __init__(self, config: NequIPConfig):
        super().__init__(config)
        species, self._num_species = element_index(config.atomic_numbers, config.max_atomic_number)
        self.register_buffer("species_index", species)  # atomic number -> one-hot position, -1 unknown
        scalars = o3.Irreps(f"{config.num_features}x0e")
        self.embedding = o3.Linear(o3.Irreps(f"{self._num_species}x0e"), scalars)
        if config.node_attr not in ("embedding", "one_hot"):
            raise ValueError(f"unknown node_attr {config.node_attr!r}; choose 'embedding' or 'one_hot'")
        self.irreps_node_attr = scalars if config.node_attr == "embedding" else self.embedding.irreps_in
        self.edge_embedding = SphericalEdgeEmbedding(config.l_max, config.num_radial, config.cutoff,
                                                     config.envelope_exponent, config.bessel_trainable)
        hidden = hidden_irreps(config.num_features, config.l_max, config.parity)
        self.convolutions, self.gates = torch.nn.ModuleList(), torch.nn.ModuleList()
        irreps = scalars
        for layer in range(config.num_layers):
            last = layer == config.num_layers - 1
            gate = EquivariantGate(scalars if last else hidden, irreps, self.edge_embedding.irreps_sh)
            self.convolutions.append(TensorProductConv(
                irreps, gate.irreps_in, self.edge_embedding.irreps_sh, self.irreps_node_attr,
                num_radial=config.num_radial, radial_mlp=tuple(config.radial_mlp),
                avg_num_neighbors=config.avg_num_neighbors, self_connection=layer > 0,
            ))
            self.gates.append(gate)
            irreps = gate.irreps_out
        # Decided here, not in forward: torch.compile cannot guard on Irreps comparisons.
        self._residual = [config.resnet and conv.irreps_in == gate.irreps_out
                          for conv, gate in zip(self.convolutions, self.gates)]
        self._embedding_attr = config.node_attr == "embedding"  # TorchScript cannot read the config
        self.readout = o3.Linear(irreps, o3.Irreps("0e"))

    def reset_parameters(self) -> None:
        for module in (self.edge_embedding, *self.convolutions):
            module.reset_parameters()
        for linear in (self.embedding, self.readout):
            linear.weight.data.normal_()

    def atomic_energies(self, z: Tensor, pos: Tensor, graph: AtomGraph) -> dict[str, Tensor]:
        if torch.jit.is_scripting():  # exported: the engine was told the model's elements (see geognn.export)
            species = element_rows(self.species_index, z)
        else:
            species = species_of(self.species_index, z, self.config.atomic_numbers)
        one_hot = torch.nn.functional.one_hot(species, self._num_species).to(pos.dtype)  # [N, S]
        x = self.embedding(one_hot)  # [N, F] scalars
        node_attr = x if self._embedding_attr else one_hot
        edge_sh, edge_radial = self.edge_embedding(graph.edge_vec)
        # Indexed, not zipped: TorchScript zips module lists only with module lists.
        for layer, (conv, gate) in enumerate(zip(self.convolutions, self.gates)):
            out = gate(conv(x, node_attr, graph.edge_index, edge_sh, edge_radial))
            x = x + out if self._residual[layer] else out
        return {keys.NODE_ENERGY: self.readout(x).squeeze(-1)}
