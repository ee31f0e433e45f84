"""e3nn tensor-product convolution (Tensor Field Networks, NequIP) and its edge embedding.

Node features are one irreps tensor ``x`` [N, irreps_in.dim]. One
convolution (Batzner et al., Nat. Commun. 2022, eq. 3 and Fig. 1) is

    x'_i = Linear_2( 1/n_avg Σ_{j ∈ N(i)} R(|r_ij|) · (Linear_1 x_j ⊗ Y(r̂_ij)) ) + SC(x_i, species_i)

with Y the spherical harmonics of the edge direction, R a radial MLP giving
the weights of each "uvu" path of the tensor product per edge (channel u of
the sender times Y gives channel u of the output), n_avg the average number
of neighbours, and SC NequIP's self-connection: a tensor product of the
receiver's features with its one-hot species.

In MPNN terms: ``message`` is the weighted tensor product per edge,
``aggregate`` the sum over senders divided by ``avg_num_neighbors`` (the
foundation's `ScalarVectorMessagePassing`), ``update`` the linear map plus the
self-connection.
"""

from __future__ import annotations

from typing import Optional

import torch
from e3nn import o3
from torch import Tensor, nn

from geognn.nn.message_passing import ScalarVectorMessagePassing
from geognn.nn.mlp import MLP
from geognn.nn.radial import BesselBasis, PolynomialEnvelope


class SphericalEdgeEmbedding(nn.Module):
    """Edge attributes: spherical harmonics of the edge direction and a smooth radial basis.

    ``forward(edge_vec)`` returns ``edge_sh`` [E, irreps_sh.dim] (l = 0..l_max,
    unit-normalised directions, e3nn's "component" normalisation, as NequIP)
    and ``edge_radial`` [E, num_radial] (Bessel functions times the
    polynomial envelope of exponent p, zero with p - 1 derivatives at the cutoff).
    """

    def __init__(self, l_max: int, num_radial: int = 8, cutoff: float = 5.0, envelope_exponent: int = 6,
                 trainable_radial: bool = True):
        super().__init__()
        if not 0 <= l_max <= 3:
            raise ValueError(f"l_max must be 0, 1, 2 or 3, got {l_max}")
        self.l_max = l_max
        self.irreps_sh = o3.Irreps.spherical_harmonics(l_max)
        self.irreps_in = o3.Irreps("1o")
        self.irreps_out = [self.irreps_sh, o3.Irreps(f"{num_radial}x0e")]
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.bessel = BesselBasis(num_radial, cutoff, trainable=trainable_radial)
        self.envelope = PolynomialEnvelope(cutoff, exponent=envelope_exponent)

    def reset_parameters(self) -> None:
        self.bessel.reset_parameters()

    def forward(self, edge_vec: Tensor) -> tuple[Tensor, Tensor]:
        """edge_vec [E, 3] (``pos[j] - pos[i]`` + shift) -> (edge_sh [E, irreps_sh.dim], edge_radial [E, num_radial])."""
        edge_len = torch.linalg.vector_norm(edge_vec, dim=-1)
        radial = self.bessel(edge_len) * self.envelope(edge_len).unsqueeze(-1)
        return self.sh(edge_vec), radial

    def extra_repr(self) -> str:
        return f"l_max={self.l_max}, irreps_sh={self.irreps_sh}"


def uvu_instructions(irreps_in, irreps_sh, irreps_out) -> tuple[o3.Irreps, list[tuple]]:
    """NequIP's channel-wise paths: every (input irrep) x (harmonic) -> an irrep of ``irreps_out``.

    Returns the tensor product's output irreps (sorted, one block per path)
    and its instructions ``(i_in, i_sh, i_out, "uvu", True)``.
    """
    irreps_in, irreps_sh, irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_sh), o3.Irreps(irreps_out)
    wanted = {ir for _, ir in irreps_out}
    mid, instructions = [], []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in wanted:
                    instructions.append((i, j, len(mid), "uvu", True))
                    mid.append((mul, ir_out))
    mid = o3.Irreps(mid)
    mid_sorted, permutation, _ = mid.sort()
    instructions = [(i, j, permutation[k], mode, train) for i, j, k, mode, train in instructions]
    return mid_sorted, instructions


