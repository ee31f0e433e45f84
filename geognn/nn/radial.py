"""Radial bases and cutoff envelopes: invariant functions of the edge length.

Each maps edge_len [E] to [E, num_radial] (bases) or [E] (envelopes). The
envelopes are exactly zero at and beyond the cutoff, with vanishing first
derivative there, so that an atom crossing the cutoff changes neither the
energy nor the forces discontinuously.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class BesselBasis(nn.Module):
    """``sqrt(2/c) sin(n π d / c) / d`` for n = 1..num_radial (DimeNet, Gasteiger et al. 2020)."""

    def __init__(self, num_radial: int, cutoff: float, trainable: bool = False):
        super().__init__()
        self.num_radial = num_radial
        self.trainable = trainable
        self.register_buffer("cutoff", torch.tensor(float(cutoff)))
        frequencies = torch.empty(num_radial)
        if trainable:
            self.frequencies = nn.Parameter(frequencies)
        else:
            self.register_buffer("frequencies", frequencies)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.frequencies.copy_(torch.arange(1, self.num_radial + 1, dtype=torch.float64) * math.pi)

    def forward(self, edge_len: Tensor) -> Tensor:
        scaled = (edge_len / self.cutoff).unsqueeze(-1)  # [E, 1]
        prefactor = torch.sqrt(2.0 / self.cutoff)
        return prefactor * torch.sin(self.frequencies * scaled) / edge_len.unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"num_radial={self.num_radial}, cutoff={float(self.cutoff)}, trainable={self.trainable}"


class GaussianBasis(nn.Module):
    """Gaussians ``exp(-(d - μ_k)² / 2σ²)`` on an even grid from 0 to the cutoff (SchNet)."""

    def __init__(self, num_radial: int, cutoff: float):
        super().__init__()
        self.num_radial = num_radial
        self.register_buffer("centers", torch.empty(num_radial))
        self.register_buffer("cutoff", torch.tensor(float(cutoff)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.centers.copy_(torch.linspace(0.0, float(self.cutoff), self.num_radial))

    def forward(self, edge_len: Tensor) -> Tensor:
        width = self.cutoff / max(self.num_radial - 1, 1)
        return torch.exp(-0.5 * ((edge_len.unsqueeze(-1) - self.centers) / width) ** 2)

    def extra_repr(self) -> str:
        return f"num_radial={self.num_radial}, cutoff={float(self.cutoff)}"


class PolynomialEnvelope(nn.Module):
    """``1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)``, x = d / cutoff (DimeNet).

    Zero with zero first and second derivatives at the cutoff; zero beyond.
    """

    def __init__(self, cutoff: float, exponent: int = 6):
        super().__init__()
        self.exponent = exponent
        self.register_buffer("cutoff", torch.tensor(float(cutoff)))

    def reset_parameters(self) -> None:
        pass

    def forward(self, edge_len: Tensor) -> Tensor:
        p = self.exponent
        x = edge_len / self.cutoff
        value = (
            1.0
            - (p + 1) * (p + 2) / 2 * x**p
            + p * (p + 2) * x ** (p + 1)
            - p * (p + 1) / 2 * x ** (p + 2)
        )
        return torch.where(x < 1.0, value, torch.zeros_like(value))

    def extra_repr(self) -> str:
        return f"cutoff={float(self.cutoff)}, exponent={self.exponent}"


class CosineCutoff(nn.Module):
    """``(cos(π d / cutoff) + 1) / 2`` inside the cutoff, zero beyond (SchNet, Behler)."""

    def __init__(self, cutoff: float):
        super().__init__()
        self.register_buffer("cutoff", torch.tensor(float(cutoff)))

    def reset_parameters(self) -> None:
        pass

    def forward(self, edge_len: Tensor) -> Tensor:
        value = 0.5 * (torch.cos(math.pi * edge_len / self.cutoff) + 1.0)
        return torch.where(edge_len < self.cutoff, value, torch.zeros_like(value))

    def extra_repr(self) -> str:
        return f"cutoff={float(self.cutoff)}"


RADIAL_BASES: dict[str, type[nn.Module]] = {"bessel": BesselBasis, "gaussian": GaussianBasis}
ENVELOPES: dict[str, type[nn.Module]] = {"polynomial": PolynomialEnvelope, "cosine": CosineCutoff}
