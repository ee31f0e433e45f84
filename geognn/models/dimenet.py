"""DimeNet and DimeNet++ energy models: edge embedding -> interaction blocks -> per-atom outputs.

Field names follow PyG's `DimeNet` / `DimeNetPlusPlus`, so a PyG
configuration reads across; `DimeNet.from_pyg` / `DimeNetPP.from_pyg` copy a
PyG model's weights into an equivalent geognn model (same energies and
forces, tested in float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import torch
from torch import Tensor, nn

from geognn.data import keys
from geognn.graph import triplets
from geognn.models.base import AtomGraph, EnergyModel, EnergyModelConfig, check_at_least
from geognn.nn.dimenet import (
    DimeNetEmbedding,
    DimeNetInteraction,
    DimeNetOutput,
    DimeNetPPInteraction,
    DimeNetRadialBasis,
    SphericalBasis,
    triplet_cos_angle,
)
from geognn.nn.mlp import lookup
from geognn.nn.triplet_ops import triplet_pattern

ANGLE_VERTICES = {"kji": "j", "jik": "i"}


@dataclass
class DimeNetCommonConfig(EnergyModelConfig):
    """Fields shared by DimeNet and DimeNet++ (PyG's names and meanings).

    Attributes:
        hidden_channels: width F of the edge messages.
        num_blocks: number of interaction blocks.
        num_spherical: number of Legendre orders l in the spherical basis.
        num_radial: number of radial functions (Bessel and spherical Bessel roots).
        envelope_exponent: the envelope is the paper's u with p = envelope_exponent + 1.
        num_before_skip / num_after_skip: residual layers around the skip connection.
        num_output_layers: dense layers in each output block.
        activation: name in `geognn.nn.ACTIVATIONS` (the papers' swish is "silu").
        output_init: "zeros" (the reference: outputs start at zero) or "glorot_orthogonal".
        angle: "kji" (the paper's α_kji at atom j) or "jik" (the angle at atom i
            used by the reference DimeNet code and PyG's `DimeNet`).
    """

    hidden_channels: int = 64
    num_blocks: int = 3
    num_spherical: int = 7
    num_radial: int = 6
    envelope_exponent: int = 5
    num_before_skip: int = 1
    num_after_skip: int = 2
    num_output_layers: int = 3
    activation: str = "silu"
    output_init: str = "zeros"
    angle: str = "kji"

    def __post_init__(self):
        super().__post_init__()
        check_at_least(self, 1, "hidden_channels", "num_blocks", "num_radial")
        check_at_least(self, 2, "num_spherical", why="angles enter from l = 1")
        check_at_least(self, 0, "envelope_exponent", "num_before_skip", "num_after_skip", "num_output_layers")


@dataclass
class DimeNetConfig(DimeNetCommonConfig):
    """DimeNet (defaults: a small model, ~0.5M parameters; the paper's is hidden 128, 6 blocks).

    Attributes:
        num_bilinear: size of the bilinear layer's middle dimension.
    """

    num_bilinear: int = 8

    def __post_init__(self):
        super().__post_init__()
        check_at_least(self, 1, "num_bilinear")


@dataclass
class DimeNetPPConfig(DimeNetCommonConfig):
    """DimeNet++ (defaults: a small model, ~0.4M parameters; the paper's is hidden 128, 4 blocks, int_emb 64, basis_emb 8, out_emb 256).

    Attributes:
        int_emb_size: width of the triplet messages after the down-projection.
        basis_emb_size: width of the basis embeddings.
        out_emb_channels: width of the output blocks after their up-projection.
    """

    int_emb_size: int = 32
    basis_emb_size: int = 8
    out_emb_channels: int = 128

    def __post_init__(self):
        super().__post_init__()
        check_at_least(self, 1, "int_emb_size", "basis_emb_size", "out_emb_channels")


class DimeNet(EnergyModel):
    """DimeNet (Gasteiger, Groß & Günnemann, ICLR 2020) predicting energies.

    Per-atom energies are the sum of the output blocks after the embedding
    and after each interaction block; forces and stress come from the base.
    """

    Config = DimeNetConfig
    depth_option = "num_blocks"

    def __init__(self, config: DimeNetCommonConfig):
        super().__init__(config)
        self._vertex = lookup(ANGLE_VERTICES, config.angle, "angle")
        c = config
        self.rbf = DimeNetRadialBasis(c.num_radial, c.cutoff, c.envelope_exponent)
        self.sbf = SphericalBasis(c.num_spherical, c.num_radial, c.cutoff, c.envelope_exponent)
        self.emb = DimeNetEmbedding(c.num_radial, c.hidden_channels, c.max_atomic_number, c.activation)
        self.output_blocks = nn.ModuleList(self._output_block() for _ in range(c.num_blocks + 1))
        self.interaction_blocks = nn.ModuleList(self._interaction_block() for _ in range(c.num_blocks))

    def _output_block(self) -> DimeNetOutput:
        c = self.config
        return DimeNetOutput(c.num_radial, c.hidden_channels, 1, c.num_output_layers, None, c.activation, c.output_init)

    def _interaction_block(self) -> nn.Module:
        c = self.config
        return DimeNetInteraction(
            c.hidden_channels, c.num_bilinear, c.num_spherical, c.num_radial,
            c.num_before_skip, c.num_after_skip, c.activation,
        )

    def reset_parameters(self) -> None:
        for module in (self.rbf, self.sbf, self.emb, *self.output_blocks, *self.interaction_blocks):
            module.reset_parameters()

    def interaction_range(self) -> float:
        """(num_blocks + 1) × cutoff: messages live on edges, so the embedding already reaches one cutoff."""
        return float(self.config.num_blocks + 1) * float(self.config.cutoff)

    def atomic_energies(self, z: Tensor, pos: Tensor, graph: AtomGraph) -> dict[str, Tensor]:
        edge_index, edge_vec, edge_len = graph.edge_index, graph.edge_vec, graph.edge_len
        receiver = edge_index[1]
        idx_kj, idx_ji = triplets(edge_index, z.shape[0], graph.edge_shift)
        cos_angle = triplet_cos_angle(edge_vec, edge_len, idx_kj, idx_ji, self._vertex)
        rbf = self.rbf(edge_len)  # [E, R]
        sbf = self.sbf(edge_len, cos_angle, idx_kj)  # [T, S * R]

        # One sparsity pattern for every block's fused triplet sum.
        pattern = triplet_pattern(idx_ji, idx_kj, edge_index.shape[1], edge_index.shape[1])
        m = self.emb(z, rbf, edge_index)  # [E, F]
        # Output block b reads the messages before interaction b, the last one those after all.
        # (zip over whole lists: TorchScript cannot call the modules of a slice output_blocks[1:].)
        energy = torch.zeros(z.shape[0], 1, dtype=m.dtype, device=m.device)
        for output, interaction in zip(self.output_blocks, self.interaction_blocks):
            energy = energy + output(m, rbf, receiver, z.shape[0])
            m = interaction(m, rbf, sbf, idx_kj, idx_ji, pattern)
        energy = energy + self.output_blocks[-1](m, rbf, receiver, z.shape[0])
        return {keys.NODE_ENERGY: energy.squeeze(-1)}

    # ----------------------------------------------------------------- PyG weights

    @classmethod
    def from_pyg(cls, model: nn.Module) -> "DimeNet":
        """A geognn model computing what the PyG model computes, with its weights copied.

        Takes a `torch_geometric.nn.models.DimeNet` (for `DimeNet`) or
        `DimeNetPlusPlus` (for `DimeNetPP`). The result has PyG's element range
        (Z ≤ 94), neighbour limit, angle convention and (float32-rounded)
        spherical Bessel roots; the bases' constant factors differ from PyG's
        and are folded into the first weights that read them. The dtype is
        the PyG model's; call ``.double()`` on both for exact comparisons.
        """
        from torch_geometric.nn.models import dimenet as pyg

        expected = pyg.DimeNetPlusPlus if cls is DimeNetPP else pyg.DimeNet
        if not isinstance(model, expected) or (cls is DimeNet and isinstance(model, pyg.DimeNetPlusPlus)):
            raise TypeError(f"{cls.__name__}.from_pyg takes a torch_geometric {expected.__name__}, got {type(model).__name__}")
        out_channels = model.output_blocks[0].lin.out_features
        if out_channels != 1:
            raise ValueError(f"geognn models predict one energy per structure; the PyG model has out_channels={out_channels}")
        config = cls._config_from_pyg(model)
        ours = cls(config).to(next(model.parameters()).dtype)
        ours._copy_pyg(model)
        return ours

    @classmethod
    def _config_from_pyg(cls, model) -> DimeNetCommonConfig:
        first = model.interaction_blocks[0]
        common = dict(
            cutoff=float(model.cutoff),
            max_atomic_number=model.emb.emb.num_embeddings - 1,
            max_num_neighbors=model.max_num_neighbors,
            hidden_channels=model.emb.lin.out_features,
            num_blocks=model.num_blocks,
            num_spherical=model.sbf.num_spherical,
            num_radial=model.sbf.num_radial,
            envelope_exponent=model.rbf.envelope.p - 1,
            num_before_skip=len(first.layers_before_skip),
            num_after_skip=len(first.layers_after_skip),
            num_output_layers=len(model.output_blocks[0].lins),
            activation=_activation_name(model.emb.act),
            output_init=model.output_blocks[0].output_initializer,
        )
        if cls is DimeNetPP:
            return DimeNetPPConfig(
                **common,
                int_emb_size=first.lin_down.out_features,
                basis_emb_size=first.lin_rbf1.out_features,
                out_emb_channels=model.output_blocks[0].lin_up.out_features,
            )
        return DimeNetConfig(**common, num_bilinear=first.W.shape[1], angle="jik")

    @torch.no_grad()
    def _copy_pyg(self, model) -> None:
        from torch_geometric.nn.models.dimenet_utils import Jn, Jn_zeros

        c = self.config
        # PyG's bases are ours times constants: its radial basis is sin(f d/c) u / (d/c),
        # ours sqrt(2/c) sin(f d/c) u / d; its spherical normaliser sqrt(2) / |j_{l+1}|,
        # ours sqrt(2/c³) / |j_{l+1}|.
        rbf_scale = c.cutoff / math.sqrt(2.0 / c.cutoff)
        sbf_scale = c.cutoff**1.5
        # PyG rounds the roots, and the normalisers computed from them, to float32.
        roots = Jn_zeros(c.num_spherical, c.num_radial)
        normalizer = [[1.0 / (0.5 * Jn(roots[l, n], l + 1) ** 2) ** 0.5 for n in range(c.num_radial)]
                      for l in range(c.num_spherical)]
        normalizer = torch.tensor(np.array(normalizer), dtype=torch.float64) / sbf_scale
        self.sbf.set_roots(torch.from_numpy(roots), normalizer)
        self.rbf.bessel.frequencies.copy_(model.rbf.freq)
        self._copy_module(self.emb, model.emb)
        self.emb.lin_rbf.weight.mul_(rbf_scale)
        for ours, theirs in zip(self.output_blocks, model.output_blocks):
            self._copy_module(ours, theirs)
            ours.lin_rbf.weight.mul_(rbf_scale)
        angular_sign = self._pyg_angular_sign().to(self.sbf.roots)
        for ours, theirs in zip(self.interaction_blocks, model.interaction_blocks):
            self._copy_module(ours, theirs)
            first_rbf, first_sbf = (ours.lin_rbf1, ours.lin_sbf1) if isinstance(ours, DimeNetPPInteraction) else (ours.lin_rbf, ours.lin_sbf)
            first_rbf.weight.mul_(rbf_scale)
            first_sbf.weight.mul_(sbf_scale * angular_sign)

    def _pyg_angular_sign(self) -> Tensor:
        """Per basis column, the sign between PyG's Y_l and ours: 1 here (same angle)."""
        return torch.ones(self.config.num_spherical * self.config.num_radial)

    @staticmethod
    def _copy_module(ours: nn.Module, theirs: nn.Module) -> None:
        mine, other = ours.state_dict(), theirs.state_dict()
        if set(mine) != set(other):
            raise ValueError(f"cannot map PyG's {type(theirs).__name__} onto {type(ours).__name__}: "
                             f"parameters {sorted(set(mine) ^ set(other))} differ")
        ours.load_state_dict(other)


class DimeNetPP(DimeNet):
    """DimeNet++ (Gasteiger, Giri, Margraf & Günnemann, 2020): DimeNet with cheaper interactions."""

    Config = DimeNetPPConfig

    def _output_block(self) -> DimeNetOutput:
        c = self.config
        return DimeNetOutput(
            c.num_radial, c.hidden_channels, 1, c.num_output_layers, c.out_emb_channels, c.activation, c.output_init
        )

    def _interaction_block(self) -> nn.Module:
        c = self.config
        return DimeNetPPInteraction(
            c.hidden_channels, c.int_emb_size, c.basis_emb_size, c.num_spherical, c.num_radial,
            c.num_before_skip, c.num_after_skip, c.activation,
        )

    def _pyg_angular_sign(self) -> Tensor:
        # PyG's DimeNet++ measures the angle between x_i - x_j and x_j - x_k, which is
        # π - α_kji: its Y_l(π - α) = (-1)^l Y_l(α).
        c = self.config
        sign = (-1.0) ** torch.arange(c.num_spherical, dtype=torch.float64)
        return sign.repeat_interleave(c.num_radial)


def _activation_name(act) -> str:
    """geognn's name for a PyG model's activation (a module, or a function such as PyG's ``swish``)."""
    from geognn.nn.mlp import ACTIVATIONS

    for name, kind in ACTIVATIONS.items():
        if type(act) is kind:
            return name
    name = getattr(act, "__name__", "")
    if name in ("swish", "silu"):
        return "silu"
    if name in ACTIVATIONS:
        return name
    raise ValueError(f"PyG model uses activation {act!r}, which geognn has no name for; known: {sorted(ACTIVATIONS)}")


__all__ = ["DimeNet", "DimeNetPP", "DimeNetConfig", "DimeNetPPConfig", "DimeNetCommonConfig"]