class TensorProductConv(ScalarVectorMessagePassing):
    """NequIP's convolution as message / aggregate / update on the radius graph.

    Args:
        irreps_in: node features entering, e.g. ``"32x0e"`` or ``"32x0e + 32x1o + 32x2e"``.
        irreps_out: node features leaving (for a gated network, the gate's ``irreps_in``).
        irreps_sh: edge spherical harmonics (`SphericalEdgeEmbedding.irreps_sh`).
        irreps_node_attr: species one-hot, ``"Sx0e"``, for the self-connection.
        num_radial: width of the radial basis.
        radial_mlp: hidden sizes of the radial MLP that gives each edge its path weights.
        avg_num_neighbors: the neighbour sum is divided by this.
        self_connection: add NequIP's SC(x_i, species_i) term.
    """

    def __init__(
        self,
        irreps_in,
        irreps_out,
        irreps_sh,
        irreps_node_attr,
        num_radial: int = 8,
        radial_mlp: tuple[int, ...] = (64, 64),
        avg_num_neighbors: float = 1.0,
        self_connection: bool = True,
        activation: str = "silu",
    ):
        super().__init__(avg_num_neighbors)
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.irreps_sh = o3.Irreps(irreps_sh)
        self.irreps_node_attr = o3.Irreps(irreps_node_attr)
        self.linear_1 = o3.Linear(self.irreps_in, self.irreps_in)
        # Plain ints for the runtime checks: torch.compile cannot guard on Irreps objects.
        self._input_dims = (self.irreps_in.dim, self.irreps_node_attr.dim, self.irreps_sh.dim)
        self.irreps_mid, self._instructions = uvu_instructions(self.irreps_in, self.irreps_sh, self.irreps_out)
        self.tp = self._tensor_product(torch.get_default_dtype())
        # No biases (as NequIP's radial network): zero basis -> zero weights, so edges fade out at the cutoff.
        self.radial = MLP([num_radial, *radial_mlp, self.tp.weight_numel], activation=activation, bias=False)
        self.linear_2 = o3.Linear(self.irreps_mid.simplify(), self.irreps_out)
        self.self_connection = (
            o3.FullyConnectedTensorProduct(self.irreps_in, self.irreps_node_attr, self.irreps_out)
            if self_connection else None
        )

    def _tensor_product(self, dtype: torch.dtype) -> o3.TensorProduct:
        # e3nn bakes its Clebsch-Gordan coefficients into generated code as constants
        # of the default dtype at construction, which `.double()` does not convert:
        # a float32-built product stays equivariant only to ~1e-7 in a float64 model.
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            tp = o3.TensorProduct(self.irreps_in, self.irreps_sh, self.irreps_mid, self._instructions,
                                  shared_weights=False, internal_weights=False)
        finally:
            torch.set_default_dtype(default)
        self._tp_dtype = dtype
        return tp

    def _apply(self, fn, recurse=True):
        # Rebuild the (weightless) tensor product when the layer changes between float32 and float64.
        super()._apply(fn, recurse)
        weight = self.linear_1.weight
        if weight.dtype in (torch.float32, torch.float64) and weight.dtype != self._tp_dtype:
            self.tp = self._tensor_product(weight.dtype).to(weight.device)
        return self

    def _describe(self, name: str) -> str:
        return str({"x": self.irreps_in, "node_attr": self.irreps_node_attr, "edge_sh": self.irreps_sh}[name])

    def reset_parameters(self) -> None:
        self.radial.reset_parameters()
        for module in (self.linear_1, self.linear_2, self.self_connection):
            if module is not None:
                module.weight.data.normal_()  # e3nn's own initialisation: unit normal, normalised in the forward

    def forward(
        self,
        x: Tensor,
        node_attr: Tensor,
        edge_index: Tensor,
        edge_sh: Tensor,
        edge_radial: Tensor,
    ) -> Tensor:
        """
        Args:
            x: [N, irreps_in.dim] node features.
            node_attr: [N, irreps_node_attr.dim] species one-hot.
            edge_index: [2, E] (sender j, receiver i).
            edge_sh: [E, irreps_sh.dim] spherical harmonics of ``edge_vec = pos[j] - pos[i]``.
            edge_radial: [E, num_radial] radial basis of the edge lengths.

        Returns:
            [N, irreps_out.dim]
        """
        for name, tensor, dim in zip(("x", "node_attr", "edge_sh"), (x, node_attr, edge_sh), self._input_dims):
            if tensor.shape[-1] != dim:
                raise ValueError(f"{name} has {tensor.shape[-1]} components, expected {dim} ({self._describe(name)})")
        weights = self.radial(edge_radial)  # [E, tp.weight_numel]
        return self.propagate(edge_index, sender=self.linear_1(x), edge_sh=edge_sh, weights=weights,
                              x=x, node_attr=node_attr, size=(x.shape[0], x.shape[0]))

    def message(self, sender_j: Tensor, edge_sh: Tensor, weights: Tensor) -> tuple[Tensor]:
        return (self.tp(sender_j, edge_sh, weights),)  # [E, irreps_mid.dim]

    def update(self, inputs: tuple[Tensor], x: Tensor, node_attr: Tensor) -> Tensor:
        (aggregated,) = inputs  # [N, irreps_mid.dim], already divided by avg_num_neighbors
        out = self.linear_2(aggregated)
        if self.self_connection is not None:
            out = out + self.self_connection(x, node_attr)
        return out

    def extra_repr(self) -> str:
        return (f"irreps_in={self.irreps_in}, irreps_out={self.irreps_out}, irreps_sh={self.irreps_sh}, "
                f"irreps_mid={self.irreps_mid}, avg_num_neighbors={float(self.avg_num_neighbors)}")


def species_one_hot(species: Tensor, num_species: int, dtype: Optional[torch.dtype] = None) -> Tensor:
    """[N] species indices -> [N, num_species] one-hot node attributes (irreps ``"num_species x 0e"``)."""
    return torch.nn.functional.one_hot(species, num_species).to(dtype or torch.get_default_dtype())
