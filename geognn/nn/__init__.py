"""Layers. Each takes explicit tensors and is importable on its own."""

from geognn.nn.dimenet import (
    DimeNetEmbedding,
    DimeNetInteraction,
    DimeNetOutput,
    DimeNetPPInteraction,
    DimeNetRadialBasis,
    SphericalBasis,
    triplet_cos_angle,
)
from geognn.nn.egnn import EGNNLayer
from geognn.nn.gate import EquivariantGate
from geognn.nn.irreps import join_scalars_vectors, split_scalars_vectors, wigner_d
from geognn.nn.mace import MACEInteraction, MACEProductBlock, MACEReadout, SymmetricContraction, coupling_paths
from geognn.nn.message_passing import ScalarVectorMessagePassing
from geognn.nn.mlp import ACTIVATIONS, MLP
from geognn.nn.radial import (
    ENVELOPES,
    RADIAL_BASES,
    BesselBasis,
    CosineCutoff,
    GaussianBasis,
    PolynomialEnvelope,
)
from geognn.nn.painn import PaiNNMessage, PaiNNUpdate
from geognn.nn.schnet import SchNetInteraction
from geognn.nn.tensor_product import (ChannelwiseTensorProduct, SphericalEdgeEmbedding, TensorProductConv,
                                      species_one_hot, uvu_instructions)

__all__ = [
    "EGNNLayer",
    "SchNetInteraction",
    "PaiNNMessage",
    "PaiNNUpdate",
    "TensorProductConv",
    "ChannelwiseTensorProduct",
    "uvu_instructions",
    "SphericalEdgeEmbedding",
    "EquivariantGate",
    "SymmetricContraction",
    "MACEInteraction",
    "MACEProductBlock",
    "MACEReadout",
    "coupling_paths",
    "species_one_hot",
    "join_scalars_vectors",
    "split_scalars_vectors",
    "wigner_d",
    "DimeNetRadialBasis",
    "SphericalBasis",
    "triplet_cos_angle",
    "DimeNetEmbedding",
    "DimeNetInteraction",
    "DimeNetPPInteraction",
    "DimeNetOutput",
    "ScalarVectorMessagePassing",
    "MLP",
    "ACTIVATIONS",
    "BesselBasis",
    "GaussianBasis",
    "PolynomialEnvelope",
    "CosineCutoff",
    "RADIAL_BASES",
    "ENVELOPES",
]
