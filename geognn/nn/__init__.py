"""Layers. Each takes explicit tensors and is importable on its own."""

from geognn.nn.egnn import EGNNLayer
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

__all__ = [
    "EGNNLayer",
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
